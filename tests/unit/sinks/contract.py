"""The contract every sink's tests subclass (after Alertmanager's `AssertNotifyLeaksNoSecret`).

How to use it for a new sink (e.g. `tests/unit/sinks/test_alertmanager_sink.py`)::

    from tests.unit.sinks.contract import HttpSinkContract

    class TestAlertmanagerSinkContract(HttpSinkContract):
        sink_type = "alertmanager"                      # the entry-point name

        def options(self, tmp_path, base_url, canary):  # the [[sinks]] keys besides name/type
            return {"url": base_url, ...}               # put `canary` into every secret (a *_file, 0600)

By default the server is a `tests.fakes.http.RecordingServer` answering 200 / 400 / 503 / 429 +
Retry-After; override `make_server`, `script` and `accepted` when the service answers differently (see the
Slack contract). A sink without network or secrets subclasses `SinkContract` instead.

Every secret the sink reads must contain `canary` (a fresh random string per test); the leak test runs each
outcome and asserts the canary never appears in a `Delivery`, an exception, or captured logs (structlog
events captured before any redaction, stdlib records, stdout/stderr).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import structlog

from regwarden.errors import SinkMisconfigured
from regwarden.sink_api import Alert, Delivery, Notification, Sink
from regwarden.sinks import _plugin_class
from tests.fakes.http import Answer, RecordingServer

__all__ = ["HttpSinkContract", "Outcome", "SinkContract", "make_notification", "write_secret"]

Outcome = Literal["ok", "permanent", "server_error", "rate_limited"]
NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def make_notification(*, resolved: bool = False, labels: dict[str, str] | None = None,
                      annotations: dict[str, str] | None = None, count: int = 1, nid: int = 1) -> Notification:
    """A realistic notification of `count` alerts sharing an alertname."""
    alerts = []
    for index in range(count):
        lab = {"alertname": "RegistryDown", "registry": f"internal-{index}", **(labels or {})}
        ann = {"summary": f"registry internal-{index} is down",
               "description": "GET /v2/ failed 3 times: connection refused", **(annotations or {})}
        alerts.append(Alert(labels=lab, annotations=ann, severity="critical", starts_at=NOW,
                            ends_at=NOW + timedelta(minutes=5) if resolved else None, fingerprint=f"{index:016x}"))
    return Notification(id=nid, group_key='{alertname="RegistryDown"}', status="resolved" if resolved else "firing",
                        alerts=tuple(alerts), host="docker-07", receiver="contract", created_at=NOW,
                        common_labels={"alertname": "RegistryDown"})


def write_secret(path: Path, value: str, mode: int = 0o600) -> Path:
    path.write_text(value + "\n", encoding="utf-8")
    os.chmod(path, mode)
    return path


class SinkContract:
    """What every sink does: delivers firing and resolved notifications, validates its options, checks."""

    sink_type: ClassVar[str]

    def options(self, tmp_path: Path, base_url: str, canary: str) -> dict[str, Any]:
        """The sink's own `[[sinks]]` keys, pointing at `base_url`, every secret containing `canary`."""
        raise NotImplementedError

    def accepted(self, server: Any) -> int:
        """How many messages the receiving end accepted so far."""
        raise NotImplementedError

    def make_server(self, canary: str) -> Any:
        """The receiving end (closed with `.close()`), knowing the secret it expects; `None` if there is none."""
        return None

    def base_url(self, server: Any) -> str:
        return str(getattr(server, "url", ""))

    # ----------------------------------------------------------------- helpers

    @pytest.fixture
    def server(self, canary: str) -> Any:
        server = self.make_server(canary)
        yield server
        if server is not None:
            server.close()

    @pytest.fixture
    def canary(self) -> str:
        return f"canary{uuid.uuid4().hex}"

    def build(self, opts: dict[str, Any], name: str = "contract") -> Sink:
        cls = _plugin_class(self.sink_type)
        sink: Sink = cls(name, cls.Options.model_validate(opts))
        return sink

    def sink(self, tmp_path: Path, server: Any, canary: str) -> Sink:
        return self.build(self.options(tmp_path, self.base_url(server), canary))

    # ----------------------------------------------------------------- the contract

    def test_firing_notification_is_delivered(self, tmp_path: Path, server: Any, canary: str) -> None:
        """A firing notification the receiver accepts gives Delivery.ok and reaches the receiver once."""
        delivery = self.sink(tmp_path, server, canary).send(make_notification(), timeout=5)
        assert delivery.ok, delivery
        assert self.accepted(server) == 1

    def test_resolved_notification_is_delivered(self, tmp_path: Path, server: Any, canary: str) -> None:
        """A resolved notification is delivered like a firing one."""
        delivery = self.sink(tmp_path, server, canary).send(make_notification(resolved=True), timeout=5)
        assert delivery.ok, delivery
        assert self.accepted(server) == 1

    def test_check_accepts_valid_config(self, tmp_path: Path, server: Any, canary: str) -> None:
        """check() passes on a valid configuration and sends nothing."""
        self.sink(tmp_path, server, canary).check()
        assert self.accepted(server) == 0

    def test_unknown_option_is_rejected(self, tmp_path: Path, server: Any, canary: str) -> None:
        """An unknown key in the sink's table is a validation error, not silently ignored."""
        cls = _plugin_class(self.sink_type)
        with pytest.raises(ValueError, match="no_such_option"):
            cls.Options.model_validate({**self.options(tmp_path, self.base_url(server), canary), "no_such_option": 1})


class HttpSinkContract(SinkContract):
    """What every sink that talks HTTP does with the answers it gets, and that it leaks no secret."""

    def make_server(self, canary: str) -> Any:
        return RecordingServer()

    def accepted(self, server: Any) -> int:
        return sum(1 for r in server.received if r.method == "POST")

    def script(self, server: Any, outcome: Outcome, retry_after: float | None = None) -> None:
        """Make the next answer of the receiving end mean `outcome`."""
        answers = {"ok": Answer(200, "ok"), "permanent": Answer(400, "bad request"),
                   "server_error": Answer(503, "unavailable"),
                   "rate_limited": Answer(429, "slow down", {"Retry-After": f"{retry_after or 1:g}"})}
        server.answer_next(answers[outcome])

    def dead_url(self) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return f"http://127.0.0.1:{port}"  # nothing listens: connection refused

    def hold(self, server: Any) -> threading.Event:
        """Make the receiving end stop answering until the returned event is set."""
        event: threading.Event = server.hold_answers()
        return event

    def secret_file_options(self, opts: dict[str, Any]) -> list[str]:
        return [k for k, v in opts.items() if k.endswith("_file") and v]

    # ----------------------------------------------------------------- answers

    def test_server_error_is_retryable(self, tmp_path: Path, server: Any, canary: str) -> None:
        """A 5xx (or the service's equivalent) is a retryable failure."""
        self.script(server, "server_error")
        delivery = self.sink(tmp_path, server, canary).send(make_notification(), timeout=5)
        assert (delivery.ok, delivery.retryable) == (False, True), delivery

    def test_permanent_failure_is_not_retryable(self, tmp_path: Path, server: Any, canary: str) -> None:
        """A permanent 4xx (or the service's equivalent) is a failure the core must not retry."""
        self.script(server, "permanent")
        delivery = self.sink(tmp_path, server, canary).send(make_notification(), timeout=5)
        assert (delivery.ok, delivery.retryable) == (False, False), delivery

    def test_rate_limit_passes_retry_after_on(self, tmp_path: Path, server: Any, canary: str) -> None:
        """429 with Retry-After is retryable and hands the server's wait to the core."""
        self.script(server, "rate_limited", retry_after=17)
        delivery = self.sink(tmp_path, server, canary).send(make_notification(), timeout=5)
        assert (delivery.ok, delivery.retryable, delivery.retry_after) == (False, True, 17.0), delivery

    def test_connection_refused_is_retryable(self, tmp_path: Path, canary: str) -> None:
        """Nobody listening is a retryable failure, not an exception."""
        delivery = self.build(self.options(tmp_path, self.dead_url(), canary)).send(make_notification(), timeout=5)
        assert (delivery.ok, delivery.retryable) == (False, True), delivery

    def test_timeout_is_respected(self, tmp_path: Path, server: Any, canary: str) -> None:
        """A receiver that never answers makes send() return a retryable failure instead of hanging."""
        release = self.hold(server)
        try:
            delivery = self.sink(tmp_path, server, canary).send(make_notification(), timeout=0.3)
        finally:
            release.set()
        assert (delivery.ok, delivery.retryable) == (False, True), delivery

    # ----------------------------------------------------------------- secrets

    def test_check_rejects_missing_secret_file(self, tmp_path: Path, server: Any, canary: str) -> None:
        """check() refuses a secret file that does not exist, naming the option."""
        opts = self.options(tmp_path, self.base_url(server), canary)
        keys = self.secret_file_options(opts)
        assert keys, "a sink under this contract reads at least one secret file"
        for key in keys:
            with pytest.raises(SinkMisconfigured, match=key.removesuffix("_file")):
                self.build({**opts, key: str(tmp_path / "missing")}).check()

    def test_check_rejects_secret_file_readable_by_others(self, tmp_path: Path, server: Any, canary: str) -> None:
        """check() refuses a secret file readable by group or others."""
        opts = self.options(tmp_path, self.base_url(server), canary)
        for key in self.secret_file_options(opts):
            os.chmod(opts[key], 0o644)
            with pytest.raises(SinkMisconfigured, match="chmod 600"):
                self.build(opts).check()
            os.chmod(opts[key], 0o600)

    def test_no_secret_leaks_in_deliveries_errors_or_logs(self, tmp_path: Path, server: Any, canary: str,
                                                          caplog: pytest.LogCaptureFixture,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
        """No outcome puts a secret into Delivery.detail, an exception or a log line."""
        seen: list[str] = []
        # as regwarden.logging does in the daemon: urllib3's DEBUG lines carry request paths. (Order matters:
        # set_level also sets the capture handler's level, which must end at DEBUG.)
        caplog.set_level(logging.WARNING, logger="urllib3")
        caplog.set_level(logging.DEBUG)
        with structlog.testing.capture_logs() as events:
            sink = self.sink(tmp_path, server, canary)
            for outcome in ("ok", "permanent", "server_error", "rate_limited"):
                self.script(server, outcome, retry_after=3)
                seen.append(repr(sink.send(make_notification(), timeout=5)))
            seen.append(repr(self.build(self.options(tmp_path, self.dead_url(), canary)).send(
                make_notification(), timeout=5)))
            release = self.hold(server)
            seen.append(repr(sink.send(make_notification(), timeout=0.2)))
            release.set()
            opts = self.options(tmp_path, self.base_url(server), canary)
            for key in self.secret_file_options(opts):
                # a malformed secret: errors about it must not quote it
                write_secret(Path(opts[key]), f"::not valid {canary}::")
                seen.append(repr(self.build(opts).send(make_notification(), timeout=5)))
                try:
                    self.build(opts).check()
                except Exception as exc:
                    seen += traceback.format_exception(exc)
        seen += [repr(e) for e in events]
        seen += [r.getMessage() + repr(r.args) for r in caplog.records]
        out, err = capfd.readouterr()
        seen += [out, err]
        leaks = [text for text in seen if canary in text]
        assert not leaks, f"secret leaked: {leaks[0][:300]}"

    def test_deliveries_are_typed(self, tmp_path: Path, server: Any, canary: str) -> None:
        """send() returns a Delivery for every outcome (it never raises)."""
        sink = self.sink(tmp_path, server, canary)
        for outcome in ("ok", "permanent", "server_error", "rate_limited"):
            self.script(server, outcome)
            assert isinstance(sink.send(make_notification(), timeout=5), Delivery)
