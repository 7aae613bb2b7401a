"""Shutdown order: producers stop first, the bus drains into consumers, consumers stop last."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from regwarden.component import Context, Health
from regwarden.config import parse_config
from regwarden.daemon import Daemon
from regwarden.events import Event


class Producer:
    name = "producer"

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.ctx: Context | None = None

    def start(self, ctx: Context) -> None:
        self.ctx = ctx

    def stop(self) -> None:
        assert self.ctx is not None
        for i in range(200):  # a source emits its last events while stopping
            self.ctx.emit(Event(source="docker", kind="container.start", time=datetime.now(UTC), id=str(i)))
        self.log.append("producer stopped")

    def health(self) -> Health:
        return Health(True)

    def status(self) -> dict[str, Any]:
        return {}


class Consumer:
    name = "consumer"
    bus_consumer = True

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.seen = 0

    def start(self, ctx: Context) -> None:
        ctx.bus.subscribe(self.name, self._handle)

    def _handle(self, item: object) -> None:
        self.seen += 1

    def stop(self) -> None:
        self.log.append(f"consumer stopped after {self.seen} events")

    def health(self) -> Health:
        return Health(True)

    def status(self) -> dict[str, Any]:
        return {}


def test_events_emitted_while_stopping_reach_consumers(tmp_path: Path) -> None:
    """Nothing a source emits while it stops is lost: consumers stop only after the bus is drained."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = parse_config({"daemon": {"state_dir": str(tmp_path / "state"), "audit_log": str(tmp_path / "a.jsonl"),
                                   "listen": f"127.0.0.1:{port}"}})
    daemon = Daemon(tmp_path / "c.toml", cfg)
    log: list[str] = []
    daemon.ctx.bus.start()
    consumer, producer = Consumer(log), Producer(log)
    daemon.components = [consumer, producer]
    for component in daemon.components:
        component.start(daemon.ctx)
    daemon._stop_components()
    assert log == ["producer stopped", "consumer stopped after 200 events"]
    daemon.ctx.bus.stop(1)
    daemon.http.stop()
    daemon.ctx.state.close()


class Stuck(Producer):
    """A producer whose stop() hangs (a thread that never ends, a lock never released)."""

    name = "stuck"

    def stop(self) -> None:
        self.log.append("stuck stopping")
        time.sleep(30)


def test_a_stop_that_hangs_does_not_hold_up_the_shutdown(tmp_path: Path) -> None:
    """`Daemon.stop()` returns within `shutdown_timeout` though a producer's stop() hangs: the consumers
    are still stopped after the drain (with the other producer's last events); the hung stop is left on
    its own thread."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = parse_config({"daemon": {"state_dir": str(tmp_path / "state"), "audit_log": str(tmp_path / "a.jsonl"),
                                   "listen": f"127.0.0.1:{port}", "shutdown_timeout": "2s"}})
    daemon = Daemon(tmp_path / "c.toml", cfg)
    log: list[str] = []
    daemon.ctx.bus.start()
    daemon.ctx.scheduler.start()
    consumer = Consumer(log)
    daemon.components = [consumer, Producer(log), Stuck(log)]
    for component in daemon.components:
        component.start(daemon.ctx)
    began = time.monotonic()
    daemon.stop()
    assert time.monotonic() - began < 2.5
    assert log == ["stuck stopping", "producer stopped", "consumer stopped after 200 events"]
    assert "stop-stuck" in [t.name for t in threading.enumerate()]  # left to run on its own thread
