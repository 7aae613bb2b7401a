"""Test support for the audit sources: a real Context whose bus collects what the sources emit.

Used by tests/unit/sources and tests/integration/audit.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from regwarden.bus import Bus
from regwarden.component import Context
from regwarden.config import Config as _Config
from regwarden.config import DaemonConfig
from regwarden.events import Event, Signal
from regwarden.metrics import Metrics
from regwarden.state import StateStore


class Collected:
    """Every Event the bus dispatched, in order."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, item: Event | Signal) -> None:
        if isinstance(item, Event):
            with self._lock:
                self.events.append(item)

    def of(self, source: str | None = None, kind: str | None = None) -> list[Event]:
        with self._lock:
            return [e for e in self.events if (source is None or e.source == source)
                    and (kind is None or e.kind == kind)]

    def wait(self, what: str, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}; got {len(self.events)} events")
            time.sleep(0.02)

    def rejected(self, source: str, reason: str) -> float:
        value = self.ctx.metrics.registry.get_sample_value(
            "regwarden_input_rejected_total", {"source": source, "reason": reason})
        return value or 0.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def make_context(state_dir: Path, host: str = "testhost") -> Iterator[Collected]:
    metrics = Metrics()
    state = StateStore(state_dir)
    bus = Bus(metrics)
    ctx = Context(config=_Config(daemon=DaemonConfig(state_dir=state_dir)), metrics=metrics, state=state,
                  bus=bus, scheduler=BackgroundScheduler(timezone="UTC"), host=host)
    found = Collected(ctx)
    bus.subscribe("collect", found)
    bus.start()
    try:
        yield found
    finally:
        bus.stop(5.0)
        state.close()
