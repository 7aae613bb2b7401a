"""The SQLite state store (WAL) in `state_dir`: cursors, journals, alert states, the outbox.

One connection shared by all threads behind a lock; each domain declares its own tables with
`ensure_schema`. sqlite3 errors are translated into StateError here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from .errors import StateError

__all__ = ["StateStore"]

_BASE = """
CREATE TABLE IF NOT EXISTS schema (domain TEXT PRIMARY KEY, ddl_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL, updated REAL NOT NULL);
"""


class StateStore:
    def __init__(self, state_dir: Path, filename: str = "state.db") -> None:
        self.path = state_dir / filename
        self._lock = threading.RLock()
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            os.chmod(self.path, 0o600)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_BASE)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"cannot open state store {self.path}: {exc}") from None

    def ensure_schema(self, domain: str, ddl: str) -> None:
        """Create a domain's tables (idempotent DDL: CREATE ... IF NOT EXISTS)."""
        with self._guard():
            self._db.executescript(ddl)
            self._db.execute("INSERT OR REPLACE INTO schema VALUES (?, ?)", (domain, str(hash(ddl))))

    @contextmanager
    def _guard(self) -> Iterator[None]:
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise StateError(f"state store {self.path}: {exc}") from None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on error."""
        with self._guard():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns lastrowid (inserts) or rowcount."""
        with self._guard():
            cur = self._db.execute(sql, params)
            return cur.lastrowid if sql.lstrip().upper().startswith("INSERT") and cur.lastrowid else cur.rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._guard():
            cur = self._db.execute(sql, params)
            cur.row_factory = sqlite3.Row
            return list(cur.fetchall())

    def get_cursor(self, name: str) -> Any:
        rows = self.query("SELECT value FROM cursors WHERE name = ?", (name,))
        return json.loads(rows[0]["value"]) if rows else None

    def set_cursor(self, name: str, value: Any) -> None:
        import time

        self.execute(
            "INSERT INTO cursors VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET value=excluded.value,"
            " updated=excluded.updated",
            (name, json.dumps(value), time.time()),
        )

    def close(self) -> None:
        with self._lock, suppress(sqlite3.Error):
            self._db.close()
