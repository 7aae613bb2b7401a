"""Rotation by real `regwarden run` processes: a fleet of three under a pull loop, and SIGKILL at every step."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from regwarden.rotation.journal import CRASH_HOOK_ENV
from tests.integration.harness import (
    DockerEngine,
    OpenBaoDev,
    RegistryServer,
    daemon_table,
    free_port,
    pull_image,
    push_image,
    secret_file,
    wait_for,
)

pytestmark = pytest.mark.integration

_VAULT_SAMPLE = re.compile(r"^regwarden_vault_(?:requests_total|node_failures_total)\{[^}]*\} ([0-9.e+]+)$", re.M)

REPO = Path(__file__).resolve().parents[3]
STEPS = ["locking", "generating", "generated", "verified", "publishing", "published", "overlap", "revoking",
         "unlocking"]


@dataclass
class Instance:
    """One host: its own state dir, Docker client config and `regwarden run` process."""

    workdir: Path
    config: Path
    credential: str
    registry: RegistryServer
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_json(self) -> Path:
        return self.workdir / "docker" / "config.json"

    def start(self, env: dict[str, str] | None = None) -> None:
        log = (self.workdir / "daemon.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "regwarden", "run", "-c", str(self.config)], stdout=log, stderr=log,
            env={**os.environ, "PYTHONPATH": f"{REPO / 'daemon'}{os.pathsep}{REPO / 'plugins'}", **(env or {})})

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def auth(self) -> dict[str, str] | None:
        """The credential this host's Docker config holds for the registry."""
        try:
            doc = json.loads(self.config_json.read_text())
        except (OSError, ValueError):
            return None
        entry = doc.get("auths", {}).get(self.registry.host_port)
        if not entry:
            return None
        username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        return {"username": username, "password": password}

    @property
    def port(self) -> int:
        """The port of this host's HTTP endpoint (/metrics, /status)."""
        found = re.search(r'^listen = "127\.0\.0\.1:(\d+)"$', self.config.read_text(), re.M)
        assert found, f"no listen address in {self.config}"
        return int(found.group(1))

    def status(self) -> dict[str, Any]:
        return dict(requests.get(f"http://127.0.0.1:{self.port}/status", timeout=10).json())

    def vault_requests(self) -> float:
        """Requests this host sent to Vault so far: one per logical request, plus each failed attempt on a
        node before the client moved on (`regwarden_vault_requests_total` + `..._node_failures_total`);
        0 while the host does not answer."""
        try:
            text = requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text
        except requests.RequestException:
            return 0.0
        return sum(float(value) for value in _VAULT_SAMPLE.findall(text))

    def open_rotations(self) -> int:
        db = sqlite3.connect(self.workdir / "state" / "state.db")
        try:
            return int(db.execute("SELECT count(*) FROM rotations WHERE step NOT IN"
                                  " ('done', 'rolled_back', 'failed')").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()

    def rotate_now(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "regwarden", "rotate", self.credential, "-c", str(self.config)],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": f"{REPO / 'daemon'}{os.pathsep}{REPO / 'plugins'}"})


def fleet_host(workdir: Path, index: int, *, vault: list[str], token: Path, dockerd: DockerEngine,
               registry: RegistryServer, name: str, rotate_every: str, watch_interval: str = "2s",
               overlap: str = "5s") -> Instance:
    """One host of a fleet sharing credential `name` (htpasswd provider) on `registry`, Vault at `vault`."""
    (workdir / "docker").mkdir(parents=True)
    config = workdir / "regwarden.toml"
    config.write_text(daemon_table(workdir, free_port(), host=f"host-{index}") + f"""
[vault]
address = {json.dumps(vault)}
auth = {{ method = "token", token_file = "{token}" }}
lock_path = "secret/regwarden-fleet/locks"
timeout = "3s"
retry_max = "10s"

[docker]
host = "{dockerd.host}"
client_configs = ["{workdir / 'docker' / 'config.json'}"]
certs_dir = "{workdir / 'certs.d'}"

[[registries]]
name = "internal"
url = "{registry.url}"
credential = "{name}"
probe_interval = "1m"

[[credentials]]
name = "{name}"
provider = "htpasswd"
vault_path = "secret/regwarden-fleet/{name}"
watch_interval = "{watch_interval}"
rotate_every = "{rotate_every}"
overlap = "{overlap}"
htpasswd = {{ file = "{registry.htpasswd_path}", usernames = ["{name}-a", "{name}-b"] }}
""")
    return Instance(workdir, config, name, registry)


@pytest.fixture
def fleet(tmp_path: Path, openbao: OpenBaoDev, dockerd: DockerEngine, tiny_image: str,
          registry_factory: Callable[..., RegistryServer]) -> Iterator[Callable[..., list[Instance]]]:
    registry = registry_factory(auth=True)
    push_image(dockerd.client(), registry.host_port, "fleet/tiny", "1", auth=registry.auth_config)
    token = secret_file(tmp_path / "vault-token", openbao.token)
    made: list[Instance] = []

    def make(count: int, *, name: str, rotate_every: str, watch_interval: str = "2s",
             overlap: str = "5s") -> list[Instance]:
        for index in range(count):
            made.append(fleet_host(tmp_path / f"host-{index}", index, vault=[openbao.address], token=token,
                                   dockerd=dockerd, registry=registry, name=name, rotate_every=rotate_every,
                                   watch_interval=watch_interval, overlap=overlap))
        return made[-count:]

    yield make
    for instance in made:
        instance.stop()


def _kv(openbao: OpenBaoDev, name: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
    client = openbao.client()
    meta = client.secrets.kv.v2.read_secret_metadata(path=f"regwarden-fleet/{name}", mount_point="secret")["data"]
    data = client.secrets.kv.v2.read_secret_version(path=f"regwarden-fleet/{name}", mount_point="secret",
                                                    raise_on_deleted_version=True)["data"]["data"]
    return int(meta["current_version"]), data, meta


def _works(registry: RegistryServer, auth: dict[str, str] | None) -> bool:
    return auth is not None and requests.get(f"{registry.url}/v2/", auth=(auth["username"], auth["password"]),
                                             timeout=5).status_code == 200


def _slot_users(registry: RegistryServer, name: str) -> set[str]:
    return {line.split(":", 1)[0] for line in registry.htpasswd_path.read_text().splitlines()
            if line.startswith(f"{name}-")}


def _converged(instances: list[Instance], openbao: OpenBaoDev) -> bool:
    _, data, _ = _kv(openbao, instances[0].credential)
    return all(i.auth() == {"username": data["username"], "password": data["password"]} for i in instances)


def test_three_hosts_rotate_once_per_period_with_zero_failed_pulls(
        fleet: Callable[..., list[Instance]], openbao: OpenBaoDev, dockerd: DockerEngine) -> None:
    """Rotation every 20 s for 3 minutes on three hosts: one rotation per period, all converge, no pull fails."""
    hosts = fleet(3, name="fleet3", rotate_every="20s")
    for host in hosts:
        host.start()
    wait_for("every host holds the first version", lambda: _kv_exists(openbao) and _converged(hosts, openbao),
             timeout=60)
    first_version = _kv(openbao, "fleet3")[0]
    client = dockerd.client()
    reference = f"{hosts[0].registry.host_port}/fleet/tiny:1"
    stop = threading.Event()
    pulls: list[tuple[str, bool, str]] = []

    def pull_loop(host: Instance) -> None:
        while not stop.is_set():
            auth = host.auth()
            try:
                pull_image(client, reference, auth)
                pulls.append((host.workdir.name, True, ""))
            except Exception as exc:
                pulls.append((host.workdir.name, False, f"{type(exc).__name__}: {exc}"[:200]))
            stop.wait(0.5)

    threads = [threading.Thread(target=pull_loop, args=(h,), daemon=True) for h in hosts]
    for thread in threads:
        thread.start()
    time.sleep(180)
    stop.set()
    for thread in threads:
        thread.join(30)
    wait_for("every host converged on the last version", lambda: _converged(hosts, openbao), timeout=15)
    version, _, meta = _kv(openbao, "fleet3")
    for host in hosts:
        host.stop()

    failures = [p for p in pulls if not p[1]]
    assert not failures, failures[:5]
    assert len(pulls) > 3 * 150
    created = sorted(datetime.fromisoformat(v["created_time"].replace("Z", "+00:00"))
                     for n, v in meta["versions"].items() if int(n) >= first_version)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(created)]
    assert 7 <= version - first_version <= 10, gaps
    assert all(19.5 <= gap <= 30 for gap in gaps), gaps  # exactly one rotation per 20 s period
    usernames = [openbao.client().secrets.kv.v2.read_secret_version(
        path="regwarden-fleet/fleet3", mount_point="secret", version=v,
        raise_on_deleted_version=True)["data"]["data"]["username"]
        for v in range(first_version, version + 1)]
    assert all(a != b for a, b in itertools.pairwise(usernames)), usernames  # slots alternate
    assert _slot_users(hosts[0].registry, "fleet3") <= {"fleet3-a", "fleet3-b"}


def _kv_exists(openbao: OpenBaoDev) -> bool:
    try:
        _kv(openbao, "fleet3")
    except Exception:
        return False
    return True


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_each_step_leaves_a_working_credential(
        fleet: Callable[..., list[Instance]], openbao: OpenBaoDev, step: str) -> None:
    """SIGKILL right after a step is journalled; after restart Vault, htpasswd and config.json all work."""
    name = f"kill-{STEPS.index(step)}"
    host = fleet(1, name=name, rotate_every="1h", watch_interval="1s", overlap="3s")[0]
    host.start()
    wait_for("the first version is applied", lambda: host.auth() is not None and host.open_rotations() == 0,
             timeout=60)
    before = _kv(openbao, name)[0]
    host.stop()

    host.start(env={CRASH_HOOK_ENV: f"{name}:{step}"})
    assert host.process is not None
    wait_for("the daemon is up", (host.workdir / "state" / "regwarden.sock").exists, timeout=30)
    host.rotate_now()
    assert host.process.wait(60) == -signal.SIGKILL, "the crash hook fired"
    host.process = None

    host.start()
    wait_for("the interrupted rotation is finished or rolled back", lambda: host.open_rotations() == 0,
             timeout=60)
    wait_for("config.json holds Vault's current version",
             lambda: host.auth() == {k: _kv(openbao, name)[1][k] for k in ("username", "password")}, timeout=30)
    version, data, _ = _kv(openbao, name)
    published = STEPS.index(step) >= STEPS.index("published")
    assert version == before + (1 if published else 0)
    assert _works(host.registry, host.auth())
    users = _slot_users(host.registry, name)
    assert data["username"] in users and len(users) <= 2
    wait_for("only the live slot is left", lambda: _slot_users(host.registry, name) == {data["username"]},
             timeout=30)
    lock = openbao.client().secrets.kv.v2.read_secret_version(
        path=f"regwarden-fleet/locks/{name}", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
    assert lock["holder"] == "", "the rotation lock is released"
    host.stop()
