"""The `alertmanager` sink: the sink contract and the API v2 body, against a real local HTTP server."""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from regwarden.sink_api import Notification, SinkMisconfigured
from regwarden_sinks.alertmanager import AlertmanagerOptions, AlertmanagerSink, payload
from tests.fakes.http import recording_server
from tests.unit.sinks.contract import HttpSinkContract, make_notification, write_secret


class TestAlertmanagerSinkContract(HttpSinkContract):
    sink_type = "alertmanager"

    def options(self, tmp_path: Path, base_url: str, canary: str) -> dict[str, Any]:
        return {"url": base_url, "bearer_token_file": str(write_secret(tmp_path / "token", f"tok-{canary}"))}


class TestAlertmanagerBasicAuthContract(HttpSinkContract):
    sink_type = "alertmanager"

    def options(self, tmp_path: Path, base_url: str, canary: str) -> dict[str, Any]:
        return {"url": base_url, "basic_auth_username": "regwarden",
                "basic_auth_password_file": str(write_secret(tmp_path / "password", f"pw-{canary}"))}


def test_posts_to_api_v2_alerts_with_auth(tmp_path: Path) -> None:
    """Alerts go to POST <url>/api/v2/alerts as a JSON list, with the configured bearer token."""
    token = write_secret(tmp_path / "token", "t0ken-for-tests")
    with recording_server() as server:
        sink = AlertmanagerSink("am", AlertmanagerOptions(url=server.url + "/", bearer_token_file=token))
        assert sink.send(make_notification(count=2), timeout=5).ok
        [request] = server.received
    assert request.path == "/api/v2/alerts"
    assert request.headers["authorization"] == "Bearer t0ken-for-tests"
    assert [a["labels"]["registry"] for a in request.json()] == ["internal-0", "internal-1"]


def test_basic_auth_header(tmp_path: Path) -> None:
    """Basic auth sends the username and the password read from its file."""
    password = write_secret(tmp_path / "pw", "s3cret-pass")
    with recording_server() as server:
        sink = AlertmanagerSink("am", AlertmanagerOptions(url=server.url, basic_auth_username="rw",
                                                          basic_auth_password_file=password))
        assert sink.send(make_notification(), timeout=5).ok
        [request] = server.received
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"rw:s3cret-pass").decode()


def test_firing_alert_has_no_ends_at_and_carries_severity() -> None:
    """A firing alert is posted without endsAt (the core re-posts it) and with a severity label."""
    [alert] = payload(make_notification(), generator_url="http://h1:9477/status")
    assert alert == {
        "labels": {"alertname": "RegistryDown", "registry": "internal-0", "severity": "critical"},
        "annotations": {"summary": "registry internal-0 is down",
                        "description": "GET /v2/ failed 3 times: connection refused"},
        "startsAt": "2026-11-27T08:00:00Z",
        "generatorURL": "http://h1:9477/status",
    }


def test_resolved_alert_has_explicit_ends_at() -> None:
    """A resolved alert carries its endsAt, so Alertmanager resolves it at once."""
    [alert] = payload(make_notification(resolved=True))
    assert alert["endsAt"] == "2026-11-27T08:05:00Z"


def test_test_notification_ends_by_itself() -> None:
    """A test notification's alert carries an endsAt a few minutes ahead, so it does not linger."""
    n = make_notification()
    test = Notification(**{**n.__dict__, "test": True})
    [alert] = payload(test)
    assert alert["endsAt"] == "2026-11-27T08:05:00Z"


def test_declares_a_resend_interval_for_the_core() -> None:
    """The sink asks the core to re-post active alerts every 60 s (Alertmanager's resolve_timeout is 5 min)."""
    assert AlertmanagerSink.resend_interval == timedelta(seconds=60).total_seconds()


@pytest.mark.parametrize(("options", "message"), [
    ({"url": "alertmanager:9093"}, "url"),
    ({"url": "http://am:9093", "basic_auth_username": "u"}, "go together"),
    ({"url": "http://am:9093", "basic_auth_username": "u", "basic_auth_password_file": "/p",
      "bearer_token_file": "/t"}, "not both"),
])
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    """Inconsistent options are refused when the config is validated, naming the problem."""
    with pytest.raises(ValidationError, match=message):
        AlertmanagerOptions.model_validate(options)


def test_check_refuses_a_missing_ca_cert(tmp_path: Path) -> None:
    """check() refuses a ca_cert that does not exist."""
    sink = AlertmanagerSink("am", AlertmanagerOptions(url="https://am:9093", ca_cert=tmp_path / "nope.pem"))
    with pytest.raises(SinkMisconfigured, match="ca_cert"):
        sink.check()


@pytest.mark.parametrize("key", ["bearer_token_file", "basic_auth_password_file"])
def test_check_config_reports_a_group_readable_secret_file(tmp_path: Path, key: str) -> None:
    """`regwarden check-config` (check_host) refuses the sink's secret files when group/world readable."""
    from regwarden.config import check_host, parse_config

    secret = write_secret(tmp_path / "secret", "s3cret-value", mode=0o644)
    extra = {"basic_auth_username": "rw"} if key.startswith("basic") else {}
    cfg = parse_config({"daemon": {}, "sinks": [{"name": "am", "type": "alertmanager", "url": "http://am:9093",
                                                 key: str(secret), **extra}]})
    [problem] = check_host(cfg)
    assert problem.key == f"sinks[0].{key}" and "chmod 600" in problem.message
