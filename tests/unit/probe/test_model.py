"""The pure core of probing: verdicts, /v2/ answers, challenge parsing, flap damping, intervals."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from regwarden.probe.model import (
    Challenge,
    FlapDamper,
    ProbeResult,
    assess,
    classify_v2,
    next_interval,
    parse_challenges,
)

NOW = 1_800_000_000.0
DAY = 86400.0
WARN = 14 * DAY


def result(url: str = "https://reg.example:5000", **fields: Any) -> ProbeResult:
    return ProbeResult(registry="r", url=url, at=datetime(2027, 1, 15, tzinfo=UTC), **fields)


@pytest.mark.parametrize(
    ("probe", "expect_auth", "verdict", "findings"),
    [
        (result(anonymous=False, cert_expiry=NOW + 90 * DAY), True, "up", set()),
        (result(failed_phase="dns", reason="x"), True, "down", set()),
        (result(failed_phase="connect", reason="connection refused"), False, "down", set()),
        (result(failed_phase="tls", reason="certificate verify failed"), False, "down", set()),
        (result(failed_phase="http", reason="HTTP 503 from /v2/"), False, "down", set()),
        (result(failed_phase="auth", anonymous=False, cert_expiry=NOW + 90 * DAY), True, "auth-failed", set()),
        (result(anonymous=True, cert_expiry=NOW + 90 * DAY), True, "anonymous", {"anonymous_access"}),
        (result(anonymous=True, cert_expiry=NOW + 90 * DAY), False, "up", set()),
        (result(anonymous=False, cert_expiry=NOW + 2 * DAY), True, "tls-expiring", {"tls_expiring"}),
        (result(anonymous=False, cert_expiry=NOW + 90 * DAY, realm_cert_expiry=NOW + DAY), True, "tls-expiring",
         {"tls_expiring"}),
        (result("http://reg:5000", anonymous=False), True, "plain-http", {"plain_http"}),
        (result("http://reg:5000", anonymous=True), True, "anonymous", {"anonymous_access", "plain_http"}),
        (result("http://reg:5000", failed_phase="connect"), True, "down", {"plain_http"}),
    ],
)
def test_verdict_is_the_worst_finding(probe: ProbeResult, expect_auth: bool, verdict: str,
                                      findings: set[str]) -> None:
    """The verdict follows down > auth-failed > anonymous > tls-expiring > plain-http > up."""
    assessment = assess(probe, expect_auth=expect_auth, tls_warning_seconds=WARN, now=NOW)
    assert (assessment.verdict, set(assessment.findings)) == (verdict, findings)


def test_tls_days_left_counts_the_earliest_of_registry_and_realm() -> None:
    """Days left are counted to the earliest expiry of the registry's and the token realm's chains."""
    probe = result(cert_expiry=NOW + 30 * DAY, realm_cert_expiry=NOW + 10 * DAY)
    assert assess(probe, expect_auth=False, tls_warning_seconds=WARN, now=NOW).tls_days_left == 10


@pytest.mark.parametrize(
    ("status", "headers", "up", "anonymous"),
    [
        (200, {}, True, True),
        (200, {"docker-distribution-api-version": "registry/2.0"}, True, True),
        (401, {"docker-distribution-api-version": "registry/2.0"}, True, False),
        (401, {"docker-distribution-api-version": " Registry/2.0 "}, True, False),
        (401, {}, False, False),
        (404, {"docker-distribution-api-version": "registry/2.0"}, False, False),
        (503, {}, False, False),
    ],
)
def test_v2_answer(status: int, headers: dict[str, str], up: bool, anonymous: bool) -> None:
    """/v2/ is up on 200 (anonymous) or 401 with the distribution header; anything else is down."""
    answer = classify_v2(status, headers)
    assert (answer.up, answer.anonymous) == (up, anonymous)
    assert (answer.reason == "") == up


def test_v2_reason_names_the_status() -> None:
    """A down /v2/ says which status it got."""
    assert classify_v2(503, {}).reason == "HTTP 503 from /v2/"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Basic realm="regwarden-test"', [Challenge("basic", {"realm": "regwarden-test"})]),
        ('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"',
         [Challenge("bearer", {"realm": "https://auth.example/token", "service": "registry.example",
                               "scope": "repository:a/b:pull,push"})]),
        ('Bearer realm="https://a/token", service=reg', [Challenge("bearer", {"realm": "https://a/token",
                                                                             "service": "reg"})]),
        ('Basic realm="x", Bearer realm="https://a/t",service="s"',
         [Challenge("basic", {"realm": "x"}), Challenge("bearer", {"realm": "https://a/t", "service": "s"})]),
        ('BEARER Realm="r"', [Challenge("bearer", {"realm": "r"})]),
        (r'Basic realm="say \"hi\""', [Challenge("basic", {"realm": 'say "hi"'})]),
        ("Negotiate", [Challenge("negotiate", {})]),
        ("Negotiate abc123==", [Challenge("negotiate", {"": "abc123=="})]),
        ("", []),
        ('="broken"', []),
    ],
)
def test_parse_challenges(header: str, expected: list[Challenge]) -> None:
    """WWW-Authenticate values parse into ordered challenges, quoted commas and escapes included."""
    assert parse_challenges(header) == expected


@pytest.mark.parametrize(
    ("threshold", "outcomes", "changes", "firing"),
    [
        (3, [False, False], [None, None], False),
        (3, [False, False, False], [None, None, "fire"], True),
        (3, [False, False, False, False], [None, None, "fire", None], True),
        (3, [False, False, True, False, False], [None, None, None, None, None], False),
        (3, [False, False, False, True], [None, None, "fire", "resolve"], False),
        (1, [False], ["fire"], True),
        (1, [True, True], [None, None], False),
        (2, [False, False, True, False, False], [None, "fire", "resolve", None, "fire"], True),
    ],
)
def test_flap_damping(threshold: int, outcomes: list[bool], changes: list[str | None], firing: bool) -> None:
    """The alert fires after N consecutive failures and one success resolves it."""
    damper, seen = FlapDamper(threshold), []
    for ok in outcomes:
        damper, change = damper.observe(ok)
        seen.append(change)
    assert (seen, damper.firing) == (changes, firing)


@pytest.mark.parametrize(
    ("base", "failing", "expected"),
    [
        (30.0, False, 30.0),
        (30.0, True, 7.5),
        (12.0, True, 5.0),  # the floor
        (3.0, True, 3.0),  # never slower than the base interval
        (600.0, True, 150.0),
    ],
)
def test_next_interval(base: float, failing: bool, expected: float) -> None:
    """Probes run every base interval, or a quarter of it (not below the floor) while failing."""
    assert next_interval(base, failing) == expected
