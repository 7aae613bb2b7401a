"""`regwarden demo` in a pseudo-terminal: a newcomer sees rotation, audit records and an alert, and
stopping it leaves no process and no directory behind."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.harness import binary

pytestmark = pytest.mark.integration

REGWARDEN = str(Path(sys.executable).parent / "regwarden")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _require_sandbox_parts() -> None:
    for name in ("bao", "docker-registry", "dockerd", "busybox"):
        binary(name)


def _descendants(pid: int) -> set[int]:
    """Every process whose parent chain leads to `pid` (read from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


class Terminal:
    """`regwarden demo` on the slave side of a pty; everything it prints is collected in `.text`."""

    def __init__(self, *argv: str) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: becomes the demo
            os.execv(REGWARDEN, [REGWARDEN, *argv])
        self.text = ""
        self.returncode: int | None = None

    def read_until(self, done: re.Pattern[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done.search(self.text):
                return True
            ready, _, _ = select.select([self.fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    return bool(done.search(self.text))
                self.text += ANSI.sub("", chunk.decode(errors="replace"))
        return bool(done.search(self.text))

    def wait(self, timeout: float) -> int | None:
        """The exit code once the demo exited (draining its output meanwhile), None on timeout."""
        deadline = time.monotonic() + timeout
        while self.returncode is None:
            self.read_until(re.compile(r"(?!)"), 0.2)  # keep draining so the child never blocks on output
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
            elif time.monotonic() > deadline:
                break
        return self.returncode

    def kill(self) -> None:
        if self.wait(0) is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def test_demo_shows_rotation_audit_and_alert_then_ctrl_c_cleans_up() -> None:
    """Within 60 s the demo's terminal shows a rotation, an audit record and a firing alert; Ctrl-C then
    stops every process it started and removes its temporary directory."""
    _require_sandbox_parts()
    term = Terminal("demo", "--burst-after", "5")
    try:
        wanted = {name: re.compile(pattern) for name, pattern in {
            "rotation": r"audit #\d+\s+credential\.rotated",
            "apply": r"credential_applied",
            "audit record": r"audit #\d+\s+image\.push",
            "alert": r"alert_firing\s+alertname=RegistryAuthFailureBurst",
        }.items()}
        deadline = time.monotonic() + 60
        for name, pattern in wanted.items():
            assert term.read_until(pattern, deadline - time.monotonic()), f"no {name} within 60 s:\n{term.text[-3000:]}"
        sandbox = Path(re.search(r"demo: sandbox in (\S+)", term.text).group(1))
        started = {int(pid) for pid in re.findall(r"demo: started \S+ \(pid (\d+)\)", term.text)}
        assert sandbox.is_dir() and len(started) == 3
        children = _descendants(term.pid)
        assert started <= children

        os.write(term.fd, b"\x03")  # Ctrl-C
        assert term.wait(30) == 0, term.text[-3000:]
    finally:
        term.kill()
    assert f"demo: stopped; removed {sandbox}" in term.text
    assert not sandbox.exists()
    assert [pid for pid in children if _alive(pid)] == []
    assert _processes_mentioning(str(sandbox)) == []


def test_sigterm_cleans_up_too() -> None:
    """SIGTERM while the daemon runs stops the demo with exit 0, leaving no process and no directory."""
    _require_sandbox_parts()
    proc = subprocess.Popen([REGWARDEN, "demo"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "daemon_started" in line:
                break
        sandbox = Path(re.search(r"demo: sandbox in (\S+)", "".join(lines)).group(1))
        children = _descendants(proc.pid)
        assert len(children) >= 3
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(lines) + rest
    assert f"demo: stopped; removed {sandbox}" in rest
    assert not sandbox.exists()
    assert [pid for pid in children if _alive(pid)] == []
    assert _processes_mentioning(str(sandbox)) == []
