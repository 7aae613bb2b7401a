"""What flows on the bus: normalised `Event`s (audit records to be) and alert `Signal`s.

An Event is one thing that happened, in the audit trail's vocabulary (DESIGN.md, "Audit trail").
Parsers are pure functions that return Events; sources put them on the bus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["Actor", "Event", "Signal", "Source", "Target", "utcnow"]

Source = Literal["docker", "registry-log", "registry-notify", "regwarden"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Actor:
    user: str | None = None
    addr: str | None = None
    agent: str | None = None


@dataclass(frozen=True)
class Target:
    registry: str | None = None
    repository: str | None = None
    tag: str | None = None
    digest: str | None = None


@dataclass(frozen=True)
class Event:
    """One normalised record. `time` is when it happened, `observed` when regwarden saw it.

    `detail` holds source-specific fields worth keeping (never secrets); `raw` holds the verbatim
    input of an unparsed line (kind `registry.unparsed`).
    """

    source: Source
    kind: str
    time: datetime
    observed: datetime = field(default_factory=utcnow)
    host: str = ""
    actor: Actor = field(default_factory=Actor)
    target: Target = field(default_factory=Target)
    outcome: Literal["success", "failure", "unknown"] = "unknown"
    status: int | None = None
    request_id: str | None = None
    id: str | None = None  # source's own id (notification event id, docker timeNano+id) for dedup
    detail: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The JSON-ready audit record (without seq/prev/hash, which the writer adds)."""
        out: dict[str, Any] = {
            "time": _iso(self.time),
            "observed": _iso(self.observed),
            "source": self.source,
            "host": self.host,
            "kind": self.kind,
            "actor": {k: v for k, v in vars(self.actor).items() if v is not None},  # not asdict: hot path
            "target": {k: v for k, v in vars(self.target).items() if v is not None},
            "outcome": self.outcome,
            "status": self.status,
            "request_id": self.request_id,
        }
        if self.id is not None:
            out["id"] = self.id
        if self.detail:
            out["detail"] = self.detail
        return out


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Signal:
    """A detector's or job's statement that an alert is firing (or has stopped firing).

    `labels` identify the alert (`alertname` is required); the pipeline computes the fingerprint.
    """

    labels: dict[str, str]
    firing: bool = True
    severity: Literal["info", "warning", "critical"] = "warning"
    annotations: dict[str, str] = field(default_factory=dict)
    at: datetime = field(default_factory=utcnow)
