"""Watch: follow a credential's KV v2 `current_version` and bring every host target up to it.

Per credential, every `watch_interval` (jittered): read the key's metadata (cheap, no secret data).
When `current_version` differs from the applied one, read that version, build a `CredentialSecret`,
verify it against every registry that uses it, apply it to every Docker target, and record the result
in the credential journal (SQLite table `credential_applied`), so a restart neither re-applies
needlessly nor forgets what is on disk.

A version that failed is not hammered: a registry that could not be reached (`RegistryError`) or a
Vault read that failed is retried at the normal rhythm, because the answer may change any moment; a
credential the registry rejected, KV data that is malformed, or an apply that rolled back is retried
only when Vault holds a newer version or on a slow timer (`SLOW_RETRY_FACTOR` x watch_interval).

While a credential cannot be refreshed (Vault unreachable, newer version not applicable) the last
good credential stays on disk and the credential is reported "stale since" the first failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import structlog

from ..component import Context
from ..config import Config, CredentialConfig, RegistryConfig
from ..errors import CredentialError, RegistryError, RegwardenError, VaultError
from ..events import Event, Signal, Target, utcnow
from ..state import StateStore
from ..vault import VaultClient
from .model import CredentialSecret

__all__ = [
    "SCHEMA",
    "SLOW_RETRY_FACTOR",
    "Collaborators",
    "CredentialWatch",
    "FailureKind",
    "Journal",
    "SignalLatch",
    "WatchRecord",
    "certificate_not_after",
    "retry_is_slow",
    "should_fetch",
]

log = structlog.get_logger(__name__)

SLOW_RETRY_FACTOR = 10  # a rejected version is tried again after this many watch intervals
STALE_ALERT_INTERVALS = 5  # CredentialStale fires after this many watch intervals (at least a minute)

FailureKind = Literal["rejected", "invalid", "apply", "registry", "vault"]
_SLOW: frozenset[str] = frozenset({"rejected", "invalid", "apply"})

SCHEMA = """
CREATE TABLE IF NOT EXISTS credential_applied (
    credential      TEXT PRIMARY KEY,
    applied_version INTEGER,
    applied_at      REAL,
    verified_at     REAL,
    failed_version  INTEGER,
    failure_kind    TEXT,
    failed_at       REAL,
    last_error      TEXT,
    stale_since     REAL,
    updated         REAL NOT NULL
);
"""

# --------------------------------------------------------------------------- pure decisions


@dataclass(frozen=True)
class WatchRecord:
    """One credential's row in the journal."""

    credential: str
    applied_version: int | None = None
    applied_at: float | None = None
    verified_at: float | None = None
    failed_version: int | None = None
    failure_kind: FailureKind | None = None
    failed_at: float | None = None
    last_error: str | None = None
    stale_since: float | None = None


def retry_is_slow(kind: FailureKind | None) -> bool:
    """Failures only a new version (or a long wait) can fix: the registry's answer will not change soon."""
    return kind in _SLOW


def should_fetch(current_version: int, record: WatchRecord, now: float, slow_retry: float) -> bool:
    """Read and try `current_version` now?

    Not if it is the applied version. Yes if it is new, or if its last attempt failed for a reason
    that may pass any moment (registry unreachable, Vault read failed). A version the registry
    rejected (or whose data is malformed, or whose apply rolled back) only after `slow_retry` seconds.
    """
    if current_version == record.applied_version:
        return False
    if current_version != record.failed_version:
        return True
    if retry_is_slow(record.failure_kind):
        return record.failed_at is None or now - record.failed_at >= slow_retry
    return True


def stale_alert_due(stale_since: float | None, now: float, watch_interval: float) -> bool:
    """CredentialStale fires once the credential could not be refreshed for a while (not one blip)."""
    return stale_since is not None and now - stale_since >= max(60.0, STALE_ALERT_INTERVALS * watch_interval)


def certificate_not_after(pem: str) -> float | None:
    """Unix time the first certificate in `pem` expires; None if it cannot be read (or no `cryptography`)."""
    try:
        from cryptography import x509
    except ImportError:
        return None
    try:
        return x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc.timestamp()
    except ValueError:
        return None


# --------------------------------------------------------------------------- journal


class Journal:
    """The credential journal's `credential_applied` table: what each credential has on this host."""

    _COLUMNS = ("applied_version", "applied_at", "verified_at", "failed_version", "failure_kind", "failed_at",
                "last_error", "stale_since")

    def __init__(self, state: StateStore) -> None:
        self._state = state
        state.ensure_schema("credentials.watch", SCHEMA)

    def load(self, credential: str) -> WatchRecord:
        rows = self._state.query("SELECT * FROM credential_applied WHERE credential = ?", (credential,))
        if not rows:
            return WatchRecord(credential)
        row = rows[0]
        return WatchRecord(credential, **{c: row[c] for c in self._COLUMNS})

    def save(self, record: WatchRecord) -> None:
        values = [getattr(record, c) for c in self._COLUMNS]
        self._state.execute(
            f"INSERT INTO credential_applied (credential, {', '.join(self._COLUMNS)}, updated)"  # noqa: S608
            f" VALUES (?, {', '.join('?' for _ in self._COLUMNS)}, ?) ON CONFLICT(credential) DO UPDATE SET "
            + ", ".join(f"{c}=excluded.{c}" for c in (*self._COLUMNS, "updated")),
            (record.credential, *values, time.time()))


# --------------------------------------------------------------------------- alert signals


@dataclass
class SignalLatch:
    """Sends an alert Signal only when its firing state changes (the first evaluation always sends)."""

    emit: Callable[[Signal], None]
    _state: dict[tuple[tuple[str, str], ...], bool] = field(default_factory=dict)

    def set(self, labels: dict[str, str], firing: bool, *, severity: Literal["info", "warning", "critical"]
            = "warning", summary: str = "", description: str = "") -> None:
        key = tuple(sorted(labels.items()))
        if self._state.get(key) == firing:
            return
        self._state[key] = firing
        annotations = {k: v for k, v in (("summary", summary), ("description", description)) if v}
        self.emit(Signal(labels=dict(labels), firing=firing, severity=severity, annotations=annotations))


# --------------------------------------------------------------------------- one credential

Verify = Callable[..., None]
Apply = Callable[..., Any]
Holds = Callable[[Config, CredentialConfig, CredentialSecret], bool]


@dataclass
class Collaborators:
    """What the watch calls to verify, apply and check targets (the real ones, or test doubles)."""

    verify: Verify
    apply: Apply
    holds: Holds | None


def real_collaborators() -> Collaborators:
    from ..registry.verify import verify_credential
    from .apply import apply_credential, targets_hold

    return Collaborators(verify_credential, apply_credential, targets_hold)


class CredentialWatch:
    """The watch job of one credential: `run()` is called by the scheduler every watch_interval."""

    def __init__(self, ctx: Context, credential: CredentialConfig, vault: VaultClient, journal: Journal,
                 latch: SignalLatch, *, clock: Callable[[], float] = time.time,
                 collaborators: Collaborators | None = None) -> None:
        self.ctx = ctx
        self.credential = credential
        self.vault = vault
        self.journal = journal
        self.latch = latch
        self._clock = clock
        self._with = collaborators or real_collaborators()
        self.record = journal.load(credential.name)
        self.current_version: int | None = None  # in Vault, as last read
        self.checked_at: float | None = None  # last successful metadata read
        self._previous: CredentialSecret | None = None  # the applied secret, for rollback
        self._pending: CredentialSecret | None = None  # a version read but not applied: no re-read on retry
        self._startup_checked = False
        self._publish_metrics()

    @property
    def name(self) -> str:
        return self.credential.name

    @property
    def registries(self) -> list[RegistryConfig]:
        return [r for r in self.ctx.config.registries if r.credential == self.name]

    @property
    def interval(self) -> float:
        return self.credential.watch_interval.total_seconds()

    @property
    def applied(self) -> CredentialSecret | None:
        """The version verified and applied (or found in place after a start); None until then."""
        return self._previous

    # ------------------------------------------------------------------ the job

    def run(self) -> None:
        """One watch round. Never raises: failures are recorded, logged, counted and alerted."""
        now = self._clock()
        try:
            meta = self.vault.read_metadata(self.credential.mount, self.credential.path)
        except VaultError as exc:
            self._stale(now, f"cannot read metadata: {exc}")
            return
        self.current_version, self.checked_at = meta.current_version, now
        record = self.record
        if meta.current_version == record.applied_version and not self._startup_checked:
            self._check_targets(meta.current_version, meta.custom_metadata, now)
            return
        if not should_fetch(meta.current_version, record, now, SLOW_RETRY_FACTOR * self.interval):
            if meta.current_version == record.applied_version:
                self._fresh(now)
            else:  # a failed version waits for its slow retry: still stale
                self._stale(now, record.last_error or "newer version not applied")
            return
        self._try_version(meta.current_version, meta.custom_metadata, now)

    def _check_targets(self, version: int, metadata: dict[str, str], now: float) -> None:
        """After a restart: the journal says `version` is applied; confirm the targets still hold it."""
        try:
            secret = self._read(version, metadata)
        except VaultError as exc:
            self._stale(now, f"cannot read applied version {version}: {exc}")
            return
        except CredentialError:
            secret = None
        self._startup_checked = True
        holds = self._with.holds
        if secret is not None and holds is not None:
            try:
                if holds(self.ctx.config, self.credential, secret):
                    log.info("credential_targets_hold", credential=self.name, version=version)
                    self._previous = secret
                    self._fresh(now)
                    return
            except RegwardenError as exc:
                log.warning("credential_targets_check_failed", credential=self.name, error=str(exc))
        log.info("credential_reapplying", credential=self.name, version=version)
        self._try_version(version, metadata, now, secret=secret)

    def _read(self, version: int, metadata: dict[str, str]) -> CredentialSecret:
        data = self.vault.read_version(self.credential.mount, self.credential.path, version)
        return CredentialSecret.from_kv(self.name, version, data, metadata)

    def _try_version(self, version: int, metadata: dict[str, str], now: float, *,
                     secret: CredentialSecret | None = None) -> None:
        """Read (unless given), verify and apply `version`; record the outcome."""
        stage: FailureKind = "vault"
        try:
            if secret is None:
                pending = self._pending
                secret = pending if pending is not None and pending.version == version else self._read(
                    version, metadata)
            self._pending = secret
            stage = "rejected"
            timeout = min(30.0, max([5.0, *(r.probe_timeout.total_seconds() for r in self.registries)]))
            for registry in self.registries:
                self._with.verify(registry, secret, timeout=timeout)
            verified_at = self._clock()
            stage = "apply"
            result = self._with.apply(self.ctx.config, self.credential, secret, previous=self._previous)
        except VaultError as exc:
            self._failed(version, "vault", str(exc), now)
            return
        except RegistryError as exc:
            self._failed(version, "registry", str(exc), now)
            return
        except CredentialError as exc:
            kind: FailureKind = "invalid" if secret is None else stage
            self._failed(version, kind, str(exc), now)
            return
        except RegwardenError as exc:  # DockerError and the like from a target: treated as a failed apply
            self._failed(version, "apply", f"{type(exc).__name__}: {exc}", now)
            return
        self._applied(secret, verified_at, result)

    # ------------------------------------------------------------------ outcomes

    def _applied(self, secret: CredentialSecret, verified_at: float, result: Any) -> None:
        now = self._clock()
        previous_version = self.record.applied_version
        self._previous, self._pending = secret, None
        self._startup_checked = True
        self._save(replace(self.record, applied_version=secret.version, applied_at=now, verified_at=verified_at,
                           failed_version=None, failure_kind=None, failed_at=None, last_error=None,
                           stale_since=None))
        self.ctx.metrics.credential_applies.labels(self.name, "success").inc()
        if secret.certificate is not None and (not_after := certificate_not_after(secret.certificate)):
            self.ctx.metrics.credential_expiry.labels(self.name).set(not_after)
        targets = [str(t) for t in getattr(result, "targets", None) or []]
        log.info("credential_updated", credential=self.name, version=secret.version, previous=previous_version)
        self._emit("credential.applied", "success", secret.version, targets=targets)
        labels = {"credential": self.name}
        self.latch.set({"alertname": "CredentialVerifyFailed", **labels}, False)
        self.latch.set({"alertname": "CredentialApplyFailed", **labels}, False)
        self._stale_signal(now)

    def _failed(self, version: int, kind: FailureKind, error: str, now: float) -> None:
        repeat = self.record.failed_version == version and self.record.failure_kind == kind
        self._save(replace(self.record, failed_version=version, failure_kind=kind, failed_at=now, last_error=error,
                           stale_since=self.record.stale_since or now))
        outcome = {"rejected": "verify_failed", "invalid": "verify_failed", "apply": "apply_failed",
                   "registry": "registry_unreachable", "vault": "vault_error"}[kind]
        self.ctx.metrics.credential_applies.labels(self.name, outcome).inc()
        if kind == "invalid":
            self.ctx.metrics.input_rejected.labels("vault-kv", "malformed_credential").inc()
        (log.info if repeat else log.warning)(f"credential_{outcome}", credential=self.name, version=version,
                                              error=error, retry="slow" if retry_is_slow(kind) else "next round")
        labels = {"credential": self.name}
        if kind in ("rejected", "invalid"):
            self._emit("credential.verify_failed", "failure", version, error=error)
            self.latch.set({"alertname": "CredentialVerifyFailed", **labels}, True, severity="critical",
                           summary=f"Credential {self.name} v{version} failed verification; not applied",
                           description=error)
        elif kind == "apply":
            self._emit("credential.rolled_back", "failure", version, error=error)
            self.latch.set({"alertname": "CredentialApplyFailed", **labels}, True, severity="critical",
                           summary=f"Credential {self.name} v{version} could not be applied; targets rolled back",
                           description=error)
        self._stale_signal(now)

    def _fresh(self, now: float) -> None:
        if self.record.stale_since is not None or self.record.last_error is not None:
            log.info("credential_fresh", credential=self.name, version=self.record.applied_version)
            self._save(replace(self.record, stale_since=None, last_error=None))
        self._stale_signal(now)

    def _stale(self, now: float, error: str) -> None:
        if self.record.stale_since is None:
            log.warning("credential_stale", credential=self.name, error=error)
            self._save(replace(self.record, stale_since=now, last_error=error))
        else:  # the same outage: keep the latest reason in memory, no journal write every round
            self.record = replace(self.record, last_error=error)
        self._stale_signal(now)

    def _stale_signal(self, now: float) -> None:
        since = self.record.stale_since
        firing = stale_alert_due(since, now, self.interval)
        self.latch.set({"alertname": "CredentialStale", "credential": self.name}, firing, severity="warning",
                       summary=f"Credential {self.name} could not be refreshed from Vault" if firing else "",
                       description=f"stale since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(since))}:"
                                   f" {self.record.last_error}" if firing and since else "")

    # ------------------------------------------------------------------ bookkeeping

    def _save(self, record: WatchRecord) -> None:
        self.record = record
        self.journal.save(record)
        self._publish_metrics()

    def _publish_metrics(self) -> None:
        m, r, name = self.ctx.metrics, self.record, self.name
        m.credential_version.labels(name).set(r.applied_version or 0)
        m.credential_applied_time.labels(name).set(r.applied_at or 0)
        m.credential_verified_time.labels(name).set(r.verified_at or 0)
        m.credential_stale_since.labels(name).set(r.stale_since or 0)

    def _emit(self, kind: str, outcome: Literal["success", "failure"], version: int, **detail: Any) -> None:
        """One audit event per registry using the credential (never the secret)."""
        targets = [Target(registry=r.name, address=r.host_port) for r in self.registries] or [Target()]
        for target in targets:
            self.ctx.emit(Event(
                source="regwarden", kind=kind, time=utcnow(), host=self.ctx.host, outcome=outcome, target=target,
                detail={"credential": self.name, "version": version, **detail}))

    def status(self, now: float) -> dict[str, Any]:
        r = self.record
        return {
            "vault_path": self.credential.vault_path,
            "vault_version": self.current_version,
            "applied_version": r.applied_version,
            "applied_at": _iso(r.applied_at),
            "verified_at": _iso(r.verified_at),
            "age_seconds": round(now - r.applied_at, 1) if r.applied_at else None,
            "checked_at": _iso(self.checked_at),
            "stale_since": _iso(r.stale_since),
            "last_error": r.last_error,
            "failed_version": r.failed_version,
            "retry": None if r.failed_version is None else ("slow" if retry_is_slow(r.failure_kind) else "normal"),
            "registries": [reg.name for reg in self.registries],
        }


def _iso(value: float | None) -> str | None:
    return None if value is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))

