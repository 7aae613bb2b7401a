"""The alert pipeline on a real SQLite state store, with time driven by the test (evaluate(now))."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry

from regwarden.alerting.model import parse_matcher
from regwarden.alerting.pipeline import SINK_BROKEN, AlertPipeline
from regwarden.alerting.store import AlertStore
from regwarden.bus import Bus
from regwarden.component import Context
from regwarden.config import parse_config
from regwarden.events import Signal
from regwarden.metrics import Metrics
from regwarden.sink_api import Delivery, Notification, SinkOptions
from regwarden.sinks import LoadedSinks
from regwarden.state import StateStore

T0 = 1_000_000.0


class RecordingSink:
    """A sink that keeps what it is sent and answers with the next scripted Delivery."""

    Options: ClassVar[type[SinkOptions]] = SinkOptions

    def __init__(self, name: str, answers: list[Delivery] | None = None) -> None:
        self.name = name
        self.sent: list[Notification] = []
        self.answers = list(answers or [])
        self.event = threading.Event()

    def check(self) -> None:
        return None

    def send(self, notification: Notification, *, timeout: float) -> Delivery:
        self.sent.append(notification)
        self.event.set()
        return self.answers.pop(0) if self.answers else Delivery.success()


def sig(name: str = "RegistryDown", firing: bool = True, severity: str = "warning", **labels: str) -> Signal:
    return Signal(labels={"alertname": name, **labels}, firing=firing, severity=severity,  # type: ignore[arg-type]
                  annotations={"summary": f"{name} {labels}"})


class Harness:
    def __init__(self, tmp_path: Path, alerts: dict[str, Any], sinks: list[dict[str, Any]]) -> None:
        self.cfg = parse_config({"daemon": {"state_dir": str(tmp_path / "state"), "host": "h1"},
                                 "alerts": alerts, "sinks": sinks})
        self.metrics = Metrics(CollectorRegistry())
        self.state = StateStore(self.cfg.daemon.state_dir)
        self.ctx = Context(config=self.cfg, metrics=self.metrics, state=self.state, bus=Bus(self.metrics),
                           scheduler=BackgroundScheduler(), host="h1")
        self.pipelines: list[AlertPipeline] = []

    def pipeline(self, sinks: dict[str, RecordingSink], broken: dict[str, str] | None = None,
                 threads: bool = False) -> AlertPipeline:
        pipeline = AlertPipeline(loaded=LoadedSinks(dict(sinks), dict(broken or {})), run_threads=threads,
                                 tick=0.05)
        pipeline.start(self.ctx)
        self.pipelines.append(pipeline)
        return pipeline

    def outbox(self, sink: str) -> list[Notification]:
        from regwarden.alerting.store import decode_notification

        return [decode_notification(r["id"], r["payload"]) for r in self.state.query(
            "SELECT id, payload FROM alert_outbox WHERE sink = ? ORDER BY id", (sink,))]

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def factory(alerts: dict[str, Any] | None = None, sinks: list[dict[str, Any]] | None = None) -> Harness:
        h = Harness(tmp_path, {"group_wait": "10s", "group_interval": "5m", "repeat_interval": "4h",
                               **(alerts or {})}, sinks if sinks is not None else [{"name": "rec", "type": "log"}])
        made.append(h)
        return h

    yield factory
    for h in made:
        for p in h.pipelines:
            p.stop()
        h.state.close()


def test_first_notification_waits_group_wait_and_groups_by_alertname(make: Callable[..., Harness]) -> None:
    """Alerts of one alertname arriving within group_wait go out as one notification, not before."""
    h = make()
    p = h.pipeline({"rec": RecordingSink("rec")})
    p.ingest(sig(registry="a"), now=T0)
    p.ingest(sig(registry="b"), now=T0 + 5)
    p.evaluate(T0 + 9)
    assert h.outbox("rec") == []
    p.evaluate(T0 + 10)
    [n] = h.outbox("rec")
    assert n.status == "firing" and {a.labels["registry"] for a in n.alerts} == {"a", "b"}
    assert n.group_key == '{alertname="RegistryDown"}' and n.common_labels == {"alertname": "RegistryDown",
                                                                                  "host": "h1"}


def test_identical_firing_signal_is_not_renotified(make: Callable[..., Harness]) -> None:
    """The same firing signal again changes nothing and sends nothing until repeat_interval."""
    h = make()
    p = h.pipeline({"rec": RecordingSink("rec")})
    p.ingest(sig(), now=T0)
    p.evaluate(T0 + 10)
    for i in range(50):
        assert p.ingest(sig(), now=T0 + 11 + i) is False
        p.evaluate(T0 + 11 + i)
    p.evaluate(T0 + 3600)
    assert len(h.outbox("rec")) == 1


def test_repeat_interval_resends_firing_alerts(make: Callable[..., Harness]) -> None:
    """A still-firing alert is sent again after repeat_interval."""
    h = make()
    p = h.pipeline({"rec": RecordingSink("rec")})
    p.ingest(sig(), now=T0)
    p.evaluate(T0 + 10)
    p.evaluate(T0 + 10 + 4 * 3600 - 1)
    assert len(h.outbox("rec")) == 1
    p.evaluate(T0 + 10 + 4 * 3600)
    assert [n.status for n in h.outbox("rec")] == ["firing", "firing"]


def test_resolution_is_notified_after_group_interval_with_ends_at(make: Callable[..., Harness]) -> None:
    """A resolved alert is sent as resolved (with ends_at) at the next group_interval, then forgotten."""
    h = make()
    p = h.pipeline({"rec": RecordingSink("rec")})
    p.ingest(sig(), now=T0)
    p.evaluate(T0 + 10)
    p.ingest(sig(firing=False), now=T0 + 20)
    p.evaluate(T0 + 21)
    assert len(h.outbox("rec")) == 1
    p.evaluate(T0 + 310)
    _first, second = h.outbox("rec")
    assert second.status == "resolved" and second.alerts[0].ends_at is not None
    assert h.state.query("SELECT COUNT(*) AS n FROM alert_states")[0]["n"] == 0
    assert h.state.query("SELECT COUNT(*) AS n FROM alert_groups")[0]["n"] == 0


def test_alert_resolved_within_group_wait_is_never_sent(make: Callable[..., Harness]) -> None:
    """An alert that fires and resolves before its group was first sent produces no notification."""
    h = make()
    p = h.pipeline({"rec": RecordingSink("rec")})
    p.ingest(sig(), now=T0)
    p.ingest(sig(firing=False), now=T0 + 1)
    p.evaluate(T0 + 10)
    assert h.outbox("rec") == []


def test_restart_on_the_same_state_sends_no_duplicate(make: Callable[..., Harness]) -> None:
    """A new pipeline on the same state store remembers what was sent: the re-emitted signal is a no-op."""
    h = make()
    p = h.pipeline({"rec": RecordingSink("rec")})
    p.ingest(sig(), now=T0)
    p.evaluate(T0 + 10)
    p.stop()
    again = h.pipeline({"rec": RecordingSink("rec")})
    again.ingest(sig(), now=T0 + 20)
    again.evaluate(T0 + 400)
    assert len(h.outbox("rec")) == 1
    again.ingest(sig(firing=False), now=T0 + 500)
    again.evaluate(T0 + 500)
    assert [n.status for n in h.outbox("rec")] == ["firing", "resolved"]


def test_min_severity_and_matchers_select_sinks(make: Callable[..., Harness]) -> None:
    """Each sink only gets the alerts its min_severity and matchers accept."""
    h = make(sinks=[{"name": "pager", "type": "log", "min_severity": "critical"},
                    {"name": "core", "type": "log", "matchers": {"registry": "=~int.*"}}])
    p = h.pipeline({"pager": RecordingSink("pager"), "core": RecordingSink("core")})
    p.ingest(sig("A", severity="warning", registry="internal"), now=T0)
    p.ingest(sig("B", severity="critical", registry="external"), now=T0)
    p.evaluate(T0 + 10)
    assert [n.alerts[0].labels["alertname"] for n in h.outbox("pager")] == ["B"]
    assert [n.alerts[0].labels["alertname"] for n in h.outbox("core")] == ["A"]


def test_silence_suppresses_until_it_expires(make: Callable[..., Harness]) -> None:
    """A silenced alert is not sent; when the silence expires it is sent as new."""
    h = make()
    AlertStore(h.state).add_silence([parse_matcher("alertname=RegistryDown")], until=T0 + 100, comment="maint",
                                    author="test")
    p = h.pipeline({"rec": RecordingSink("rec")})
    p.ingest(sig(), now=T0)
    p.evaluate(T0 + 10)
    p.evaluate(T0 + 99)
    assert h.outbox("rec") == []
    p.evaluate(T0 + 101)
    assert len(h.outbox("rec")) == 1


def test_group_by_splits_groups(make: Callable[..., Harness]) -> None:
    """With group_by = ["registry"], each registry's alerts form their own notification."""
    h = make(alerts={"group_by": ["registry"]})
    p = h.pipeline({"rec": RecordingSink("rec")})
    p.ingest(sig(registry="a"), now=T0)
    p.ingest(sig(registry="b"), now=T0)
    p.evaluate(T0 + 10)
    assert sorted(n.group_key for n in h.outbox("rec")) == [
        '{alertname="RegistryDown",registry="a"}', '{alertname="RegistryDown",registry="b"}']


def test_invalid_signal_is_rejected_and_counted(make: Callable[..., Harness]) -> None:
    """A signal without alertname or with a bad label name is refused and counted, not stored."""
    h = make()
    p = h.pipeline({"rec": RecordingSink("rec")})
    assert p.ingest(Signal(labels={"registry": "a"})) is False
    assert p.ingest(Signal(labels={"alertname": "A", "bad-name": "x"})) is False
    assert h.metric("regwarden_input_rejected_total", source="alerting", reason="invalid_signal") == 2
    assert h.state.query("SELECT COUNT(*) AS n FROM alert_states")[0]["n"] == 0


def test_sink_broken_at_load_is_alerted_through_the_other_sinks(make: Callable[..., Harness]) -> None:
    """A sink that failed to load is reported down and RegwardenSinkBroken{sink} goes to the others."""
    h = make(sinks=[{"name": "rec", "type": "log"}, {"name": "bad", "type": "log"}])
    p = h.pipeline({"rec": RecordingSink("rec")}, broken={"bad": "webhook_url_file: No such file"})
    p.evaluate(time.time() + 11)
    [n] = h.outbox("rec")
    assert n.alerts[0].labels == {"alertname": SINK_BROKEN, "sink": "bad", "host": "h1"}
    assert n.alerts[0].severity == "critical"
    assert h.metric("regwarden_sink_up", sink="bad") == 0 and h.metric("regwarden_sink_up", sink="rec") == 1
    assert p.status()["sinks"]["bad"]["up"] is False


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_permanent_failure_marks_sink_broken_and_alerts_the_others(make: Callable[..., Harness]) -> None:
    """A 404-like permanent failure stops the sink (sink_up 0) and the others get RegwardenSinkBroken."""
    h = make(alerts={"group_wait": "0s", "group_interval": "1s"},
             sinks=[{"name": "dead", "type": "log"}, {"name": "rec", "type": "log"}])
    dead = RecordingSink("dead", [Delivery(ok=False, retryable=False, detail="HTTP 404 no_service")])
    rec = RecordingSink("rec")
    p = h.pipeline({"dead": dead, "rec": rec}, threads=True)
    p.ingest(sig())
    _wait(lambda: any(a.labels["alertname"] == SINK_BROKEN for n in rec.sent for a in n.alerts))
    assert h.metric("regwarden_sink_up", sink="dead") == 0
    assert h.metric("regwarden_notifications_total", sink="dead", outcome="failed") == 1
    assert "HTTP 404" in p.status()["sinks"]["dead"]["broken"]
    assert not any(a.labels["alertname"] == SINK_BROKEN for n in dead.sent for a in n.alerts)


def test_retryable_failures_are_retried_until_delivered_in_order(make: Callable[..., Harness]) -> None:
    """Retryable failures keep the row; it is delivered later, before anything queued after it."""
    h = make(alerts={"group_wait": "0s", "group_interval": "0s", "retry_max": "1s"})
    flaky = RecordingSink("rec", [Delivery(ok=False, retryable=True, detail="HTTP 503")] * 2)
    p = h.pipeline({"rec": flaky}, threads=True)
    p.ingest(sig("A"))
    p.ingest(sig("B"))
    # the counter goes up once the outbox has recorded the outcome (row deleted, depth updated)
    _wait(lambda: h.metric("regwarden_notifications_total", sink="rec", outcome="delivered") == 2)
    assert h.outbox("rec") == [] and len(flaky.sent) == 4
    names = [n.alerts[0].labels["alertname"] for n in flaky.sent]
    assert names[:2] == [names[0]] * 2 and names[2:] == sorted(set(names), key=names.index)
    assert h.metric("regwarden_notifications_total", sink="rec", outcome="retry") == 2
    assert h.metric("regwarden_notifications_total", sink="rec", outcome="delivered") == 2
    assert h.metric("regwarden_outbox_depth", sink="rec") == 0


def test_undelivered_rows_are_resumed_after_restart(make: Callable[..., Harness]) -> None:
    """Notifications queued but not delivered before a stop are delivered by the next pipeline."""
    h = make()
    p = h.pipeline({"rec": RecordingSink("rec")})  # no threads: nothing is delivered
    now = time.time()
    p.ingest(sig(), now=now - 10)
    p.evaluate(now)
    p.stop()
    rec = RecordingSink("rec")
    h.pipeline({"rec": rec}, threads=True)
    _wait(lambda: len(rec.sent) == 1 and h.outbox("rec") == [])
    assert rec.sent[0].alerts[0].labels["alertname"] == "RegistryDown"


def test_pacing_spaces_sends(make: Callable[..., Harness]) -> None:
    """With pacing, consecutive sends to one sink are at least that far apart."""
    h = make(alerts={"group_wait": "0s"}, sinks=[{"name": "rec", "type": "log", "pacing": "300ms"}])
    stamps: list[float] = []

    class Stamped(RecordingSink):
        def send(self, notification: Notification, *, timeout: float) -> Delivery:
            stamps.append(time.monotonic())
            return super().send(notification, timeout=timeout)

    p = h.pipeline({"rec": Stamped("rec")}, threads=True)
    for name in "ABC":
        p.ingest(sig(name))
    _wait(lambda: len(stamps) == 3)
    assert all(b - a >= 0.29 for a, b in itertools.pairwise(stamps))


def test_signals_arrive_through_the_bus(make: Callable[..., Harness]) -> None:
    """The component subscribes to the bus: a published Signal becomes an alert state."""
    h = make()
    p = h.pipeline({"rec": RecordingSink("rec")})
    h.ctx.bus.dispatch(sig())
    assert [a["alertname"] for a in p.status()["active_alerts"]] == ["RegistryDown"]
    assert h.metric("regwarden_alerts_active", severity="warning") == 1


def test_alerts_active_counts_firing_alerts_by_severity_across_restarts(make: Callable[..., Harness]) -> None:
    """regwarden_alerts_active follows firing and resolving, and is restored from the state store."""
    h = make()
    p = h.pipeline({"rec": RecordingSink("rec")})
    p.ingest(sig("A", severity="critical"), now=T0)
    p.ingest(sig("B", severity="warning"), now=T0)
    p.ingest(sig("B", severity="critical"), now=T0 + 1)  # severity changed: counted once, as critical
    assert h.metric("regwarden_alerts_active", severity="critical") == 2
    assert h.metric("regwarden_alerts_active", severity="warning") == 0
    p.ingest(sig("A", firing=False, severity="critical"), now=T0 + 2)
    assert h.metric("regwarden_alerts_active", severity="critical") == 1
    p.stop()
    h.metrics.alerts_active.labels("critical").set(0)
    h.pipeline({"rec": RecordingSink("rec")})
    assert h.metric("regwarden_alerts_active", severity="critical") == 1


def test_sink_fixed_after_a_permanent_failure_gets_the_failed_notification(make: Callable[..., Harness]) -> None:
    """After a restart with the sink working again, the notification that failed permanently is delivered
    and RegwardenSinkBroken is resolved."""
    h = make(alerts={"group_wait": "0s", "group_interval": "0s"},
             sinks=[{"name": "dead", "type": "log"}, {"name": "rec", "type": "log"}])
    dead = RecordingSink("dead", [Delivery(ok=False, retryable=False, detail="HTTP 404 no_service")])
    rec = RecordingSink("rec")
    p = h.pipeline({"dead": dead, "rec": rec}, threads=True)
    p.ingest(sig())
    _wait(lambda: any(a.labels["alertname"] == SINK_BROKEN for n in rec.sent for a in n.alerts))
    # recorded as delivered (row gone) before the stop, or the next pipeline would send it again
    _wait(lambda: h.outbox("rec") == [])
    p.stop()
    fixed, rec2 = RecordingSink("dead"), RecordingSink("rec")
    again = h.pipeline({"dead": fixed, "rec": rec2}, threads=True)
    _wait(lambda: bool(fixed.sent) and any(n.status == "resolved" for n in rec2.sent))
    assert [n.alerts[0].labels["alertname"] for n in fixed.sent] == ["RegistryDown"]
    assert [a.labels["alertname"] for n in rec2.sent for a in n.alerts] == [SINK_BROKEN]
    assert again.status()["sinks"]["dead"]["up"] is True
