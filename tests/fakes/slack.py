"""A stand-in for Slack (no Slack service is reachable here): a real local HTTP server answering as Slack's
incoming webhooks and Web API `chat.postMessage` are documented to, and recording what it accepted.

Incoming webhooks answer with a plain-text body: 200 `ok`; 400 `invalid_payload` / `invalid_blocks` /
`no_text`; 403 `action_prohibited`; 404 `no_service` (unknown or revoked webhook); 410
`channel_is_archived`; 500 `rollup_error`; 429 with `Retry-After` when rate limited.
The Web API answers JSON `{"ok": false, "error": ...}` with HTTP 200 for errors (`not_authed`,
`invalid_auth`, `channel_not_found`, `is_archived`, `restricted_action`, `invalid_blocks`,
`msg_blocks_too_long`, `no_text`), 429 `ratelimited` with `Retry-After`, and 5xx when Slack itself fails.
Block Kit limits are enforced as Slack does (header 150, section text 3000, 10 fields of 2000, 10 context
elements, 50 blocks), so a message the sink failed to cut is refused here too.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from tests.fakes.http import Answer, Received, RecordingServer

__all__ = ["Failure", "SlackStandin", "blocks_problem"]

Failure = Literal["rate_limited", "no_service", "channel_is_archived", "action_prohibited", "server_error"]
# (webhook status, webhook body, Web API status, Web API error) for each scripted failure
_FAILURES: dict[str, tuple[int, str, int, str]] = {
    "rate_limited": (429, "rate_limited", 429, "ratelimited"),
    "no_service": (404, "no_service", 200, "channel_not_found"),
    "channel_is_archived": (410, "channel_is_archived", 200, "is_archived"),
    "action_prohibited": (403, "action_prohibited", 200, "restricted_action"),
    "server_error": (500, "rollup_error", 503, ""),
}
_BLOCKS_TOO_LONG = 13000  # Slack refuses long block messages (`msg_blocks_too_long`) near 13k characters


@dataclass(frozen=True)
class _Scripted:
    failure: Failure
    retry_after: float | None


class SlackStandin:
    """`webhook_url` (a secret: it embeds `webhook_token`) and `api_url` + `bot_token` + `channel`."""

    def __init__(self, *, webhook_token: str = "XXXXstandinXXXX", bot_token: str = "xoxb-0000-standin",
                 channel: str = "C0ALERTS") -> None:
        self.webhook_path = f"/services/T0RWTEST/B0RWTEST/{webhook_token}"
        self.bot_token, self.channel = bot_token, channel
        self.messages: list[dict[str, Any]] = []  # what the channel shows, in order
        self.accepted_at: list[float] = []  # time.monotonic() of each accepted message
        self._script: list[_Scripted] = []
        self._sticky: Failure | None = None
        self._lock = threading.Lock()
        self.server = RecordingServer(self._respond)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def webhook_url(self) -> str:
        return self.server.url + self.webhook_path

    @property
    def api_url(self) -> str:
        return self.server.url + "/api/"

    @property
    def received(self) -> list[Received]:
        return self.server.received

    def fail_next(self, failure: Failure, *, retry_after: float | None = None, times: int = 1) -> None:
        """The next `times` posts fail as Slack does for `failure`."""
        with self._lock:
            self._script.extend(_Scripted(failure, retry_after) for _ in range(times))

    def fail_always(self, failure: Failure) -> None:
        """Every post from now on fails (an archived channel, a revoked webhook)."""
        self._sticky = failure

    def close(self) -> None:
        self.server.close()

    def _next_failure(self) -> _Scripted | None:
        with self._lock:
            if self._script:
                return self._script.pop(0)
        return _Scripted(self._sticky, None) if self._sticky else None

    def _respond(self, request: Received) -> Answer:
        if request.path == self.webhook_path:
            return self._webhook(request)
        if request.path == "/api/chat.postMessage":
            return self._chat_post_message(request)
        if request.path.startswith("/services/"):
            return Answer(404, "no_service")
        return Answer(404, "not found")

    def _webhook(self, request: Received) -> Answer:
        failure = self._next_failure()
        if failure is not None:
            status, body, _, _ = _FAILURES[failure.failure]
            return Answer(status, body, _retry_after(failure))
        try:
            message = json.loads(request.body)
        except ValueError:
            return Answer(400, "invalid_payload")
        if not isinstance(message, dict):
            return Answer(400, "invalid_payload")
        problem = _message_problem(message)
        if problem:
            return Answer(400, "invalid_blocks" if problem == "msg_blocks_too_long" else problem)
        return self._accept(message, 200, "ok")

    def _chat_post_message(self, request: Received) -> Answer:
        auth = request.headers.get("authorization", "")
        if not auth:
            return Answer(200, {"ok": False, "error": "not_authed"})
        if auth != f"Bearer {self.bot_token}":
            return Answer(200, {"ok": False, "error": "invalid_auth"})
        failure = self._next_failure()
        if failure is not None:
            _, _, status, error = _FAILURES[failure.failure]
            if status >= 500:
                return Answer(status, "<html>service unavailable</html>")
            return Answer(status, {"ok": False, "error": error}, _retry_after(failure))
        try:
            message = json.loads(request.body)
        except ValueError:
            return Answer(200, {"ok": False, "error": "invalid_json"})
        if message.get("channel") != self.channel:
            return Answer(200, {"ok": False, "error": "channel_not_found"})
        problem = _message_problem(message)
        if problem:
            return Answer(200, {"ok": False, "error": problem})
        ts = f"{time.time():.6f}"
        return self._accept(message, 200, {"ok": True, "channel": self.channel, "ts": ts, "message": message})

    def _accept(self, message: dict[str, Any], status: int, body: str | dict[str, Any]) -> Answer:
        with self._lock:
            self.messages.append(message)
            self.accepted_at.append(time.monotonic())
        return Answer(status, body)


def _retry_after(failure: _Scripted) -> dict[str, str]:
    if failure.failure != "rate_limited":
        return {}
    return {"Retry-After": f"{failure.retry_after if failure.retry_after is not None else 1:g}"}


def _message_problem(message: dict[str, Any]) -> str:
    blocks = message.get("blocks")
    if not message.get("text") and not blocks:
        return "no_text"
    if blocks is None:
        return ""
    return blocks_problem(blocks)


def blocks_problem(blocks: Any) -> str:
    """Slack's error code for a `blocks` array that breaks its documented limits, or ""."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "invalid_blocks"
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "header":
            text = block.get("text", {})
            if text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= 150:
                return "invalid_blocks"
        elif kind == "section":
            text, fields = block.get("text"), block.get("fields", [])
            if text is None and not fields:
                return "invalid_blocks"
            if text is not None and not 0 < len(text.get("text", "")) <= 3000:
                return "invalid_blocks"
            if len(fields) > 10 or any(not 0 < len(f.get("text", "")) <= 2000 for f in fields):
                return "invalid_blocks"
        elif kind == "context":
            elements = block.get("elements", [])
            if not 0 < len(elements) <= 10:
                return "invalid_blocks"
        elif kind != "divider":
            return "invalid_blocks"
    if len(json.dumps(blocks)) > _BLOCKS_TOO_LONG:
        return "msg_blocks_too_long"
    return ""
