"""Docker engine events → audit Events, resumable from a `timeNano` cursor, with explicit gaps.

The engine keeps its last 256 events in memory (a ring buffer, lost when the engine restarts) and
replays those at or after `since` to a new subscriber. The cursor in the state store is the
`timeNano` of the last event put on the bus, the ids of every event seen at that `timeNano`, and the
engine it came from (`docker info` ID, and for a local engine its process start, the incarnation).

On every (re)connect: `docker info` (engine ID and clock), then a replay-only request
`events(since=cursor, until=engine now)`, then the live stream `events(since=last seen)`.

The gap rule (`find_gap`), in order:
1. no cursor (first start): no gap; the whole buffer the engine still holds is taken in.
2. engine ID changed: gap `engine_changed` (another engine answers at this address).
3. the engine still holds the cursor event (same `timeNano`, one of the seen ids): no gap. The buffer
   is contiguous, so every event after the cursor is in the replay.
4. incarnation known and changed: gap `engine_restarted` — events the old engine emitted after the
   last one we received (typically containers stopped during its shutdown) lived only in its memory.
5. the cursor has no event ids (nothing seen yet on this engine) and the incarnation is known and
   unchanged: no gap unless the replay is a full buffer (256 events: `engine_buffer_overflow`).
6. otherwise the cursor event is gone: gap `engine_buffer_overflow` when the replay is a full buffer
   (256 events after the cursor: older ones were evicted), else `engine_restarted` (a buffer that is
   not full never evicted anything, so only a restart can have emptied it).
The gap spans from the cursor time to the first replayed event (or the engine's clock if none).
Duplicates: an event is already on the bus iff its `timeNano` equals the cursor's and its id is in
the cursor's id set (the engine replays events at or after `since`, never before).
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from ..component import Context, Health
from ..errors import DockerError
from ..events import Event, utcnow
from . import SourceComponent

__all__ = [
    "ENGINE_BUFFER",
    "DockerCursor",
    "DockerEventsSource",
    "Gap",
    "advance",
    "engine_incarnation",
    "find_gap",
    "gap_event",
    "is_duplicate",
    "parse_engine_time",
    "raw_event_id",
    "since_param",
]

log = structlog.get_logger(__name__)

ENGINE_BUFFER = 256  # moby daemon/events: eventsLimit
CURSOR_NAME = "docker-events"
_NANO = 1_000_000_000


@dataclass(frozen=True)
class DockerCursor:
    """Where the trail stands: the last `timeNano` on the bus and the ids seen at exactly that time."""

    time_nano: int
    ids: frozenset[str] = frozenset()
    engine_id: str | None = None
    incarnation: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"time_nano": self.time_nano, "ids": sorted(self.ids), "engine_id": self.engine_id,
                "incarnation": self.incarnation}

    @classmethod
    def from_json(cls, data: Any) -> DockerCursor | None:
        if not isinstance(data, dict) or not isinstance(data.get("time_nano"), int):
            return None
        return cls(data["time_nano"], frozenset(str(i) for i in data.get("ids") or ()),
                   data.get("engine_id"), data.get("incarnation"))


@dataclass(frozen=True)
class Gap:
    start_nano: int
    end_nano: int
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


def raw_event_id(raw: dict[str, Any]) -> str:
    """The event's identity, as `map_docker_event` names it: `timeNano:Actor.ID:Action`.

    Raises ValueError for an event without a time (which then has no identity either)."""
    actor = raw.get("Actor")
    actor_id = actor.get("ID", "") if isinstance(actor, dict) else ""
    return f"{_time_nano(raw)}:{actor_id}:{raw.get('Action', '')}"


def since_param(time_nano: int) -> str:
    """The engine's nanosecond-precision timestamp form, `SECONDS.NANOSECONDS` (a float would round)."""
    return f"{time_nano // _NANO}.{time_nano % _NANO:09d}"


def parse_engine_time(value: str) -> int:
    """`docker info` SystemTime (RFC 3339 with up to 9 fractional digits) → Unix nanoseconds."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    head, frac, rest = text, "", ""
    if "." in text:
        head, _, tail = text.partition(".")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        frac, rest = tail[:digits], tail[digits:]
    parsed = datetime.fromisoformat(head + rest)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    whole = int(parsed.timestamp())
    return whole * _NANO + int((frac + "000000000")[:9] or 0)


def is_duplicate(cursor: DockerCursor | None, time_nano: int, event_id: str) -> bool:
    return cursor is not None and time_nano == cursor.time_nano and event_id in cursor.ids


def advance(cursor: DockerCursor | None, time_nano: int, event_id: str) -> DockerCursor:
    """The cursor after `event_id` went on the bus (never moves back for an out-of-order event)."""
    if cursor is None:
        return DockerCursor(time_nano, frozenset({event_id}))
    if time_nano > cursor.time_nano:
        return DockerCursor(time_nano, frozenset({event_id}), cursor.engine_id, cursor.incarnation)
    if time_nano == cursor.time_nano:
        return DockerCursor(time_nano, cursor.ids | {event_id}, cursor.engine_id, cursor.incarnation)
    return cursor


def find_gap(cursor: DockerCursor | None, *, engine_id: str, incarnation: str | None, engine_now_nano: int,
             replayed: Sequence[tuple[int, str]]) -> Gap | None:
    """Whether events may have been lost between `cursor` and the replay (see the module docstring).

    `replayed` is `(timeNano, id)` of every event the engine returned for `since=cursor, until=now`.
    """
    if cursor is None:
        return None
    end = replayed[0][0] if replayed else engine_now_nano
    info = {"engine_id": engine_id, "replayed": len(replayed), "last_event_ids": sorted(cursor.ids)}
    if cursor.engine_id is not None and cursor.engine_id != engine_id:
        return Gap(cursor.time_nano, end, "engine_changed", {**info, "previous_engine_id": cursor.engine_id})
    if any(t == cursor.time_nano and i in cursor.ids for t, i in replayed):
        return None
    restarted = incarnation is not None and cursor.incarnation is not None and incarnation != cursor.incarnation
    if restarted:
        return Gap(cursor.time_nano, end, "engine_restarted", info)
    full = len(replayed) >= ENGINE_BUFFER
    if not cursor.ids and incarnation is not None and incarnation == cursor.incarnation:
        return Gap(cursor.time_nano, end, "engine_buffer_overflow", info) if full else None
    return Gap(cursor.time_nano, end, "engine_buffer_overflow" if full else "engine_restarted", info)


def gap_event(gap: Gap, *, host: str, observed: datetime | None = None) -> Event:
    """The explicit `audit.gap` record for a docker gap."""
    now = observed or utcnow()
    return Event(
        source="docker", kind="audit.gap", time=now, observed=now, host=host, outcome="unknown",
        detail={"from": _iso_nano(gap.start_nano), "to": _iso_nano(gap.end_nano), "reason": gap.reason,
                **gap.detail},
    )


def _iso_nano(time_nano: int) -> str:
    whole = datetime.fromtimestamp(time_nano // _NANO, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{time_nano % _NANO:09d}Z"


def engine_incarnation(host: str) -> str | None:
    """`PID:STARTTIME` of a local dockerd behind a unix socket (SO_PEERCRED + /proc), else None.

    None when the engine is remote, in another PID namespace, or the socket is held by something
    other than dockerd (socket activation): the gap rule then relies on the event buffer alone.
    """
    if not host.startswith("unix://"):
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(host.removeprefix("unix://"))
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", creds)[0]
        if pid <= 0:
            return None
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except (OSError, struct.error, UnicodeDecodeError):
        return None
    comm, _, rest = stat.partition(" (")[2].rpartition(")")
    fields = rest.split()
    if comm != "dockerd" or len(fields) < 20:
        return None
    return f"{pid}:{fields[19]}"  # field 22 of proc(5): starttime in clock ticks since boot


class DockerEventsSource(SourceComponent):
    """Follows `GET /events` of the engine at `[docker].host`; see the module docstring for the rules."""

    name = "docker-events"

    def __init__(self, host: str, timeout: float = 10.0) -> None:
        super().__init__()
        self._host = host
        self._timeout = timeout
        self._stream: Any = None
        self._cursor: DockerCursor | None = None
        self._lock = threading.Lock()
        self.gaps = 0
        self.duplicates = 0
        self.last_event_at: float | None = None

    def prepare(self, ctx: Context) -> None:
        self._cursor = DockerCursor.from_json(ctx.state.get_cursor(CURSOR_NAME))

    def health(self) -> Health:
        health = super().health()
        return Health(False, f"docker engine {self._host} {health.detail}") if not health.ready else health

    def status(self) -> dict[str, Any]:
        cursor = self._cursor
        return {**super().status(), "host": self._host, "gaps": self.gaps, "duplicates_dropped": self.duplicates,
                "cursor": since_param(cursor.time_nano) if cursor else None}

    def interrupt(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception as exc:  # closing a dead stream may fail any way it likes
                log.debug("docker_stream_close_failed", error=type(exc).__name__)

    def run(self, stop: threading.Event) -> None:
        for raw in self._events(stop):
            if stop.is_set():
                return
            self._handle(raw)
        if not stop.is_set():
            # the engine closed a working stream (it is shutting down): return, so that the supervisor
            # reconnects after a second with its backoff reset; failures to reconnect raise
            log.warning("docker_events_stream_closed", host=self._host)

    # ------------------------------------------------------------------ the I/O edge

    def _events(self, stop: threading.Event) -> Iterator[dict[str, Any]]:
        """Replay since the cursor (emitting a gap first if needed), then the live stream.

        docker/requests errors are translated here; nothing vendor-specific leaves this generator.
        """
        import docker
        import docker.errors
        import requests
        import urllib3.exceptions

        try:
            client = docker.DockerClient(base_url=self._host, timeout=int(self._timeout))
        except docker.errors.DockerException as exc:
            raise DockerError(f"docker engine {self._host}: {exc}") from None
        try:
            info = client.info()
            engine_id = str(info.get("ID", ""))
            try:
                now_nano = parse_engine_time(str(info.get("SystemTime", "")))
            except ValueError:
                now_nano = time.time_ns()
            incarnation = engine_incarnation(self._host)
            cursor = self._cursor
            since = since_param(cursor.time_nano) if cursor else "0.000000000"
            until = since_param(max(now_nano, cursor.time_nano if cursor else 0))
            replayed = list(client.api.events(since=since, until=until, decode=True))
            gap = find_gap(cursor, engine_id=engine_id, incarnation=incarnation, engine_now_nano=now_nano,
                           replayed=[(_time_nano(r), raw_event_id(r)) for r in replayed])
            if gap is not None:
                self._emit_gap(gap)
            base = cursor or DockerCursor(now_nano)
            self._set_cursor(DockerCursor(base.time_nano, base.ids if gap is None else frozenset(),
                                          engine_id, incarnation))
            self.mark_up()
            log.info("docker_events_connected", host=self._host, replayed=len(replayed),
                     gap=gap.reason if gap else None)
            yield from replayed
            assert self._cursor is not None
            stream = client.api.events(since=since_param(self._cursor.time_nano), decode=True)
            with self._lock:
                self._stream = stream
            if stop.is_set():
                self.interrupt()
                return
            yield from stream
        except docker.errors.DockerException as exc:
            if stop.is_set():
                return
            raise DockerError(f"docker engine {self._host}: {exc}") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError,
                ValueError) as exc:  # ValueError: a stream closed under the reader by stop()
            if stop.is_set():
                return
            raise DockerError(f"docker engine {self._host} not reachable ({type(exc).__name__})") from None
        finally:
            self.interrupt()
            client.close()

    def _handle(self, raw: dict[str, Any]) -> None:
        from ..audit.parse import map_docker_event

        ctx = self.ctx
        try:
            time_nano = _time_nano(raw)
            event_id = raw_event_id(raw)
        except ValueError:
            ctx.metrics.input_rejected.labels("docker", "malformed").inc()
            log.warning("docker_event_rejected", reason="no timeNano")
            return
        if is_duplicate(self._cursor, time_nano, event_id):
            self.duplicates += 1
            return
        observed = utcnow()
        try:
            event = map_docker_event(raw, host=ctx.host, observed=observed, names=ctx.config.registry_names)
        except ValueError as exc:
            ctx.metrics.input_rejected.labels("docker", "malformed").inc()
            log.warning("docker_event_rejected", reason=str(exc)[:200], event_id=event_id)
            event = Event(source="docker", kind="docker.unparsed", time=observed, observed=observed, host=ctx.host,
                          id=event_id, detail={"raw": repr(raw)[:4096], "reason": str(exc)[:200]})
        if event is not None:
            ctx.emit(event)
            ctx.metrics.source_lag.labels(self.name).set(max(0.0, time.time() - time_nano / _NANO))
        self.last_event_at = time.time()
        self._set_cursor(advance(self._cursor, time_nano, event_id))

    def _emit_gap(self, gap: Gap) -> None:
        self.gaps += 1
        log.warning("audit_gap", source="docker", reason=gap.reason, start=_iso_nano(gap.start_nano),
                    end=_iso_nano(gap.end_nano))
        self.ctx.emit(gap_event(gap, host=self.ctx.host))

    def _set_cursor(self, cursor: DockerCursor) -> None:
        """Remember the cursor; it is written to the state store once what was emitted before it is in
        the audit log on disk (Context.checkpoint): a crash replays from the engine, never skips."""
        if cursor != self._cursor:
            self._cursor = cursor
            state, value = self.ctx.state, cursor.to_json()
            self.ctx.checkpoint(lambda: state.set_cursor(CURSOR_NAME, value))


def _time_nano(raw: dict[str, Any]) -> int:
    """`timeNano`, or `time` in whole seconds for an engine that sends only that."""
    for key, scale in (("timeNano", 1), ("time", _NANO)):
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value * scale
    raise ValueError("event without timeNano or time")
