"""The `slack` sink (incoming webhook and bot token) against the Slack stand-in: contract, Block Kit, limits."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from regwarden.errors import SinkMisconfigured
from regwarden_sinks.slack import SlackOptions, SlackSink, answer, render
from tests.fakes.slack import SlackStandin, blocks_problem
from tests.unit.sinks.contract import HttpSinkContract, Outcome, make_notification, write_secret

_FAILURE_FOR = {"permanent": "no_service", "server_error": "server_error", "rate_limited": "rate_limited"}


class TestSlackWebhookContract(HttpSinkContract):
    sink_type = "slack"

    def make_server(self, canary: str) -> Any:
        return SlackStandin(webhook_token=canary)

    def options(self, tmp_path: Path, base_url: str, canary: str) -> dict[str, Any]:
        url = f"{base_url}/services/T0RWTEST/B0RWTEST/{canary}"
        return {"webhook_url_file": str(write_secret(tmp_path / "slack-webhook", url))}

    def accepted(self, server: Any) -> int:
        return len(server.messages)

    def script(self, server: Any, outcome: Outcome, retry_after: float | None = None) -> None:
        if outcome != "ok":
            server.fail_next(_FAILURE_FOR[outcome], retry_after=retry_after)

    def hold(self, server: Any) -> threading.Event:
        event: threading.Event = server.server.hold_answers()
        return event


class TestSlackBotContract(TestSlackWebhookContract):
    def make_server(self, canary: str) -> Any:
        return SlackStandin(bot_token=f"xoxb-{canary}")

    def options(self, tmp_path: Path, base_url: str, canary: str) -> dict[str, Any]:
        return {"bot_token_file": str(write_secret(tmp_path / "slack-token", f"xoxb-{canary}")),
                "channel": "C0ALERTS", "api_url": f"{base_url}/api/"}

    def script(self, server: Any, outcome: Outcome, retry_after: float | None = None) -> None:
        if outcome == "permanent":
            server.fail_next("channel_is_archived")  # Web API: HTTP 200 {"ok": false, "error": "is_archived"}
        else:
            super().script(server, outcome, retry_after)


@pytest.fixture
def slack() -> Any:
    standin = SlackStandin()
    yield standin
    standin.close()


def webhook_sink(slack: SlackStandin, tmp_path: Path) -> SlackSink:
    url = write_secret(tmp_path / "slack-webhook", slack.webhook_url)
    return SlackSink("oncall", SlackOptions(webhook_url_file=url))


def bot_sink(slack: SlackStandin, tmp_path: Path, channel: str = "C0ALERTS") -> SlackSink:
    token = write_secret(tmp_path / "slack-token", slack.bot_token)
    return SlackSink("oncall", SlackOptions(bot_token_file=token, channel=channel, api_url=slack.api_url))


def texts(message: dict[str, Any]) -> str:
    """Every text Slack would show for a message, joined."""
    out = [message.get("text", "")]
    for block in message["blocks"]:
        out += [block.get("text", {}).get("text", "")]
        out += [f["text"] for f in block.get("fields", [])] + [e["text"] for e in block.get("elements", [])]
    return "\n".join(out)


# --------------------------------------------------------------------------- Block Kit content


def test_firing_message_shows_severity_summary_labels_description_runbook_and_host(slack: SlackStandin,
                                                                                   tmp_path: Path) -> None:
    """The message has a header with severity and summary, label fields, the description, runbook link, host."""
    n = make_notification(annotations={"runbook_url": "https://runbooks.example/registry-down"})
    assert webhook_sink(slack, tmp_path).send(n, timeout=5).ok
    message = slack.messages[0]
    header = message["blocks"][0]
    assert header["type"] == "header"
    assert header["text"]["text"] == ":rotating_light: CRITICAL: registry internal-0 is down"
    shown = texts(message)
    assert "*alertname*\nRegistryDown" in shown and "*registry*\ninternal-0" in shown
    assert "GET /v2/ failed 3 times: connection refused" in shown
    assert "<https://runbooks.example/registry-down|Runbook>" in shown
    assert "host `docker-07`" in shown


def test_resolved_message_looks_different(slack: SlackStandin, tmp_path: Path) -> None:
    """A resolution has a RESOLVED header with a check mark and says when it resolved."""
    assert webhook_sink(slack, tmp_path).send(make_notification(resolved=True), timeout=5).ok
    message = slack.messages[0]
    assert message["blocks"][0]["text"]["text"] == ":white_check_mark: RESOLVED: registry internal-0 is down"
    assert "resolved 2026-11-27 08:05:00 UTC" in texts(message)


def test_group_header_counts_alerts(slack: SlackStandin, tmp_path: Path) -> None:
    """A group of alerts says how many it holds and shows each one."""
    assert webhook_sink(slack, tmp_path).send(make_notification(count=3), timeout=5).ok
    message = slack.messages[0]
    assert message["blocks"][0]["text"]["text"].endswith("3 alerts: registry internal-0 is down")
    assert all(f"internal-{i}" in texts(message) for i in range(3))


def test_alert_text_cannot_ping_the_channel_or_forge_links() -> None:
    """<!channel>, <@U123> and <url|text> in alert text are escaped, not interpreted by Slack."""
    n = make_notification(annotations={"description": "see <!channel> <@U123> <https://evil.example|docs> & co"})
    shown = texts(render(n))
    assert "<!channel>" not in shown and "<https://evil.example" not in shown
    assert "&lt;!channel&gt; &lt;@U123&gt; &lt;https://evil.example|docs&gt; &amp; co" in shown


def test_test_notifications_are_marked() -> None:
    """A test notification (`regwarden alerts test`) says so in its header."""
    from dataclasses import replace

    message = render(replace(make_notification(), test=True))
    assert message["blocks"][0]["text"]["text"].startswith("[TEST] ")


# --------------------------------------------------------------------------- Slack's limits


def test_long_texts_are_cut_to_slack_limits_and_accepted(slack: SlackStandin, tmp_path: Path) -> None:
    """A 1,000-char summary, 10,000-char description and 32 labels are cut so that Slack accepts the message."""
    labels = {f"label{i:02}": "v" * 5000 for i in range(30)}
    n = make_notification(labels=labels, annotations={"summary": "S" * 1000, "description": "D" * 10_000})
    assert webhook_sink(slack, tmp_path).send(n, timeout=5).ok
    blocks = slack.messages[0]["blocks"]
    assert len(blocks[0]["text"]["text"]) == 150 and blocks[0]["text"]["text"].endswith("…")
    section = blocks[1]
    assert len(section["text"]["text"]) <= 3000 and section["text"]["text"].endswith("…")
    assert len(section["fields"]) == 10 and section["fields"][-1]["text"] == "_+23 more labels_"


def test_many_alerts_fit_in_one_message_with_a_remainder_note(slack: SlackStandin, tmp_path: Path) -> None:
    """200 alerts in one group become at most 50 blocks within Slack's size, ending with "...and N more"."""
    n = make_notification(count=200, annotations={"description": "x" * 2000})
    assert bot_sink(slack, tmp_path).send(n, timeout=5).ok
    blocks = slack.messages[0]["blocks"]
    assert len(blocks) <= 50
    assert blocks[-1]["text"]["text"].startswith("_...and ") and blocks[-1]["text"]["text"].endswith(" more not shown_")


def test_every_rendered_message_passes_slack_block_validation() -> None:
    """Messages for small, huge, firing and resolved groups all pass the stand-in's Block Kit checks."""
    cases = [make_notification(), make_notification(resolved=True), make_notification(count=60),
             make_notification(count=5, annotations={"summary": "é" * 400, "description": "&<>" * 3000})]
    assert [blocks_problem(render(n)["blocks"]) for n in cases] == ["", "", "", ""]


def test_the_standin_refuses_what_slack_refuses(slack: SlackStandin) -> None:
    """The stand-in enforces the limits it claims to (else the tests above could not fail)."""
    header = {"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}
    assert blocks_problem([header]) == "invalid_blocks"
    assert blocks_problem([{"type": "divider"}] * 51) == "invalid_blocks"
    assert blocks_problem([{"type": "section", "text": {"type": "mrkdwn", "text": "t" * 3001}}]) == "invalid_blocks"


# --------------------------------------------------------------------------- Slack's answers


@pytest.mark.parametrize(("failure", "status", "code"), [
    ("no_service", 404, "no_service"),
    ("channel_is_archived", 410, "channel_is_archived"),
    ("action_prohibited", 403, "action_prohibited"),
])
def test_webhook_gone_or_prohibited_is_permanent(slack: SlackStandin, tmp_path: Path, failure: Any, status: int,
                                                code: str) -> None:
    """404 no_service, 410 channel_is_archived and 403 action_prohibited are permanent, with Slack's code."""
    slack.fail_next(failure)
    delivery = webhook_sink(slack, tmp_path).send(make_notification(), timeout=5)
    assert (delivery.ok, delivery.retryable, delivery.detail) == (False, False, f"slack: HTTP {status} {code}")


def test_bot_archived_channel_is_permanent(slack: SlackStandin, tmp_path: Path) -> None:
    """chat.postMessage into an archived channel (HTTP 200, is_archived) is permanent."""
    slack.fail_always("channel_is_archived")
    delivery = bot_sink(slack, tmp_path).send(make_notification(), timeout=5)
    assert (delivery.ok, delivery.retryable, delivery.detail) == (False, False, "slack: HTTP 200 is_archived")


def test_bot_unknown_channel_is_permanent(slack: SlackStandin, tmp_path: Path) -> None:
    """A channel the bot cannot post to (channel_not_found) is permanent."""
    delivery = bot_sink(slack, tmp_path, channel="C0NOWHERE").send(make_notification(), timeout=5)
    assert (delivery.ok, delivery.retryable, delivery.detail) == (False, False, "slack: HTTP 200 channel_not_found")


@pytest.mark.parametrize("mode", ["webhook", "bot"])
def test_rate_limit_is_one_request_not_an_sdk_retry(slack: SlackStandin, tmp_path: Path, mode: str) -> None:
    """slack_sdk's own retries are off: a 429 comes back after one request, with Retry-After for the core."""
    slack.fail_next("rate_limited", retry_after=30)
    sink = webhook_sink(slack, tmp_path) if mode == "webhook" else bot_sink(slack, tmp_path)
    delivery = sink.send(make_notification(), timeout=5)
    assert (delivery.retryable, delivery.retry_after, len(slack.received)) == (True, 30.0, 1)


@pytest.mark.parametrize(("status", "error", "ok", "retryable"), [
    (200, "", True, False),
    (200, "ok", True, False),
    (400, "invalid_payload", False, False),
    (400, "invalid_blocks", False, False),
    (403, "action_prohibited", False, False),
    (404, "no_service", False, False),
    (410, "channel_is_archived", False, False),
    (429, "rate_limited", False, True),
    (500, "rollup_error", False, True),
    (503, "<html>", False, True),
    (200, "invalid_auth", False, False),
    (200, "is_archived", False, False),
    (200, "internal_error", False, True),
    (200, "service_unavailable", False, True),
])
def test_answer_mapping(status: int, error: str, ok: bool, retryable: bool) -> None:
    """Slack's HTTP status and error code map to ok / retryable / permanent."""
    delivery = answer(status, error)
    assert (delivery.ok, delivery.retryable) == (ok, retryable)


def test_answer_never_echoes_an_unexpected_body() -> None:
    """Only Slack error codes reach Delivery.detail; any other body text is dropped."""
    assert answer(502, "<html>upstream https://hooks.slack.com/services/T/B/secret</html>").detail == "slack: HTTP 502"


# --------------------------------------------------------------------------- options and check()


@pytest.mark.parametrize("opts", [
    {},
    {"webhook_url_file": "/a", "bot_token_file": "/b", "channel": "C1"},
    {"bot_token_env": "SLACK_TOKEN"},
    {"webhook_url_env": "SLACK_URL", "channel": "C1"},
])
def test_option_combinations_are_validated(opts: dict[str, Any]) -> None:
    """Exactly one secret source; a channel with (and only with) a bot token."""
    with pytest.raises(ValidationError):
        SlackOptions.model_validate(opts)


@pytest.mark.parametrize("url", ["http://hooks.slack.com/services/T/B/X", "hooks.slack.com/services/T/B/X", "x"])
def test_check_refuses_implausible_webhook_urls(tmp_path: Path, url: str) -> None:
    """A webhook URL that is not https (plain http only to loopback) fails check() without being quoted."""
    path = write_secret(tmp_path / "u", url)
    with pytest.raises(SinkMisconfigured, match="webhook_url: not an https://") as info:
        SlackSink("oncall", SlackOptions(webhook_url_file=path)).check()
    assert url not in str(info.value)


def test_check_refuses_a_token_that_is_not_a_slack_token(tmp_path: Path) -> None:
    """A bot token file holding something else (a webhook URL pasted there) fails check()."""
    path = write_secret(tmp_path / "t", "https://hooks.slack.com/services/T/B/X")
    with pytest.raises(SinkMisconfigured, match="bot_token: not a Slack"):
        SlackSink("oncall", SlackOptions(bot_token_file=path, channel="C1")).check()


def test_secret_from_environment(slack: SlackStandin, monkeypatch: pytest.MonkeyPatch) -> None:
    """webhook_url_env reads the URL from the environment; an unset variable fails check() by name."""
    monkeypatch.setenv("RW_TEST_SLACK_URL", slack.webhook_url)
    assert SlackSink("oncall", SlackOptions(webhook_url_env="RW_TEST_SLACK_URL")).send(make_notification(),
                                                                                      timeout=5).ok
    with pytest.raises(SinkMisconfigured, match="RW_TEST_UNSET is not set"):
        SlackSink("oncall", SlackOptions(webhook_url_env="RW_TEST_UNSET")).check()


def test_missing_slack_sdk_is_a_clear_misconfiguration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without slack_sdk installed, check() says to install regwarden[slack] and send() fails permanently."""
    for name in [m for m in sys.modules if m == "slack_sdk" or m.startswith("slack_sdk.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "slack_sdk", None)  # makes `import slack_sdk` raise ImportError
    sink = SlackSink("oncall", SlackOptions(webhook_url_file=write_secret(tmp_path / "u", "https://hooks.example/x")))
    with pytest.raises(SinkMisconfigured, match=r"pip install 'regwarden\[slack\]'"):
        sink.check()
    delivery = sink.send(make_notification(), timeout=5)
    assert (delivery.ok, delivery.retryable) == (False, False) and "regwarden[slack]" in delivery.detail


def test_default_pacing_is_one_message_per_second() -> None:
    """The sink declares Slack's documented pace for the core to apply."""
    assert SlackSink.pacing == 1.0
