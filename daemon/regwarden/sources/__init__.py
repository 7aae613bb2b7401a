"""Audit sources: threads that read what the Docker engine and the registries did and put Events on the bus.

Each source is one small module with its decisions as pure functions (is this a gap? has the file
rotated? is this a duplicate?) and its I/O at the edges, run by `SourceComponent` in a
`SupervisedThread` (restart with backoff, `regwarden_source_up`) and resumable from a cursor kept in
the state store.
"""

from __future__ import annotations

import threading
from typing import Any

from ..component import Context, Health, SupervisedThread

__all__ = ["SourceComponent", "source_lag"]


def source_lag(ctx: Context, name: str) -> float | None:
    """Seconds between the last event's time and when the source saw it (None before the first event)."""
    return ctx.metrics.registry.get_sample_value("regwarden_source_lag_seconds", {"source": name})


class SourceComponent:
    """A Component whose work is one loop, `run(stop_event)`, supervised and restarted on failure.

    `run` returns only when `stop_event` is set (or, to reconnect at once, after a clean end of its
    input); it raises a RegwardenError when its input fails, which reports the source down until the
    next try succeeds. Subclasses set `name` and implement `run`, and may extend `status`.
    """

    name: str

    def __init__(self) -> None:
        self._ctx: Context | None = None
        self._thread: SupervisedThread | None = None
        self._stopping = threading.Event()
        self._stop_event: threading.Event | None = None
        self._connected = False  # set by the subclass once its input answers (`mark_up`)
        self._waiting: str | None = None  # why a running source is not up yet (`mark_down`)

    @property
    def ctx(self) -> Context:
        if self._ctx is None:
            raise RuntimeError(f"source {self.name} used before start()")
        return self._ctx

    def start(self, ctx: Context) -> None:
        self._ctx = ctx
        self.prepare(ctx)
        self._stopping.clear()
        self._thread = SupervisedThread(self.name, self._body, ctx.metrics)
        self._thread.start()

    def _body(self, stop: threading.Event) -> None:
        if self._stopping.is_set():
            stop.set()
            return
        self._stop_event = stop
        self._set_up(False)  # trying is not being up: the subclass says when its input answers
        try:
            self.run(stop)
        finally:
            self._set_up(False)

    def mark_up(self) -> None:
        """Called by `run` once its input answers: the source is up (health, `regwarden_source_up`)."""
        self._set_up(True)

    def mark_down(self, reason: str) -> None:
        """Called by `run` while it waits for its input without failing (e.g. a log file not there yet)."""
        self._waiting = reason
        self._set_up(False)

    def _set_up(self, up: bool) -> None:
        if up:
            self._waiting = None
        self._connected = up
        self.ctx.metrics.source_up.labels(self.name).set(1 if up else 0)

    def prepare(self, ctx: Context) -> None:
        """Work done once in `start` before the thread runs (schemas, sockets); may raise."""

    def run(self, stop: threading.Event) -> None:
        raise NotImplementedError

    def interrupt(self) -> None:
        """Unblock `run` (close a stream or socket) so that `stop` returns in time."""

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            if self._stop_event is not None:
                self._stop_event.set()
            self.interrupt()
            self._thread.stop(timeout=2.0)

    def health(self) -> Health:
        if self._thread is None:
            return Health(False, "not started")
        if not self._connected:
            return Health(False, f"down: {self._thread.last_error or self._waiting or 'connecting'}")
        return Health(True)

    def status(self) -> dict[str, Any]:
        if self._thread is None:
            return {"state": "not started"}
        return {"state": "up" if self._connected else "down", "last_error": self._thread.last_error,
                "restarts": self._restarts(), "lag_seconds": source_lag(self.ctx, self.name)}

    def _restarts(self) -> int:
        value = self.ctx.metrics.registry.get_sample_value("regwarden_source_restarts_total", {"source": self.name})
        return int(value or 0)
