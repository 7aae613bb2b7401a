"""The rotation lock: one KV v2 entry per credential, taken and released with check-and-set.

The entry holds `{holder, host, rotation_id, expires}`. A host takes the lock by writing a new
version with `cas` = the version it read; of hosts racing, exactly one write succeeds (Vault
refuses the others with a cas mismatch). A lock whose `expires` has passed is stale and may be
taken over. The holder id is stable across restarts of one instance, so a restarted instance
recognises its own lock and resumes.

A cas mismatch is not always another host: on an HA cluster a write can be applied while its answer is
lost (the node died, or a leader election cut the forwarded request), and the client's retry on
another node then meets the version its own first attempt created. So after a mismatch the entry is
read back (the client reads at least what it last saw: nodes.StorageIndex) and, when it is exactly
the write that was meant, the write counts as done. Without this, a lock taken through a failover was
left to expire by its lease (bench/RESULTS.md, kill point `locking`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..errors import VaultError

__all__ = ["Lease", "LockState", "RotationLock", "lock_free_for", "lock_location"]


@dataclass(frozen=True)
class LockState:
    holder: str
    host: str
    rotation_id: str
    expires: float

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> LockState:
        try:
            return cls(str(data.get("holder", "")), str(data.get("host", "")), str(data.get("rotation_id", "")),
                       float(data.get("expires", 0)))
        except (TypeError, ValueError):
            return cls("", "", "", 0.0)  # a mangled lock entry is treated as free


def lock_free_for(state: LockState | None, holder: str, now: float) -> bool:
    """May `holder` take the lock? Free, expired, or already its own."""
    return state is None or not state.holder or state.expires <= now or state.holder == holder


@dataclass(frozen=True)
class Lease:
    version: int  # the KV version our lock write created; the cas for refresh and release
    rotation_id: str
    expires: float


def lock_location(lock_path: str, credential: str) -> tuple[str, str]:
    """(KV v2 mount, path) of a credential's lock entry under `[vault].lock_path` (mount first)."""
    mount, _, prefix = lock_path.strip("/").partition("/")
    return mount, f"{prefix}/{credential}" if prefix else credential


class RotationLock:
    def __init__(self, vault: Any, lock_path: str, credential: str, holder: str, host: str) -> None:
        self._vault = vault
        self._mount, self._path = lock_location(lock_path, credential)
        self.holder = holder
        self.host = host

    def read(self) -> tuple[int, LockState | None]:
        """(current KV version, lock state); (0, None) when the entry does not exist yet."""
        try:
            version = self._vault.read_metadata(self._mount, self._path).current_version
        except VaultError as exc:
            if exc.status == 404:
                return 0, None
            raise
        try:
            return version, LockState.from_data(self._vault.read_version(self._mount, self._path, version))
        except VaultError as exc:
            if exc.status == 404:  # latest version deleted or destroyed: free
                return version, None
            raise

    def acquire(self, rotation_id: str, ttl: float, now: float | None = None) -> Lease | None:
        """Take the lock for `ttl` seconds; None if another live holder has it or another host won the race."""
        now = time.time() if now is None else now
        version, state = self.read()
        if not lock_free_for(state, self.holder, now):
            return None
        return self._write(version, rotation_id, now + ttl)

    def refresh(self, lease: Lease, ttl: float) -> Lease:
        """Extend our lease; raises VaultError if the lock was taken from us."""
        new = self._write(lease.version, lease.rotation_id, time.time() + ttl)
        if new is None:
            raise VaultError("rotation lock was taken over by another host", retryable=False, status=400)
        return new

    def release(self, lease: Lease) -> bool:
        """Free the lock; False if it was no longer ours (expired and taken over)."""
        freed = {"holder": "", "host": self.host, "rotation_id": "", "expires": 0}
        try:
            written = self._vault.write(self._mount, self._path, freed, cas=lease.version)
        except VaultError as exc:
            if exc.status == 400:
                return self._landed(freed) is not None
            raise
        return bool(written)

    def _write(self, cas: int, rotation_id: str, expires: float) -> Lease | None:
        data = {"holder": self.holder, "host": self.host, "rotation_id": rotation_id, "expires": expires}
        try:
            version = self._vault.write(self._mount, self._path, data, cas=cas)
        except VaultError as exc:
            if exc.status == 400:  # check-and-set mismatch: another host wrote first, or our own first try did
                version = self._landed(data)
                return Lease(version, rotation_id, expires) if version is not None else None
            raise
        return Lease(version, rotation_id, expires)

    def _landed(self, data: dict[str, Any]) -> int | None:
        """After a cas mismatch: the version holding exactly `data` (our write landed, its answer was
        lost and the retry met it), or None (another host wrote)."""
        version, state = self.read()
        return version if state is not None and state == LockState.from_data(data) else None
