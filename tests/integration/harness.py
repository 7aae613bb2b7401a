"""Real services for integration tests: OpenBao, dockerd, registry, Alertmanager, network namespaces.

Each service is a small class around one `Process` (own process group, output in a log file, ready when
a probe answers, stopped with SIGTERM then SIGKILL of the whole group). The pytest fixtures that hand
them to tests live in `conftest.py`; this module holds no pytest fixtures, only the machinery.

A missing binary skips the test with a clear reason, or fails it when the environment says `CI=true`
(CI installs everything through `bash tests/run --setup`, so a missing piece there is a defect, not a reason to skip).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import docker
import docker.errors
import hvac
import pytest
import requests

from regwarden.demo.processes import Service as ServiceProcess
from regwarden.demo.processes import free_port, tcp_open, wait_until

__all__ = [
    "TINY_IMAGE",
    "Alertmanager",
    "DockerEngine",
    "ImageTransferError",
    "NetnsHost",
    "OpenBaoCluster",
    "OpenBaoDev",
    "OpenBaoRaft",
    "Process",
    "RegistryServer",
    "RegistryTLS",
    "TLSCertificates",
    "binary",
    "daemon_table",
    "free_port",
    "import_tiny_image",
    "in_ci",
    "make_certificates",
    "pull_image",
    "push_image",
    "reap",
    "regwarden_env",
    "require",
    "running",
    "secret_file",
    "start_daemon",
    "stop_daemon",
    "wait_for",
]

TINY_IMAGE = "tiny:1"
DOCKER_API_VERSION = "1.41"  # Engine 20.10 (Debian 12's docker.io); pinned so the SDK skips negotiation


# --------------------------------------------------------------------------------------------- basics


def in_ci() -> bool:
    """Whether the environment says CI=true (as CI and .ci/run do)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require(what: str, ok: bool) -> None:
    """Skip the test when `what` is unavailable; with CI=true fail it instead (CI must have everything)."""
    if ok:
        return
    if in_ci():
        pytest.fail(f"{what} is not available, but CI=true requires it (tests/setup installs it)", pytrace=False)
    pytest.skip(f"{what} is not available here (bash tests/setup installs it)")


def binary(name: str) -> str:
    """Absolute path of the executable `name` (PATH, then the running venv's bin), or skip/fail."""
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    require(f"executable {name!r}", path is not None)
    assert path is not None
    return path


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


# polling with an early failure when the service died (TimeoutError-like ServiceFailed on timeout)
wait_for = wait_until


def http_status(url: str, **kwargs: Any) -> int:
    """Status code of GET `url` (raises when nothing answers)."""
    return requests.get(url, timeout=2, **kwargs).status_code


REPO = Path(__file__).resolve().parents[2]


def regwarden_env(**extra: str) -> dict[str, str]:
    """The environment of a `python -m regwarden ...` child: this checkout's packages first, and no
    systemd notify socket unless `extra` gives one."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'daemon'}{os.pathsep}{REPO / 'plugins'}"}
    env.pop("NOTIFY_SOCKET", None)
    env.update(extra)
    return env


def daemon_table(workdir: Path, listen: int | str, *, audit_log: Path | None = None, **extra: str) -> str:
    """The `[daemon]` table of a test daemon: state in `workdir/state`, the audit log at `audit_log`
    (default `workdir/audit.jsonl`), HTTP on `listen` (a port on 127.0.0.1, or "HOST:PORT" as given),
    JSON logs, then each of `extra` as `key = "value"` (host, log_level, ...)."""
    address = f"127.0.0.1:{listen}" if isinstance(listen, int) else listen
    lines = [
        "[daemon]",
        f'state_dir = "{workdir / "state"}"',
        f'audit_log = "{audit_log if audit_log is not None else workdir / "audit.jsonl"}"',
        f'listen = "{address}"',
        'log_format = "json"',
        *(f'{key} = "{value}"' for key, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def secret_file(path: Path, text: str) -> Path:
    """A 0600 file holding `text` at `path`: regwarden refuses group- or world-readable secret files."""
    path.write_text(text)
    path.chmod(0o600)
    return path


def start_daemon(config: Path, log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`regwarden run -c config` in the background, its output appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "regwarden", "run", "-c", str(config)],
                                env=dict(env) if env is not None else regwarden_env(), stdout=out,
                                stderr=subprocess.STDOUT)


def stop_daemon(daemon: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as systemd stops it: the daemon must exit 0 within 15 s."""
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(15) == 0


def reap(daemon: subprocess.Popen[bytes]) -> None:
    """Kill a daemon a failed test left running (for `finally:`)."""
    if daemon.poll() is None:
        daemon.kill()
        daemon.wait(5)


# ------------------------------------------------------------------------------------------- process

_LIVE: set[Process] = set()


class Process(ServiceProcess):
    """A service process of the tests (the demo's `Service`), optionally inside a network namespace;
    every running one is stopped at exit even if its fixture was interrupted."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        ready: Callable[[], bool],
        *,
        env: Mapping[str, str] | None = None,
        netns: str | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 15.0,
    ) -> None:
        super().__init__(name, [*(("ip", "netns", "exec", netns) if netns else ()), *argv], log_path, ready,
                         env=env, start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.started_in: float | None = None  # seconds from spawn to ready, for the curious

    def start(self) -> None:
        if self.running:
            return
        began = time.monotonic()
        _LIVE.add(self)
        super().start()
        self.started_in = time.monotonic() - began

    def stop(self) -> None:
        _LIVE.discard(self)
        super().stop()

    def log_tail(self, lines: int = 30) -> str:
        return super().log_tail(lines)

    def __repr__(self) -> str:
        return f"Process({self.name!r}, pid={self.pid})"


class Service(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


S = TypeVar("S", bound=Service)


@contextlib.contextmanager
def running(service: S) -> Iterator[S]:
    """Start `service`, hand it out, always stop it."""
    try:
        service.start()
        yield service
    finally:
        service.stop()


@atexit.register
def _kill_leftovers() -> None:  # a safety net for interrupted runs; fixtures stop what they start
    for process in list(_LIVE):
        process.stop()


# ------------------------------------------------------------------------------------------- OpenBao


def _bao_env(home: Path) -> dict[str, str]:
    # HOME: the CLI's token helper writes ~/.vault-token; keep it in the test's directory.
    return {"HOME": str(home), "BAO_ADDR": "", "VAULT_ADDR": "", "BAO_TOKEN": "", "VAULT_TOKEN": ""}


class OpenBaoDev:
    """`bao server -dev`: in memory, unsealed, KV v2 at `secret/`, root token `.token`."""

    def __init__(self, workdir: Path) -> None:
        port = free_port()
        while not _port_free(port + 1):  # dev mode puts its cluster listener on the next port
            port = free_port()
        self.address = f"http://127.0.0.1:{port}"
        self.token = "root-" + secrets.token_hex(8)
        self.process = Process(
            "openbao-dev",
            [binary("bao"), "server", "-dev", "-dev-no-store-token", f"-dev-root-token-id={self.token}",
             f"-dev-listen-address=127.0.0.1:{port}"],
            workdir / "openbao.log",
            lambda: http_status(f"{self.address}/v1/sys/health") == 200,
            env=_bao_env(workdir),
        )

    def client(self) -> Any:
        """An hvac.Client authenticated with the root token."""
        return hvac.Client(url=self.address, token=self.token)

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()


def _raft_node(workdir: Path, name: str, node_id: str, env: Mapping[str, str]) -> tuple[str, Process]:
    """A `bao server` with raft storage in `workdir/raft` on two free loopback ports: (api address, process).

    A restarted node finds its cluster from the membership kept in its raft data (no retry_join).
    """
    (workdir / "raft").mkdir(parents=True, exist_ok=True)
    port, cluster_port = free_port(), free_port()
    address = f"http://127.0.0.1:{port}"
    config = workdir / "openbao.hcl"
    config.write_text(
        f'storage "raft" {{\n  path = "{workdir / "raft"}"\n  node_id = "{node_id}"\n  performance_multiplier = 1\n}}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n'
        f'  cluster_address = "127.0.0.1:{cluster_port}"\n  tls_disable = true\n}}\n'
        f'api_addr = "{address}"\ncluster_addr = "http://127.0.0.1:{cluster_port}"\n'
    )
    process = Process(
        name, [binary("bao"), "server", f"-config={config}"], workdir / "openbao.log",
        lambda: http_status(f"{address}/v1/sys/health") > 0,  # answers at all (sealed: 503)
        env=env,
    )
    return address, process


def _health(address: str) -> int:
    """sys/health status: 200 active, 429 standby, 503 sealed, 501 not initialised; 0 when nothing answers."""
    try:
        return http_status(f"{address}/v1/sys/health")
    except requests.RequestException:
        return 0


class OpenBaoRaft:
    """A persistent OpenBao (raft storage in `workdir`); `.stop()`/`.start()` keep data and re-unseal."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.token = ""
        self.unseal_key = ""
        self.address, self.process = _raft_node(workdir, "openbao-raft", "n1", _bao_env(workdir))

    def client(self) -> Any:
        """An hvac.Client with the root token (none before the first start)."""
        return hvac.Client(url=self.address, token=self.token or None)

    def start(self) -> None:
        """Start the server; the first time initialise it and mount KV v2 at `secret/`, else unseal."""
        self.process.start()
        first = not self.unseal_key
        if first:
            result = self.client().sys.initialize(secret_shares=1, secret_threshold=1)
            self.unseal_key, self.token = result["keys"][0], result["root_token"]
        self.client().sys.submit_unseal_key(self.unseal_key)
        # 200 = active (leader elected); 429 standby, 503 sealed, 501 not initialised
        wait_for("raft leadership", lambda: _health(self.address) == 200, 30, self.process)
        if first:
            _mount_kv(self.client(), self.process)

    def stop(self) -> None:
        self.process.stop()


def _mount_kv(client: Any, process: Process) -> None:
    client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    wait_for("KV v2 at secret/", lambda: bool(client.secrets.kv.v2.read_configuration("secret")), 30, process)


class OpenBaoCluster:
    """An HA OpenBao: `size` real `bao server` processes on loopback, each with its own raft storage.

    `start()` initialises node 0 (Shamir, 3 shares, threshold 2; the rig keeps the keys and the root
    token), joins the others with `sys/storage/raft/join`, unseals every node and mounts KV v2 at
    `secret/`. Faults by node index: `kill` (SIGKILL), `restart` (start + unseal; raft data is kept),
    `seal`/`unseal`, `pause`/`resume` (SIGSTOP/SIGCONT of the process group: a node that holds its
    sockets open but never answers, as in a network partition). `active()` is the index of the leader.
    """

    KEY_SHARES, KEY_THRESHOLD = 3, 2

    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.workdir = workdir
        self.token = ""
        self.unseal_keys: list[str] = []
        self.addresses: list[str] = []
        self.processes: list[Process] = []
        for index in range(size):
            home = workdir / f"node-{index}"
            address, process = _raft_node(home, f"openbao-node-{index}", f"node-{index}", _bao_env(home))
            self.addresses.append(address)
            self.processes.append(process)
        self.paused: set[int] = set()

    def client(self, index: int | None = None) -> Any:
        """An hvac.Client with the root token, on node `index` (default: the active node)."""
        return hvac.Client(url=self.addresses[self.active() if index is None else index], token=self.token or None,
                           timeout=5)

    def health(self, index: int) -> int:
        """sys/health status of one node (200 active, 429 standby, 503 sealed, 0 no answer)."""
        return 0 if index in self.paused else _health(self.addresses[index])

    def start(self) -> None:
        for process in self.processes:
            process.start()
        first = self.client(0)
        result = first.sys.initialize(secret_shares=self.KEY_SHARES, secret_threshold=self.KEY_THRESHOLD)
        self.unseal_keys, self.token = list(result["keys"]), result["root_token"]
        self.unseal(0)
        wait_for("node 0 to lead", lambda: self.health(0) == 200, 30, self.processes[0])
        _mount_kv(self.client(0), self.processes[0])
        for index in range(1, len(self.processes)):
            self.client(index).sys.join_raft_cluster(leader_api_addr=self.addresses[0])
            self.unseal(index)
        self.wait_healthy()

    def stop(self) -> None:
        for index, process in enumerate(self.processes):
            if index in self.paused:
                self.resume(index)
            process.stop()

    def wait_healthy(self, timeout: float = 60) -> int:
        """Wait until every node answers, one active and the rest standby, every node names the same
        leader (a standby that has not learned it answers forwarded requests with 500), all raft voters;
        returns the active index."""
        def healthy() -> bool:
            states = sorted(self.health(i) for i in range(len(self.processes)))
            return states == [200] + [429] * (len(states) - 1) and self._one_leader() and \
                self._voters() == len(states)

        wait_for("every node unsealed, one active, all raft voters", healthy, timeout)
        return self.active()

    def _one_leader(self) -> bool:
        leaders = set()
        for address in self.addresses:
            answer = requests.get(f"{address}/v1/sys/leader", timeout=2).json()
            if not answer.get("leader_cluster_address"):
                return False
            leaders.add(answer.get("leader_address"))
        return len(leaders) == 1

    def _voters(self) -> int:
        config = self.client().sys.read_raft_config()["data"]["config"]
        return sum(1 for server in config["servers"] if server.get("voter"))

    def active(self, exclude: Sequence[int] = ()) -> int:
        """Index of the active node, as `sys/leader` of any answering node (not in `exclude`) says."""
        for index, address in enumerate(self.addresses):
            if index in exclude or index in self.paused:
                continue
            with contextlib.suppress(requests.RequestException, ValueError, KeyError):
                leader = requests.get(f"{address}/v1/sys/leader", timeout=2).json()["leader_address"]
                if leader in self.addresses and self.addresses.index(leader) not in self.paused:
                    return self.addresses.index(leader)
        raise LookupError("no node knows an active leader")

    def wait_active(self, exclude: Sequence[int] = (), timeout: float = 60) -> int:
        """Wait for a leader that is not in `exclude` (e.g. after killing the old one); returns its index."""
        found: list[int] = []

        def elected() -> bool:
            index = self.active(exclude)
            if index in exclude or self.health(index) != 200:
                return False
            found.append(index)
            return True

        wait_for(f"a new active node (not {list(exclude)})", elected, timeout)
        return found[-1]

    def kill(self, index: int) -> None:
        """SIGKILL node `index` (no clean shutdown, no step-down)."""
        process = self.processes[index]
        pid = process.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        process.stop()  # reaps it

    def restart(self, index: int) -> None:
        """Start a stopped or killed node again and unseal it; it rejoins with its raft data."""
        self.processes[index].start()
        self.unseal(index)
        wait_for(f"node {index} unsealed", lambda: self.health(index) in (200, 429), 60, self.processes[index])

    def seal(self, index: int) -> None:
        """Seal node `index` (`sys/seal` on that node: it stays up and answers 503)."""
        self.client(index).sys.seal()
        wait_for(f"node {index} sealed", lambda: self.health(index) == 503, 30, self.processes[index])

    def unseal(self, index: int) -> None:
        """Submit the threshold of unseal keys to node `index`."""
        client = self.client(index)
        for key in self.unseal_keys[:self.KEY_THRESHOLD]:
            client.sys.submit_unseal_key(key)

    def pause(self, index: int) -> None:
        """SIGSTOP node `index`: its sockets stay open, nothing answers (a partitioned node)."""
        pid = self.processes[index].pid
        assert pid is not None, f"node {index} is not running"
        os.killpg(pid, signal.SIGSTOP)
        self.paused.add(index)

    def resume(self, index: int) -> None:
        """SIGCONT a paused node."""
        pid = self.processes[index].pid
        self.paused.discard(index)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)


# -------------------------------------------------------------------------------------------- dockerd


def _flags(options: Mapping[str, str | bool | Sequence[str]]) -> list[str]:
    """{"insecure_registry": ["a", "b"], "debug": True} → --insecure-registry=a --insecure-registry=b --debug=true"""
    flags: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"{flag}={str(value).lower()}")
        else:
            flags += [f"{flag}={item}" for item in ([value] if isinstance(value, str) else value)]
    return flags


class DockerEngine:
    """A private dockerd (vfs, no iptables, no bridge) on `unix://WORKDIR/docker.sock`."""

    def __init__(self, workdir: Path, **extra_args: str | bool | Sequence[str]) -> None:
        self.workdir = workdir
        self.host = f"unix://{workdir / 'docker.sock'}"
        argv = [
            binary("dockerd"), "--host", self.host, "--data-root", str(workdir / "data"),
            "--exec-root", str(workdir / "exec"), "--pidfile", str(workdir / "docker.pid"),
            "--storage-driver", "vfs", "--iptables=false", "--ip6tables=false", "--bridge=none",
            *_flags(extra_args),
        ]
        self.process = Process("dockerd", argv, workdir / "dockerd.log", self._ping, start_timeout=60)

    def _ping(self) -> bool:
        api = docker.APIClient(base_url=self.host, version=DOCKER_API_VERSION, timeout=2)
        try:
            return bool(api.ping())
        finally:
            api.close()

    def client(self) -> Any:
        """A docker.DockerClient for this engine."""
        return docker.DockerClient(base_url=self.host, version=DOCKER_API_VERSION, timeout=60)

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        """Stop dockerd. If it died hard, also clean up what its own shutdown would have (containerd, the
        stale containerd pidfile that makes the next start hang, the data-root bind mount)."""
        self.process.stop()
        pidfile = self.workdir / "exec" / "containerd" / "containerd.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text())
            if str(self.workdir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():  # not a zombie
                os.kill(pid, signal.SIGKILL)
        pidfile.unlink(missing_ok=True)
        data_root = str(self.workdir / "data")
        if any(line.split()[4] == data_root for line in Path("/proc/self/mountinfo").read_text().splitlines()):
            subprocess.run(["umount", data_root], check=False, capture_output=True)

    def restart(self) -> None:
        self.stop()
        self.start()


def import_tiny_image(client: Any, name: str = TINY_IMAGE) -> str:
    """Import a one-layer image holding the static busybox (plus sh/true/sleep/cat/echo links) as `name`."""
    busybox = Path(binary("busybox")).resolve()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in ("sh", "true", "false", "sleep", "cat", "echo", "ls", "wget"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    repository, tag = name.rsplit(":", 1)
    client.api.import_image_from_data(buffer.getvalue(), repository=repository, tag=tag)
    return name


class ImageTransferError(RuntimeError):
    """A push or pull through the engine failed (denied, unreachable, ...)."""


def _drain(stream: Iterator[dict[str, Any]], what: str) -> None:
    for message in stream:
        if "error" in message or "errorDetail" in message:
            raise ImageTransferError(f"{what}: {message.get('error') or message.get('errorDetail')}")


def push_image(
    client: Any, host_port: str, repository: str, tag: str = "latest",
    auth: Mapping[str, str] | None = None, source: str = TINY_IMAGE,
) -> str:
    """Tag `source` as HOST:PORT/REPOSITORY:TAG and push it with `auth`; returns the reference."""
    target = f"{host_port}/{repository}"
    client.images.get(source).tag(target, tag)
    try:
        _drain(client.api.push(target, tag=tag, auth_config=dict(auth) if auth else None,
                               stream=True, decode=True), f"push {target}:{tag}")
    except docker.errors.APIError as exc:
        raise ImageTransferError(f"push {target}:{tag}: {exc.explanation}") from exc
    return f"{target}:{tag}"


def pull_image(client: Any, reference: str, auth: Mapping[str, str] | None = None) -> None:
    """Pull `reference` (HOST:PORT/REPO:TAG) with `auth`."""
    repository, tag = reference.rsplit(":", 1)
    try:
        _drain(client.api.pull(repository, tag=tag, auth_config=dict(auth) if auth else None,
                               stream=True, decode=True), f"pull {reference}")
    except docker.errors.APIError as exc:
        raise ImageTransferError(f"pull {reference}: {exc.explanation}") from exc


# ----------------------------------------------------------------------------------- network namespace

_TEST_NET = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544 benchmarking range, never routed


def _used_addresses() -> set[str]:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return {word.split("/")[0] for word in out.split() if word.startswith("198.1")}


@dataclass
class NetnsHost:
    """A network namespace joined to the host by a veth pair: host side `host_addr`, inside `ns_addr`."""

    name: str
    host_addr: str
    ns_addr: str
    host_if: str
    _created: bool = field(default=False, repr=False)

    @classmethod
    def create(cls) -> NetnsHost:
        binary("ip")
        suffix = secrets.token_hex(4)
        used = _used_addresses()
        while True:
            block = random.randrange(1, _TEST_NET.num_addresses // 4)  # not security-relevant
            base = _TEST_NET.network_address + 4 * block
            if str(base + 1) not in used and str(base + 2) not in used:
                break
        host = cls(f"rwtest-{suffix}", str(base + 1), str(base + 2), f"rwh{suffix}")
        try:
            host._setup()
        except BaseException:
            host.delete()
            raise
        return host

    def _setup(self) -> None:
        peer = f"rwn{self.host_if[3:]}"
        self._created = True
        for argv in (
            ["ip", "netns", "add", self.name],
            ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", peer],
            ["ip", "link", "set", peer, "netns", self.name],
            ["ip", "addr", "add", f"{self.host_addr}/30", "dev", self.host_if],
            ["ip", "link", "set", self.host_if, "up"],
        ):
            subprocess.run(argv, check=True, capture_output=True)
        for argv in (
            ["ip", "addr", "add", f"{self.ns_addr}/30", "dev", peer],
            ["ip", "link", "set", peer, "up"],
            ["ip", "link", "set", "lo", "up"],
        ):
            self.run(argv)

    def run(self, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace, output captured as text."""
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], check=check,
                              capture_output=True, text=True)

    def delete(self) -> None:
        """Kill whatever still runs inside, then remove the namespace and the veth pair."""
        if not self._created:
            return
        self._created = False
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout
        for pid in pids.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)  # takes the peer with it
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


# ------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class RegistryTLS:
    """Server certificate and key (PEM files); `clientcas` turns on required client certificates."""

    certificate: Path
    key: Path
    clientcas: Sequence[Path] = ()


@dataclass(frozen=True)
class TLSCertificates:
    """PEM files of a throw-away CA, a server certificate for one IP and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def registry_tls(self, client_certs: bool = True) -> RegistryTLS:
        return RegistryTLS(self.server_cert, self.server_key, (self.ca,) if client_certs else ())


def make_certificates(workdir: Path, server_ip: str, days: int = 2) -> TLSCertificates:
    """Write a CA, a server certificate (IP SAN `server_ip`) and a client certificate into `workdir`."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    workdir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def issue(name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
              extensions: Sequence[tuple[x509.ExtensionType, bool]]) -> tuple[x509.Name, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer_name, issuer_key = issuer or (subject, key)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=days)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        cert = builder.sign(issuer_key, hashes.SHA256())
        (workdir / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path = workdir / f"{name}.key"
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
        return subject, key

    ca = issue("ca", None, [(x509.BasicConstraints(ca=True, path_length=None), True)])
    leaf = [(x509.BasicConstraints(ca=False, path_length=None), True)]
    issue("server", ca, [*leaf, (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(server_ip))]),
                                 False), (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)])
    issue("client", ca, [*leaf, (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)])
    return TLSCertificates(workdir / "ca.pem", workdir / "server.pem", workdir / "server.key",
                            workdir / "client.pem", workdir / "client.key")


class RegistryServer:
    """distribution's `docker-registry serve`, files in `workdir`, log (stdout+stderr) in `.log_path`."""

    def __init__(
        self,
        workdir: Path,
        *,
        auth: bool = True,
        notifications_url: str | None = None,
        notifications_token: str | None = None,
        log_format: str = "json",
        tls: RegistryTLS | Mapping[str, Any] | None = None,
        netns: NetnsHost | None = None,
        rotatable_log: bool = False,
    ) -> None:
        self.workdir = workdir
        self.tls = RegistryTLS(**tls) if isinstance(tls, Mapping) else tls
        addr = netns.ns_addr if netns else "127.0.0.1"
        port = 5000 if netns else free_port()  # a fresh namespace has every port free
        self.host_port = f"{addr}:{port}"
        self.url = f"{'https' if self.tls else 'http'}://{self.host_port}"
        self.htpasswd_path = workdir / "htpasswd"
        self.log_path = workdir / "registry.log"
        self.config_path = workdir / "config.yml"
        self.username = "rwtest"
        self.password = secrets.token_urlsafe(12)
        self.htpasswd_path.touch()
        if auth:
            self.add_user(self.username, self.password)
        self.config_path.write_text(json.dumps(self._config(
            auth, notifications_url, notifications_token, log_format), indent=2))  # JSON is YAML
        argv = [binary("docker-registry"), "serve", str(self.config_path)]
        output = self.log_path
        if rotatable_log:  # the log goes through logpipe.py, which can rotate it (see rotate_log)
            argv = [sys.executable, str(Path(__file__).with_name("logpipe.py")), str(self.log_path), "--", *argv]
            output = workdir / "logpipe.out"
        self.process = Process(
            "registry", argv, output, lambda: tcp_open(addr, port), netns=netns.name if netns else None,
        )

    def _config(self, auth: bool, notify_url: str | None, notify_token: str | None,
                log_format: str) -> dict[str, Any]:
        http: dict[str, Any] = {"addr": self.host_port, "secret": secrets.token_hex(16)}
        if self.tls:
            http["tls"] = {"certificate": str(self.tls.certificate), "key": str(self.tls.key)}
            if self.tls.clientcas:
                http["tls"]["clientcas"] = [str(path) for path in self.tls.clientcas]
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "info", "formatter": log_format},
            "storage": {"filesystem": {"rootdirectory": str(self.workdir / "storage")},
                        "delete": {"enabled": True}},
            "http": http,
        }
        if auth:
            config["auth"] = {"htpasswd": {"realm": "regwarden-test", "path": str(self.htpasswd_path)}}
        if notify_url:
            headers = {"Authorization": [f"Bearer {notify_token}"]} if notify_token else {}
            config["notifications"] = {"endpoints": [{
                "name": "regwarden", "url": notify_url, "headers": headers,
                "timeout": "2s", "threshold": 3, "backoff": "1s",
            }]}
        return config

    @property
    def auth_config(self) -> dict[str, str]:
        """The default user's credentials as docker-py `auth_config`."""
        return {"username": self.username, "password": self.password}

    def add_user(self, name: str, password: str) -> None:
        """Add or replace a bcrypt htpasswd entry (the running registry re-reads the file)."""
        subprocess.run([binary("htpasswd"), "-B", "-b", str(self.htpasswd_path), name, password],
                       check=True, capture_output=True)

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()

    def rotate_log(self, how: str) -> None:
        """Rotate `.log_path` while the registry runs (needs `rotatable_log=True`): "rename" moves it to
        `.log_path.1` and has the writer reopen it; "copytruncate" copies it there and truncates it."""
        done = self.log_path.with_name(self.log_path.name + ".done")
        before = done.read_text().count("\n") if done.exists() else 0
        if how == "rename":
            os.replace(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))
        assert self.process.pid is not None
        os.kill(self.process.pid, signal.SIGHUP if how == "rename" else signal.SIGUSR1)
        wait_for(f"log {how}", lambda: done.read_text().count("\n") > before, 10, self.process)


# --------------------------------------------------------------------------------------- Alertmanager


class Alertmanager:
    """prometheus-alertmanager with a do-nothing receiver; API v2 at `.url + "/api/v2/alerts"`."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(json.dumps(
            {"route": {"receiver": "none", "group_wait": "1s"}, "receivers": [{"name": "none"}]}))
        self.process = Process(
            "alertmanager",
            [binary("prometheus-alertmanager"), f"--config.file={self.config_path}",
             f"--storage.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--cluster.listen-address="],
            workdir / "alertmanager.log",
            lambda: http_status(f"{self.url}/-/ready") == 200,
        )

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()
