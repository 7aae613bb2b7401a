"""`regwarden run` as systemd runs it: notify protocol, signals, HTTP endpoints, degraded start."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.harness import daemon_table, secret_file

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Notifications:
    """A bound datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.seen: list[str] = []

    def wait_for(self, field: str, timeout: float = 20.0) -> list[str]:
        """Read datagrams until one carries `field`; returns that datagram's lines."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.seen.append(data)
            lines = data.split("\n")
            if field in lines or any(line.startswith(field) for line in lines):
                return lines
        raise AssertionError(f"no {field!r} within {timeout}s; saw {self.seen}")


def _write_config(tmp_path: Path, port: int, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(daemon_table(tmp_path, port) + extra)
    return path


@pytest.fixture
def daemon_env(tmp_path: Path) -> Iterator[tuple[Notifications, dict[str, str]]]:
    notes = Notifications(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(notes.path), "WATCHDOG_USEC": "1000000",
           "PYTHONPATH": str(REPO / "daemon") + os.pathsep + str(REPO / "plugins")}
    env.pop("WATCHDOG_PID", None)
    yield notes, env
    notes.sock.close()


def _start(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "regwarden", "run", "-c", str(config)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def test_notify_protocol_signals_and_endpoints(
        tmp_path: Path, daemon_env: tuple[Notifications, dict[str, str]]) -> None:
    """READY, WATCHDOG, RELOADING after SIGHUP, STOPPING and exit 0 after SIGTERM, /metrics served between."""
    notes, env = daemon_env
    port = _free_port()
    proc = _start(_write_config(tmp_path, port), env, tmp_path / "daemon.log")
    try:
        ready = notes.wait_for("READY=1")
        assert f"MAINPID={proc.pid}" in ready
        assert any(line.startswith("STATUS=ready") for line in ready)
        notes.wait_for("WATCHDOG=1", timeout=5)
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert metrics.status_code == 200
        assert "regwarden_config_last_reload_successful 1.0" in metrics.text
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200

        proc.send_signal(signal.SIGHUP)
        reloading = notes.wait_for("RELOADING=1")
        assert any(line.startswith("MONOTONIC_USEC=") and int(line.split("=")[1]) > 0 for line in reloading)
        notes.wait_for("READY=1")
        notes.wait_for("WATCHDOG=1", timeout=5)

        proc.send_signal(signal.SIGTERM)
        notes.wait_for("STOPPING=1")
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _cli(config: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "regwarden", *args, "-c", str(config)], env=env,
                          capture_output=True, text=True, timeout=60)


def test_local_api_status_and_reload(tmp_path: Path, daemon_env: tuple[Notifications, dict[str, str]]) -> None:
    """`regwarden status` and `regwarden reload` reach the daemon through a 0600 unix socket."""
    notes, env = daemon_env
    config = _write_config(tmp_path, _free_port())
    proc = _start(config, env, tmp_path / "daemon.log")
    try:
        notes.wait_for("READY=1")
        sock = tmp_path / "state" / "regwarden.sock"
        assert sock.stat().st_mode & 0o777 == 0o600
        answer = _cli(config, env, "status", "--json")
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout)["pid"] == proc.pid
        human = _cli(config, env, "status")
        assert "ready" in human.stdout.splitlines()[0]
        reloaded = _cli(config, env, "reload")
        assert (reloaded.returncode, reloaded.stdout.strip()) == (0, "configuration reloaded")
        config.write_text(config.read_text() + "bogus = 1\n")
        refused = _cli(config, env, "reload")
        assert refused.returncode == 1
        assert "daemon.bogus: unknown key" in refused.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not sock.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stopped = _cli(config, env, "status")
    assert stopped.returncode == 1 and "not running" in stopped.stderr


def test_invalid_reload_keeps_old_config(tmp_path: Path, daemon_env: tuple[Notifications, dict[str, str]]) -> None:
    """SIGHUP with a broken config keeps the daemon serving on the old one and sets the reload metric to 0."""
    notes, env = daemon_env
    port = _free_port()
    config = _write_config(tmp_path, port)
    log = tmp_path / "daemon.log"
    proc = _start(config, env, log)
    try:
        notes.wait_for("READY=1")
        config.write_text(config.read_text() + "unknown_key = 1\n")
        proc.send_signal(signal.SIGHUP)
        notes.wait_for("RELOADING=1")
        notes.wait_for("READY=1")
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "regwarden_config_last_reload_successful 0.0" in metrics
        status = requests.get(f"http://127.0.0.1:{port}/status", timeout=5).json()
        assert "daemon.unknown_key: unknown key" in status["config"]["last_reload_error"]
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "config_reload_failed" in log.read_text()


def test_unreachable_dependencies_mean_not_ready_not_crash(
        tmp_path: Path, daemon_env: tuple[Notifications, dict[str, str]]) -> None:
    """With Vault, Docker and a registry unreachable the daemon serves and /readyz says why."""
    notes, env = daemon_env
    port, dead = _free_port(), _free_port()
    token = secret_file(tmp_path / "token", "not-a-real-token")
    extra = (f'\n[vault]\naddress = "http://127.0.0.1:{dead}"\nauth = {{ method = "token", token_file = "{token}" }}\n'
             f'\n[docker]\nhost = "unix://{tmp_path}/no-docker.sock"\n'
             f'\n[[registries]]\nname = "gone"\nurl = "http://127.0.0.1:{dead}"\n')
    proc = _start(_write_config(tmp_path, port, extra), env, tmp_path / "daemon.log")
    try:
        notes.wait_for("READY=1")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            answer = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            if all(part in answer.text for part in ("vault:", "docker:", "registry:gone:")):
                break
            time.sleep(0.2)
        assert answer.status_code == 503
        assert "vault: connection failed" in answer.text
        assert "docker: engine not reachable" in answer.text
        assert "registry:gone: connect: connection refused" in answer.text
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
