"""The event bus: a bounded queue and one dispatcher thread that hands each item to every handler.

Sources `publish` Events and Signals, or a batch of Events at once (`publish_batch`: a registry log
tailer publishes the lines of one read together). The bus holds at most `capacity` Events and
Signals (a batch counts its Events); a full bus blocks the publisher (back-pressure on the source,
which keeps its cursor), never drops. A handler that raises is counted and logged; the others still
run. A handler subscribed with a `batch` handler gets a batch in one call, in order with the single
items around it; other handlers get its Events one by one.

A `Checkpoint` (`publish_checkpoint`) is not handed to the handlers: its callback runs once everything
published before it has been handled and, when a durability keeper is set (the audit trail), written
to disk. Sources store their cursors this way: what was not yet in the audit log when the daemon died
is read again, never skipped.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from .events import Event, Signal
from .metrics import Metrics

__all__ = ["MAX_BATCH", "BatchHandler", "Bus", "Checkpoint", "Handler"]

Handler = Callable[[Event | Signal], None]
BatchHandler = Callable[[Sequence[Event]], None]
log = structlog.get_logger(__name__)
MAX_BATCH = 1024  # Events in one batch: keeps the bus bound meaningful and a handler call short
_STOP = object()


@dataclass(frozen=True)
class Checkpoint:
    """`done()` runs once what was published before it is handled (and durable, see the module doc);
    `failed()` instead when the keeper knows some of it will never be. `urgent`: someone waits on it
    (an HTTP answer): the keeper makes it durable now. `since`: `Bus.losses` when the publisher began
    publishing what the checkpoint covers; if records were lost since, it fails (conservatively: the
    loss may have been someone else's)."""

    done: Callable[[], None]
    urgent: bool = False
    failed: Callable[[], None] | None = None
    since: int | None = None

    def run(self) -> None:
        _call(self.done)

    def fail(self) -> None:
        if self.failed is not None:
            _call(self.failed)


def _call(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        log.exception("checkpoint_failed")


class Bus:
    def __init__(self, metrics: Metrics, capacity: int = 10_000) -> None:
        self._items: deque[Any] = deque()
        self._capacity = capacity
        self._held = 0  # Events and Signals queued (a batch counts its Events)
        self._unfinished = 0  # queue items not yet fully handled (for `flush`)
        self._cond = threading.Condition()
        self._handlers: list[tuple[str, Handler, BatchHandler | None]] = []
        self._metrics = metrics
        self._keeper: Callable[[Checkpoint], None] | None = None
        self.losses = 0  # records the keeper lost before they reached the disk, ever (see Checkpoint.since)
        self._losses_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.heartbeat = time.monotonic()

    def subscribe(self, name: str, handler: Handler, batch: BatchHandler | None = None) -> None:
        """Add a handler; one of the same name (a component before a reload) is replaced in its place,
        in one step, so that no item dispatched meanwhile misses both."""
        entry = (name, handler, batch)
        handlers = self._handlers
        if any(h[0] == name for h in handlers):
            self._handlers = [entry if h[0] == name else h for h in handlers]
        else:
            self._handlers = [*handlers, entry]

    def unsubscribe(self, name: str) -> None:
        self._handlers = [h for h in self._handlers if h[0] != name]

    def publish(self, item: Event | Signal, timeout: float | None = None) -> None:
        """Queue an item; blocks while the bus is full (raises queue.Full after `timeout`)."""
        self._put(item, 1, timeout)

    def publish_batch(self, events: Sequence[Event], timeout: float | None = None) -> None:
        """Queue Events as one batch (at most MAX_BATCH; an empty one is ignored)."""
        if len(events) > MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH} events, got {len(events)}")
        if events:
            self._put(list(events), len(events), timeout)

    def publish_checkpoint(self, done: Callable[[], None], timeout: float | None = None, *,
                           urgent: bool = False, failed: Callable[[], None] | None = None,
                           since: int | None = None) -> None:
        """Queue a Checkpoint: `done()` runs after everything published before it (see the module doc)."""
        self._put(Checkpoint(done, urgent, failed, since), 0, timeout)

    def record_loss(self) -> None:
        """The keeper lost records (a failed write, records dropped): checkpoints with an older `since` fail."""
        with self._losses_lock:
            self.losses += 1

    def set_keeper(self, keeper: Callable[[Checkpoint], None] | None) -> None:
        """Who makes Checkpoints durable (the audit trail: it runs them once their records are fsynced);
        None: they run as soon as the dispatcher reaches them."""
        self._keeper = keeper

    def _put(self, item: Any, count: int, timeout: float | None) -> None:
        with self._cond:
            # a batch larger than the whole capacity goes in alone, on an empty bus
            if not self._cond.wait_for(lambda: self._held == 0 or self._held + count <= self._capacity, timeout):
                raise queue.Full
            self._items.append(item)
            self._held += count
            self._unfinished += 1
            self._cond.notify_all()

    def take(self) -> Any:
        """Remove the oldest queued item (an Event, a Signal or a list of Events) without handling it;
        None when the bus is empty. For a bus without a dispatcher (tests, one-shot commands)."""
        with self._cond:
            if not self._items or self._items[0] is _STOP:
                return None
            item = self._items.popleft()
            self._held -= _count(item)
            self._unfinished -= 1
            self._cond.notify_all()
            return item

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bus-dispatcher", daemon=True)
        self._thread.start()

    def depth(self) -> int:
        """Events and Signals waiting."""
        return self._held

    def alive(self, within: float) -> bool:
        """True if the dispatcher thread runs and has not been stuck in a handler for `within` seconds."""
        return bool(self._thread and self._thread.is_alive()) and (
            not self._items or time.monotonic() - self.heartbeat < within)

    def flush(self, timeout: float) -> bool:
        """Wait until everything published so far has been handled; False if not within `timeout`."""
        deadline = time.monotonic() + timeout
        while self._unfinished:
            if time.monotonic() >= deadline or self._thread is None or not self._thread.is_alive():
                return False
            time.sleep(0.01)
        return True

    def stop(self, timeout: float) -> bool:
        """Drain what is queued, then stop. Returns False if the queue was not drained in time."""
        if self._thread is None:
            return True
        with self._cond:
            self._items.append(_STOP)
            self._unfinished += 1
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: bool(self._items), 1.0):
                    self.heartbeat = time.monotonic()
                    continue
                item = self._items.popleft()
            self.heartbeat = time.monotonic()
            if item is _STOP:
                with self._cond:
                    self._unfinished -= 1
                return
            count = _count(item)
            try:
                if type(item) is list:
                    self.dispatch_batch(item)
                elif type(item) is Checkpoint:
                    self._checkpoint(item)
                else:
                    self.dispatch(item)
            finally:
                with self._cond:
                    self._held -= count
                    self._unfinished -= 1
                    self._cond.notify_all()
                self._metrics.bus_depth.set(self._held)

    def _checkpoint(self, item: Checkpoint) -> None:
        keeper = self._keeper
        if keeper is None:
            item.run()
            return
        try:
            keeper(item)
        except Exception:  # not known to be durable: the callback does not run
            log.exception("checkpoint_keeper_failed")
            item.fail()

    def dispatch(self, item: Event | Signal) -> None:
        """Run every handler on one item (also used directly by tests and the CLI)."""
        if isinstance(item, Event):
            self._metrics.events.labels(item.source, item.kind).inc()
        for name, handler, _ in self._handlers:
            try:
                handler(item)
            except Exception:
                self._metrics.handler_errors.labels(name).inc()
                log.exception("handler_failed", handler=name)

    def dispatch_batch(self, events: Sequence[Event]) -> None:
        """Run every handler on a batch: once for those that take batches, per Event for the others."""
        counts = Counter(map(_source_and_kind, events))
        for (source, kind), count in counts.items():
            self._metrics.events.labels(source, kind).inc(count)
        for name, handler, batch in self._handlers:
            if batch is not None:
                try:
                    batch(events)
                except Exception:
                    self._metrics.handler_errors.labels(name).inc()
                    log.exception("handler_failed", handler=name)
                continue
            for event in events:
                try:
                    handler(event)
                except Exception:
                    self._metrics.handler_errors.labels(name).inc()
                    log.exception("handler_failed", handler=name)


def _source_and_kind(event: Event) -> tuple[str, str]:
    return event.source, event.kind


def _count(item: Any) -> int:
    """What a queue item weighs against the capacity."""
    return len(item) if type(item) is list else 0 if type(item) is Checkpoint else 1
