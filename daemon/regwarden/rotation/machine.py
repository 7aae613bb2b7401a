"""The rotation state machine of one credential.

    due -> lock (KV cas) -> generate at provider -> verify -> publish new KV version (cas)
        -> wait overlap -> revoke old at provider -> unlock

Every step is journalled before its side effect. `resume` continues an interrupted rotation from
its journalled step, or rolls it back when the new credential was not published.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from ..backoff import Backoff
from ..config import CredentialConfig, RegistryConfig
from ..credentials.model import CredentialSecret
from ..errors import CredentialError, RegistryError, RegwardenError, VaultError
from ..vault.client import VaultClient
from .journal import Entry, Journal
from .lock import Lease, RotationLock
from .providers import Issued, Provider
from .schedule import cert_lifetime, next_due

__all__ = ["KvState", "RotationOutcome", "Rotator"]

log = structlog.get_logger(__name__)

RELEASE_PATIENCE = 30.0  # seconds a finished rotation keeps trying to free its lock (Vault failover)
Verify = Callable[[RegistryConfig, CredentialSecret], None]


@dataclass(frozen=True)
class KvState:
    """What Vault says of the credential now (the secret itself only when it exists)."""

    version: int
    current: CredentialSecret | None
    rotated_at: datetime | None

    def validity(self) -> tuple[datetime, datetime] | None:
        if self.current is None or not self.current.certificate:
            return None
        try:
            return cert_lifetime(self.current.certificate)
        except ValueError:
            return None

    def due_at(self, credential: CredentialConfig) -> datetime:
        return next_due(credential, self.rotated_at, self.validity())


@dataclass(frozen=True)
class RotationOutcome:
    entry: Entry | None
    rotated: bool
    reason: str


class Rotator:
    def __init__(self, credential: CredentialConfig, registries: list[RegistryConfig], vault: VaultClient,
                 provider: Provider, journal: Journal, lock: RotationLock, verify: Verify, *,
                 stop: threading.Event, on_step: Callable[[Entry], None] | None = None,
                 verify_patience: float = 15.0) -> None:
        self.credential = credential
        self._registries = registries
        self._vault = vault
        self._provider = provider
        self._journal = journal
        self._lock = lock
        self._verify = verify
        self._stop = stop
        self._on_step = on_step or (lambda _: None)
        self._verify_patience = verify_patience
        self._mutex = threading.Lock()  # one rotation of a credential at a time in this process
        self._validity: tuple[int, tuple[datetime, datetime] | None] = (0, None)  # per KV version

    # ------------------------------------------------------------------ reading Vault

    def kv_state(self) -> KvState:
        cred = self.credential
        try:
            meta = self._vault.read_metadata(cred.mount, cred.path)
        except VaultError as exc:
            if exc.status == 404:
                return KvState(0, None, None)
            raise
        if meta.current_version == 0:
            return KvState(0, None, None)
        try:
            data = self._vault.read_version(cred.mount, cred.path, meta.current_version)
            current = CredentialSecret.from_kv(cred.name, meta.current_version, data, meta.custom_metadata)
        except (VaultError, CredentialError) as exc:
            log.warning("rotation_current_unreadable", credential=cred.name, error=str(exc))
            current = None
        return KvState(meta.current_version, current, _parse_time(meta.custom_metadata.get("rotated_at")))

    def due_at(self) -> tuple[datetime, datetime | None]:
        """(when the next rotation is due, when the last was), from KV metadata alone.

        This runs every tick on every host, so it reads no secret data: only a certificate's lifetime
        needs the data, and that is read once per new version.
        """
        cred = self.credential
        try:
            meta = self._vault.read_metadata(cred.mount, cred.path)
        except VaultError as exc:
            if exc.status == 404:
                return next_due(cred, None), None
            raise
        rotated_at = _parse_time(meta.custom_metadata.get("rotated_at"))
        validity = None
        if cred.pki is not None and meta.current_version:
            if self._validity[0] != meta.current_version:
                self._validity = (meta.current_version, self.kv_state().validity())
            validity = self._validity[1]
        return next_due(cred, rotated_at, validity), rotated_at

    def lock_ttl(self) -> float:
        return self.credential.overlap.total_seconds() + 60.0

    # ------------------------------------------------------------------ the happy path

    def rotate(self, *, force: bool = False, published: threading.Event | None = None) -> RotationOutcome:
        """Rotate if due (or `force`), holding the fleet-wide lock; blocks through overlap and revoke."""
        if not self._mutex.acquire(blocking=False):
            return RotationOutcome(None, False, "a rotation of this credential is already running here")
        try:
            return self._rotate(force, published)
        finally:
            self._mutex.release()

    def _rotate(self, force: bool, published: threading.Event | None) -> RotationOutcome:
        cred = self.credential
        open_entry = self._journal.open_for(cred.name)
        if open_entry is not None:
            return self._resume(open_entry, published)
        if not force and self.due_at()[0] > datetime.now(UTC):
            return RotationOutcome(None, False, "not due")
        entry = self._journal.record(Entry(id=uuid.uuid4().hex, credential=cred.name, step="locking",
                                           started=time.time()))
        lease = self._lock.acquire(entry.id, self.lock_ttl())
        if lease is None:
            self._journal.advance(entry, "rolled_back", error="lock held by another host")
            return RotationOutcome(entry, False, "lock held by another host")
        # under the lock, look again: another host may have rotated since we looked
        state = self.kv_state()
        if not force and state.due_at(cred) > datetime.now(UTC):
            self._release(lease)
            entry = self._journal.advance(entry, "rolled_back", error="rotated by another host meanwhile")
            return RotationOutcome(entry, False, "rotated by another host meanwhile")
        old_ref = self._provider.ref_of(state.current) if state.current else None
        entry = self._step(entry, "generating", lock_version=lease.version, old_version=state.version,
                           old_ref=old_ref, planned_ref=self._provider.plan(state.current))
        try:
            issued = self._provider.create(state.current)
        except RegwardenError as exc:
            return self._roll_back(entry, lease, f"provider create failed: {exc}")
        entry = self._step(entry, "generated", new_ref=issued.ref)
        new = CredentialSecret.from_kv(cred.name, 0, issued.data)
        error = self._verify_all(new)
        if error is not None:
            return self._roll_back(entry, lease, error)
        entry = self._step(entry, "verified")
        entry = self._step(entry, "publishing")
        try:
            version = self._publish(entry, issued, state.version)
        except VaultError as exc:
            return self._roll_back(entry, lease, f"publishing to Vault failed: {exc}")
        entry = self._step(entry, "published", new_version=version)
        if published is not None:
            published.set()
        return self._finish(entry, lease)

    def _publish(self, entry: Entry, issued: Issued, cas: int) -> int:
        cred = self.credential
        version = int(self._vault.write(cred.mount, cred.path, issued.data, cas=cas))
        self._bookkeeping(entry, issued.ref, version)
        return version

    def _bookkeeping(self, entry: Entry, ref: str, version: int) -> None:
        cred = self.credential
        self._vault.update_custom_metadata(cred.mount, cred.path, {
            "rotated_at": datetime.now(UTC).isoformat(), "rotated_by": self._lock.host,
            "rotation_id": entry.id, "regwarden_ref": ref, "provider": cred.provider, "version": str(version)})

    def _finish(self, entry: Entry, lease: Lease | None) -> RotationOutcome:
        """From published: wait the overlap (lock held), revoke the old credential, unlock."""
        if entry.step in ("published", "overlap"):
            until = entry.overlap_until or time.time() + self.credential.overlap.total_seconds()
            if entry.step != "overlap":
                entry = self._step(entry, "overlap", overlap_until=until)
            while time.time() < until:
                if self._stop.wait(min(5.0, max(0.0, until - time.time()))):
                    return RotationOutcome(entry, True, "stopped during overlap; resumes at next start")
                if lease is not None and lease.expires - time.time() < self.lock_ttl() / 2:
                    lease = self._refresh(lease)
        if entry.step in ("overlap", "revoking"):
            entry = self._step(entry, "revoking")
            if entry.old_ref and entry.old_ref != entry.new_ref:
                if lease is None:
                    log.warning("rotation_revoke_skipped", credential=entry.credential, ref=entry.old_ref,
                                reason="the rotation lock was taken over; the new holder revokes")
                else:
                    try:
                        self._provider.revoke(entry.old_ref)
                    except RegwardenError as exc:
                        # the new credential is live; the old one stays valid until revoked by hand or expiry
                        entry = self._step(entry, "unlocking", error=f"revoking the old credential failed: {exc}")
        entry = self._step(entry, "unlocking")
        if lease is not None:
            self._release(lease)
        entry = self._step(entry, "done")
        return RotationOutcome(entry, True, "rotated" if not entry.error else entry.error)

    # ------------------------------------------------------------------ failure and recovery

    def _roll_back(self, entry: Entry, lease: Lease | None, error: str) -> RotationOutcome:
        entry = self._step(entry, "rolling_back", error=error)
        created = entry.new_ref or entry.planned_ref
        if lease is None:
            # another host holds the lock now and may be creating the same slot: leave it alone
            log.warning("rotation_rollback_revoke_skipped", credential=entry.credential, ref=created,
                        reason="the rotation lock is held by another host")
        elif created and created != entry.old_ref:
            try:
                self._provider.revoke(created)
            except RegwardenError as exc:
                log.error("rotation_rollback_revoke_failed", credential=entry.credential, error=str(exc))
        if lease is not None:
            self._release(lease)
        entry = self._step(entry, "rolled_back")
        return RotationOutcome(entry, False, error)

    def resume(self) -> RotationOutcome | None:
        """Continue or roll back this credential's interrupted rotation, if there is one."""
        entry = self._journal.open_for(self.credential.name)
        if entry is None:
            return None
        with self._mutex:
            return self._resume(entry, None)

    def _resume(self, entry: Entry, published: threading.Event | None) -> RotationOutcome:
        log.info("rotation_resuming", credential=entry.credential, rotation=entry.id, step=entry.step)
        lease = self._lock.acquire(entry.id, self.lock_ttl())  # ours again if it is still ours or free
        if entry.step in ("locking", "generating", "rolling_back"):
            return self._roll_back(entry, lease, entry.error or f"interrupted at {entry.step}")
        if entry.step in ("generated", "verified", "publishing"):
            state = self.kv_state()
            ours = (state.version > entry.old_version and state.current is not None
                    and (state.current.metadata.get("rotation_id") == entry.id
                         or self._provider.ref_of(state.current) == entry.new_ref))
            if not ours:
                return self._roll_back(entry, lease, entry.error or f"interrupted at {entry.step}, not published")
            if state.current is not None and state.current.metadata.get("rotation_id") != entry.id:
                self._bookkeeping(entry, entry.new_ref or "", state.version)
            entry = self._step(entry, "published", new_version=state.version)
        if published is not None:
            published.set()
        return self._finish(entry, lease)

    # ------------------------------------------------------------------ helpers

    def _step(self, entry: Entry, step: str, **changes: object) -> Entry:
        entry = self._journal.advance(entry, step, **changes)  # type: ignore[arg-type]
        self._on_step(entry)
        return entry

    def _verify_all(self, secret: CredentialSecret) -> str | None:
        """None when every registry of the credential accepts it; retried briefly (registries reload files)."""
        deadline = time.monotonic() + self._verify_patience
        for registry in self._registries:
            while True:
                try:
                    self._verify(registry, secret)
                    break
                except (CredentialError, RegistryError) as exc:
                    if time.monotonic() >= deadline or self._stop.is_set():
                        return f"verify against {registry.name} failed: {exc}"
                    time.sleep(0.5)
        return None

    def _refresh(self, lease: Lease) -> Lease | None:
        try:
            return self._lock.refresh(lease, self.lock_ttl())
        except VaultError as exc:
            log.warning("rotation_lock_refresh_failed", credential=self.credential.name, error=str(exc))
            return lease if exc.retryable else None

    def _release(self, lease: Lease) -> None:
        """Free the lock; while Vault is unreachable (e.g. a leader election) retry with back-off for up
        to RELEASE_PATIENCE seconds, then leave the lock to expire by itself."""
        backoff = Backoff(initial=0.5, maximum=5.0)
        deadline = time.monotonic() + RELEASE_PATIENCE
        while True:
            try:
                if not self._lock.release(lease):
                    log.warning("rotation_lock_lost", credential=self.credential.name)
                return
            except VaultError as exc:
                if not exc.retryable or time.monotonic() >= deadline or self._stop.wait(backoff.next()):
                    log.warning("rotation_unlock_failed", credential=self.credential.name, error=str(exc),
                                note="the lock expires by itself")
                    return


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
