"""The posture component's bookkeeping, driven by scripted reports: alerts stated once then on change,
audit records at start and end of a finding (also across a restart), default logins once per interval,
gauges and error counts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import generate_latest

from regwarden.bus import Bus
from regwarden.component import Context
from regwarden.config import PostureConfig, RegistryConfig, parse_config
from regwarden.events import Event, Signal
from regwarden.metrics import Metrics
from regwarden.posture.checks import CHECKS, Outcome
from regwarden.posture.component import PostureComponent
from regwarden.posture.report import Remembered, Report
from regwarden.state import StateStore


class Script:
    """Each call returns a report with the scripted failing checks (the others pass); records the calls."""

    def __init__(self, steps: list[set[str]], errors: tuple[str, ...] = ()) -> None:
        self.steps, self.errors = list(steps), errors
        self.calls: list[dict[str, Any]] = []

    def __call__(self, reg: RegistryConfig, cfg: PostureConfig, **kwargs: Any) -> Report:
        self.calls.append(kwargs)
        failing = self.steps.pop(0)
        outcomes = tuple(Outcome(name, name in failing, CHECKS[name].severity, f"{name} found" if name in failing
                                 else "") for name in CHECKS)
        tried = 5 if kwargs["try_default_logins"] else 0
        return Report(reg.name, reg.url, datetime.now(UTC), outcomes, self.errors, tried, 0.01,
                      "admin" if tried and "default_credentials" in failing else None)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Any]:
    made: list[tuple[Bus, BackgroundScheduler, StateStore]] = []

    def make(script: Script) -> tuple[PostureComponent, Context, list[Event | Signal]]:
        cfg = parse_config({"daemon": {"state_dir": str(tmp_path)}, "posture": {"interval": "1h"},
                            "registries": [{"name": "reg", "url": "https://reg.example:5000", "expect_auth": True}]})
        metrics = Metrics()
        bus = Bus(metrics)
        seen: list[Event | Signal] = []
        bus.subscribe("collect", seen.append)
        bus.start()
        scheduler = BackgroundScheduler(timezone="UTC")
        scheduler.start(paused=True)
        state = StateStore(tmp_path)
        made.append((bus, scheduler, state))
        ctx = Context(cfg, metrics, state, bus, scheduler, "h1")
        component = PostureComponent(check=script)
        component.start(ctx)
        return component, ctx, seen

    yield make
    for bus, scheduler, state in made:
        scheduler.shutdown(wait=False)
        bus.stop(5.0)
        state.close()


def drained(ctx: Context, seen: list[Event | Signal]) -> list[Event | Signal]:
    deadline = time.monotonic() + 5
    while ctx.bus.depth() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    return list(seen)


def scrape(ctx: Context) -> str:
    return generate_latest(ctx.metrics.registry).decode()


def signals(items: list[Event | Signal]) -> list[tuple[str, bool]]:
    return [(i.labels["alertname"], i.firing) for i in items if isinstance(i, Signal)]


def events(items: list[Event | Signal]) -> list[tuple[str, str]]:
    return [(i.kind, i.record()["detail"]["check"]) for i in items if isinstance(i, Event)]


POSTURE_ALERTS = sorted(c.alertname for c in CHECKS.values() if c.alerted_by == "posture")


def test_first_run_states_every_posture_alert_then_only_changes(host: Any) -> None:
    component, ctx, seen = host(Script([{"tls_self_signed", "plain_http"}, {"tls_self_signed", "plain_http"},
                                        {"plain_http"}]))
    component.run_all()
    first = drained(ctx, seen)
    assert sorted(name for name, _ in signals(first)) == POSTURE_ALERTS  # the prober's plain_http not twice
    assert [s for s in signals(first) if s[1]] == [("RegistryTLSSelfSigned", True)]
    assert events(first) == [("posture.finding", "tls_self_signed"), ("posture.finding", "plain_http")]
    component.run_all()
    assert drained(ctx, seen) == first  # nothing changed: nothing said
    component.run_all()
    last = drained(ctx, seen)[len(first):]
    assert signals(last) == [("RegistryTLSSelfSigned", False)]
    assert events(last) == [("posture.cleared", "tls_self_signed")]
    metrics = scrape(ctx)
    assert 'regwarden_posture_finding{check="tls_self_signed",registry="reg",severity="warning"} 0.0' in metrics
    assert 'regwarden_posture_finding{check="plain_http",registry="reg",severity="warning"} 1.0' in metrics
    status = component.status()["reg"]
    assert [f["check"] for f in status["findings"]] == ["plain_http"]
    assert status["checks"] == {"pass": len(CHECKS) - 1, "fail": 1, "unknown": 0}


def test_findings_survive_a_restart_so_the_audit_records_stay_exact(host: Any) -> None:
    component, ctx, seen = host(Script([{"anonymous_push"}]))
    component.run_all()
    assert events(drained(ctx, seen)) == [("posture.finding", "anonymous_push")]
    component.stop()
    again, ctx2, seen2 = host(Script([{"anonymous_push"}, set()]))
    again.run_all()
    after_restart = drained(ctx2, seen2)
    assert events(after_restart) == []  # still the same finding: no second record
    assert ("RegistryAnonymousPush", True) in signals(after_restart)  # but the alert is stated again
    again.run_all()
    assert events(drained(ctx2, seen2)) == [("posture.cleared", "anonymous_push")]


def test_default_logins_are_tried_once_per_interval_across_restarts(host: Any) -> None:
    script = Script([{"default_credentials"}, {"default_credentials"}])
    component, ctx, _seen = host(script)
    component.run_all()
    component.stop()
    again, _ctx2, _ = host(script)
    again.run_all()
    assert [c["try_default_logins"] for c in script.calls] == [True, False]
    assert script.calls[1]["remembered"] == Remembered(pytest.approx(time.time(), abs=60), "admin", 5)
    assert 'regwarden_posture_default_login_attempts_total{registry="reg"} 5.0' in scrape(ctx)


def test_check_errors_are_counted_and_shown(host: Any) -> None:
    component, ctx, _seen = host(Script([set()], errors=("auth: /v2/ answered HTTP 500 without credentials",)))
    component.run_all()
    metrics = scrape(ctx)
    assert 'regwarden_posture_check_errors_total{check="auth",registry="reg"} 1.0' in metrics
    assert 'regwarden_posture_runs_total{registry="reg",result="error"} 1.0' in metrics
    assert component.status()["reg"]["errors"] == ["auth: /v2/ answered HTTP 500 without credentials"]


def test_a_check_that_raises_is_counted_and_the_job_survives(host: Any) -> None:
    def broken(*args: Any, **kwargs: Any) -> Report:
        raise RuntimeError("boom")

    component, ctx, _ = host(Script([]))
    component._check = broken
    assert component.run_all() == []
    assert 'regwarden_posture_runs_total{registry="reg",result="error"} 1.0' in scrape(ctx)
