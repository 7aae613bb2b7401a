"""Detector rules over Events: what fires, with which labels, and when it resolves."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from regwarden.audit.detectors import (
    AuditDetectors,
    AuditGap,
    AuditTrailRewritten,
    AuthFailureBurst,
    InMemoryTagMemory,
    ProtectedTagOverwritten,
    PullFromUnlistedRegistry,
    SqliteTagMemory,
    UnexpectedPushActor,
    allowed_pull_hosts,
    ip_of,
)
from regwarden.bus import Bus
from regwarden.component import Context
from regwarden.config import Config, DaemonConfig, DetectorsConfig, RegistryConfig
from regwarden.events import Actor, Event, Signal, Target
from regwarden.metrics import Metrics
from regwarden.state import StateStore

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
HOLD = timedelta(hours=1)
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def ev(kind: str, *, at: float = 0, source: str = "registry-notify", user: str | None = None,
       addr: str | None = None, registry: str | None = "reg:5000", repository: str | None = "team/app",
       tag: str | None = None, digest: str | None = None, outcome: str = "success",
       detail: dict[str, Any] | None = None, address: str | None = None) -> Event:
    when = T0 + timedelta(seconds=at)
    return Event(source=source, kind=kind, time=when, observed=when, host="h1",  # type: ignore[arg-type]
                 actor=Actor(user=user, addr=addr),
                 target=Target(registry=registry, repository=repository, tag=tag, digest=digest, address=address),
                 outcome=outcome, detail=detail or {})  # type: ignore[arg-type]


def fired(signals: list[Signal]) -> list[tuple[bool, dict[str, str]]]:
    return [(s.firing, s.labels) for s in signals]


# --------------------------------------------------------------------------- auth failure burst


def failures(rule: AuthFailureBurst, spacing: float, count: int, addr: str = "10.0.0.9:40000",
             start: float = 0) -> list[Signal]:
    out: list[Signal] = []
    for i in range(count):
        out += rule.observe(ev("auth.failure", at=start + i * spacing, source="registry-log", user=f"u{i % 2}",
                               addr=addr.replace("40000", str(40000 + i)), registry="internal",
                               outcome="failure"))
    return out


BURST = {"alertname": "RegistryAuthFailureBurst", "registry": "internal", "addr": "10.0.0.9"}


@pytest.mark.parametrize(("spacing", "count", "expected"), [
    (1.0, 5, [(True, BURST)]),      # 5 within 4 s: a burst, fired once
    (1.0, 12, [(True, BURST)]),     # still one firing signal while it goes on
    (1.0, 4, []),                   # below the threshold
    (20.0, 5, []),                  # 5 spread over 80 s: not within the 60 s window
])
def test_auth_failure_burst_table(spacing: float, count: int, expected: list[Any]) -> None:
    """N auth failures from one IP (any port) within the window fire once; slower or fewer do not."""
    rule = AuthFailureBurst(5, timedelta(minutes=1))
    assert fired(failures(rule, spacing, count)) == expected


def test_auth_failure_burst_counts_addresses_apart() -> None:
    """Failures from different addresses are not added together."""
    rule = AuthFailureBurst(3, timedelta(minutes=1))
    signals = failures(rule, 1, 2, addr="10.0.0.1:40000") + failures(rule, 1, 2, addr="10.0.0.2:40000")
    assert signals == []


def test_auth_failure_burst_ignores_challenges() -> None:
    """auth.challenge (every client's first request) does not count as a failure."""
    rule = AuthFailureBurst(2, timedelta(minutes=1))
    signals = [s for i in range(5) for s in rule.observe(ev("auth.challenge", at=i, addr="10.0.0.1:1"))]
    assert signals == []


def test_auth_failure_burst_resolves_after_a_quiet_window() -> None:
    """The burst resolves once a full window passes without failures from that address."""
    rule = AuthFailureBurst(3, timedelta(minutes=1))
    failures(rule, 1, 3)
    assert rule.tick(T0 + timedelta(seconds=30)) == []
    assert fired(rule.tick(T0 + timedelta(seconds=63))) == [(False, BURST)]
    assert rule.tick(T0 + timedelta(seconds=200)) == []


def test_auth_failure_burst_annotation_names_users() -> None:
    """The description names the users that were tried."""
    rule = AuthFailureBurst(3, timedelta(minutes=1))
    [signal] = failures(rule, 1, 3)
    assert "u0, u1" in signal.annotations["description"]


@pytest.mark.parametrize(("addr", "ip"), [
    ("10.0.0.1:5000", "10.0.0.1"), ("10.0.0.1", "10.0.0.1"), ("[::1]:5000", "::1"), ("::1", "::1"), (None, None),
])
def test_ip_of(addr: str | None, ip: str | None) -> None:
    """Addresses with or without a port reduce to the IP."""
    assert ip_of(addr) == ip


# --------------------------------------------------------------------------- push actor


PUSH_ACTOR = {"alertname": "UnexpectedPushActor", "registry": "reg:5000", "repository": "team/app", "actor": "mallory"}


@pytest.mark.parametrize(("allowed", "event", "expected"), [
    (["ci-*"], ev("image.push", user="mallory", tag="1"), [(True, PUSH_ACTOR)]),
    (["ci-*"], ev("image.push", user="ci-a", tag="1"), []),
    (["ci-*", "alice"], ev("image.push", user="alice", tag="1"), []),
    ([], ev("image.push", user="mallory", tag="1"), []),                      # rule off
    (["ci-*"], ev("image.push", user=None, tag="1"), []),                     # user unknown: not judged
    (["ci-*"], ev("image.push", user="mallory", tag="1", outcome="failure"), []),  # refused push
    (["ci-*"], ev("image.pull", user="mallory", tag="1"), []),
])
def test_unexpected_push_actor_table(allowed: list[str], event: Event, expected: list[Any]) -> None:
    """A successful push by a user outside push_actors fires; allowed, unknown or refused pushes do not."""
    assert fired(UnexpectedPushActor(allowed, HOLD).observe(event)) == expected


def test_event_alert_resolves_after_hold() -> None:
    """An event-style alert resolves `hold` after its last occurrence, not before."""
    rule = UnexpectedPushActor(["ci-*"], HOLD)
    rule.observe(ev("image.push", user="mallory", tag="1"))
    rule.observe(ev("image.push", user="mallory", tag="2", at=1800))
    assert rule.tick(T0 + timedelta(minutes=70)) == []
    assert fired(rule.tick(T0 + timedelta(minutes=91))) == [(False, PUSH_ACTOR)]


# --------------------------------------------------------------------------- protected tags


TAG = {"alertname": "ProtectedTagOverwritten", "registry": "reg:5000", "repository": "team/app", "tag": "latest"}


@pytest.mark.parametrize(("patterns", "pushes", "expected"), [
    (["*:latest"], [("latest", D1), ("latest", D2)], [(True, TAG)]),
    (["*:latest"], [("latest", D1), ("latest", D1)], []),            # same digest pushed again
    (["*:latest"], [("latest", D2)], []),                            # first sight: remembered only
    (["team/app:v*"], [("v1", D1), ("v1", D2)], [(True, {**TAG, "tag": "v1"})]),
    (["team/app:v*"], [("latest", D1), ("latest", D2)], []),         # not protected
    (["other/*:latest"], [("latest", D1), ("latest", D2)], []),
    ([], [("latest", D1), ("latest", D2)], []),                      # rule off
])
def test_protected_tag_table(patterns: list[str], pushes: list[tuple[str, str]], expected: list[Any]) -> None:
    """Pushing a protected tag to another digest fires; same digest, first sight or unprotected do not."""
    rule = ProtectedTagOverwritten(patterns, InMemoryTagMemory(), HOLD)
    signals = [s for tag, digest in pushes for s in rule.observe(ev("image.push", user="bob", tag=tag, digest=digest))]
    assert fired(signals) == expected


def test_protected_tag_needs_a_digest() -> None:
    """A push without digest (access line) cannot be judged and is not remembered."""
    memory = InMemoryTagMemory()
    rule = ProtectedTagOverwritten(["*:latest"], memory, HOLD)
    assert rule.observe(ev("image.push", tag="latest")) == []
    assert memory.get("reg:5000", "team/app", "latest") is None


def test_protected_tag_is_remembered_by_address_and_named_by_name() -> None:
    """A digest remembered under the registry's address (by a notification, or before records carried
    names) is what a log line's push of the same registry is compared with; the alert names the
    registry by its configured name."""
    memory = InMemoryTagMemory()
    memory.put("reg:5000", "team/app", "latest", D1)
    rule = ProtectedTagOverwritten(["*:latest"], memory, HOLD)
    signals = rule.observe(ev("image.push", source="registry-log", registry="internal", address="reg:5000",
                              tag="latest", digest=D2))
    assert fired(signals) == [(True, {**TAG, "registry": "internal"})]
    assert memory.get("reg:5000", "team/app", "latest") == D2 and memory.get("internal", "team/app", "latest") is None


def test_protected_tag_description_names_both_digests() -> None:
    """The alert says who moved the tag from which digest to which."""
    rule = ProtectedTagOverwritten(["*:latest"], InMemoryTagMemory(), HOLD)
    rule.observe(ev("image.push", tag="latest", digest=D1))
    [signal] = rule.observe(ev("image.push", user="bob", addr="10.0.0.7:1", tag="latest", digest=D2))
    assert signal.severity == "critical"
    assert D1 in signal.annotations["description"] and D2 in signal.annotations["description"]
    assert "bob" in signal.annotations["description"]


# --------------------------------------------------------------------------- pull registries


PULL = {"alertname": "PullFromUnlistedRegistry", "registry": "evil.example:5000", "repository": "x/y"}


@pytest.mark.parametrize(("allowed", "event", "expected"), [
    (["reg:5000"], ev("image.pull", source="docker", registry="evil.example:5000", repository="x/y"),
     [(True, PULL)]),
    (["reg:5000"], ev("image.pull", source="docker", registry="reg:5000"), []),
    (["docker.io"], ev("image.pull", source="docker", registry="docker.io", repository="library/busybox"), []),
    (["index.docker.io"], ev("image.pull", source="docker", registry="docker.io"), []),
    (["reg:5000"], ev("image.pull", source="registry-log", registry="internal"), []),   # registry's own log
    ([], ev("image.pull", source="docker", registry="evil.example:5000"), []),          # rule off
    (["reg:5000"], ev("image.push", source="docker", registry="evil.example:5000"), []),
    # configured registries: the address decides, the alert names the registry
    (["reg:5000"], ev("image.pull", source="docker", registry="internal", address="reg:5000"), []),
    (["reg:5000"], ev("image.pull", source="docker", registry="mirror", address="evil.example:5000",
                      repository="x/y"), [(True, {**PULL, "registry": "mirror"})]),
])
def test_pull_from_unlisted_registry_table(allowed: list[str], event: Event, expected: list[Any]) -> None:
    """An engine pull from a registry outside pull_registries fires; listed ones and registry logs do not."""
    assert fired(PullFromUnlistedRegistry(allowed, HOLD).observe(event)) == expected


def test_pull_registries_accept_registry_names(tmp_path: Path) -> None:
    """pull_registries may name [[registries]]; they become their URL's host:port."""
    cfg = Config(daemon=DaemonConfig(state_dir=tmp_path),
                 registries=[RegistryConfig(name="internal", url="https://reg.example:5000")],
                 detectors=DetectorsConfig(pull_registries=["internal", "docker.io"]))
    assert allowed_pull_hosts(cfg) == ["reg.example:5000", "docker.io"]


# --------------------------------------------------------------------------- audit gap


def test_audit_gap_fires_and_resolves() -> None:
    """An audit.gap record fires AuditGap for its source and resolves after the hold."""
    rule = AuditGap(HOLD)
    signals = rule.observe(ev("audit.gap", source="docker", detail={"reason": "engine restarted"}))
    assert fired(signals) == [(True, {"alertname": "AuditGap", "source": "docker"})]
    assert "engine restarted" in signals[0].annotations["description"]
    assert fired(rule.tick(T0 + HOLD)) == [(False, {"alertname": "AuditGap", "source": "docker"})]
    assert rule.observe(ev("image.pull")) == []


def test_witness_mismatch_fires_a_critical_alert_for_the_host() -> None:
    """An audit.witness_mismatch record fires AuditTrailRewritten (critical) with its reason; it resolves
    after the hold and ignores other records."""
    rule = AuditTrailRewritten(HOLD)
    signals = rule.observe(ev("audit.witness_mismatch", source="regwarden",
                              detail={"reason": "the trail ends at seq 3 but Vault witnessed seq 6"}))
    assert [(s.firing, s.labels["alertname"], s.severity) for s in signals] == [
        (True, "AuditTrailRewritten", "critical")]
    assert "ends at seq 3" in signals[0].annotations["description"]
    assert [s.firing for s in rule.tick(T0 + HOLD)] == [False]
    assert rule.observe(ev("audit.gap")) == []


# --------------------------------------------------------------------------- the component


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    metrics = Metrics()
    state = StateStore(tmp_path)
    cfg = Config(daemon=DaemonConfig(state_dir=tmp_path),
                 detectors=DetectorsConfig(protected_tags=["*:latest"], auth_failure_burst=2))
    yield Context(config=cfg, metrics=metrics, state=state, bus=Bus(metrics),
                  scheduler=BackgroundScheduler(timezone="UTC"), host="h1")
    state.close()


def test_component_publishes_signals_and_remembers_digests_across_restarts(ctx: Context) -> None:
    """The component turns bus Events into Signals; protected digests survive a restart (SQLite)."""
    signals: list[Signal] = []
    ctx.bus.subscribe("collect", lambda item: signals.append(item) if isinstance(item, Signal) else None)
    ctx.bus.start()
    first = AuditDetectors(tick_interval=3600)
    first.start(ctx)
    ctx.bus.dispatch(ev("image.push", tag="latest", digest=D1))
    first.stop()
    second = AuditDetectors(tick_interval=3600)
    second.start(ctx)
    ctx.bus.dispatch(ev("image.push", tag="latest", digest=D2))
    ctx.bus.dispatch(ev("image.push", tag="latest", digest=D2))
    for _ in range(500):
        if signals:
            break
        time.sleep(0.01)
    ctx.bus.stop(5)
    second.stop()
    assert fired(signals) == [(True, TAG)]
    assert SqliteTagMemory(ctx).get("reg:5000", "team/app", "latest") == D2


def test_component_defers_signals_when_the_bus_is_full(ctx: Context) -> None:
    """From the dispatcher the component never blocks on a full bus; the next tick delivers."""
    small = Bus(ctx.metrics, capacity=1)
    ctx.bus = small
    detectors = AuditDetectors(tick_interval=3600)
    detectors.start(ctx)
    small.publish(ev("image.pull"))  # fills the bus
    small.dispatch(ev("auth.failure", addr="10.0.0.1:1", outcome="failure"))
    small.dispatch(ev("auth.failure", addr="10.0.0.1:2", outcome="failure", at=1))
    assert detectors.status()["signals"] == 0
    small.take()
    detectors.tick(T0)
    assert detectors.status()["signals"] == 1
    assert small.take().labels["alertname"] == "RegistryAuthFailureBurst"
    detectors.stop()


def test_firing_alerts_still_resolve_after_a_restart(ctx: Context) -> None:
    """An alert firing when the daemon stopped is taken back from the state store and resolved later."""
    ctx.config = ctx.config.model_copy(update={"detectors": DetectorsConfig(push_actors=["ci-*"])})
    signals: list[Signal] = []
    ctx.bus.subscribe("collect", lambda item: signals.append(item) if isinstance(item, Signal) else None)
    ctx.bus.start()
    first = AuditDetectors(tick_interval=3600)
    first.start(ctx)
    ctx.bus.dispatch(ev("image.push", user="mallory", tag="1"))
    first.stop()
    second = AuditDetectors(tick_interval=3600)
    second.start(ctx)
    second.tick(T0 + timedelta(minutes=30))
    second.tick(T0 + HOLD)
    for _ in range(500):
        if len(signals) >= 2:
            break
        time.sleep(0.01)
    ctx.bus.stop(5)
    second.stop()
    assert fired(signals) == [(True, PUSH_ACTOR), (False, PUSH_ACTOR)]
    assert ctx.state.query("SELECT * FROM audit_detector_firing") == []
