"""What flows on the bus: normalised `Event`s (audit records to be) and alert `Signal`s.

An Event is one thing that happened, in the audit trail's vocabulary (DESIGN.md, "Audit trail").
Parsers are pure functions that return Events; sources put them on the bus.

An Event holds its audit record (the JSON-ready dict the audit writer chains) and exposes the
record's fields as attributes; `time` and `observed` are also kept as datetimes. The record is built
once, when the Event is made: the audit trail writes every Event, and a registry log can bring
thousands a second (bench/bench_audit.py), so nothing is converted twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

from . import redact

__all__ = ["Actor", "Event", "Outcome", "RegistryNames", "Signal", "Source", "Target", "iso", "target_record",
           "utcnow"]

Source = Literal["docker", "registry-log", "registry-notify", "regwarden"]
Outcome = Literal["success", "failure", "unknown"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Actor:
    user: str | None = None
    addr: str | None = None
    agent: str | None = None

    def record(self) -> dict[str, str]:
        out = {}
        if self.user is not None:
            out["user"] = self.user
        if self.addr is not None:
            out["addr"] = self.addr
        if self.agent is not None:
            out["agent"] = self.agent
        return out


@dataclass(frozen=True)
class Target:
    """What an event is about. `registry` is the [[registries]] name when the registry is configured
    (else its address), `address` the `host[:port]` the client used, whatever the source saw."""

    registry: str | None = None
    repository: str | None = None
    tag: str | None = None
    digest: str | None = None
    address: str | None = None

    @property
    def host(self) -> str:
        """The address to reach the registry at (the name on records written before addresses were)."""
        return self.address or self.registry or ""

    def record(self) -> dict[str, str]:
        return target_record(self.registry, self.repository, self.tag, self.digest, self.address)


def target_record(registry: str | None, repository: str | None, tag: str | None,
                  digest: str | None, address: str | None = None) -> dict[str, str]:
    """A record's `target`: the parts that are set (parsers call this without making a Target)."""
    target = {}
    if registry is not None:
        target["registry"] = registry
    if address is not None:
        target["address"] = address
    if repository is not None:
        target["repository"] = repository
    if tag is not None:
        target["tag"] = tag
    if digest is not None:
        target["digest"] = digest
    return target


_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")
_DEFAULT_PORTS = (":443", ":80")


def _address_key(address: str) -> str:
    key = address.lower()
    for port in _DEFAULT_PORTS:
        if key.endswith(port):
            return key[:-len(port)]
    return key


class RegistryNames:
    """The configured registry names by address, so that every record names a registry the same way.

    A notification names the registry by its `request.host`, an engine event by the host of the image
    reference, a log line by the [[registries]] entry its file belongs to; `target(address)` makes
    them all `Target(registry=<name>, address=<address>)`. Addresses match case-insensitively and
    with or without the default port (:443, :80); Docker Hub's aliases match each other.
    """

    def __init__(self, registries: Iterable[tuple[str, str]] = ()) -> None:
        self._by_address: dict[str, str] = {}
        for name, address in registries:
            key = _address_key(address)
            for alias in _DOCKER_HUB if key in _DOCKER_HUB else (key,):
                self._by_address.setdefault(alias, name)

    def name(self, address: str) -> str | None:
        """The configured name of the registry at `address`, or None."""
        return self._by_address.get(_address_key(address))

    def target(self, address: str | None, repository: str | None = None, tag: str | None = None,
               digest: str | None = None) -> Target:
        """The Target of something at `address`: named by its configured name, or by the address."""
        if address is None:
            return Target(None, repository, tag, digest)
        return Target(self.name(address) or address, repository, tag, digest, address)


_NO_ACTOR = Actor()


class Event:
    """One normalised record. `time` is when it happened, `observed` when regwarden saw it.

    `detail` holds source-specific fields worth keeping (never secrets); `raw` holds the verbatim
    input of an unparsed line (kind `registry.unparsed`). `id` is the source's own id (notification
    event id, docker timeNano+id) for dedup. Events are values: do not change one or its record, make
    another with `replace`.
    """

    __slots__ = ("_record", "observed", "time")

    def __init__(self, source: Source, kind: str, time: datetime, observed: datetime | None = None,
                 host: str = "", actor: Actor = _NO_ACTOR, target: Target | None = None,
                 outcome: Outcome = "unknown", status: int | None = None, request_id: str | None = None,
                 id: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
        seen = observed if observed is not None else utcnow()
        record: dict[str, Any] = {
            "time": iso(time), "observed": iso(seen), "source": source, "host": host, "kind": kind,
            "actor": actor.record(), "target": target.record() if target is not None else {},
            "outcome": outcome, "status": status, "request_id": request_id,
        }
        if id is not None:
            record["id"] = id
        if detail:  # the one free-form part: no key in a record names a secret (the writer relies on it)
            record["detail"] = redact.without_secret_keys(dict(detail))
        self._record = record
        self.time = time
        self.observed = seen

    @classmethod
    def from_record(cls, record: dict[str, Any], time: datetime, observed: datetime) -> Event:
        """An Event around a record built by a parser (the fast path: no checks, no copy). The record
        has the keys `__init__` writes, with `time` and `observed` as `iso()` of the two datetimes, and
        its free-form parts have been through `redact.without_secret_keys`."""
        event = object.__new__(cls)
        event._record = record
        event.time = time
        event.observed = observed
        return event

    def record(self) -> Mapping[str, Any]:
        """The JSON-ready audit record (without seq/prev/hash, which the writer adds)."""
        return self._record

    def replace(self, **changes: Any) -> Event:
        """A copy with some fields changed (the constructor's keywords)."""
        fields: dict[str, Any] = {
            "source": self.source, "kind": self.kind, "time": self.time, "observed": self.observed,
            "host": self.host, "actor": self.actor, "target": self.target, "outcome": self.outcome,
            "status": self.status, "request_id": self.request_id, "id": self.id, "detail": self.detail}
        fields.update(changes)
        return Event(**fields)

    @property
    def source(self) -> Source:
        return cast(Source, self._record["source"])

    @property
    def kind(self) -> str:
        return cast(str, self._record["kind"])

    @property
    def host(self) -> str:
        return cast(str, self._record["host"])

    @property
    def actor(self) -> Actor:
        a = self._record["actor"]
        return Actor(a.get("user"), a.get("addr"), a.get("agent")) if a else _NO_ACTOR

    @property
    def target(self) -> Target:
        t = self._record["target"]
        return Target(t.get("registry"), t.get("repository"), t.get("tag"), t.get("digest"), t.get("address"))

    @property
    def outcome(self) -> Outcome:
        return cast(Outcome, self._record["outcome"])

    @property
    def status(self) -> int | None:
        return cast("int | None", self._record["status"])

    @property
    def request_id(self) -> str | None:
        return cast("str | None", self._record["request_id"])

    @property
    def id(self) -> str | None:
        return cast("str | None", self._record.get("id"))

    @property
    def detail(self) -> Mapping[str, Any]:
        return cast("Mapping[str, Any]", self._record.get("detail", _EMPTY))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self._record == other._record

    __hash__ = None  # type: ignore[assignment]  # a value with a dict inside

    def __repr__(self) -> str:
        return f"Event({self._record!r})"


_EMPTY: Mapping[str, Any] = {}

_last_iso: tuple[datetime, str] = (datetime(1970, 1, 1, tzinfo=UTC), "1970-01-01T00:00:00.000000Z")


def iso(value: datetime) -> str:
    """`value` in UTC as the audit trail writes times: `2026-11-27T07:09:48.450527Z`.

    Remembers the last one: a source stamps every line of a read with the same `observed`."""
    global _last_iso  # noqa: PLW0603 - a one-entry cache; a tuple swap is atomic
    last = _last_iso
    if last[0] is value:
        return last[1]
    text = value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    _last_iso = (value, text)
    return text


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
