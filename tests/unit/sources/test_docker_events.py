"""The Docker events source's decisions: duplicates, cursor movement, the gap rule, timestamps."""

from __future__ import annotations

import pytest

from regwarden.audit.parse import map_docker_event
from regwarden.sources.docker_events import (
    ENGINE_BUFFER,
    DockerCursor,
    Gap,
    advance,
    find_gap,
    gap_event,
    is_duplicate,
    parse_engine_time,
    raw_event_id,
    since_param,
)

T = 1_795_763_396_098_438_227
CURSOR = DockerCursor(T, frozenset({"a"}), "ENGINE", "100:5")


def test_since_param_keeps_nanoseconds() -> None:
    """The resume point is sent as SECONDS.NANOSECONDS (a float would round the cursor away)."""
    assert since_param(T) == "1795763396.098438227"
    assert since_param(5) == "0.000000005"


@pytest.mark.parametrize(("text", "nanos"), [
    ("2026-11-27T07:50:10.123456789Z", 1795765810_123456789),
    ("2026-11-27T08:50:10.1+01:00", 1795765810_100000000),
    ("2026-11-27T07:50:10Z", 1795765810_000000000),
])
def test_parse_engine_time(text: str, nanos: int) -> None:
    """`docker info` SystemTime (RFC 3339, any offset, up to 9 digits) → Unix nanoseconds."""
    assert parse_engine_time(text) == nanos


def test_raw_event_id_matches_the_mapped_event_id() -> None:
    """The cursor and the audit record name an event the same way: timeNano:Actor.ID:Action."""
    raw = {"Type": "container", "Action": "start", "Actor": {"ID": "c1"}, "timeNano": T}
    seconds_only = {"Type": "volume", "Action": "create", "Actor": {"ID": "v"}, "time": 1795763396}
    for event in (raw, seconds_only):
        mapped = map_docker_event(event, host="h")
        assert mapped is not None and raw_event_id(event) == mapped.id
    assert raw_event_id(raw) == f"{T}:c1:start"
    with pytest.raises(ValueError):
        raw_event_id({"Type": "volume", "Action": "create", "Actor": {"ID": "v"}})


@pytest.mark.parametrize(("time_nano", "event_id", "duplicate"), [
    (T, "a", True),  # the cursor event, replayed because since is inclusive
    (T, "b", False),  # another event at the same nanosecond
    (T + 1, "a", False),
    (T - 1, "a", False),  # out of order on the live stream: new, never replayed
])
def test_is_duplicate(time_nano: int, event_id: str, duplicate: bool) -> None:
    """Only events at the cursor's timeNano whose id was seen there are duplicates."""
    assert is_duplicate(CURSOR, time_nano, event_id) is duplicate


def test_advance_keeps_every_id_at_the_same_time_and_never_moves_back() -> None:
    """Same time: the id joins the set; later: a new set; earlier: the cursor stays."""
    assert advance(CURSOR, T, "b").ids == {"a", "b"}
    later = advance(CURSOR, T + 5, "c")
    assert later == DockerCursor(T + 5, frozenset({"c"}), "ENGINE", "100:5")
    assert advance(CURSOR, T - 5, "d") == CURSOR


def replay(*items: tuple[int, str]) -> list[tuple[int, str]]:
    return list(items)


FULL = [(T + 1 + i, f"x{i}") for i in range(ENGINE_BUFFER)]
EMPTY_IDS = DockerCursor(T, frozenset(), "ENGINE", "100:5")


@pytest.mark.parametrize(("cursor", "engine_id", "incarnation", "replayed", "reason"), [
    (None, "ENGINE", "100:5", replay(), None),  # first start
    (CURSOR, "ENGINE", "100:5", replay((T, "a"), (T + 1, "b")), None),  # cursor event still held
    (CURSOR, "ENGINE", None, replay((T, "a")), None),  # remote engine, cursor event held
    (CURSOR, "OTHER", "100:5", replay((T, "a")), "engine_changed"),
    (CURSOR, "ENGINE", "200:9", replay((T + 9, "z")), "engine_restarted"),
    (CURSOR, "ENGINE", "200:9", replay(), "engine_restarted"),
    (CURSOR, "ENGINE", None, replay(), "engine_restarted"),  # buffer emptied: only a restart does that
    (CURSOR, "ENGINE", None, replay((T + 9, "z")), "engine_restarted"),  # buffer not full, cursor gone
    (CURSOR, "ENGINE", "100:5", FULL, "engine_buffer_overflow"),  # 256 newer events evicted ours
    (EMPTY_IDS, "ENGINE", "100:5", replay((T + 3, "q")), None),  # nothing seen yet, same engine process
    (EMPTY_IDS, "ENGINE", "100:5", FULL, "engine_buffer_overflow"),
    (EMPTY_IDS, "ENGINE", None, replay(), "engine_restarted"),  # cannot tell: say so
])
def test_find_gap(cursor: DockerCursor | None, engine_id: str, incarnation: str | None,
                  replayed: list[tuple[int, str]], reason: str | None) -> None:
    """A gap is declared exactly when the engine can no longer prove continuity from the cursor."""
    gap = find_gap(cursor, engine_id=engine_id, incarnation=incarnation, engine_now_nano=T + 10**9,
                   replayed=replayed)
    assert (gap.reason if gap else None) == reason


def test_gap_spans_from_cursor_to_first_replayed_event_or_engine_clock() -> None:
    """The gap's end is the first event the engine still has, else its current time."""
    with_events = find_gap(CURSOR, engine_id="ENGINE", incarnation="200:9", engine_now_nano=T + 99,
                           replayed=[(T + 7, "z")])
    without = find_gap(CURSOR, engine_id="ENGINE", incarnation="200:9", engine_now_nano=T + 99, replayed=[])
    assert with_events is not None and (with_events.start_nano, with_events.end_nano) == (T, T + 7)
    assert without is not None and (without.start_nano, without.end_nano) == (T, T + 99)


def test_gap_event_is_an_explicit_audit_record() -> None:
    """The gap becomes an `audit.gap` record from the docker source with from/to/reason."""
    event = gap_event(Gap(T, T + 1, "engine_restarted", {"engine_id": "E"}), host="h1")
    record = event.record()
    assert (record["source"], record["kind"]) == ("docker", "audit.gap")
    assert record["detail"]["from"] == "2026-11-27T07:09:56.098438227Z"
    assert record["detail"]["to"] == "2026-11-27T07:09:56.098438228Z"
    assert record["detail"]["reason"] == "engine_restarted"
