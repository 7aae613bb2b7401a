"""Delivery from the outbox: one worker thread per sink sends its pending notifications in order.

A notification is in the outbox (SQLite) before the first attempt and leaves it only when the sink
confirmed it, so delivery is at-least-once across crashes and restarts. Retryable failures wait with
exponential backoff and jitter (never less than the sink's `Retry-After`); a permanent failure marks the
sink broken and stops its worker. Consecutive sends are `pacing` seconds apart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from ..backoff import Backoff
from ..errors import SinkError, StateError
from ..metrics import Metrics
from ..redact import scrub_text
from ..sink_api import Delivery, Notification, Sink
from .model import SinkFilter
from .policy import judge_delivery
from .store import AlertStore, OutboxRow, decode_notification

__all__ = ["Route", "SinkWorker", "attempt_send"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Route:
    """A usable sink and how the pipeline treats it."""

    name: str
    sink: Sink
    filter: SinkFilter
    pacing: float  # seconds between two sends
    resend_interval: float | None  # the sink wants active alerts re-sent this often (e.g. Alertmanager)


def attempt_send(sink: Sink, notification: Notification, timeout: float) -> Delivery:
    """One call of `sink.send`, with whatever it raises turned into a Delivery (detail scrubbed)."""
    try:
        delivery = sink.send(notification, timeout=timeout)
    except SinkError as exc:
        delivery = Delivery(ok=False, retryable=exc.retryable, detail=str(exc))
    except Exception as exc:  # third-party code: a bug might be transient, keep the notification
        delivery = Delivery(ok=False, retryable=True, detail=f"sink raised {type(exc).__name__}")
    if not isinstance(delivery, Delivery):
        delivery = Delivery(ok=False, retryable=True, detail="sink returned no Delivery")
    return Delivery(delivery.ok, delivery.retryable, scrub_text(delivery.detail)[:500], delivery.retry_after)


class SinkWorker:
    def __init__(self, route: Route, store: AlertStore, metrics: Metrics, *, retry_max: float,
                 send_timeout: float, on_broken: Callable[[str, str], None],
                 on_change: Callable[[str], None]) -> None:
        self.route = route
        self._store = store
        self._metrics = metrics
        self._timeout = send_timeout
        self._on_broken = on_broken
        self._on_change = on_change
        self._backoff = Backoff(initial=1.0, maximum=max(1.0, retry_max))
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sink-{route.name}", daemon=True)
        self.last_error = ""
        self.delivered = 0

    def start(self) -> None:
        self._thread.start()

    def kick(self) -> None:
        """Something was enqueued: look at the outbox now."""
        self._kick.set()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()

    def join(self, timeout: float) -> None:
        if self._thread.ident is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _wait(self, seconds: float) -> None:
        self._kick.wait(max(0.0, seconds))
        self._kick.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._step():
                    return
            except StateError as exc:  # the store is closing (shutdown) or failing: the row stays queued
                if self._stop.is_set():
                    return
                log.error("outbox_unavailable", sink=self.route.name, error=str(exc))
                self._stop.wait(1.0)

    def _step(self) -> bool:
        """Deliver the next due row, or wait for one; False when the sink turned out broken."""
        row = self._store.next_pending(self.route.name)
        if row is None:
            self._wait(1.0)
            return True
        delay = row.next_attempt_at - time.time()
        if delay > 0:
            self._stop.wait(min(delay, 1.0))
            return True
        if not self._deliver(row):
            return False
        if self.route.pacing > 0:
            self._stop.wait(self.route.pacing)
        return True

    def _deliver(self, row: OutboxRow) -> bool:
        """Send one row and record the outcome; False when the sink turned out broken."""
        sink = self.route.name
        delivery = attempt_send(self.route.sink, decode_notification(row.id, row.payload), self._timeout)
        attempt = judge_delivery(delivery, self._backoff)
        if attempt.outcome == "delivered":
            self._store.mark_delivered(row.id)
            self._metrics.notification_latency.labels(sink).observe(max(0.0, time.time() - row.signal_at))
            self.last_error = ""
            self.delivered += 1
            log.debug("notification_delivered", sink=sink, notification=row.id, attempts=row.attempts + 1)
        elif attempt.outcome == "retry":
            self._store.mark_retry(row.id, time.time() + attempt.delay, delivery.detail)
            self.last_error = delivery.detail
            log.warning("notification_retry", sink=sink, notification=row.id, attempts=row.attempts + 1,
                        retry_in=round(attempt.delay, 1), reason=delivery.detail)
        else:
            self._store.mark_failed(row.id, delivery.detail)
            self.last_error = delivery.detail
            log.error("notification_failed", sink=sink, notification=row.id, reason=delivery.detail)
        self._on_change(sink)
        self._metrics.notifications.labels(sink, attempt.outcome).inc()  # counted once the outbox holds it
        if attempt.outcome == "failed":
            self._on_broken(sink, delivery.detail or "permanent delivery failure")
            return False
        return True
