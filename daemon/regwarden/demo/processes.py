"""Child processes of `regwarden demo`: started in their own process group, stopped with their children.

Each `Service` is one long-running program (OpenBao, a registry, dockerd) whose output goes to a log
file; it counts as started when its readiness probe answers. `Services` stops them in reverse order of
start, whatever happened in between (Ctrl-C, SIGTERM, an exception), so the demo leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["Service", "ServiceFailed", "Services", "free_port", "tcp_open", "wait_until"]


class ServiceFailed(RuntimeError):
    """A service did not become ready (its log tail is in the message)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def tcp_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(what: str, probe: Callable[[], bool], timeout: float, service: Service | None = None) -> None:
    """Poll `probe` (an exception counts as "not yet") until it holds; fail early if `service` exited."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if probe():
                return
        if service is not None and not service.running:
            raise ServiceFailed(f"{service.name} exited while waiting for {what}:\n{service.log_tail()}")
        if time.monotonic() > deadline:
            tail = f":\n{service.log_tail()}" if service is not None else ""
            raise ServiceFailed(f"timed out after {timeout:.0f}s waiting for {what}{tail}")
        time.sleep(0.1)


class Service:
    """One program in its own session and process group, stdout and stderr appended to `log_path`."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, ready: Callable[[], bool], *,
                 env: Mapping[str, str] | None = None, start_timeout: float = 60.0,
                 stop_timeout: float = 10.0, after_stop: Callable[[], None] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.ready = ready
        self.env = {**os.environ, **(env or {})}
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.after_stop = after_stop
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def start(self) -> None:
        """Spawn the program and wait until it is ready; on failure stop it and raise ServiceFailed."""
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        try:
            wait_until(f"{self.name} to be ready", self.ready, self.start_timeout, self)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM the process group, wait, SIGKILL what is left; then run `after_stop`."""
        popen, self._popen = self._popen, None
        if popen is not None:
            for sig, wait in ((signal.SIGTERM, self.stop_timeout), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(wait)
                    break
            with contextlib.suppress(ProcessLookupError):  # children that outlived the leader
                os.killpg(popen.pid, signal.SIGKILL)
        if self.after_stop is not None:
            self.after_stop()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Services:
    """The services started so far; `stop_all` stops them newest first and never raises."""

    def __init__(self) -> None:
        self._started: list[Service] = []

    def start(self, service: Service) -> Service:
        service.start()
        self._started.append(service)
        return service

    def pids(self) -> dict[str, int]:
        return {s.name: s.pid for s in self._started if s.pid is not None}

    def stop_all(self) -> list[str]:
        """Stop every service; returns the names of those whose stop failed (after trying all)."""
        failed = []
        while self._started:
            service = self._started.pop()
            try:
                service.stop()
            except Exception:
                failed.append(service.name)
        return failed
