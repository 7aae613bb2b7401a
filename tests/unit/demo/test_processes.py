"""The demo's child processes: started in their own group, stopped with every child they made."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from regwarden.demo.processes import Service, ServiceFailed, Services


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    """A service that forked a background child leaves neither behind after stop()."""
    pidfile = tmp_path / "child.pid"
    service = Service("forker", ["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], tmp_path / "log",
                      ready=lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    service.start()
    leader, child = service.pid, int(pidfile.read_text())
    assert leader is not None and _alive(leader) and _alive(child)
    service.stop()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:  # reparented to init, reaped there
        time.sleep(0.05)
    assert not _alive(leader) and not _alive(child)


def test_a_service_that_exits_early_fails_with_its_log(tmp_path: Path) -> None:
    """A program that dies before it is ready raises ServiceFailed carrying the tail of its output."""
    service = Service("broken", ["sh", "-c", "echo cannot bind port; exit 3"], tmp_path / "log",
                      ready=lambda: False)
    with pytest.raises(ServiceFailed, match="cannot bind port"):
        service.start()
    assert not service.running


def test_stop_all_stops_newest_first_and_runs_after_stop(tmp_path: Path) -> None:
    """Services stop in reverse start order, each one's after_stop hook runs, and nothing is left."""
    order: list[str] = []
    services = Services()
    for name in ("first", "second"):
        services.start(Service(name, ["sleep", "300"], tmp_path / f"{name}.log", ready=lambda: True,
                               after_stop=lambda n=name: order.append(n)))
    pids = list(services.pids().values())
    assert services.stop_all() == []
    assert order == ["second", "first"]
    assert not any(_alive(pid) for pid in pids) and services.pids() == {}
