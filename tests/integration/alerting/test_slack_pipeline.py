"""The Slack sink inside the running alert pipeline: Retry-After, broken sinks, deduplication."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regwarden.alerting.pipeline import SINK_BROKEN
from regwarden.events import Signal
from tests.fakes.http import RecordingServer
from tests.fakes.slack import SlackStandin
from tests.integration.alerting.rig import PipelineRig, wait_for
from tests.unit.sinks.contract import write_secret

pytestmark = pytest.mark.integration


def registry_down() -> Signal:
    return Signal(labels={"alertname": "RegistryDown", "registry": "internal"}, severity="critical",
                  annotations={"summary": "registry internal is down"})


@pytest.fixture
def slack() -> Iterator[SlackStandin]:
    standin = SlackStandin()
    yield standin
    standin.close()


@pytest.fixture
def receiver() -> Iterator[RecordingServer]:
    server = RecordingServer()
    yield server
    server.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Any]:
    rigs: list[PipelineRig] = []

    def make(sinks: list[dict[str, Any]], **alerts: Any) -> PipelineRig:
        rigs.append(PipelineRig(tmp_path, sinks, alerts))
        return rigs[-1]

    yield make
    for r in rigs:
        r.close()


def slack_table(slack: SlackStandin, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    url = write_secret(tmp_path / "slack-webhook", slack.webhook_url)
    return {"name": "oncall", "type": "slack", "webhook_url_file": str(url), **extra}


def test_slack_route_is_paced_at_one_message_per_second(slack: SlackStandin, tmp_path: Path, rig: Any) -> None:
    """Without `pacing` in its table, the Slack sink's route uses the sink's 1 s pacing."""
    r = rig([slack_table(slack, tmp_path)])
    assert r.pipeline.routes["oncall"].pacing == 1.0


def test_retry_after_is_honoured(slack: SlackStandin, tmp_path: Path, rig: Any) -> None:
    """After a 429 with Retry-After: 2, the pipeline sends again, and not before 2 s have passed."""
    slack.fail_next("rate_limited", retry_after=2)
    r = rig([slack_table(slack, tmp_path)])
    r.ctx.signal(registry_down())
    wait_for(lambda: slack.messages, what="the message after the 429")
    first, second = slack.received[0], slack.received[1]
    assert second.at - first.at >= 2.0
    assert len(slack.messages) == 1 and "oncall" not in r.pipeline.broken


@pytest.mark.parametrize(("failure", "detail"), [("no_service", "slack: HTTP 404 no_service"),
                                                 ("channel_is_archived", "slack: HTTP 410 channel_is_archived")])
def test_gone_webhook_marks_sink_broken_and_alerts_elsewhere(slack: SlackStandin, receiver: RecordingServer,
                                                             tmp_path: Path, rig: Any, failure: Any,
                                                             detail: str) -> None:
    """Slack 404/410 marks the Slack sink broken, and that breakage is alerted through the webhook sink."""
    slack.fail_always(failure)
    r = rig([slack_table(slack, tmp_path), {"name": "hooks", "type": "webhook", "url": receiver.url + "/alerts"}])
    r.ctx.signal(registry_down())

    def broken_alert() -> dict[str, Any] | None:
        for request in list(receiver.received):
            for alert in request.json()["alerts"]:
                if alert["labels"]["alertname"] == SINK_BROKEN:
                    return dict(alert)
        return None

    alert = wait_for(broken_alert, what="the sink-broken alert at the webhook receiver")
    assert alert["labels"]["sink"] == "oncall" and alert["severity"] == "critical"
    assert alert["annotations"]["description"] == detail
    assert r.pipeline.broken == {"oncall": detail}
    assert len(slack.received) == 1 and slack.messages == []  # a permanent failure is not retried


def test_a_thousand_identical_signals_make_one_message(slack: SlackStandin, tmp_path: Path, rig: Any) -> None:
    """1,000 identical firing signals spread over 3 s (past group_wait and group_interval) make one message."""
    r = rig([slack_table(slack, tmp_path)], group_wait="500ms", group_interval="1s")
    for _ in range(10):
        for _ in range(100):
            r.ctx.signal(registry_down())
        time.sleep(0.3)
    assert r.bus.stop(5.0)  # every signal dispatched to the pipeline
    wait_for(lambda: slack.messages, what="the Slack message")
    # The stand-in has the message before the sender has recorded Slack's answer: wait for the record.
    wait_for(lambda: r.notifications("oncall", "delivered") == 1, what="the delivery recorded")
    r.pipeline.evaluate(now=time.time() + 60)  # anything still pending would be queued now
    assert r.outbox_rows("oncall") == 0  # nothing else queued (delivered rows leave the outbox)
    assert r.notifications("oncall", "delivered") == 1
    assert len(slack.received) == 1
    assert slack.messages[0]["blocks"][0]["text"]["text"] == ":rotating_light: CRITICAL: registry internal is down"
