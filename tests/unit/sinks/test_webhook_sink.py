"""The `webhook` sink: the sink contract, the JSON schema and the signature, against a real local HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from regwarden_sinks.webhook import WebhookOptions, WebhookSink, signature
from tests.fakes.http import RecordingServer, recording_server
from tests.unit.sinks.contract import HttpSinkContract, make_notification, write_secret


def verify(key: bytes, headers: dict[str, str], body: bytes, tolerance: float = 300) -> bool:
    """What a receiver does (the README's recipe): recompute the HMAC, compare in constant time, check age."""
    stamp = headers["x-regwarden-timestamp"]
    expected = "sha256=" + hmac.new(key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["x-regwarden-signature"]) and abs(time.time() - int(stamp)) < tolerance


class TestWebhookSinkContract(HttpSinkContract):
    sink_type = "webhook"

    def options(self, tmp_path: Path, base_url: str, canary: str) -> dict[str, Any]:
        return {"url_file": str(write_secret(tmp_path / "url", f"{base_url}/hooks/{canary}")),
                "secret_file": str(write_secret(tmp_path / "key", f"key-{canary}"))}


def _sink(server: RecordingServer, tmp_path: Path, **extra: Any) -> WebhookSink:
    key = write_secret(tmp_path / "key", "k3y-for-tests")
    return WebhookSink("hooks", WebhookOptions.model_validate({"url": server.url + "/in", "secret_file": str(key),
                                                                **extra}))


def test_body_follows_schema_version_1(tmp_path: Path) -> None:
    """The body carries version "1", the group, the host and every alert with labels, times and fingerprint."""
    with recording_server() as server:
        assert _sink(server, tmp_path).send(make_notification(count=2, nid=42), timeout=5).ok
        doc = server.received[0].json()
    assert doc["version"] == "1"
    assert (doc["status"], doc["notification_id"], doc["host"], doc["receiver"]) == ("firing", 42, "docker-07",
                                                                                   "contract")
    assert doc["group_key"] == '{alertname="RegistryDown"}'
    assert doc["common_labels"] == {"alertname": "RegistryDown"}
    first = doc["alerts"][0]
    assert first == {"status": "firing", "labels": {"alertname": "RegistryDown", "registry": "internal-0"},
                     "annotations": {"summary": "registry internal-0 is down",
                                     "description": "GET /v2/ failed 3 times: connection refused"},
                     "severity": "critical", "startsAt": "2026-11-27T08:00:00Z", "endsAt": None,
                     "fingerprint": "0000000000000000"}


def test_resolved_alerts_carry_ends_at(tmp_path: Path) -> None:
    """A resolved notification has status "resolved" and each alert its endsAt."""
    with recording_server() as server:
        assert _sink(server, tmp_path).send(make_notification(resolved=True), timeout=5).ok
        doc = server.received[0].json()
    assert doc["status"] == "resolved"
    assert (doc["alerts"][0]["status"], doc["alerts"][0]["endsAt"]) == ("resolved", "2026-11-27T08:05:00Z")


def test_signature_verifies_with_the_shared_key(tmp_path: Path) -> None:
    """The receiver can verify X-Regwarden-Signature over "timestamp.body" with the key from secret_file."""
    with recording_server() as server:
        assert _sink(server, tmp_path).send(make_notification(), timeout=5).ok
        request = server.received[0]
    assert verify(b"k3y-for-tests", request.headers, request.body)
    assert not verify(b"another-key", request.headers, request.body)
    assert not verify(b"k3y-for-tests", request.headers, request.body + b" ")


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    """signature() is the documented construction (a known-answer test)."""
    assert signature(b"key", "1700000000", b'{"a":1}') == (
        "sha256=" + hmac.new(b"key", b'1700000000.{"a":1}', hashlib.sha256).hexdigest())


def test_without_a_key_requests_are_unsigned(tmp_path: Path) -> None:
    """With no secret_file/secret_env, no signature headers are sent."""
    with recording_server() as server:
        sink = WebhookSink("hooks", WebhookOptions(url=server.url + "/in"))
        assert sink.send(make_notification(), timeout=5).ok
        headers = server.received[0].headers
    assert "x-regwarden-signature" not in headers and "x-regwarden-timestamp" not in headers


def test_custom_headers_are_sent(tmp_path: Path) -> None:
    """Configured headers are added to every request, next to Content-Type application/json."""
    with recording_server() as server:
        assert _sink(server, tmp_path, headers={"X-Team": "platform"}).send(make_notification(), timeout=5).ok
        headers = server.received[0].headers
    assert headers["x-team"] == "platform"
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("name", ["X-Regwarden-Signature", "content-type", "Authorization", "Cookie"])
def test_headers_that_would_clash_or_hold_secrets_are_refused(name: str) -> None:
    """Headers regwarden sets, and headers that carry credentials inline, are configuration errors."""
    with pytest.raises(ValidationError, match=name):
        WebhookOptions.model_validate({"url": "https://hooks.example/in", "headers": {name: "x"}})


@pytest.mark.parametrize("opts", [{}, {"url": "https://a/x", "url_env": "URL"}, {"url": "ftp://a/x"},
                                  {"url": "https://a/x", "secret_file": "/k", "secret_env": "K"}])
def test_bad_option_combinations_are_refused(opts: dict[str, Any]) -> None:
    """Exactly one URL source, at most one key source, an http(s) URL."""
    with pytest.raises(ValidationError):
        WebhookOptions.model_validate(opts)


def test_url_file_with_a_non_http_url_fails_check_without_quoting_it(tmp_path: Path) -> None:
    """A url_file holding something that is not an http(s) URL fails check(); the message names the option."""
    url = write_secret(tmp_path / "url", "gopher://hooks.example/secret-path")
    with pytest.raises(Exception, match="url: not an http") as info:
        WebhookSink("hooks", WebhookOptions(url_file=url)).check()
    assert "secret-path" not in str(info.value)


def test_option_timeout_caps_the_core_timeout(tmp_path: Path) -> None:
    """`timeout` in the sink's table bounds each request even when the core allows longer."""
    with recording_server() as server:
        release = server.hold_answers()
        delivery = _sink(server, tmp_path, timeout="200ms").send(make_notification(), timeout=60)
        release.set()
    assert (delivery.ok, delivery.retryable) == (False, True)
    assert "0.2s" in delivery.detail


def test_redirects_are_not_followed(tmp_path: Path) -> None:
    """A 3xx is reported as a failure, not followed (it could send the body and key elsewhere)."""
    from tests.fakes.http import Answer

    with recording_server() as server:
        server.answer_next(Answer(302, "", {"Location": server.url + "/elsewhere"}))
        delivery = _sink(server, tmp_path).send(make_notification(), timeout=5)
        paths = [r.path for r in server.received]
    assert not delivery.ok and paths == ["/in"]
