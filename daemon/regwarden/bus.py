"""The event bus: a bounded queue and one dispatcher thread that hands each item to every handler.

Sources `publish` Events and Signals; a full queue blocks the publisher (back-pressure on the
source, which keeps its cursor), never drops. A handler that raises is counted and logged; the
others still run.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from .events import Event, Signal
from .metrics import Metrics

__all__ = ["Bus", "Handler"]

Handler = Callable[[Event | Signal], None]
log = structlog.get_logger(__name__)
_STOP = object()


class Bus:
    def __init__(self, metrics: Metrics, capacity: int = 10_000) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=capacity)
        self._handlers: list[tuple[str, Handler]] = []
        self._metrics = metrics
        self._thread: threading.Thread | None = None
        self.heartbeat = time.monotonic()

    def subscribe(self, name: str, handler: Handler) -> None:
        self._handlers.append((name, handler))

    def unsubscribe(self, name: str) -> None:
        self._handlers = [(n, h) for n, h in self._handlers if n != name]

    def publish(self, item: Event | Signal, timeout: float | None = None) -> None:
        """Queue an item; blocks while the bus is full (raises queue.Full after `timeout`)."""
        self._queue.put(item, timeout=timeout)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bus-dispatcher", daemon=True)
        self._thread.start()

    def depth(self) -> int:
        return self._queue.qsize()

    def alive(self, within: float) -> bool:
        """True if the dispatcher thread runs and has not been stuck in a handler for `within` seconds."""
        return bool(self._thread and self._thread.is_alive()) and (
            self._queue.empty() or time.monotonic() - self.heartbeat < within)

    def flush(self, timeout: float) -> bool:
        """Wait until everything published so far has been handled; False if not within `timeout`."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline or self._thread is None or not self._thread.is_alive():
                return False
            time.sleep(0.01)
        return True

    def stop(self, timeout: float) -> bool:
        """Drain what is queued, then stop. Returns False if the queue was not drained in time."""
        if self._thread is None:
            return True
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                self.heartbeat = time.monotonic()
                continue
            self.heartbeat = time.monotonic()
            if item is _STOP:
                self._queue.task_done()
                return
            try:
                self.dispatch(item)
            finally:
                self._queue.task_done()
            self._metrics.bus_depth.set(self._queue.qsize())

    def dispatch(self, item: Event | Signal) -> None:
        """Run every handler on one item (also used directly by tests and the CLI)."""
        if isinstance(item, Event):
            self._metrics.events.labels(item.source, item.kind).inc()
        for name, handler in self._handlers:
            try:
                handler(item)
            except Exception:
                self._metrics.handler_errors.labels(name).inc()
                log.exception("handler_failed", handler=name)
