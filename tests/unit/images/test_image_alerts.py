"""Image check records become alerts through the detectors (audit/detectors.py `image_check_rules`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from regwarden.audit.detectors import image_check_rules
from regwarden.events import Event, Target

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32


def record(kind: str, verdict: str) -> Event:
    return Event(source="regwarden", kind=kind, time=NOW, observed=NOW, host="h",
                 target=Target("reg:5000", "prod/app", "1", DIGEST),
                 outcome="failure", detail={"verdict": verdict, "reason": "why it failed"})


def fired(event: Event) -> list[str]:
    return [s.labels["alertname"] for rule in image_check_rules(timedelta(hours=1))
            if event.kind in rule.kinds for s in rule.observe(event)]


@pytest.mark.parametrize(("kind", "verdict", "alertname"), [
    ("image.signature", "unsigned", "ImageUnsigned"), ("image.signature", "invalid", "ImageSignatureInvalid"),
    ("image.scan", "vulnerable", "ImageVulnerable"), ("image.scan", "failed", "ImageScanFailed")])
def test_each_bad_verdict_raises_its_alert(kind: str, verdict: str, alertname: str) -> None:
    """Exactly one alert per bad verdict, the one named for it."""
    assert fired(record(kind, verdict)) == [alertname]


@pytest.mark.parametrize(("kind", "verdict"), [("image.signature", "verified"), ("image.signature", "present"),
                                               ("image.signature", "unsigned-allowed"), ("image.scan", "clean")])
def test_good_verdicts_raise_nothing(kind: str, verdict: str) -> None:
    """Verified, present, allowed-unsigned and clean records raise no alert."""
    assert fired(record(kind, verdict)) == []


def test_the_alert_names_the_image_and_carries_the_reason() -> None:
    """Labels identify registry, repository and digest; the description is the check's reason."""
    [rule] = [r for r in image_check_rules(timedelta(hours=1)) if r.alertname == "ImageSignatureInvalid"]
    [signal] = rule.observe(record("image.signature", "invalid"))
    assert signal.labels == {"alertname": "ImageSignatureInvalid", "registry": "reg:5000",
                             "repository": "prod/app", "digest": DIGEST}
    assert signal.annotations["description"] == "why it failed" and signal.severity == "critical"


def test_the_alert_resolves_after_the_hold() -> None:
    """An image alert resolves event_alert_hold after its record."""
    [rule] = [r for r in image_check_rules(timedelta(hours=1)) if r.alertname == "ImageUnsigned"]
    rule.observe(record("image.signature", "unsigned"))
    assert rule.tick(NOW + timedelta(minutes=59)) == []
    assert [s.firing for s in rule.tick(NOW + timedelta(hours=1))] == [False]
