"""The alerting tables in the SQLite state store: alert states, groups, what each sink was told, the
notification outbox and silences. The daemon and the CLI (silences) share them; WAL lets both write.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..sink_api import Alert, Notification
from ..state import StateStore
from .model import Matcher, parse_matcher

__all__ = [
    "AlertRow",
    "AlertStore",
    "GroupRow",
    "OutboxRow",
    "Silence",
    "decode_notification",
    "encode_notification",
]

DDL = """
CREATE TABLE IF NOT EXISTS alert_states (
    fingerprint TEXT PRIMARY KEY,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    severity TEXT NOT NULL,
    starts_at REAL NOT NULL,
    ends_at REAL,
    group_key TEXT NOT NULL,
    signal_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_groups (
    group_key TEXT PRIMARY KEY,
    labels TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_flush_at REAL
);
CREATE TABLE IF NOT EXISTS alert_sink_groups (
    sink TEXT NOT NULL,
    group_key TEXT NOT NULL,
    last_firing TEXT NOT NULL,
    last_sent_at REAL,
    PRIMARY KEY (sink, group_key)
);
CREATE TABLE IF NOT EXISTS alert_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    group_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    signal_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS alert_outbox_pending ON alert_outbox (sink, state, id);
CREATE TABLE IF NOT EXISTS alert_silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    created_at REAL NOT NULL,
    until REAL NOT NULL,
    comment TEXT NOT NULL,
    author TEXT NOT NULL
);
"""


@dataclass
class AlertRow:
    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    severity: str
    starts_at: float
    ends_at: float | None
    group_key: str
    signal_at: float

    @property
    def firing(self) -> bool:
        return self.ends_at is None

    def to_alert(self) -> Alert:
        return Alert(labels=dict(self.labels), annotations=dict(self.annotations),
                     severity=self.severity,  # type: ignore[arg-type]
                     starts_at=_dt(self.starts_at), ends_at=None if self.ends_at is None else _dt(self.ends_at),
                     fingerprint=self.fingerprint)


@dataclass
class GroupRow:
    key: str
    labels: dict[str, str]
    created_at: float
    last_flush_at: float | None


@dataclass(frozen=True)
class OutboxRow:
    id: int
    sink: str
    group_key: str
    payload: str
    created_at: float
    signal_at: float
    attempts: int
    next_attempt_at: float
    state: str
    last_error: str


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    created_at: float
    until: float
    comment: str
    author: str

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "matchers": [str(m) for m in self.matchers], "created_at": _iso(self.created_at),
                "until": _iso(self.until), "comment": self.comment, "author": self.author}


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _iso(ts: float) -> str:
    return _dt(ts).isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- notification (de)serialisation


def encode_notification(n: Notification) -> str:
    """The outbox payload of a notification (its id is the outbox row id, so it is not stored)."""
    return json.dumps({
        "group_key": n.group_key, "status": n.status, "host": n.host, "receiver": n.receiver,
        "created_at": n.created_at.timestamp(), "common_labels": n.common_labels, "test": n.test,
        "alerts": [{"labels": a.labels, "annotations": a.annotations, "severity": a.severity,
                    "starts_at": a.starts_at.timestamp(),
                    "ends_at": None if a.ends_at is None else a.ends_at.timestamp(),
                    "fingerprint": a.fingerprint} for a in n.alerts],
    }, sort_keys=True)


def decode_notification(row_id: int, payload: str) -> Notification:
    data = json.loads(payload)
    alerts = tuple(Alert(labels=a["labels"], annotations=a["annotations"], severity=a["severity"],
                         starts_at=_dt(a["starts_at"]),
                         ends_at=None if a["ends_at"] is None else _dt(a["ends_at"]),
                         fingerprint=a["fingerprint"]) for a in data["alerts"])
    return Notification(id=row_id, group_key=data["group_key"], status=data["status"], alerts=alerts,
                        host=data["host"], receiver=data["receiver"], created_at=_dt(data["created_at"]),
                        common_labels=data["common_labels"], test=data["test"])


# --------------------------------------------------------------------------- the store


class AlertStore:
    """Typed access to the alerting tables; every method is one statement or one transaction."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        state.ensure_schema("alerting", DDL)

    # -- alert states and groups (the pipeline keeps a mirror in memory and writes through)

    def load_alerts(self) -> list[AlertRow]:
        return [AlertRow(r["fingerprint"], json.loads(r["labels"]), json.loads(r["annotations"]), r["severity"],
                         r["starts_at"], r["ends_at"], r["group_key"], r["signal_at"])
                for r in self.state.query("SELECT * FROM alert_states")]

    def load_groups(self) -> list[GroupRow]:
        return [GroupRow(r["group_key"], json.loads(r["labels"]), r["created_at"], r["last_flush_at"])
                for r in self.state.query("SELECT * FROM alert_groups")]

    def load_sink_groups(self) -> dict[tuple[str, str], tuple[frozenset[str], float | None]]:
        return {(r["sink"], r["group_key"]): (frozenset(json.loads(r["last_firing"])), r["last_sent_at"])
                for r in self.state.query("SELECT * FROM alert_sink_groups")}

    @staticmethod
    def put_alert(db: sqlite3.Connection, a: AlertRow) -> None:
        db.execute("INSERT OR REPLACE INTO alert_states VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (a.fingerprint, json.dumps(a.labels, sort_keys=True), json.dumps(a.annotations, sort_keys=True),
                    a.severity, a.starts_at, a.ends_at, a.group_key, a.signal_at))

    @staticmethod
    def delete_alerts(db: sqlite3.Connection, fingerprints: Iterable[str]) -> None:
        db.executemany("DELETE FROM alert_states WHERE fingerprint = ?", [(f,) for f in fingerprints])

    @staticmethod
    def put_group(db: sqlite3.Connection, g: GroupRow) -> None:
        db.execute("INSERT OR REPLACE INTO alert_groups VALUES (?, ?, ?, ?)",
                   (g.key, json.dumps(g.labels, sort_keys=True), g.created_at, g.last_flush_at))

    @staticmethod
    def delete_group(db: sqlite3.Connection, key: str) -> None:
        db.execute("DELETE FROM alert_groups WHERE group_key = ?", (key,))
        db.execute("DELETE FROM alert_sink_groups WHERE group_key = ?", (key,))

    @staticmethod
    def put_sink_group(db: sqlite3.Connection, sink: str, key: str, last_firing: frozenset[str],
                       last_sent_at: float | None) -> None:
        db.execute("INSERT OR REPLACE INTO alert_sink_groups VALUES (?, ?, ?, ?)",
                   (sink, key, json.dumps(sorted(last_firing)), last_sent_at))

    # -- outbox

    @staticmethod
    def enqueue(db: sqlite3.Connection, sink: str, notification: Notification, signal_at: float) -> int:
        now = time.time()
        cur = db.execute(
            "INSERT INTO alert_outbox (sink, group_key, payload, created_at, signal_at, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (sink, notification.group_key, encode_notification(notification), now, signal_at, now))
        return int(cur.lastrowid or 0)

    def next_pending(self, sink: str) -> OutboxRow | None:
        """The oldest undelivered notification of a sink (delivery is in order, per sink)."""
        rows = self.state.query(
            "SELECT * FROM alert_outbox WHERE sink = ? AND state = 'pending' ORDER BY id LIMIT 1", (sink,))
        return OutboxRow(**dict(rows[0])) if rows else None

    def mark_delivered(self, row_id: int) -> None:
        self.state.execute("DELETE FROM alert_outbox WHERE id = ?", (row_id,))

    def mark_retry(self, row_id: int, next_attempt_at: float, error: str) -> None:
        self.state.execute("UPDATE alert_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
                           " WHERE id = ?", (next_attempt_at, error, row_id))

    def mark_failed(self, row_id: int, error: str) -> None:
        self.state.execute("UPDATE alert_outbox SET attempts = attempts + 1, state = 'failed', last_error = ?"
                           " WHERE id = ?", (error, row_id))

    def requeue_failed(self, sink: str) -> int:
        """Give a sink's permanently failed notifications another chance (it loaded fine again: fixed)."""
        return self.state.execute("UPDATE alert_outbox SET state = 'pending', next_attempt_at = ?"
                                  " WHERE sink = ? AND state = 'failed'", (time.time(), sink))

    def outbox_depth(self, sink: str | None = None) -> dict[str, int]:
        rows = self.state.query("SELECT sink, COUNT(*) AS n FROM alert_outbox WHERE state = 'pending'"
                                " GROUP BY sink")
        depth = {r["sink"]: int(r["n"]) for r in rows}
        if sink is not None:
            depth.setdefault(sink, 0)
        return depth

    # -- silences

    def add_silence(self, matchers: Sequence[Matcher], until: float, comment: str, author: str) -> Silence:
        if not matchers:
            raise ValueError("a silence needs at least one matcher")
        silence = Silence(uuid.uuid4().hex[:12], tuple(matchers), time.time(), until, comment, author)
        self.state.execute("INSERT INTO alert_silences VALUES (?, ?, ?, ?, ?, ?)",
                           (silence.id, json.dumps([str(m) for m in matchers]), silence.created_at, until,
                            comment, author))
        return silence

    def expire_silence(self, silence_id: str) -> bool:
        return self.state.execute("UPDATE alert_silences SET until = ? WHERE id = ? AND until > ?",
                                  (time.time(), silence_id, time.time())) > 0

    def silences(self, now: float | None = None) -> list[Silence]:
        """Active silences (all of them, expired too, when `now` is None)."""
        sql, params = "SELECT * FROM alert_silences", ()
        if now is not None:
            sql, params = sql + " WHERE until > ?", (now,)  # type: ignore[assignment]
        return [Silence(r["id"], tuple(parse_matcher(m) for m in json.loads(r["matchers"])), r["created_at"],
                        r["until"], r["comment"], r["author"])
                for r in self.state.query(sql + " ORDER BY created_at", params)]
