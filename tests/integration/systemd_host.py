"""A real systemd host for tests: Debian 12 booted by `systemd-nspawn --boot`, systemd as its PID 1.

The machine running the tests has no systemd as PID 1, so the service tests boot one: a minimal Debian
rootfs made by `mmdebstrap` from this machine's own apt sources (cached under CACHE, rebuilt when the
package list changes), mounted read-only under a per-boot overlay so every session starts clean, booted
with `systemd-nspawn --boot --register=no --keep-unit` (no machined, no D-Bus on the outside). The
container shares this machine's network, so it reaches the session's OpenBao and registry on loopback
and the tests reach the daemon's listener the same way. Commands run inside through `nsenter` into the
container's namespaces (`run`, `systemctl`, `journal`).

Recipe, by hand (README, contributor notes):
    mmdebstrap --variant=minbase --include=systemd,systemd-sysv,dbus,python3,python3-venv bookworm ROOT
    systemd-nspawn --boot --register=no --keep-unit --console=pipe --directory=ROOT
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.integration.harness import Process, binary, require, wait_for

__all__ = ["CACHE", "PACKAGES", "SystemdHost", "build_rootfs"]

CACHE = Path(os.environ.get("REGWARDEN_TEST_CACHE", "/var/cache/regwarden-tests")) / "systemd-host"
SUITE = "bookworm"
# What a Debian 12 Docker host has that regwarden's unit relies on, plus docker.io and openssh-server
# only so that `systemd-analyze security` can score their units beside ours (both left disabled).
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "ca-certificates", "iproute2", "procps",
    "docker.io", "openssh-server",
)
DISABLED_UNITS = ("docker.service", "docker.socket", "containerd.service", "ssh.service")
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")


def _apt_sources() -> str:
    """This machine's Debian sources (deb822), which reach the package mirror it is allowed to use."""
    if APT_SOURCES.exists():
        return APT_SOURCES.read_text()
    return "deb http://deb.debian.org/debian bookworm main\n"


def build_rootfs(log: Path) -> Path:
    """The cached rootfs for PACKAGES (built on first use, ~1-2 min; concurrent callers wait on a lock)."""
    sources = _apt_sources()
    key = hashlib.sha256("\n".join((SUITE, *PACKAGES, *DISABLED_UNITS, sources)).encode()).hexdigest()[:12]
    root = CACHE / f"debian-{SUITE}-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "usr/lib/systemd/systemd").exists():
            return root
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with log.open("ab") as out:
            subprocess.run(
                [binary("mmdebstrap"), "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
                 str(partial), "-"],
                input=sources.encode(), stdout=out, stderr=subprocess.STDOUT, check=True, timeout=900,
            )
            subprocess.run(["systemctl", f"--root={partial}", "disable", *DISABLED_UNITS],
                           stdout=out, stderr=subprocess.STDOUT, check=True, timeout=60)
        (partial / "etc/hostname").write_text("rwhost\n")
        partial.rename(root)
        return root


class SystemdHost:
    """One booted systemd container over an overlay of the cached rootfs (`workdir` holds its upper dir)."""

    def __init__(self, workdir: Path, *, binds: Mapping[str, str] | None = None,
                 binds_ro: Mapping[str, str] | None = None) -> None:
        self.workdir = workdir
        self.binds = dict(binds or {})
        self.binds_ro = dict(binds_ro or {})
        self.root = workdir / "root"
        self.log = workdir / "nspawn.log"
        self._mounted = False
        self._leader: int | None = None
        self.process: Process | None = None

    # ---------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        require("systemd-nspawn (package systemd-container)", shutil.which("systemd-nspawn") is not None)
        require("mmdebstrap", shutil.which("mmdebstrap") is not None)
        require("root (nspawn boots a container)", os.geteuid() == 0)
        lower = build_rootfs(self.workdir / "rootfs-build.log")
        for name in ("upper", "work", "root"):
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={lower},upperdir={self.workdir / 'upper'},workdir={self.workdir / 'work'}",
                        str(self.root)], check=True, capture_output=True, timeout=30)
        self._mounted = True
        argv = [binary("systemd-nspawn"), "--boot", "--register=no", "--keep-unit", "--console=pipe",
                "--machine=rwhost", f"--directory={self.root}",
                *(f"--bind={src}:{dst}" for src, dst in self.binds.items()),
                *(f"--bind-ro={src}:{dst}" for src, dst in self.binds_ro.items())]
        self.process = Process("systemd-host", argv, self.log, self._booted, start_timeout=120,
                               stop_timeout=30)
        try:
            self.process.start()
        except BaseException:
            self._unmount()
            raise

    def stop(self) -> None:
        if self.process is not None:
            leader = self._leader
            if leader is not None:  # an orderly poweroff first; Process.stop kills what is left
                with contextlib.suppress(ProcessLookupError):
                    os.kill(leader, signal.SIGRTMIN + 4)
                with contextlib.suppress(Exception):
                    wait_for("container poweroff", lambda: not self.process or not self.process.running, 30)
            self.process.stop()
            self.process = None
        self._leader = None
        self._unmount()

    def _unmount(self) -> None:
        if self._mounted:
            subprocess.run(["umount", "-l", str(self.root)], check=False, capture_output=True, timeout=30)
            self._mounted = False

    def _find_leader(self) -> int | None:
        """The container's PID 1 as seen from here: a descendant of nspawn named systemd, pid 1 inside."""
        assert self.process is not None and self.process.pid is not None
        todo = [self.process.pid]
        while todo:
            pid = todo.pop()
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
                if fields.get("Name", "").strip() == "systemd" and fields.get("NSpid", "").split()[-1:] == ["1"]:
                    return pid
                for task in Path(f"/proc/{pid}/task").iterdir():
                    children = (task / "children").read_text().split()
                    todo.extend(int(child) for child in children)
        return None

    def _booted(self) -> bool:
        if self._leader is None:
            self._leader = self._find_leader()
            if self._leader is None:
                return False
        state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
        return state in {"running", "degraded"}

    # ---------------------------------------------------------------------------------- commands

    def run(self, argv: Sequence[str], *, check: bool = True, input: str | None = None,
            timeout: float = 120, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the container (all its namespaces, a clean environment)."""
        assert self._leader is not None, "the systemd host is not booted"
        environment = [f"{key}={value}" for key, value in {"PATH": _PATH, "LANG": "C.UTF-8",
                                                             **(env or {})}.items()]
        result = subprocess.run(["nsenter", "-t", str(self._leader), "-a", "env", "-i", *environment, *argv],
                                input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {result.returncode} in the systemd host:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", "--no-pager", *args], check=check)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """`systemctl show -p ...` as a dict."""
        out = self.systemctl("show", unit, *(f"--property={name}" for name in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for_state(self, unit: str, states: set[str], timeout: float = 60) -> str:
        """Wait until the unit's ActiveState is one of `states`; return it."""
        seen: list[str] = []

        def reached() -> bool:
            seen.append(self.show(unit, "ActiveState")["ActiveState"])
            return seen[-1] in states

        try:
            wait_for(f"{unit} to be {'/'.join(sorted(states))}", reached, timeout)
        except Exception as error:
            raise AssertionError(f"{error}; last state {seen[-1:]}; log:\n{self.unit_log(unit)}") from None
        return seen[-1]

    def journal(self, *args: str) -> list[dict[str, Any]]:
        """journalctl `args` -o json, one dict an entry."""
        out = self.run(["journalctl", "--no-pager", "-o", "json", *args], check=False).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def unit_log(self, unit: str, lines: int = 60) -> str:
        """The last lines of the unit's journal, for failure messages."""
        return self.run(["journalctl", "--no-pager", "-u", unit, "-n", str(lines)], check=False).stdout

    def path(self, inside: str) -> Path:
        """Where `inside` (an absolute path in the container) is on this machine."""
        return self.root / inside.lstrip("/")

    def write(self, inside: str, text: str, mode: int = 0o600) -> None:
        """Write a file inside the container (parents created), root-owned with `mode`."""
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)
        os.chown(target, 0, 0)

