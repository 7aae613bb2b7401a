"""The alert pipeline: Signals in, notifications to sinks out, through a durable outbox.

    Signal ─► alert state (SQLite) ─► group (group_by) ─► per sink: filter, silences, dedup,
    group_wait / group_interval / repeat_interval ─► outbox row (SQLite) ─► sink worker ─► sink

Alert states, what each sink was last told, the outbox and silences live in the state store, so a
restart neither loses nor repeats a notification. An identical firing signal changes nothing and is
not notified again. A sink that fails permanently is marked broken and alerted through the others.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import structlog

from ..component import Context, Health
from ..events import Event, Signal
from ..redact import scrub_text
from ..sink_api import Notification
from ..sinks import LoadedSinks, load_sinks
from .model import SEVERITIES, Matcher, SinkFilter, fingerprint, group_key, group_labels, silenced
from .outbox import Route, SinkWorker
from .policy import change_allowed_at, decide, repeat_every
from .store import AlertRow, AlertStore, GroupRow, Silence

__all__ = ["SINK_BROKEN", "AlertPipeline", "build_routes"]

log = structlog.get_logger(__name__)
SINK_BROKEN = "RegwardenSinkBroken"
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def build_routes(ctx: Context, loaded: LoadedSinks) -> dict[str, Route]:
    """A Route for every loaded sink: its filter, pacing (config, else the plugin's default) and the
    resend interval the plugin declares (class attributes `pacing` and `resend_interval`)."""
    routes = {}
    for cfg in ctx.config.sinks:
        sink = loaded.sinks.get(cfg.name)
        if sink is None:
            continue
        pacing = cfg.pacing.total_seconds() if cfg.pacing is not None else float(getattr(sink, "pacing", 0.0) or 0.0)
        resend = getattr(sink, "resend_interval", None)
        routes[cfg.name] = Route(cfg.name, sink, SinkFilter.from_config(cfg.min_severity, cfg.matchers), pacing,
                                 float(resend) if resend else None)
    return routes


def _invalid_signal(signal: Signal) -> str | None:
    if not signal.labels.get("alertname"):
        return "missing alertname label"
    for name, value in signal.labels.items():
        if not isinstance(name, str) or not _LABEL_NAME.match(name) or not isinstance(value, str):
            return f"invalid label {name!r}"
    if signal.severity not in SEVERITIES:
        return f"invalid severity {signal.severity!r}"
    return None


class AlertPipeline:
    """The `alerting` component. `ingest` and `evaluate` are public so tests can drive time."""

    name = "alerting"
    bus_consumer = True

    def __init__(self, *, loaded: LoadedSinks | None = None, tick: float = 1.0, run_threads: bool = True) -> None:
        self._loaded = loaded
        self._tick = tick
        self._run_threads = run_threads
        self._lock = threading.RLock()
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ctx: Context | None = None
        self._store: AlertStore | None = None
        self.routes: dict[str, Route] = {}
        self.broken: dict[str, str] = {}
        self.workers: dict[str, SinkWorker] = {}
        self._alerts: dict[str, AlertRow] = {}
        self._groups: dict[str, GroupRow] = {}
        self._members: dict[str, set[str]] = {}
        self._told: dict[tuple[str, str], tuple[frozenset[str], float | None]] = {}
        self._due: dict[str, float] = {}
        self._silence_sig: tuple[tuple[str, float], ...] = ()
        self._silences: list[tuple[Matcher, ...]] = []
        self._firing: Counter[str] = Counter()  # firing alerts by severity (regwarden_alerts_active)

    # ------------------------------------------------------------------ lifecycle

    def start(self, ctx: Context) -> None:
        self._ctx = ctx
        self._store = store = AlertStore(ctx.state)
        loaded = self._loaded if self._loaded is not None else load_sinks(list(ctx.config.sinks))
        self.routes = build_routes(ctx, loaded)
        self.broken = dict(loaded.broken)
        with self._lock:
            self._alerts = {a.fingerprint: a for a in store.load_alerts()}
            self._groups = {g.key: g for g in store.load_groups()}
            self._members = {}
            for alert in self._alerts.values():
                self._members.setdefault(alert.group_key, set()).add(alert.fingerprint)
            self._told = store.load_sink_groups()
            self._firing = Counter(a.severity for a in self._alerts.values() if a.firing)
            self._due = {key: 0.0 for key in self._groups}
        cfg = ctx.config.alerts
        for route in self.routes.values():
            ctx.metrics.sink_up.labels(route.name).set(1)
            self.workers[route.name] = SinkWorker(
                route, store, ctx.metrics, retry_max=cfg.retry_max.total_seconds(),
                send_timeout=cfg.send_timeout.total_seconds(), on_broken=self._sink_broken,
                on_change=self._update_depth)
        for name in self.routes:  # a sink that loads again (fixed) gets what failed, and its alert ends
            if requeued := store.requeue_failed(name):
                log.info("notifications_requeued", sink=name, count=requeued)
            self.ingest(Signal(labels={"alertname": SINK_BROKEN, "sink": name}, firing=False))
        for name in [*self.routes, *self.broken]:
            self._update_depth(name)
        for name, reason in self.broken.items():
            self._sink_broken(name, reason)
        self._update_active()
        if self._run_threads:
            for worker in self.workers.values():
                worker.start()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="alert-pipeline", daemon=True)
            self._thread.start()
        ctx.bus.subscribe(self.name, self._on_item)
        log.info("alert_pipeline_started", sinks=sorted(self.routes), broken=sorted(self.broken),
                 active=len(self._alerts))

    def stop(self) -> None:
        if self._ctx is not None:
            self._ctx.bus.unsubscribe(self.name)
        self._stop.set()
        self._kick.set()
        for worker in self.workers.values():
            worker.stop()
        deadline = time.monotonic() + 1.5
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic()))
        for worker in self.workers.values():
            worker.join(max(0.1, deadline - time.monotonic()))

    def health(self) -> Health:
        if self._ctx is None:
            return Health(False, "not started")
        if self._run_threads and (self._thread is None or not self._thread.is_alive()):
            return Health(False, "alert pipeline thread stopped")
        if self.broken:
            return Health(True, "broken sinks: " + ", ".join(sorted(self.broken)))
        return Health(True)

    def status(self) -> dict[str, Any]:
        depth = self._store.outbox_depth() if self._store is not None else {}
        with self._lock:
            active = [
                {"alertname": a.labels.get("alertname", ""), "labels": a.labels, "severity": a.severity,
                 "since": datetime.fromtimestamp(a.starts_at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                 "fingerprint": a.fingerprint}
                for a in sorted(self._alerts.values(), key=lambda a: a.starts_at) if a.firing]
        sinks: dict[str, Any] = {}
        for name, route in self.routes.items():
            worker = self.workers.get(name)
            up = name not in self.broken
            sinks[name] = {"up": up, "outbox_depth": depth.get(name, 0), "pacing_seconds": route.pacing,
                           "last_error": worker.last_error if worker else ""}
        for name, reason in self.broken.items():
            sinks[name] = {**sinks.get(name, {}), "up": False, "broken": reason, "outbox_depth": depth.get(name, 0)}
        return {"active_alerts": active, "sinks": sinks, "silences": len(self._silences)}

    # ------------------------------------------------------------------ input

    def _on_item(self, item: Event | Signal) -> None:
        if isinstance(item, Signal):
            self.ingest(item)

    def ingest(self, signal: Signal, now: float | None = None) -> bool:
        """Record a signal in the alert state; returns whether anything changed."""
        ctx, store = self._require()
        problem = _invalid_signal(signal)
        if problem is not None:
            ctx.metrics.input_rejected.labels("alerting", "invalid_signal").inc()
            log.warning("signal_rejected", reason=problem, alertname=signal.labels.get("alertname", ""))
            return False
        now = time.time() if now is None else now
        labels = dict(signal.labels)
        labels.setdefault("host", ctx.host)
        fp = fingerprint(labels)
        at = signal.at.timestamp()
        with self._lock:
            alert = self._alerts.get(fp)
            was = alert.severity if alert is not None and alert.firing else None
            if signal.firing:
                if alert is not None and alert.firing:
                    if alert.severity == signal.severity and alert.annotations == signal.annotations:
                        return False  # the same statement again: deduplicated
                    alert.severity, alert.annotations = signal.severity, dict(signal.annotations)
                elif alert is not None:  # resolved but not yet notified: firing again
                    alert.ends_at, alert.signal_at = None, at
                    alert.severity, alert.annotations = signal.severity, dict(signal.annotations)
                else:
                    key = group_key(labels, ctx.config.alerts.group_by)
                    alert = AlertRow(fp, labels, dict(signal.annotations), signal.severity, at, None, key, at)
            else:
                if alert is None or not alert.firing:
                    return False
                alert.ends_at, alert.signal_at = max(at, alert.starts_at), at
            group = self._groups.get(alert.group_key)
            with store.state.transaction() as db:
                store.put_alert(db, alert)
                if group is None:
                    group = GroupRow(alert.group_key, group_labels(labels, ctx.config.alerts.group_by), now, None)
                    store.put_group(db, group)
            self._groups[group.key] = group
            self._alerts[fp] = alert
            self._members.setdefault(group.key, set()).add(fp)
            self._due[group.key] = min(self._due.get(group.key, math.inf), self._change_at(group))
            if was is not None:
                self._firing[was] -= 1
            if alert.firing:
                self._firing[alert.severity] += 1
        self._update_active()
        self._kick.set()
        return True

    # ------------------------------------------------------------------ evaluation

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wake_at = self.evaluate()
            except Exception:  # keep evaluating; the state store reports its own errors
                log.exception("alert_evaluation_failed")
                wake_at = time.time() + self._tick
            self._kick.wait(min(self._tick, max(0.0, wake_at - time.time())))
            self._kick.clear()

    def evaluate(self, now: float | None = None) -> float:
        """Send what is due for every group; returns when the next evaluation is due."""
        store = self._require()[1]
        now = time.time() if now is None else now
        self._refresh_silences(now)
        touched: set[str] = set()
        with self._lock:
            due = [key for key, at in self._due.items() if at <= now]
            if due:
                with store.state.transaction() as db:
                    for key in due:
                        self._due[key] = self._evaluate_group(db, key, now, touched)
                for key in due:
                    if self._due.get(key) == math.inf:
                        del self._due[key]
            next_due = min(self._due.values(), default=math.inf)
        for name in touched:
            if name in self.workers:
                self.workers[name].kick()
            self._update_depth(name)
        return min(next_due, now + self._tick)

    def _change_at(self, group: GroupRow) -> float:
        cfg = self._require()[0].config.alerts
        return change_allowed_at(group.created_at, group.last_flush_at, cfg.group_wait.total_seconds(),
                                 cfg.group_interval.total_seconds())

    def _evaluate_group(self, db: Any, key: str, now: float, touched: set[str]) -> float:
        ctx, store = self._require()
        group = self._groups.get(key)
        if group is None:
            return math.inf
        members = [self._alerts[f] for f in sorted(self._members.get(key, ())) if f in self._alerts]
        change_at = self._change_at(group)
        change_ok = now >= change_at
        next_due, news = math.inf, False
        for route in self.routes.values():
            if route.name in self.broken:
                continue
            accepted = [a for a in members if route.filter.accepts(a.labels, a.severity)]
            firing_now = {a.fingerprint for a in accepted if a.firing and not silenced(a.labels, self._silences)}
            resolved_now = {a.fingerprint for a in accepted if not a.firing}
            last_firing, last_sent = self._told.get((route.name, key), (frozenset(), None))
            repeat_after = repeat_every(ctx.config.alerts.repeat_interval.total_seconds(), route.resend_interval)
            decision = decide(firing_now=firing_now, resolved_now=resolved_now, last_firing=last_firing,
                              last_sent_at=last_sent, now=now, change_ok=change_ok, repeat_after=repeat_after)
            if decision.notify:
                included = [a for a in members if a.fingerprint in decision.firing | decision.resolved]
                notification = self._notification(route.name, group, included, now)
                signal_at = now if decision.reason == "repeat" else max(a.signal_at for a in included)
                store.enqueue(db, route.name, notification, signal_at)
                last_sent = now
                touched.add(route.name)
                news = news or decision.reason != "repeat"
                log.info("notification_queued", sink=route.name, group=key, reason=decision.reason,
                         firing=len(decision.firing), resolved=len(decision.resolved))
            if decision.firing != last_firing or decision.notify:
                self._told[(route.name, key)] = (decision.firing, last_sent)
                store.put_sink_group(db, route.name, key, decision.firing, last_sent)
            if not change_ok and (firing_now - decision.firing or resolved_now & decision.firing):
                next_due = min(next_due, change_at)
            if decision.firing and last_sent is not None:
                next_due = min(next_due, last_sent + repeat_after)
        if change_ok:
            ended = [a.fingerprint for a in members if not a.firing]
            store.delete_alerts(db, ended)
            for fp in ended:
                self._alerts.pop(fp, None)
                self._members[key].discard(fp)
            if news:
                group.last_flush_at = now
                store.put_group(db, group)
        if not self._members.get(key):
            store.delete_group(db, key)
            self._groups.pop(key, None)
            self._members.pop(key, None)
            for told in [k for k in self._told if k[1] == key]:
                del self._told[told]
            return math.inf
        return next_due

    def _notification(self, sink: str, group: GroupRow, alerts: Iterable[AlertRow], now: float) -> Notification:
        ordered = sorted(alerts, key=lambda a: (not a.firing, a.starts_at, a.fingerprint))
        common = dict(ordered[0].labels) if ordered else {}
        for alert in ordered[1:]:
            common = {k: v for k, v in common.items() if alert.labels.get(k) == v}
        return Notification(
            id=0, group_key=group.key, status="firing" if any(a.firing for a in ordered) else "resolved",
            alerts=tuple(a.to_alert() for a in ordered), host=self._require()[0].host, receiver=sink,
            created_at=datetime.fromtimestamp(now, UTC), common_labels=common)

    def _refresh_silences(self, now: float) -> None:
        store = self._require()[1]
        active: list[Silence] = store.silences(now)
        signature = tuple((s.id, s.until) for s in active)
        if signature != self._silence_sig:
            with self._lock:
                self._silence_sig = signature
                self._silences = [s.matchers for s in active]
                self._due = {key: 0.0 for key in self._groups}  # re-decide every group

    # ------------------------------------------------------------------ sinks and metrics

    def _sink_broken(self, name: str, reason: str) -> None:
        ctx = self._require()[0]
        reason = scrub_text(reason)
        with self._lock:
            self.broken[name] = reason
        ctx.metrics.sink_up.labels(name).set(0)
        log.error("sink_broken", sink=name, reason=reason)
        self.ingest(Signal(labels={"alertname": SINK_BROKEN, "sink": name}, severity="critical",
                           annotations={"summary": f"Alert sink {name} is broken; its notifications are not"
                                                   " delivered",
                                        "description": reason}))

    def _update_depth(self, name: str) -> None:
        ctx, store = self._require()
        ctx.metrics.outbox_depth.labels(name).set(store.outbox_depth(name)[name])

    def _update_active(self) -> None:
        ctx = self._require()[0]
        for severity in SEVERITIES:
            ctx.metrics.alerts_active.labels(severity).set(self._firing[severity])

    def _require(self) -> tuple[Context, AlertStore]:
        if self._ctx is None or self._store is None:
            raise RuntimeError("alert pipeline not started")
        return self._ctx, self._store
