"""What the daemon runs: Components started with a shared Context, and supervised source threads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from .backoff import Backoff
from .bus import Bus
from .config import Config
from .events import Event, Signal
from .localapi import LocalApi
from .metrics import Metrics
from .state import StateStore

__all__ = ["Component", "Context", "Health", "SupervisedThread"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Health:
    ready: bool
    detail: str = ""


@dataclass
class Context:
    """Everything a component may use. Built once per daemon; `config` is replaced on reload."""

    config: Config
    metrics: Metrics
    state: StateStore
    bus: Bus
    scheduler: BackgroundScheduler
    host: str
    stopping: threading.Event = field(default_factory=threading.Event)
    # the local API (unix socket); components register the routes that change them
    api: LocalApi = field(default_factory=lambda: LocalApi(Path("/nonexistent/regwarden.sock")))
    # objects components share, built once on first use (e.g. the Vault client): see `shared_instance`
    shared: dict[str, Any] = field(default_factory=dict)
    _shared_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def shared_instance(self, key: str, build: Callable[[], Any]) -> Any:
        """The one object under `key`, built by `build()` the first time it is asked for."""
        with self._shared_lock:
            if key not in self.shared:
                self.shared[key] = build()
            return self.shared[key]

    def emit(self, event: Event) -> None:
        self.bus.publish(event)

    def emit_batch(self, events: Sequence[Event]) -> None:
        """Publish Events together (at most bus.MAX_BATCH): one bus item, one audit write."""
        self.bus.publish_batch(events)

    def checkpoint(self, done: Callable[[], None]) -> None:
        """Run `done()` once what was emitted before is in the audit log on disk (bus.Checkpoint): where a
        source stores its cursor."""
        self.bus.publish_checkpoint(done)

    def signal(self, signal: Signal) -> None:
        self.bus.publish(signal)


class Component(Protocol):
    """A part of the daemon. `start` must not block; `stop` must return within about 2 s.

    A component that handles bus items (audit writer, detectors, alert pipeline) sets the class
    attribute `bus_consumer = True`: at shutdown and reload the daemon stops every other component
    first, lets the bus drain into the consumers, and stops them last.
    """

    name: str

    def start(self, ctx: Context) -> None: ...

    def stop(self) -> None: ...

    def health(self) -> Health: ...

    def status(self) -> dict[str, Any]: ...


class SupervisedThread:
    """Runs `body(stop_event)` in a thread; when it raises, reports the source down and restarts it
    with backoff (1 s to 5 min). `body` should return only when `stop_event` is set. Only `body` says
    when the source is up (its input answers): a restart attempt is not up, so the gauge does not blink."""

    def __init__(self, name: str, body: Callable[[threading.Event], None], metrics: Metrics) -> None:
        self.name = name
        self._body = body
        self._metrics = metrics
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"source-{name}", daemon=True)
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    @property
    def up(self) -> bool:
        return self._thread.is_alive() and self.last_error is None

    def _loop(self) -> None:
        backoff = Backoff(initial=1.0, maximum=300.0)
        while not self._stop.is_set():
            try:
                self._body(self._stop)
                self.last_error = None
                if self._stop.is_set():
                    break
                backoff.reset()
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._metrics.source_restarts.labels(self.name).inc()
                log.error("source_failed", source=self.name, error=self.last_error)
            self._metrics.source_up.labels(self.name).set(0)
            self._stop.wait(backoff.next())
        self._metrics.source_up.labels(self.name).set(0)
