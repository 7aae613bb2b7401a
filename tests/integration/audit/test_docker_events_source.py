"""The Docker events source against a real engine: restarts of the engine and of regwarden lose
nothing and repeat nothing, or say where they could not tell (an `audit.gap` record)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from regwarden.events import Event
from regwarden.sources.docker_events import DockerEventsSource, raw_event_id
from tests.integration.harness import DockerEngine, import_tiny_image
from tests.sources_support import Collected, make_context

pytestmark = pytest.mark.integration


def engine_events(engine: DockerEngine, since: str = "0.000000000") -> list[dict[str, Any]]:
    """Everything the engine itself still reports from `since` until now."""
    client = engine.client()
    try:
        now = client.info()["SystemTime"]
        from regwarden.sources.docker_events import parse_engine_time, since_param

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


def test_engine_and_regwarden_restarts_lose_and_repeat_nothing(
    dockerd_factory: Callable[..., DockerEngine], tmp_path: Path,
) -> None:
    """Through a regwarden restart and an engine restart (with a container running) the trail holds
    every event the engine reports, each once, and one audit.gap covering the engine's restart."""
    engine = dockerd_factory()
    client = engine.client()
    import_tiny_image(client)
    with make_context(tmp_path / "state") as collected:
        source = DockerEventsSource(engine.host)
        source.start(collected.ctx)
        activity(engine, "a1")
        collected.wait("phase A", caught_up(collected, engine), timeout=60)

        source.stop()  # regwarden restarts while the engine keeps working
        activity(engine, "a2")
        source = DockerEventsSource(engine.host)
        source.start(collected.ctx)
        collected.wait("phase A after resume", caught_up(collected, engine), timeout=60)
        assert collected.of("docker", "audit.gap") == []

        runner = client.containers.run("tiny:1", ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"],
                                       network_mode="none", detach=True, name="runner", stop_signal="TERM")
        collected.wait("runner start", lambda: any(e.kind == "container.start" and "runner" in str(e.detail)
                                                   for e in collected.events), timeout=30)
        before_restart = engine_events(engine)
        client.close()
        engine.restart()
        client = engine.client()
        collected.wait("the gap record", lambda: bool(collected.of("docker", "audit.gap")), timeout=90)
        activity(engine, "b1")
        collected.wait("phase B", caught_up(collected, engine), timeout=60)
        after_restart = engine_events(engine)
        source.stop()
        runner.remove(force=True)
        client.close()

    trail = docker_ids(collected.events)
    assert len(trail) == len(set(trail)), "an event was emitted twice"
    truth = [raw_event_id(r) for r in before_restart] + [raw_event_id(r) for r in after_restart]
    missing = [i for i in truth if i not in trail]
    assert missing == [], "events the engine reported are missing from the trail"
    gaps = collected.of("docker", "audit.gap")
    assert len(gaps) == 1 and gaps[0].detail["reason"] == "engine_restarted"
    # anything in the trail the engine no longer reports lies inside the gap (shutdown of the old engine)
    extra = [e for e in collected.events if e.source == "docker" and e.id in set(trail) - set(truth)]
    last_before = max(int(r["timeNano"]) for r in before_restart)
    for event in extra:
        assert int(str(event.id).split(":", 1)[0]) > last_before


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
            collected.wait("source down", lambda: not source.health().ready, timeout=30)
            assert "docker engine" in source.health().detail
            assert up("regwarden_source_up", {"source": "docker-events"}) == 0
            engine.start()
            collected.wait("source up again", lambda: up("regwarden_source_up", {"source": "docker-events"}) == 1
                           and source.health().ready, timeout=60)
        finally:
            source.stop()
