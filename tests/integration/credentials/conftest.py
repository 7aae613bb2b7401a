"""Credentials domain: a real `Daemon` wired to OpenBao, a registry and a private dockerd.

`CredentialsHost` writes a regwarden config for one credential (consume-only, `vault-kv`), runs the
daemon in-process (HTTP listener on a free port), and reads back what the daemon wrote to the Docker
client `config.json`. The Vault side uses the consume-only policy the README documents.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from regwarden.config import load_config
from regwarden.daemon import Daemon
from regwarden.docker.client_config import registry_key
from regwarden.events import Event, Signal
from tests.integration.harness import RegistryServer, daemon_table, free_port, push_image, secret_file, wait_for

# the policy README.md documents for consume-only credentials under secret/regwarden/
CONSUME_POLICY = """
path "secret/metadata/regwarden/*" { capabilities = ["read"] }
path "secret/data/regwarden/*"     { capabilities = ["read"] }
"""


def consume_policy(client: Any) -> str:
    client.sys.create_or_update_policy("regwarden-consume", CONSUME_POLICY)
    return "regwarden-consume"


def approle_login_files(client: Any, workdir: Path, *, token_ttl: str, token_max_ttl: str) -> dict[str, str]:
    """Enable AppRole (once), create role `regwarden` with the consume policy; role-id/secret-id files."""
    if "approle/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method("approle")
    client.auth.approle.create_or_update_approle(
        "regwarden", token_policies=[consume_policy(client)], token_ttl=token_ttl, token_max_ttl=token_max_ttl)
    role_id = client.auth.approle.read_role_id("regwarden")["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id("regwarden")["data"]["secret_id"]
    secret_file(workdir / "role-id", role_id)
    secret_file(workdir / "secret-id", secret_id)
    return {"method": "approle", "role_id_file": str(workdir / "role-id"),
            "secret_id_file": str(workdir / "secret-id")}


def token_file_auth(client: Any, workdir: Path) -> dict[str, str]:
    """A renewable token with the consume policy, in a 0600 file."""
    token = client.auth.token.create(policies=[consume_policy(client)], ttl="1h", renewable=True)
    secret_file(workdir / "vault-token", token["auth"]["client_token"])
    return {"method": "token", "token_file": str(workdir / "vault-token")}


@dataclass
class CredentialsHost:
    """One regwarden host: config, daemon, captured bus items, and the Docker client config it manages."""

    workdir: Path
    vault_address: str
    vault: Any  # root hvac client, to write KV versions
    registry: RegistryServer
    docker_host: str
    auth: dict[str, str]
    watch_interval: str = "2s"
    retry_max: str = "5m"
    listen: str = ""
    name: str = field(default_factory=lambda: "ci-" + secrets.token_hex(3))
    daemon: Daemon | None = None
    items: list[Event | Signal] = field(default_factory=list)
    _items_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def kv_path(self) -> str:
        return f"regwarden/{self.name}"

    @property
    def config_json(self) -> Path:
        return self.workdir / "docker" / "config.json"

    def write_config(self) -> Path:
        self.listen = f"127.0.0.1:{free_port()}"
        auth = ", ".join(f'{k} = "{v}"' for k, v in self.auth.items())
        path = self.workdir / "regwarden.toml"
        path.write_text(daemon_table(self.workdir, self.listen, log_level="debug", host="test-host") + f"""
[vault]
address = "{self.vault_address}"
timeout = "2s"
retry_max = "{self.retry_max}"
auth = {{ {auth} }}

[docker]
host = "{self.docker_host}"
client_configs = ["{self.config_json}"]
certs_dir = "{self.workdir / 'certs.d'}"

[[registries]]
name = "internal"
url = "{self.registry.url}"
credential = "{self.name}"
expect_auth = true

[[credentials]]
name = "{self.name}"
provider = "vault-kv"
vault_path = "secret/{self.kv_path}"
watch_interval = "{self.watch_interval}"
""")
        return path

    def put(self, username: str, password: str, *, register: bool = True) -> int:
        """Write a new KV version (and, if `register`, make the registry accept it); returns the version."""
        if register:
            self.registry.add_user(username, password)
        resp = self.vault.secrets.kv.v2.create_or_update_secret(
            path=self.kv_path, secret={"username": username, "password": password}, mount_point="secret")
        return int(resp["data"]["version"])

    def start(self) -> Daemon:
        config_path = self.write_config()
        self.daemon = Daemon(config_path, load_config(config_path))
        self.daemon.ctx.bus.subscribe("test-recorder", self._record)
        self.daemon.start()
        return self.daemon

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def _record(self, item: Event | Signal) -> None:
        with self._items_lock:
            self.items.append(item)

    def events(self, kind: str) -> list[Event]:
        with self._items_lock:
            return [i for i in self.items if isinstance(i, Event) and i.kind == kind]

    def signals(self, alertname: str) -> list[Signal]:
        with self._items_lock:
            return [i for i in self.items if isinstance(i, Signal) and i.labels.get("alertname") == alertname]

    # ------------------------------------------------------------------ reading back

    def applied_auth(self) -> tuple[str, str] | None:
        """(username, password) in config.json for the registry, or None."""
        try:
            doc = json.loads(self.config_json.read_text())
        except FileNotFoundError:
            return None
        entry = doc.get("auths", {}).get(registry_key(self.registry.url))
        if not entry:
            return None
        user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        return user, password

    def wait_applied(self, username: str, timeout: float = 20) -> float:
        """Wait until config.json holds `username`; returns the monotonic time it was first seen."""
        wait_for(f"{username} in config.json", lambda: (self.applied_auth() or ("",))[0] == username, timeout)
        return time.monotonic()

    def http(self, path: str) -> requests.Response:
        return requests.get(f"http://{self.listen}{path}", timeout=5)

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = self.http("/status").json()["components"]["credentials"]
        return data

    def metric(self, name: str) -> float | None:
        for line in self.http("/metrics").text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None


@pytest.fixture
def credentials_host(tmp_path: Path, openbao: Any, registry: RegistryServer, dockerd: Any,
                     tiny_image: str) -> Iterator[Callable[..., CredentialsHost]]:
    """Make a `CredentialsHost` against the session's OpenBao dev server, registry and dockerd."""
    hosts: list[CredentialsHost] = []

    def make(**overrides: Any) -> CredentialsHost:
        root = openbao.client()
        options: dict[str, Any] = {"workdir": tmp_path, "vault_address": openbao.address, "vault": root,
                                   "registry": registry, "docker_host": dockerd.host}
        options.update(overrides)
        options.setdefault("auth", token_file_auth(root, tmp_path))
        hosts.append(CredentialsHost(**options))
        return hosts[-1]

    try:
        yield make
    finally:
        for host in hosts:
            host.stop()


@pytest.fixture(scope="session")
def pushed_image(dockerd: Any, registry: RegistryServer, tiny_image: str) -> str:
    """tiny:1 pushed to the session registry as HOST:PORT/creds/tiny:1 (pulls need a valid login)."""
    client = dockerd.client()
    try:
        return push_image(client, registry.host_port, "creds/tiny", "1", auth=registry.auth_config)
    finally:
        client.close()
