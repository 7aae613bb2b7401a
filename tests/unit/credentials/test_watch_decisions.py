"""Pure decisions of the credential watch: when to read a version, when to retry, when to alert."""

from __future__ import annotations

from pathlib import Path

import pytest

from regwarden.credentials.component import token_expiring, watch_schedule
from regwarden.credentials.watch import (
    SLOW_RETRY_FACTOR,
    Journal,
    SignalLatch,
    WatchRecord,
    certificate_not_after,
    retry_is_slow,
    should_fetch,
    stale_alert_due,
)
from regwarden.events import Signal
from regwarden.state import StateStore

INTERVAL = 15.0
SLOW = SLOW_RETRY_FACTOR * INTERVAL


def failed(version: int, kind: str, at: float = 1000.0) -> WatchRecord:
    return WatchRecord("c", applied_version=3, failed_version=version, failure_kind=kind,  # type: ignore[arg-type]
                       failed_at=at, last_error="x")


@pytest.mark.parametrize(
    ("current", "record", "now", "expected"),
    [
        (3, WatchRecord("c", applied_version=3), 1000.0, False),  # nothing new
        (1, WatchRecord("c"), 1000.0, True),  # nothing applied yet
        (4, WatchRecord("c", applied_version=3), 1000.0, True),  # a new version
        (2, WatchRecord("c", applied_version=3), 1000.0, True),  # metadata recreated: follow Vault
        (4, failed(4, "registry"), 1000.0 + INTERVAL, True),  # registry unreachable: next round
        (4, failed(4, "vault"), 1000.0 + INTERVAL, True),  # reading the data failed: next round
        (4, failed(4, "rejected"), 1000.0 + INTERVAL, False),  # rejected: not every round
        (4, failed(4, "rejected"), 1000.0 + SLOW - 1, False),
        (4, failed(4, "rejected"), 1000.0 + SLOW, True),  # ... but on the slow timer
        (4, failed(4, "invalid"), 1000.0 + INTERVAL, False),  # malformed KV data: same
        (4, failed(4, "apply"), 1000.0 + INTERVAL, False),  # rolled back apply: same
        (5, failed(4, "rejected"), 1000.0 + INTERVAL, True),  # a newer version is tried at once
    ],
)
def test_should_fetch(current: int, record: WatchRecord, now: float, expected: bool) -> None:
    """A version is read when new, retried at once when the failure may pass, slowly when it was rejected."""
    assert should_fetch(current, record, now, SLOW) is expected


@pytest.mark.parametrize(("kind", "slow"), [("rejected", True), ("invalid", True), ("apply", True),
                                            ("registry", False), ("vault", False), (None, False)])
def test_retry_is_slow(kind: str | None, slow: bool) -> None:
    """Only failures that a new version must fix wait for the slow timer."""
    assert retry_is_slow(kind) is slow  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("since", "now", "interval", "due"),
    [(None, 10**6, 15, False), (1000, 1059, 2, False), (1000, 1060, 2, True),  # at least a minute
     (1000, 1074, 15, False), (1000, 1075, 15, True)],  # five watch intervals
)
def test_stale_alert_due(since: float | None, now: float, interval: float, due: bool) -> None:
    """CredentialStale fires after max(1 min, 5 watch intervals) without a refresh, not on one blip."""
    assert stale_alert_due(since, now, interval) is due


@pytest.mark.parametrize(("renew_at", "error", "now", "expiring"),
                         [(None, "x", 10, False), (100, None, 200, False), (100, "refused", 99, False),
                          (100, "refused", 100, True)])
def test_token_expiring(renew_at: float | None, error: str | None, now: float, expiring: bool) -> None:
    """VaultTokenExpiring fires only past the renewal point after a failed renewal or login."""
    assert token_expiring(renew_at, error, now) is expiring


def test_journal_round_trip(tmp_path: Path) -> None:
    """The journal survives a reopen of the state store with every field intact."""
    record = WatchRecord("ci", applied_version=7, applied_at=1.5, verified_at=1.25, failed_version=8,
                         failure_kind="rejected", failed_at=2.5, last_error="HTTP 401", stale_since=2.5)
    store = StateStore(tmp_path)
    Journal(store).save(record)
    Journal(store).save(record)  # an update, not a second row
    store.close()
    reopened = StateStore(tmp_path)
    assert Journal(reopened).load("ci") == record
    assert Journal(reopened).load("other") == WatchRecord("other")


def test_signal_latch_sends_changes_only() -> None:
    """An alert Signal goes out on the first evaluation and on each change of firing state, not every round."""
    sent: list[Signal] = []
    latch = SignalLatch(sent.append)
    for firing in (False, False, True, True, False):
        latch.set({"alertname": "CredentialStale", "credential": "ci"}, firing)
    assert [s.firing for s in sent] == [False, True, False]


def test_certificate_not_after() -> None:
    """The expiry of a client certificate is read from its PEM; anything unreadable gives None."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ci")])
    not_after = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(not_after - timedelta(days=1)).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    assert certificate_not_after(pem) == not_after.timestamp()
    assert certificate_not_after("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----") is None


@pytest.mark.parametrize("interval", [1.0, 15.0, 300.0])
def test_watch_schedule_averages_the_interval(interval: float) -> None:
    """With APScheduler's accumulating jitter, rounds are 0.9-1.1 x watch_interval apart, on average 1 x."""
    base, jitter = watch_schedule(interval)
    assert (base, base + jitter, base + jitter / 2) == pytest.approx((0.9 * interval, 1.1 * interval, interval))
