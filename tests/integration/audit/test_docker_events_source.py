"""The Docker events source against a real engine: restarts of the engine and of regwarden lose
nothing and repeat nothing, or say where they could not tell (an `audit.gap` record)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from regwarden.events import Event
from regwarden.sources.docker_events import (
    ENGINE_BUFFER,
    DockerEventsSource,
    parse_engine_time,
    raw_event_id,
    since_param,
)
from tests.integration.harness import DockerEngine, import_tiny_image
from tests.sources_support import Collected, make_context

pytestmark = pytest.mark.integration


def engine_events(engine: DockerEngine, since: str = "0.000000000") -> list[dict[str, Any]]:
    """Everything the engine itself still reports from `since` until now."""
    client = engine.client()
    try:
        now = client.info()["SystemTime"]
        return list(client.api.events(since=since, until=since_param(parse_engine_time(now)), decode=True))
    finally:
        client.close()


def activity(engine: DockerEngine, tag: str) -> None:
    """Container, image and volume events: create/start/die/destroy, tag/untag, volume create/destroy."""
    client = engine.client()
    try:
        volume = client.volumes.create(f"vol-{tag}")
        client.containers.run("tiny:1", ["true"], network_mode="none", remove=True, name=f"c-{tag}")
        client.images.get("tiny:1").tag("tiny", tag)
        client.images.remove(f"tiny:{tag}")
        volume.remove()
    finally:
        client.close()


def docker_ids(events: list[Event]) -> list[str]:
    return [e.id for e in events if e.source == "docker" and e.kind != "audit.gap" and e.id]


def caught_up(collected: Collected, engine: DockerEngine, since: str = "0.000000000") -> Callable[[], bool]:
    return lambda: {raw_event_id(r) for r in engine_events(engine, since)} <= set(docker_ids(collected.events))


class Ledger:
    """What the engine itself reports, collected in windows small enough for its 256-event buffer
    (each window starts at the last event already collected)."""

    def __init__(self, engine: DockerEngine) -> None:
        self.engine = engine
        self.events: dict[str, int] = {}  # id -> timeNano
        self.last = 0
        self._lock = threading.Lock()

    def collect(self) -> None:
        with self._lock:
            window = engine_events(self.engine, since_param(self.last))
            assert len(window) < ENGINE_BUFFER, "window too large: the engine may have evicted events"
            for raw in window:
                self.events.setdefault(raw_event_id(raw), int(raw["timeNano"]))
                self.last = max(self.last, int(raw["timeNano"]))


class Churn:
    """A thread creating and removing volumes and tagging/untagging an image without pause, through
    whatever happens to the engine (errors while it is down are ignored); the ledger collects what the
    engine reports after every round."""

    def __init__(self, engine: DockerEngine, ledger: Ledger) -> None:
        self.engine = engine
        self.ledger = ledger
        self.done = threading.Event()
        self.rounds = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.is_set():
            try:
                client = self.engine.client()
                try:
                    while not self.done.is_set():
                        name = f"churn-{self.rounds}"
                        client.volumes.create(name).remove()
                        client.images.get("tiny:1").tag("tiny", name)
                        client.images.remove(f"tiny:{name}")
                        self.rounds += 1
                        self.ledger.collect()
                finally:
                    client.close()
            except AssertionError:
                raise
            except Exception:  # the engine is restarting
                time.sleep(0.1)

    def __enter__(self) -> Churn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(30)


def event_time(event_id: str) -> int:
    return int(event_id.split(":", 1)[0])


def test_engine_and_regwarden_restarts_lose_and_repeat_nothing(
    dockerd_factory: Callable[..., DockerEngine], tmp_path: Path,
) -> None:
    """With container, image and volume events flowing through a regwarden restart and an engine restart
    (a container running), every event the engine reports is in the trail once, except events inside
    the one audit.gap record, which covers the engine's restart."""
    engine = dockerd_factory()
    client = engine.client()
    import_tiny_image(client)
    ledger = Ledger(engine)
    with make_context(tmp_path / "state") as collected:
        source = DockerEventsSource(engine.host)
        source.start(collected.ctx)
        activity(engine, "a1")
        with Churn(engine, ledger) as churn:
            collected.wait("churn", lambda: churn.rounds >= 15)
            source.stop()  # regwarden restarts while the engine keeps working
            collected.ctx.bus.flush(10.0)  # as the daemon does: cursors are stored by bus checkpoints
            activity(engine, "a2")
            source = DockerEventsSource(engine.host)
            source.start(collected.ctx)
            collected.wait("more churn", lambda: churn.rounds >= 30)
        collected.wait("phase A after resume", caught_up(collected, engine), timeout=60)
        assert collected.of("docker", "audit.gap") == []

        runner = client.containers.run("tiny:1", ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"],
                                       network_mode="none", detach=True, name="runner")
        with Churn(engine, ledger) as churn:
            collected.wait("churn before the restart", lambda: churn.rounds >= 20)
            engine.restart()
            collected.wait("the gap record", lambda: bool(collected.of("docker", "audit.gap")), timeout=90)
            start = churn.rounds
            collected.wait("churn after the restart", lambda: churn.rounds >= start + 20, timeout=60)
        activity(engine, "b1")
        ledger.collect()
        collected.wait("phase B", caught_up(collected, engine), timeout=60)
        source.stop()
        runner.remove(force=True)
        client.close()

    trail = docker_ids(collected.events)
    assert len(trail) == len(set(trail)), "an event was emitted twice"
    gaps = collected.of("docker", "audit.gap")
    assert len(gaps) == 1 and gaps[0].detail["reason"] == "engine_restarted"
    gap_from, gap_to = parse_engine_time(gaps[0].detail["from"]), parse_engine_time(gaps[0].detail["to"])
    truth = ledger.events
    missing = [i for i, t in truth.items() if i not in trail and not gap_from < t < gap_to]
    assert missing == [], "events the engine reported are missing from the trail, outside the gap"
    assert all(i in trail for i, t in truth.items() if t >= gap_to), "the new engine's events are all kept"
    assert gap_from == max(event_time(i) for i in trail if event_time(i) < gap_to), "the gap starts at the last event"
    # what the trail holds beyond the engine's reports happened after the last report before the restart
    last_reported = max(t for t in truth.values() if t <= gap_from)
    assert all(event_time(i) > last_reported for i in set(trail) - set(truth))


def test_engine_down_reports_the_source_down_until_it_is_back(
    dockerd_factory: Callable[..., DockerEngine], tmp_path: Path,
) -> None:
    """While the engine is stopped the source is not ready (and says why); it recovers by itself."""
    engine = dockerd_factory()
    with make_context(tmp_path / "state") as collected:
        source = DockerEventsSource(engine.host)
        source.start(collected.ctx)
        try:
            up = collected.ctx.metrics.registry.get_sample_value
            collected.wait("source up", lambda: source.health().ready and source.status()["cursor"] is not None)
            engine.stop()
            collected.wait("source down", lambda: not source.health().ready
                           and up("regwarden_source_up", {"source": "docker-events"}) == 0, timeout=30)
            assert "docker engine" in source.health().detail
            for _ in range(20):  # restart attempts while the engine is away never report the source up
                assert up("regwarden_source_up", {"source": "docker-events"}) == 0
                time.sleep(0.1)
            engine.start()
            collected.wait("source up again", lambda: up("regwarden_source_up", {"source": "docker-events"}) == 1
                           and source.health().ready, timeout=60)
        finally:
            source.stop()


def test_more_than_256_events_while_stopped_is_a_buffer_overflow_gap(
    dockerd_factory: Callable[..., DockerEngine], tmp_path: Path,
) -> None:
    """Over 256 events while regwarden is stopped: the engine evicted the cursor's event, so the trail
    gets an `engine_buffer_overflow` gap followed by exactly the 256 events the engine still holds."""
    engine = dockerd_factory()
    client = engine.client()
    try:
        with make_context(tmp_path / "state") as collected:
            source = DockerEventsSource(engine.host)
            source.start(collected.ctx)
            client.volumes.create("first").remove()
            collected.wait("first events", lambda: len(docker_ids(collected.events)) >= 2)
            source.stop()
            collected.ctx.bus.flush(10.0)
            for n in range(140):  # 280 events
                client.volumes.create(f"v{n}").remove()
            held = [raw_event_id(r) for r in engine_events(engine, since_param(0))]
            source = DockerEventsSource(engine.host)
            source.start(collected.ctx)
            collected.wait("the held events", lambda: set(held) <= set(docker_ids(collected.events)))
            source.stop()
    finally:
        client.close()
    assert len(held) == ENGINE_BUFFER
    gaps = collected.of("docker", "audit.gap")
    assert [g.detail["reason"] for g in gaps] == ["engine_buffer_overflow"]
    after_gap = docker_ids(collected.events[collected.events.index(gaps[0]):])
    assert after_gap == held
