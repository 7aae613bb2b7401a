"""`slack` sink: Block Kit messages through an incoming webhook or a bot token (`chat.postMessage`).

The webhook URL and the bot token are secrets: they are read from a file or an environment variable at
each send (so they can be rotated without a restart) and never appear in a `Delivery`, an exception or
a log line. Retries and pacing belong to the core; this sink only says how Slack answered.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import model_validator

from regwarden.sink_api import (
    Alert,
    Delivery,
    Notification,
    SinkMisconfigured,
    SinkOptions,
    classify_http_status,
    read_secret_option,
)

__all__ = ["SlackOptions", "SlackSink", "render"]

# Slack's documented limits: header text 150, section text 3000, 10 fields of 2000, 10 context elements,
# 50 blocks per message; chat.postMessage also refuses long messages (`msg_blocks_too_long`) well below
# 50 x 3000 characters, hence a total budget.
HEADER_MAX, SECTION_MAX, FIELDS_MAX, FIELD_MAX, BLOCKS_MAX, MESSAGE_BUDGET = 150, 3000, 10, 2000, 50, 12000
LABEL_VALUE_MAX = 300
_ICONS = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}
_RANK = {"info": 0, "warning": 1, "critical": 2}
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
_TRANSIENT = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited",
                        "rate_limited", "rollup_error"})
_TOKEN = re.compile(r"(xoxe\.)?xox[bp]-[A-Za-z0-9-]+")
# slack_sdk logs request URLs at debug level and errors on its own; an unattached logger that passes
# nothing keeps the webhook URL out of every log. This sink reports through `Delivery` instead.
_SDK_LOG = logging.Logger("regwarden_sinks.slack.sdk", level=logging.CRITICAL + 1)


class SlackOptions(SinkOptions):
    webhook_url_file: Path | None = None
    """File holding the incoming-webhook URL (mode 0600)."""
    webhook_url_env: str | None = None
    """Environment variable holding the incoming-webhook URL."""
    bot_token_file: Path | None = None
    """File holding a bot token (scope chat:write), instead of a webhook (mode 0600)."""
    bot_token_env: str | None = None
    """Environment variable holding a bot token, instead of a webhook."""
    channel: str | None = None
    """Bot token only: the channel ID or name to post to."""
    api_url: str = "https://slack.com/api/"
    """Bot token only: the Web API base URL (GovSlack, tests)."""

    @model_validator(mode="after")
    def _one_mode(self) -> SlackOptions:
        given = [k for k in ("webhook_url_file", "webhook_url_env", "bot_token_file", "bot_token_env")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of webhook_url_file, webhook_url_env, bot_token_file, bot_token_env")
        if self.bot and not self.channel:
            raise ValueError("channel is required with a bot token")
        if not self.bot and self.channel:
            raise ValueError("channel applies to bot tokens only; an incoming webhook posts to its own channel")
        return self

    @property
    def bot(self) -> bool:
        return self.bot_token_file is not None or self.bot_token_env is not None


class SlackSink:
    Options: ClassVar[type[SinkOptions]] = SlackOptions
    # seconds between two messages (Slack allows about one per second); the pipeline reads `pacing`,
    # `[[sinks]] pacing` overrides it
    pacing: ClassVar[float] = 1.0

    def __init__(self, name: str, options: SinkOptions) -> None:
        assert isinstance(options, SlackOptions)
        self.name = name
        self._options = options

    def check(self) -> None:
        _sdk()
        self._secret()

    def send(self, notification: Notification, *, timeout: float) -> Delivery:
        try:
            client = _Client(self._options, self._secret(), timeout)
        except SinkMisconfigured as exc:
            return Delivery(ok=False, retryable=False, detail=str(exc))
        return client.post(render(notification))

    def _secret(self) -> str:
        o = self._options
        if o.bot:
            token = read_secret_option("bot_token", o.bot_token_file, o.bot_token_env)
            if not _TOKEN.fullmatch(token):
                raise SinkMisconfigured("bot_token: not a Slack bot or user token (xoxb-... or xoxp-...)")
            return token
        url = read_secret_option("webhook_url", o.webhook_url_file, o.webhook_url_env)
        parts = urlsplit(url)
        loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
        if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
            raise SinkMisconfigured("webhook_url: not an https:// URL (as https://hooks.slack.com/services/...)")
        return url


def _sdk() -> ModuleType:
    try:
        import slack_sdk.web  # optional dependency: loaded when a Slack sink is used
        import slack_sdk.webhook
    except ImportError:
        raise SinkMisconfigured("the slack sink needs slack_sdk: pip install 'regwarden[slack]'") from None
    return slack_sdk


class _Client:
    """One delivery attempt through slack_sdk with its own retries disabled (the core owns retries)."""

    def __init__(self, options: SlackOptions, secret: str, timeout: float) -> None:
        self._options, self._secret, self._timeout = options, secret, timeout
        self._sdk = _sdk()

    def post(self, message: dict[str, Any]) -> Delivery:
        try:
            return self._post_bot(message) if self._options.bot else self._post_webhook(message)
        except TimeoutError:
            return Delivery(ok=False, retryable=True, detail=f"slack: no answer within {self._timeout:g}s")
        except OSError as exc:  # URLError, refused, reset, DNS
            reason = getattr(exc, "reason", exc)
            kind = "timed out" if isinstance(reason, TimeoutError) else type(reason).__name__
            return Delivery(ok=False, retryable=True, detail=f"slack: connection failed ({kind})")
        except self._sdk.errors.SlackClientError as exc:
            return Delivery(ok=False, retryable=False, detail=f"slack: slack_sdk refused ({type(exc).__name__})")
        except Exception as exc:  # http.client and json errors: a broken answer, worth another try
            return Delivery(ok=False, retryable=True, detail=f"slack: unexpected answer ({type(exc).__name__})")

    def _post_webhook(self, message: dict[str, Any]) -> Delivery:
        client = self._sdk.webhook.WebhookClient(url=self._secret, timeout=self._timeout, logger=_SDK_LOG,
                                                 retry_handlers=[])
        resp = client.send_dict(message)
        error = "" if 200 <= resp.status_code < 300 else str(resp.body).strip()
        return answer(resp.status_code, error, _header(resp.headers, "Retry-After"))

    def _post_bot(self, message: dict[str, Any]) -> Delivery:
        client = self._sdk.web.WebClient(token=self._secret, base_url=self._options.api_url, timeout=self._timeout,
                                         logger=_SDK_LOG, retry_handlers=[])
        try:
            client.chat_postMessage(channel=self._options.channel, **message)
        except self._sdk.errors.SlackApiError as exc:
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            return answer(exc.response.status_code, str(data.get("error", "")),
                          _header(exc.response.headers, "Retry-After"))
        return Delivery.success("slack: ok")


def answer(status: int, error: str, retry_after: str | None = None) -> Delivery:
    """What Slack's answer means: HTTP status plus its error code (webhook body or Web API `error`)."""
    code = error if _ERROR_CODE.fullmatch(error) else ""
    detail = " ".join(filter(None, ("slack:", f"HTTP {status}", code)))
    if 200 <= status < 300 and code in ("", "ok"):
        return Delivery.success(detail)
    if 200 <= status < 300:  # Web API: {"ok": false, "error": ...} with HTTP 200
        return Delivery(ok=False, retryable=code in _TRANSIENT, detail=detail)
    return classify_http_status(status, retry_after, detail)


def _header(headers: Any, name: str) -> str | None:
    for key, value in dict(headers or {}).items():
        if key.lower() == name.lower():
            return str(value[0] if isinstance(value, list) else value)
    return None


# --------------------------------------------------------------------------- Block Kit (pure)


def render(notification: Notification) -> dict[str, Any]:
    """The message for a notification: `text` (fallback for notifications) and `blocks`, cut to Slack's limits."""
    alerts = notification.alerts
    severity = max((a.severity for a in alerts), key=_RANK.__getitem__, default="info")
    title = alerts[0].summary if alerts else notification.group_key
    if len(alerts) > 1:
        title = f"{len(alerts)} alerts: {title}"
    if notification.status == "resolved":
        head = f":white_check_mark: RESOLVED: {title}"
    else:
        head = f"{_ICONS[severity]} {severity.upper()}: {title}"
    if notification.test:
        head = f"[TEST] {head}"
    blocks: list[dict[str, Any]] = [{"type": "header", "text": _plain(_cut(head, HEADER_MAX))}]
    budget, shown = MESSAGE_BUDGET - HEADER_MAX, 0
    for alert in alerts:
        more = _alert_blocks(alert, notification.host)
        size = len(str(more))
        if len(blocks) + len(more) + 1 > BLOCKS_MAX or size > budget:
            break
        blocks += more
        budget, shown = budget - size, shown + 1
    if shown < len(alerts):
        blocks.append({"type": "section", "text": _mrkdwn(f"_...and {len(alerts) - shown} more not shown_")})
    return {"text": _cut(_escape(head), SECTION_MAX), "blocks": blocks}


def _alert_blocks(alert: Alert, host: str) -> list[dict[str, Any]]:
    text = _escape(alert.annotations.get("description") or alert.summary)
    runbook = alert.annotations.get("runbook_url", "")
    link = f"\n:book: <{_escape(runbook)}|Runbook>" if runbook.startswith(("https://", "http://")) else ""
    if len(link) > SECTION_MAX // 2:
        link = ""
    section: dict[str, Any] = {"type": "section", "text": _mrkdwn(_cut(text, SECTION_MAX - len(link)) + link)}
    labels = sorted(alert.labels.items(), key=lambda kv: (kv[0] != "alertname", kv[0]))
    fields = [_mrkdwn(_cut(f"*{_escape(k)}*\n{_escape(_cut(v, LABEL_VALUE_MAX))}", FIELD_MAX)) for k, v in labels]
    if len(fields) > FIELDS_MAX:
        fields = [*fields[:FIELDS_MAX - 1], _mrkdwn(f"_+{len(fields) - FIELDS_MAX + 1} more labels_")]
    if fields:
        section["fields"] = fields
    when = f"since {_time(alert.starts_at)}"
    if alert.ends_at is not None:
        when = f"resolved {_time(alert.ends_at)} (since {_time(alert.starts_at)})"
    context = [f"*{alert.severity}*", f"host `{_escape(_cut(host, 200))}`", when, f"fingerprint `{alert.fingerprint}`"]
    return [section, {"type": "context", "elements": [_mrkdwn(c) for c in context]}, {"type": "divider"}]


def _escape(text: str) -> str:
    """mrkdwn control characters; also stops alert text from pinging (`<!channel>`) or forging links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return re.sub(r"&[a-z]{0,4}$", "", text[:limit - 1]) + "…"


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}
