"""The rotation journal in SQLite: every step is written BEFORE its side effect.

A row per rotation: its step and the non-secret facts needed to resume or roll back (lock
version, old and new refs, KV versions, when the overlap ends). Secrets are never journalled: a
rotation interrupted before its new credential was published is rolled back, not resumed.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from ..state import StateStore

__all__ = ["CRASH_HOOK_ENV", "PAUSE_HOOK_ENV", "TERMINAL", "Entry", "Journal", "Step"]

Step = Literal["locking", "generating", "generated", "verified", "publishing", "published", "overlap",
               "revoking", "unlocking", "done", "rolling_back", "rolled_back", "failed"]
TERMINAL = frozenset({"done", "rolled_back", "failed"})
# Test hook: `REGWARDEN_TEST_CRASH_AFTER=<step>` SIGKILLs the process right after that step is journalled,
# so tests can prove that a crash at every step resumes or rolls back. Unset in production.
CRASH_HOOK_ENV = "REGWARDEN_TEST_CRASH_AFTER"
# Test hook: with `REGWARDEN_TEST_PAUSE_DIR=DIR`, a step whose file `DIR/<step>` exists is journalled, then
# `DIR/<step>.reached` is created and the rotation waits (up to 120 s) until `DIR/<step>` is removed, so
# a test can fail a Vault node at that exact point. Unset in production.
PAUSE_HOOK_ENV = "REGWARDEN_TEST_PAUSE_DIR"

_DDL = """
CREATE TABLE IF NOT EXISTS rotations (
    id TEXT PRIMARY KEY,
    credential TEXT NOT NULL,
    step TEXT NOT NULL,
    started REAL NOT NULL,
    updated REAL NOT NULL,
    facts TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rotations_open ON rotations (credential, step);
"""


@dataclass(frozen=True)
class Entry:
    id: str
    credential: str
    step: Step
    started: float
    lock_version: int = 0
    old_version: int = 0  # KV version current when the rotation began (the cas for publishing)
    old_ref: str | None = None
    planned_ref: str | None = None  # the ref `create` will produce, when known before creating
    new_ref: str | None = None
    new_version: int = 0
    overlap_until: float = 0.0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return self.step not in TERMINAL


def _pause_at(directory: Path, step: str) -> None:
    flag = directory / step
    if not flag.exists():
        return
    (directory / f"{step}.reached").touch()
    deadline = time.monotonic() + 120
    while flag.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


class Journal:
    def __init__(self, state: StateStore) -> None:
        self._state = state
        state.ensure_schema("rotation", _DDL)

    def record(self, entry: Entry) -> Entry:
        facts = {k: v for k, v in asdict(entry).items() if k not in ("id", "credential", "step", "started")}
        self._state.execute(
            "INSERT INTO rotations VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET step=excluded.step,"
            " updated=excluded.updated, facts=excluded.facts",
            (entry.id, entry.credential, entry.step, entry.started, time.time(), json.dumps(facts)))
        if os.environ.get(CRASH_HOOK_ENV) == f"{entry.credential}:{entry.step}" or \
                os.environ.get(CRASH_HOOK_ENV) == entry.step:
            os.kill(os.getpid(), signal.SIGKILL)
        if os.environ.get(PAUSE_HOOK_ENV):
            _pause_at(Path(os.environ[PAUSE_HOOK_ENV]), entry.step)
        return entry

    def advance(self, entry: Entry, step: Step, **changes: Any) -> Entry:
        return self.record(replace(entry, step=step, **changes))

    def open_for(self, credential: str) -> Entry | None:
        rows = self._state.query(
            "SELECT * FROM rotations WHERE credential = ? AND step NOT IN ('done', 'rolled_back', 'failed')"
            " ORDER BY started DESC LIMIT 1", (credential,))
        return self._entry(rows[0]) if rows else None

    def last(self, credential: str) -> Entry | None:
        rows = self._state.query("SELECT * FROM rotations WHERE credential = ? ORDER BY started DESC LIMIT 1",
                                 (credential,))
        return self._entry(rows[0]) if rows else None

    def history(self, credential: str, limit: int = 20) -> list[Entry]:
        rows = self._state.query("SELECT * FROM rotations WHERE credential = ? ORDER BY started DESC LIMIT ?",
                                 (credential, limit))
        return [self._entry(r) for r in rows]

    @staticmethod
    def _entry(row: Any) -> Entry:
        facts = json.loads(row["facts"])
        return Entry(id=row["id"], credential=row["credential"], step=row["step"], started=row["started"], **facts)
