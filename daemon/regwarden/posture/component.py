"""The posture component: every `[posture].interval`, check each registry's security posture.

Each finding is a gauge (`regwarden_posture_finding{registry,check,severity}`), an alert of its own
(one Signal per check, labels alertname/registry/host) and, when it starts or ends, an audit record
(`posture.finding`, `posture.cleared`). The first run after a start states every alert once, so alerts
left from before a restart resolve; which checks were firing is kept in the state store, so the audit
records stay exact across restarts. Default logins are tried at most once per interval, also across
restarts: in between, the remembered result stands. Checks the prober alerts (plain HTTP, anonymous
/v2/, certificate expiry) are shown and exported, not alerted twice.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import structlog

from ..component import Context, Health
from ..config import RegistryConfig
from ..errors import VaultError
from ..events import Event, Signal, Target
from ..vault.shared import vault_for
from .checks import CHECKS, Outcome
from .fleet import Decision, FleetLogins
from .report import Remembered, Report, check_registry, outcome_row

__all__ = ["PostureComponent"]

log = structlog.get_logger(__name__)

CheckFunction = Callable[..., Report]
_JOB = "posture"


@dataclass
class _State:
    firing: dict[str, str] = field(default_factory=dict)  # check -> severity, as last recorded (persisted)
    signalled: dict[str, tuple[bool, str, str]] = field(default_factory=dict)  # check -> (firing, severity, detail)
    gauges: dict[str, str] = field(default_factory=dict)  # check -> severity label of its gauge
    report: Report | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class PostureComponent:
    name = "posture"

    def __init__(self, check: CheckFunction = check_registry) -> None:
        self._check = check
        self._ctx: Context | None = None
        self._registries: dict[str, RegistryConfig] = {}
        self._states: dict[str, _State] = {}

    # ------------------------------------------------------------------ Component

    def start(self, ctx: Context) -> None:
        self._ctx = ctx
        cfg = ctx.config
        self._registries = {reg.name: reg for reg in cfg.registries}
        self._states = {name: _State(firing=dict(ctx.state.get_cursor(_firing_key(name)) or {}))
                        for name in self._registries}
        if not self._registries:
            return
        interval = cfg.posture.interval.total_seconds()
        first = time.time() + random.uniform(5, min(60.0, max(5.0, interval / 10)))  # noqa: S311 - spreading
        ctx.scheduler.add_job(self.run_all, "interval", seconds=interval, id=_JOB, name="posture checks",
                              next_run_time=datetime.fromtimestamp(first).astimezone(), replace_existing=True,
                              coalesce=True, max_instances=1)
        log.info("posture_scheduled", registries=sorted(self._registries), interval_seconds=interval)

    def stop(self) -> None:
        if self._ctx is not None:
            with contextlib.suppress(LookupError):
                self._ctx.scheduler.remove_job(_JOB)

    def health(self) -> Health:
        return Health(True)  # findings are alerts, not unreadiness

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, state in sorted(self._states.items()):
            report = state.report
            if report is None:
                out[name] = {"state": "pending"}
                continue
            counts = {"pass": 0, "fail": 0, "unknown": 0}
            for outcome in report.outcomes:
                counts["unknown" if outcome.firing is None else ("fail" if outcome.firing else "pass")] += 1
            out[name] = {"last_run": report.at.isoformat(), "duration_ms": round(report.duration * 1000, 1),
                         "checks": counts, "errors": list(report.errors),
                         "findings": [outcome_row(name, o) for o in report.findings]}
        return out

    # ------------------------------------------------------------------ running

    def run_all(self) -> list[Report]:
        """Check every registry now, one after the other (the scheduled job; tests call it directly)."""
        reports = []
        for name in list(self._registries):
            if self._ctx is not None and self._ctx.stopping.is_set():
                break
            report = self.run_registry(name)
            if report is not None:
                reports.append(report)
        return reports

    def run_registry(self, name: str) -> Report | None:
        ctx, reg = self._ctx, self._registries.get(name)
        if ctx is None or reg is None:
            return None
        state = self._states[name]
        with state.lock:
            try:
                report = self._run(ctx, reg)
                self._record(ctx, reg, state, report)
            except Exception:  # a job must never die; the next run tries again
                log.exception("posture_run_failed", registry=name)
                ctx.metrics.posture_runs.labels(name, "error").inc()
                return None
        return report

    def _run(self, ctx: Context, reg: RegistryConfig) -> Report:
        cfg = ctx.config.posture
        key = _logins_key(reg.name)
        stored = ctx.state.get_cursor(key)
        remembered = None
        if isinstance(stored, dict):
            with contextlib.suppress(TypeError, ValueError, KeyError):
                remembered = Remembered(float(stored["at"]), stored.get("user"), int(stored.get("attempts", 0)))
        interval = cfg.interval.total_seconds()
        due = remembered is None or time.time() - remembered.at >= interval * 0.95
        fleet, claim, problem = self._fleet(ctx), None, None
        if due and fleet is not None and reg.default_credentials_check and "default_credentials" not in cfg.skip:
            try:
                decision = fleet.decide(reg.host_port, interval, time.time())
            except VaultError as exc:
                decision, problem = Decision("wait"), f"default_credentials: not tried, the fleet's record in " \
                    f"Vault is unreadable ({exc})"
            if decision.action == "adopt" and decision.remembered is not None:
                remembered = decision.remembered
                ctx.state.set_cursor(key, {"at": remembered.at, "user": remembered.user,
                                           "attempts": remembered.attempts, "by": decision.by})
            elif decision.action == "try":
                claim = decision.version
            due = claim is not None
            log.debug("posture_default_logins", registry=reg.name, decision=decision.action, by=decision.by)
        report = self._check(reg, cfg, tls_warning_seconds=ctx.config.detectors.tls_expiry_warning.total_seconds(),
                             login_attempts=ctx.config.default_login_attempts, try_default_logins=due,
                             remembered=None if due else remembered)
        result = Remembered(time.time(), report.default_user, report.default_attempts) \
            if report.default_attempts else None
        if result is not None:
            ctx.metrics.posture_default_logins.labels(reg.name).inc(report.default_attempts)
            ctx.state.set_cursor(key, {"at": result.at, "user": result.user, "attempts": result.attempts})
        if claim is not None and fleet is not None:
            try:
                if not fleet.finish(reg.host_port, claim, result):
                    log.warning("posture_default_logins_claim_lost", registry=reg.name)
            except VaultError as exc:
                problem = f"default_credentials: the result could not be written to Vault ({exc})"
        if problem is not None:
            report = replace(report, errors=(*report.errors, problem))
        return report

    def _fleet(self, ctx: Context) -> FleetLogins | None:
        """The fleet's record of default-login runs, where there is a [vault] to keep it."""
        if ctx.config.vault is None:
            return None
        return FleetLogins(vault_for(ctx), ctx.config.vault.lock_path, ctx.host)

    def _record(self, ctx: Context, reg: RegistryConfig, state: _State, report: Report) -> None:
        m = ctx.metrics
        m.posture_runs.labels(reg.name, "ok" if not report.errors else "error").inc()
        m.posture_last_run.labels(reg.name).set(time.time())
        for error in report.errors:
            m.posture_check_errors.labels(reg.name, error.split(":", 1)[0]).inc()
            log.warning("posture_check_error", registry=reg.name, error=error)
        first = state.report is None
        state.report = report
        firing_before = dict(state.firing)
        for outcome in report.outcomes:
            if outcome.firing is None:
                continue
            self._gauge(ctx, reg.name, state, outcome)
            check = CHECKS[outcome.check]
            if outcome.firing:
                state.firing[outcome.check] = outcome.severity
            else:
                state.firing.pop(outcome.check, None)
            if outcome.firing and outcome.check not in firing_before:
                ctx.emit(_event(ctx.host, reg, report, "posture.finding", outcome))
            elif not outcome.firing and outcome.check in firing_before:
                ctx.emit(_event(ctx.host, reg, report, "posture.cleared", outcome))
            if check.alerted_by != "posture":
                continue
            said = (outcome.firing, outcome.severity, outcome.detail if outcome.firing else "")
            if first or state.signalled.get(outcome.check) != said:
                state.signalled[outcome.check] = said
                ctx.signal(_signal(ctx.host, reg, report, outcome))
        if state.firing != firing_before:
            ctx.state.set_cursor(_firing_key(reg.name), state.firing)
        log.info("posture_checked", registry=reg.name, findings=[o.check for o in report.findings],
                 errors=len(report.errors), duration_ms=round(report.duration * 1000, 1))

    @staticmethod
    def _gauge(ctx: Context, registry: str, state: _State, outcome: Outcome) -> None:
        gauge = ctx.metrics.posture_finding
        severity = outcome.severity if outcome.firing else CHECKS[outcome.check].severity
        old = state.gauges.get(outcome.check)
        if old is not None and old != severity:
            with contextlib.suppress(KeyError):
                gauge.remove(registry, outcome.check, old)
        state.gauges[outcome.check] = severity
        gauge.labels(registry, outcome.check, severity).set(1 if outcome.firing else 0)


# --------------------------------------------------------------------------- pure helpers


def _firing_key(name: str) -> str:
    return f"posture:firing:{name}"


def _logins_key(name: str) -> str:
    return f"posture:default-logins:{name}"


def _signal(host: str, reg: RegistryConfig, report: Report, outcome: Outcome) -> Signal:
    check = CHECKS[outcome.check]
    if outcome.firing:
        annotations = {"summary": f"Registry {reg.name}: {check.title}",
                       "description": outcome.detail or check.title, "fix": check.fix, "url": reg.url,
                       "check": outcome.check}
    else:
        annotations = {"summary": f"Registry {reg.name}: {check.title}: resolved", "url": reg.url,
                       "check": outcome.check}
    return Signal(labels={"alertname": check.alertname, "registry": reg.name, "host": host},
                  firing=bool(outcome.firing), severity=outcome.severity, annotations=annotations, at=report.at)


def _event(host: str, reg: RegistryConfig, report: Report, kind: str, outcome: Outcome) -> Event:
    return Event(source="regwarden", kind=kind, time=report.at, host=host,
                 target=Target(registry=reg.name, address=reg.host_port),
                 outcome="failure" if kind == "posture.finding" else "success",
                 detail={"check": outcome.check, "severity": outcome.severity, "detail": outcome.detail,
                         "url": reg.url})
