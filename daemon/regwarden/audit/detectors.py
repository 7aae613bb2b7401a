"""Detectors: small rules over audit Events that raise alert Signals (DESIGN.md, "Detectors").

Each rule is a plain object: `observe(event)` returns the Signals an Event causes and `tick(now)`
the resolutions that time causes. Rules do no I/O (the protected-tag rule remembers digests through
a `TagMemory`, SQLite-backed in the daemon). `AuditDetectors` is the component that feeds them from
the bus and publishes their Signals.

RegistryAuthFailureBurst  `auth_failure_burst` auth.failure records from one IP address within
                          `auth_failure_window`; labels registry, addr; resolves after a window
                          without failures from that address.
UnexpectedPushActor       a successful image.push by a user matching none of `push_actors` (globs;
                          empty: rule off); labels registry, repository, actor.
ProtectedTagOverwritten   a push pointing a `protected_tags` tag (globs over `repository:tag`) at
                          another digest than remembered; labels registry, repository, tag.
PullFromUnlistedRegistry  the engine pulled from a registry host not in `pull_registries` (names of
                          [[registries]] or host:port; empty: rule off); labels registry, repository.
AuditGap                  an `audit.gap` record: a source may have lost events; label source.
AuditTrailRewritten       an `audit.witness_mismatch` record: at start the local trail did not hold the chain
                          head Vault witnessed (truncated, re-chained, rolled back, oldest files deleted); label host.
ImageUnsigned             an `image.signature` record with verdict unsigned (a push to a protected repository
                          without a cosign signature); labels registry, repository, digest.
ImageSignatureInvalid     an `image.signature` record with verdict invalid (tampered, signs another
                          manifest, not verifiable with the configured key); labels registry, repository, digest.
ImageVulnerable           an `image.scan` record with verdict vulnerable; labels registry, repository, digest.
ImageScanFailed           an `image.scan` record with verdict failed (scanner hung, failed or printed
                          garbage); labels registry, repository, digest.
The event-style alerts resolve `event_alert_hold` after their last occurrence.
"""

from __future__ import annotations

import fnmatch
import json
import queue
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import structlog

from ..component import Context, Health
from ..config import Config
from ..events import Event, Signal, utcnow
from ..posture.httpscan import is_own_attempt

__all__ = [
    "AuditDetectors",
    "AuditGap",
    "AuditTrailRewritten",
    "AuthFailureBurst",
    "ImageCheckAlert",
    "InMemoryTagMemory",
    "ProtectedTagOverwritten",
    "PullFromUnlistedRegistry",
    "Rule",
    "SqliteTagMemory",
    "TagMemory",
    "UnexpectedPushActor",
    "allowed_pull_hosts",
    "build_rules",
    "image_check_rules",
    "ip_of",
]

log = structlog.get_logger(__name__)
Severity = Literal["info", "warning", "critical"]


class Rule(Protocol):
    alertname: str
    kinds: frozenset[str]  # the Event kinds `observe` looks at; others never reach it

    def observe(self, event: Event) -> list[Signal]: ...

    def tick(self, now: datetime) -> list[Signal]: ...

    def restore(self, labels: dict[str, str], seen: datetime) -> None:
        """Take back an alert that was firing before a restart, so that `tick` resolves it."""


def ip_of(addr: str | None) -> str | None:
    """The host part of `1.2.3.4:5678`, `[::1]:5678`, `::1` or `1.2.3.4`."""
    if not addr:
        return None
    if addr.startswith("["):
        return addr[1:].partition("]")[0] or None
    if addr.count(":") == 1:
        return addr.partition(":")[0] or None
    return addr


class _Held:
    """Event-style alerts: fire on each occurrence, resolve `hold` after the last one."""

    def __init__(self, hold: timedelta) -> None:
        self._hold = hold
        self._last: dict[tuple[tuple[str, str], ...], datetime] = {}

    def fire(self, labels: dict[str, str], seen: datetime, severity: Severity,
             annotations: dict[str, str]) -> Signal:
        self._last[tuple(sorted(labels.items()))] = seen
        return Signal(labels=labels, firing=True, severity=severity, annotations=annotations, at=seen)

    def restore(self, labels: dict[str, str], seen: datetime) -> None:
        self._last[tuple(sorted(labels.items()))] = seen

    def tick(self, now: datetime) -> list[Signal]:
        done = [key for key, seen in self._last.items() if now - seen >= self._hold]
        for key in done:
            del self._last[key]
        return [Signal(labels=dict(key), firing=False, at=now) for key in done]


# --------------------------------------------------------------------------- rules


class AuthFailureBurst:
    """`threshold` auth.failure events from one IP address within `window` (by event time)."""

    alertname = "RegistryAuthFailureBurst"
    kinds = frozenset({"auth.failure"})

    def __init__(self, threshold: int, window: timedelta) -> None:
        self._threshold = threshold
        self._window = window
        self._times: dict[tuple[str, str], deque[datetime]] = {}
        self._users: dict[tuple[str, str], set[str]] = {}
        self._firing: dict[tuple[str, str], datetime] = {}  # key -> last failure observed

    def observe(self, event: Event) -> list[Signal]:
        if event.kind != "auth.failure" or (addr := ip_of(event.actor.addr)) is None:
            return []
        if is_own_attempt(event.actor.agent):  # this process's posture scan trying default logins
            return []
        key = (event.target.registry or "", addr)
        times = self._times.setdefault(key, deque(maxlen=self._threshold))
        times.append(event.time)
        users = self._users.setdefault(key, set())
        if event.actor.user and len(users) < 20:
            users.add(event.actor.user)
        if key in self._firing:
            self._firing[key] = event.observed
            return []
        if len(times) < self._threshold or times[-1] - times[0] > self._window:
            return []
        self._firing[key] = event.observed
        registry, ip = key
        window = _human(self._window)
        return [Signal(
            labels={"alertname": self.alertname, "registry": registry, "addr": ip}, severity="warning",
            at=event.observed,
            annotations={
                "summary": f"{self._threshold} or more failed registry logins from {ip} within {window}",
                "description": (f"Registry {registry or '(unnamed)'} rejected credentials from {ip} at least "
                                f"{self._threshold} times within {window}; users tried: "
                                f"{', '.join(sorted(users)) or 'unknown'}."),
            })]

    def restore(self, labels: dict[str, str], seen: datetime) -> None:
        self._firing[(labels.get("registry", ""), labels.get("addr", ""))] = seen

    def tick(self, now: datetime) -> list[Signal]:
        out = []
        for key, last in list(self._firing.items()):
            if now - last >= self._window:
                del self._firing[key]
                out.append(Signal(labels={"alertname": self.alertname, "registry": key[0], "addr": key[1]},
                                  firing=False, at=now))
        for key, times in list(self._times.items()):  # forget quiet addresses (bounded memory)
            if key not in self._firing and (not times or now - times[-1] >= self._window):
                del self._times[key]
                self._users.pop(key, None)
        return out


class UnexpectedPushActor:
    """A successful image.push by a user that matches none of `allowed` (globs). Pushes whose user is
    unknown (access lines carry none) are not judged: the notification of the same push is."""

    alertname = "UnexpectedPushActor"
    kinds = frozenset({"image.push"})

    def __init__(self, allowed: Iterable[str], hold: timedelta) -> None:
        self._allowed = tuple(allowed)
        self._held = _Held(hold)

    def observe(self, event: Event) -> list[Signal]:
        if not self._allowed or event.kind != "image.push" or event.outcome != "success":
            return []
        user = event.actor.user
        if (not user or any(fnmatch.fnmatchcase(user, pattern) for pattern in self._allowed)):
            return []
        target = event.target
        ref = f"{target.repository}:{target.tag}" if target.tag else f"{target.repository}@{target.digest}"
        return [self._held.fire(
            {"alertname": self.alertname, "registry": target.registry or "", "repository": target.repository or "",
             "actor": user}, event.observed, "warning",
            {"summary": f"{user} pushed {ref}, and is not an allowed pusher",
             "description": (f"{user} (from {event.actor.addr or 'unknown address'}) pushed {ref} to "
                             f"{target.registry or 'a registry'}; detectors.push_actors allows "
                             f"{', '.join(self._allowed)}.")})]

    def restore(self, labels: dict[str, str], seen: datetime) -> None:
        self._held.restore(labels, seen)

    def tick(self, now: datetime) -> list[Signal]:
        return self._held.tick(now)


class TagMemory(Protocol):
    """Where the protected-tag rule remembers the digest each tag last pointed to."""

    def get(self, registry: str, repository: str, tag: str) -> str | None: ...

    def put(self, registry: str, repository: str, tag: str, digest: str) -> None: ...


class InMemoryTagMemory:
    def __init__(self) -> None:
        self._digests: dict[tuple[str, str, str], str] = {}

    def get(self, registry: str, repository: str, tag: str) -> str | None:
        return self._digests.get((registry, repository, tag))

    def put(self, registry: str, repository: str, tag: str, digest: str) -> None:
        self._digests[(registry, repository, tag)] = digest


class ProtectedTagOverwritten:
    """A push that points a protected tag (glob over `repository:tag`, e.g. `*:latest`, `base/*:v*`) at
    a different digest than it had. Needs pushes that carry both tag and digest (notifications)."""

    alertname = "ProtectedTagOverwritten"
    kinds = frozenset({"image.push"})

    def __init__(self, patterns: Iterable[str], memory: TagMemory, hold: timedelta) -> None:
        self._patterns = tuple(patterns)
        self._memory = memory
        self._held = _Held(hold)

    def protects(self, repository: str, tag: str) -> bool:
        name = f"{repository}:{tag}"
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self._patterns)

    def observe(self, event: Event) -> list[Signal]:
        if not self._patterns or event.kind != "image.push" or event.outcome != "success":
            return []
        target = event.target
        if (not target.tag
                or not target.digest or not target.repository or not self.protects(target.repository, target.tag)):
            return []
        registry = target.registry or ""
        # remembered by address: the same push seen in the log and in a notification is one push
        before = self._memory.get(target.host, target.repository, target.tag)
        self._memory.put(target.host, target.repository, target.tag, target.digest)
        if before is None or before == target.digest:
            return []
        name = f"{target.repository}:{target.tag}"
        return [self._held.fire(
            {"alertname": self.alertname, "registry": registry, "repository": target.repository,
             "tag": target.tag}, event.observed, "critical",
            {"summary": f"Protected tag {name} was overwritten",
             "description": (f"{event.actor.user or 'an unknown user'} (from {event.actor.addr or 'unknown'}) "
                             f"pushed {name} to {registry or 'a registry'}: {before} -> {target.digest}.")})]

    def restore(self, labels: dict[str, str], seen: datetime) -> None:
        self._held.restore(labels, seen)

    def tick(self, now: datetime) -> list[Signal]:
        return self._held.tick(now)


_DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}


def _normal_registry(host: str) -> str:
    host = host.lower()
    return "docker.io" if host in _DOCKER_HUB_ALIASES else host


class PullFromUnlistedRegistry:
    """The Docker engine pulled an image from a registry host not in `allowed` (host[:port]).
    Only engine events count: a registry's own logs are by definition from a listed registry."""

    alertname = "PullFromUnlistedRegistry"
    kinds = frozenset({"image.pull"})

    def __init__(self, allowed: Iterable[str], hold: timedelta) -> None:
        self._allowed = frozenset(_normal_registry(a) for a in allowed)
        self._held = _Held(hold)

    def observe(self, event: Event) -> list[Signal]:
        if not self._allowed or event.source != "docker" or event.kind != "image.pull":
            return []
        address = event.target.host
        if not address or _normal_registry(address) in self._allowed:
            return []
        registry = event.target.registry or address
        image = f"{address}/{event.target.repository}" + (f":{event.target.tag}" if event.target.tag else "")
        return [self._held.fire(
            {"alertname": self.alertname, "registry": registry, "repository": event.target.repository or ""},
            event.observed, "warning",
            {"summary": f"Image pulled from unlisted registry {registry}",
             "description": (f"The Docker engine on {event.host} pulled {image}; detectors.pull_registries "
                             f"allows {', '.join(sorted(self._allowed))}.")})]

    def restore(self, labels: dict[str, str], seen: datetime) -> None:
        self._held.restore(labels, seen)

    def tick(self, now: datetime) -> list[Signal]:
        return self._held.tick(now)


class AuditGap:
    """An `audit.gap` record: a source may have lost events (engine event buffer, rotated log)."""

    alertname = "AuditGap"
    kinds = frozenset({"audit.gap"})

    def __init__(self, hold: timedelta) -> None:
        self._held = _Held(hold)

    def observe(self, event: Event) -> list[Signal]:
        if event.kind != "audit.gap":
            return []
        reason = str(event.detail.get("reason") or "events may have been lost")
        return [self._held.fire(
            {"alertname": self.alertname, "source": event.source}, event.observed, "warning",
            {"summary": f"Audit gap in the {event.source} source",
             "description": f"{reason} (on {event.host}); see the audit.gap record for the time span."})]

    def restore(self, labels: dict[str, str], seen: datetime) -> None:
        self._held.restore(labels, seen)

    def tick(self, now: datetime) -> list[Signal]:
        return self._held.tick(now)


class AuditTrailRewritten:
    """An `audit.witness_mismatch` record: the trail on this host no longer holds what Vault witnessed."""

    alertname = "AuditTrailRewritten"
    kinds = frozenset({"audit.witness_mismatch"})

    def __init__(self, hold: timedelta) -> None:
        self._held = _Held(hold)

    def observe(self, event: Event) -> list[Signal]:
        if event.kind != "audit.witness_mismatch":
            return []
        reason = str(event.detail.get("reason") or "the trail does not match its witnessed head")
        return [self._held.fire(
            {"alertname": self.alertname, "host": event.host}, event.observed, "critical",
            {"summary": f"Audit trail on {event.host} does not match its head witnessed in Vault",
             "description": f"{reason}. Run `regwarden audit verify --witness` to find the first seq that no "
                            "longer matches."})]

    def restore(self, labels: dict[str, str], seen: datetime) -> None:
        self._held.restore(labels, seen)

    def tick(self, now: datetime) -> list[Signal]:
        return self._held.tick(now)


class ImageCheckAlert:
    """An image check's audit record (kind `kind`) whose verdict is `verdict`: the check's reason is the
    alert's description."""

    def __init__(self, alertname: str, kind: str, verdict: str, severity: Severity, summary: str,
                 hold: timedelta) -> None:
        self.alertname = alertname
        self.kinds = frozenset({kind})
        self._verdict = verdict
        self._severity: Severity = severity
        self._summary = summary
        self._held = _Held(hold)

    def observe(self, event: Event) -> list[Signal]:
        if event.kind not in self.kinds or event.detail.get("verdict") != self._verdict:
            return []
        target = event.target
        image = f"{target.registry or ''}/{target.repository or ''}@{target.digest or ''}"
        return [self._held.fire(
            {"alertname": self.alertname, "registry": target.registry or "", "repository": target.repository or "",
             "digest": target.digest or ""}, event.observed, self._severity,
            {"summary": f"{self._summary}: {image}" + (f" (tag {target.tag})" if target.tag else ""),
             "description": str(event.detail.get("reason") or self._summary)})]

    def restore(self, labels: dict[str, str], seen: datetime) -> None:
        self._held.restore(labels, seen)

    def tick(self, now: datetime) -> list[Signal]:
        return self._held.tick(now)


def image_check_rules(hold: timedelta) -> list[Rule]:
    return [
        ImageCheckAlert("ImageUnsigned", "image.signature", "unsigned", "critical",
                        "Unsigned push to a protected repository", hold),
        ImageCheckAlert("ImageSignatureInvalid", "image.signature", "invalid", "critical",
                        "Image signature does not verify", hold),
        ImageCheckAlert("ImageVulnerable", "image.scan", "vulnerable", "critical",
                        "Pushed image has vulnerabilities at or above the threshold", hold),
        ImageCheckAlert("ImageScanFailed", "image.scan", "failed", "warning", "Vulnerability scan failed", hold),
    ]


# --------------------------------------------------------------------------- wiring


def allowed_pull_hosts(cfg: Config) -> list[str]:
    """`pull_registries` entries as host[:port]: a [[registries]] name becomes its URL's host:port."""
    by_name = {r.name: r for r in cfg.registries}
    hosts = []
    for entry in cfg.detectors.pull_registries:
        registry = by_name.get(entry)
        hosts.append(urlsplit(str(registry.url)).netloc if registry is not None else entry)
    return hosts


def build_rules(cfg: Config, memory: TagMemory) -> list[Rule]:
    d = cfg.detectors
    hold = d.event_alert_hold
    return [
        AuthFailureBurst(d.auth_failure_burst, d.auth_failure_window),
        UnexpectedPushActor(d.push_actors, hold),
        ProtectedTagOverwritten(d.protected_tags, memory, hold),
        PullFromUnlistedRegistry(allowed_pull_hosts(cfg), hold),
        AuditGap(hold),
        AuditTrailRewritten(hold),
        *image_check_rules(hold),
    ]


_DDL = """
CREATE TABLE IF NOT EXISTS audit_tag_digests (
    registry TEXT NOT NULL, repository TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL,
    updated REAL NOT NULL, PRIMARY KEY (registry, repository, tag));
CREATE TABLE IF NOT EXISTS audit_detector_firing (
    labels TEXT PRIMARY KEY, alertname TEXT NOT NULL, last_seen TEXT NOT NULL);
"""


class SqliteTagMemory:
    """Protected tags' digests in the state store (they must survive restarts)."""

    def __init__(self, ctx: Context) -> None:
        self._state = ctx.state
        self._state.ensure_schema("audit_detectors", _DDL)

    def get(self, registry: str, repository: str, tag: str) -> str | None:
        rows = self._state.query("SELECT digest FROM audit_tag_digests WHERE registry=? AND repository=? AND tag=?",
                                 (registry, repository, tag))
        return str(rows[0]["digest"]) if rows else None

    def put(self, registry: str, repository: str, tag: str, digest: str) -> None:
        import time

        self._state.execute(
            "INSERT INTO audit_tag_digests VALUES (?, ?, ?, ?, ?) ON CONFLICT(registry, repository, tag)"
            " DO UPDATE SET digest=excluded.digest, updated=excluded.updated",
            (registry, repository, tag, digest, time.time()))


class AuditDetectors:
    """Runs the rules on every Event of the bus and publishes their Signals; a ticker resolves."""

    name = "audit-detectors"
    bus_consumer = True

    def __init__(self, tick_interval: float = 15.0) -> None:
        self._tick_interval = tick_interval
        self._ctx: Context | None = None
        self._rules: list[Rule] = []
        self._kinds: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._signals = 0
        self._pending: deque[Signal] = deque()
        self._pending_lock = threading.Lock()

    def start(self, ctx: Context) -> None:
        self._ctx = ctx
        self._rules = build_rules(ctx.config, SqliteTagMemory(ctx))
        self._kinds = frozenset().union(*(rule.kinds for rule in self._rules))
        self._restore_firing()
        ctx.bus.subscribe(self.name, self.handle, self.handle_batch)  # replaces a previous instance's
        self._stop.clear()
        self._thread = threading.Thread(target=self._tick_loop, name="audit-detectors", daemon=True)
        self._thread.start()

    def handle(self, item: Event | Signal) -> None:
        if isinstance(item, Event):
            self.handle_batch((item,))

    def handle_batch(self, events: Sequence[Event]) -> None:
        kinds = self._kinds
        watched = [event for event in events if event.kind in kinds]
        if not watched:
            return
        with self._lock:
            signals = [s for event in watched for rule in self._rules if event.kind in rule.kinds
                       for s in rule.observe(event)]
        self._publish(signals)

    def tick(self, now: datetime | None = None, *, block: bool = False) -> None:
        with self._lock:
            signals = [s for rule in self._rules for s in rule.tick(now or utcnow())]
        self._publish(signals, block=block)

    def _publish(self, signals: list[Signal], *, block: bool = False) -> None:
        """Put Signals on the bus. From the dispatcher thread (`handle`) never wait on a full bus (it
        would wait on itself): what does not fit is kept and sent by the next tick."""
        if self._ctx is None:
            return
        with self._pending_lock:
            self._pending.extend(signals)
        while True:
            with self._pending_lock:
                if not self._pending:
                    return
                signal = self._pending.popleft()
            try:
                self._ctx.bus.publish(signal, timeout=1.0 if block else 0)
            except queue.Full:
                with self._pending_lock:
                    self._pending.appendleft(signal)
                log.warning("detector_signals_deferred", pending=len(self._pending))
                return
            self._signals += 1
            self._remember(signal)
            log.info("detector_signal", alertname=signal.labels["alertname"], firing=signal.firing)

    def _remember(self, signal: Signal) -> None:
        """Firing alerts are kept in the state store, so that they still resolve after a restart."""
        assert self._ctx is not None
        labels = json.dumps(signal.labels, sort_keys=True)
        if signal.firing:
            self._ctx.state.execute(
                "INSERT INTO audit_detector_firing VALUES (?, ?, ?) ON CONFLICT(labels) DO UPDATE"
                " SET last_seen=excluded.last_seen", (labels, signal.labels["alertname"], signal.at.isoformat()))
        else:
            self._ctx.state.execute("DELETE FROM audit_detector_firing WHERE labels = ?", (labels,))

    def _restore_firing(self) -> None:
        assert self._ctx is not None
        by_name = {rule.alertname: rule for rule in self._rules}
        for row in self._ctx.state.query("SELECT labels, alertname, last_seen FROM audit_detector_firing"):
            rule = by_name.get(row["alertname"])
            if rule is not None:
                rule.restore(json.loads(row["labels"]), datetime.fromisoformat(row["last_seen"]))

    def _tick_loop(self) -> None:
        while not self._stop.wait(self._tick_interval):
            try:
                self.tick(block=True)
            except Exception:
                log.exception("detector_tick_failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._ctx is not None:
            self._ctx.bus.unsubscribe(self.name)

    def health(self) -> Health:
        return Health(self._ctx is not None, "" if self._ctx is not None else "not started")

    def status(self) -> dict[str, Any]:
        return {"rules": [type(r).__name__ for r in self._rules], "signals": self._signals}


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
