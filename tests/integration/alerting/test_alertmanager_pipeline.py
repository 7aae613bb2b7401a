"""The alert pipeline delivering to a real Alertmanager (API v2): fire, resolve, restart, dedup."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from regwarden.alerting.pipeline import SINK_BROKEN
from regwarden.events import Signal
from tests.fakes.http import recording_server
from tests.integration.alerting.rig import PipelineRig, wait_for

pytestmark = pytest.mark.integration


def tls_expiring(firing: bool = True) -> Signal:
    return Signal(labels={"alertname": "RegistryTlsExpiring", "registry": "internal"}, firing=firing,
                  severity="warning", annotations={"summary": "certificate of internal expires in 5 days"})


def am_alerts(url: str, alertname: str) -> list[dict[str, Any]]:
    """Alerts Alertmanager holds with that alertname and an endsAt still in the future (i.e. active)."""
    now = time.time()
    return [a for a in requests.get(f"{url}/api/v2/alerts", timeout=5).json()
            if a["labels"].get("alertname") == alertname
            and datetime.fromisoformat(a["endsAt"].replace("Z", "+00:00")).timestamp() > now]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Any]:
    rigs: list[PipelineRig] = []

    def make(url: str, **alerts: Any) -> PipelineRig:
        rigs.append(PipelineRig(tmp_path, [{"name": "am", "type": "alertmanager", "url": url}], alerts))
        return rigs[-1]

    yield make
    for r in rigs:
        r.close()


def test_firing_alert_appears_with_its_labels_and_resolving_ends_it(alertmanager: Any, rig: Any) -> None:
    """A firing signal shows up in /api/v2/alerts with its labels, host and severity; resolving ends it."""
    r = rig(alertmanager.url)
    r.ctx.signal(tls_expiring())
    [alert] = wait_for(lambda: am_alerts(alertmanager.url, "RegistryTlsExpiring"), what="the alert in Alertmanager")
    assert alert["labels"] == {"alertname": "RegistryTlsExpiring", "registry": "internal", "host": "docker-07",
                               "severity": "warning"}
    assert alert["annotations"] == {"summary": "certificate of internal expires in 5 days"}
    r.ctx.signal(tls_expiring(firing=False))
    wait_for(lambda: not am_alerts(alertmanager.url, "RegistryTlsExpiring"), what="the alert to end")
    # Alertmanager holds the resolution before the sender has recorded its answer: wait for the record.
    wait_for(lambda: r.notifications("am", "delivered") == 2, what="both deliveries recorded")
    assert r.outbox_rows("am") == 0


def test_restart_between_fire_and_resolve_sends_no_duplicate(alertmanager: Any, rig: Any) -> None:
    """A new pipeline on the same state store re-sends nothing for a re-emitted signal, then resolves it."""
    first = rig(alertmanager.url)
    first.ctx.signal(tls_expiring())
    wait_for(lambda: am_alerts(alertmanager.url, "RegistryTlsExpiring"), what="the alert in Alertmanager")
    wait_for(lambda: first.notifications("am", "delivered") == 1, what="delivery recorded")
    first.close()

    second = rig(alertmanager.url)
    second.ctx.signal(tls_expiring())  # a detector states the same thing again after the restart
    assert second.bus.stop(5.0)
    second.pipeline.evaluate()
    assert second.outbox_rows("am") == 0 and second.notifications("am", "delivered") == 0
    assert len(am_alerts(alertmanager.url, "RegistryTlsExpiring")) == 1

    second.pipeline.ingest(tls_expiring(firing=False))
    wait_for(lambda: not am_alerts(alertmanager.url, "RegistryTlsExpiring"), what="the alert to end")
    wait_for(lambda: second.notifications("am", "delivered") == 1, what="the resolution recorded")
    assert second.outbox_rows("am") == 0


def test_a_thousand_identical_signals_post_once(alertmanager: Any, rig: Any) -> None:
    """1,000 identical firing signals within 10 s give one notification to Alertmanager."""
    r = rig(alertmanager.url, group_wait="500ms", group_interval="1s")
    started = time.monotonic()
    for _ in range(5):
        for _ in range(200):
            r.ctx.signal(tls_expiring())
        time.sleep(0.4)
    assert r.bus.stop(5.0)
    assert time.monotonic() - started < 10
    wait_for(lambda: r.notifications("am", "delivered") == 1, what="the one delivery")
    r.pipeline.evaluate(now=time.time() + 30)  # past group_interval: anything pending would be queued now
    assert r.outbox_rows("am") == 0 and r.notifications("am", "delivered") == 1
    assert len(am_alerts(alertmanager.url, "RegistryTlsExpiring")) == 1


def test_active_alerts_are_reposted_every_resend_interval(alertmanager: Any, rig: Any) -> None:
    """The core re-posts a firing alert to Alertmanager after the sink's resend_interval (60 s)."""
    r = rig(alertmanager.url)
    r.ctx.signal(tls_expiring())
    wait_for(lambda: r.notifications("am", "delivered") == 1, what="the first post")
    r.pipeline.evaluate(now=time.time() + 59)
    assert r.outbox_rows("am") == 0
    r.pipeline.evaluate(now=time.time() + 61)
    wait_for(lambda: r.notifications("am", "delivered") == 2, what="the re-post")


def test_misconfigured_sink_is_alerted_through_the_others(tmp_path: Path) -> None:
    """A sink whose check() fails at start (missing token file) is down and alerted via the webhook sink."""
    with recording_server() as receiver:
        r = PipelineRig(tmp_path, [
            {"name": "am", "type": "alertmanager", "url": "http://127.0.0.1:9",
             "bearer_token_file": str(tmp_path / "missing-token")},
            {"name": "hooks", "type": "webhook", "url": receiver.url + "/alerts"}])
        try:
            [alert] = wait_for(lambda: [a for req in list(receiver.received) for a in req.json()["alerts"]],
                               what="the sink-broken alert")
        finally:
            r.close()
    assert alert["labels"] == {"alertname": SINK_BROKEN, "sink": "am", "host": "docker-07"}
    assert "bearer_token_file" in alert["annotations"]["description"]
    assert r.metrics.registry.get_sample_value("regwarden_sink_up", {"sink": "am"}) == 0
