"""The probe component's bookkeeping, driven by a scripted probe function: events, damped alerts, status."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from regwarden.bus import Bus
from regwarden.component import Context
from regwarden.config import parse_config
from regwarden.credentials.model import CredentialSecret
from regwarden.events import Event, Signal
from regwarden.metrics import Metrics
from regwarden.probe.component import FAILED_ALERT, ProbeComponent
from regwarden.probe.model import Phase, ProbeResult
from regwarden.probe.prober import ProbeTarget
from regwarden.state import StateStore


class Script:
    """Returns the scripted results in order: (failed_phase, reason) or None for success."""

    def __init__(self, steps: list[tuple[str, str] | None]) -> None:
        self.steps = list(steps)

    def __call__(self, target: ProbeTarget, credential: CredentialSecret | None) -> ProbeResult:
        step = self.steps.pop(0)
        at = datetime.now(UTC)
        if step is None:
            return ProbeResult(target.name, target.url, at, {"dns": 0.001, "connect": 0.001, "http": 0.002},
                               http_status=401, anonymous=False)
        phase = cast(Phase, step[0])
        return ProbeResult(target.name, target.url, at, {"dns": 0.001, phase: 0.5}, failed_phase=phase,
                           reason=step[1])


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[tuple[Context, list[Event | Signal]]]:
    cfg = parse_config({"daemon": {"state_dir": str(tmp_path)}, "registries": [
        {"name": "reg", "url": "https://reg.example:5000", "failures_before_alert": 2}]})
    metrics = Metrics()
    bus = Bus(metrics)
    seen: list[Event | Signal] = []
    bus.subscribe("collect", seen.append)
    bus.start()
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.start(paused=True)
    state = StateStore(tmp_path)
    yield Context(cfg, metrics, state, bus, scheduler, "h1"), seen
    scheduler.shutdown(wait=False)
    bus.stop(5.0)
    state.close()


def run(ctx: tuple[Context, list[Event | Signal]], steps: list[tuple[str, str] | None]) -> list[Event | Signal]:
    context, seen = ctx
    component = ProbeComponent(probe_function=Script(steps))
    component.start(context)
    for _ in steps:
        component.run_probe("reg")
    component.stop()
    context.bus.stop(5.0)
    return [item for item in seen if not (isinstance(item, Signal) and item.labels["alertname"] != FAILED_ALERT)]


def test_a_changed_reason_is_a_new_event_and_updates_the_firing_alert(
        ctx: tuple[Context, list[Event | Signal]]) -> None:
    """A new phase/reason while failing is a new probe.failed Event and re-states the firing alert."""
    items = run(ctx, [("connect", "connection refused"), ("connect", "connection refused"),
                      ("connect", "timed out (probe_timeout 5s)"), None])
    summary = [(i.kind, i.detail.get("reason")) if isinstance(i, Event) else (i.firing, i.annotations.get("reason"))
               for i in items]
    assert summary == [
        ("probe.failed", "connection refused"),
        (False, None),  # the first result states the alert (not firing yet)
        (True, "connection refused"),
        ("probe.failed", "timed out (probe_timeout 5s)"),
        (True, "timed out (probe_timeout 5s)"),
        ("probe.recovered", None),
        (False, None),
    ]


def test_status_reports_the_last_probe(ctx: tuple[Context, list[Event | Signal]]) -> None:
    """status() gives verdict, failed phase, reason, latency and the shortened interval per registry."""
    context, _ = ctx
    component = ProbeComponent(probe_function=Script([("tls", "certificate verify failed: x")]))
    component.start(context)
    component.run_probe("reg")
    status = component.status()["reg"]
    component.stop()
    assert (status["verdict"], status["failed_phase"], status["reason"], status["interval_seconds"]) == (
        "down", "tls", "certificate verify failed: x", 7.5)
    assert status["latency_ms"] == 501.0


def test_readiness_follows_the_last_probe(ctx: tuple[Context, list[Event | Signal]]) -> None:
    """Not ready before the first probe and while the registry is down (with phase and reason), ready
    again after a successful probe; the dependency gauge of the registry follows."""
    context, _ = ctx
    component = ProbeComponent(probe_function=Script([("connect", "connection refused"), None]))
    component.start(context)

    def reachable() -> float | None:
        return context.metrics.registry.get_sample_value("regwarden_dependency_up",
                                                         {"dependency": "registry", "name": "reg"})

    try:
        assert (component.health().ready, component.health().detail) == (False, "not probed yet: reg")
        component.run_probe("reg")
        assert (component.health().ready, component.health().detail) == (
            False, "registry:reg: connect: connection refused")
        assert reachable() == 0
        component.run_probe("reg")
        assert component.health().ready and reachable() == 1
    finally:
        component.stop()
