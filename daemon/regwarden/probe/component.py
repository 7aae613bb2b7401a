"""The probe component: one APScheduler job per `[[registries]]` entry, adaptive interval, flap damping.

Each result updates the metrics, `status()`, and — on changes only — the bus: a failure is an Event
(`probe.failed`, again when its phase or reason changes; `probe.recovered` when it ends) and, after
`failures_before_alert` consecutive failures, the `RegistryProbeFailed` Signal (one success resolves
it). Anonymous access where `expect_auth` is set, plain HTTP and a TLS chain expiring within
`[detectors].tls_expiry_warning` are Signals of their own. The first result after a start states every
alert once (firing or resolved), so alerts left over from before a restart are resolved.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor

from ..component import Context, Health
from ..config import RegistryConfig
from ..credentials.model import CredentialSecret
from ..events import Event, Signal, Target
from .lookup import CredentialLookup, docker_lookup
from .model import PHASES, Assessment, FlapDamper, ProbeResult, assess, next_interval
from .prober import ProbeTarget, probe

__all__ = ["ProbeComponent"]

log = structlog.get_logger(__name__)

ProbeFunction = Callable[[ProbeTarget, CredentialSecret | None], ProbeResult]
_EXECUTOR = "probes"
_FINDING_ALERTS = {
    "anonymous_access": "RegistryAnonymousAccess",
    "plain_http": "RegistryPlainHTTP",
    "tls_expiring": "RegistryTLSCertExpiring",
}
FAILED_ALERT = "RegistryProbeFailed"


@dataclass
class _State:
    damper: FlapDamper
    interval: float
    result: ProbeResult | None = None
    assessment: Assessment | None = None
    failure: tuple[str, str] | None = None  # (phase, reason) of the failure last reported as an Event
    findings: dict[str, bool] = field(default_factory=dict)  # finding -> firing, as last signalled
    tls_version: str | None = None
    series: _Series | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class ProbeComponent:
    """Probes every configured registry on its own schedule."""

    name = "probes"

    def __init__(self, credential_lookup: CredentialLookup | None = None,
                 probe_function: ProbeFunction = probe, *, failing_floor: float = 5.0) -> None:
        # the daemon passes the credentials component's applied secret first; default: what Docker would use
        self._lookup = credential_lookup
        self._probe = probe_function
        self._floor = failing_floor
        self._ctx: Context | None = None
        self._registries: dict[str, RegistryConfig] = {}
        self._states: dict[str, _State] = {}
        self._executor: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ Component

    def start(self, ctx: Context) -> None:
        self._ctx = ctx
        if self._lookup is None:
            self._lookup = docker_lookup(ctx.config)
        self._registries = {reg.name: reg for reg in ctx.config.registries}
        self._states = {
            name: _State(FlapDamper(reg.failures_before_alert), reg.probe_interval.total_seconds())
            for name, reg in self._registries.items()
        }
        if not self._registries:
            return
        self._executor = ThreadPoolExecutor(max_workers=min(32, max(2, len(self._registries))))
        ctx.scheduler.add_executor(self._executor, alias=_EXECUTOR)
        now = time.time()
        for name, reg in self._registries.items():
            interval = reg.probe_interval.total_seconds()
            first = now + random.uniform(0, min(interval, 5.0))  # noqa: S311 - spreading start times
            ctx.scheduler.add_job(
                self.run_probe, "interval", seconds=interval, args=[name], id=_job_id(name), name=f"probe {name}",
                executor=_EXECUTOR, next_run_time=datetime.fromtimestamp(first).astimezone(),
                replace_existing=True, coalesce=True, max_instances=1)
            ctx.metrics.probe_interval.labels(name).set(interval)
        log.info("probes_scheduled", registries=sorted(self._registries))

    def stop(self) -> None:
        if self._ctx is None:
            return
        scheduler = self._ctx.scheduler
        for name in self._registries:
            with contextlib.suppress(LookupError):
                scheduler.remove_job(_job_id(name))
        if self._executor is not None:
            with contextlib.suppress(KeyError):
                scheduler.remove_executor(_EXECUTOR, shutdown=False)
            self._executor.shutdown(wait=False)  # a probe in flight ends by its own deadline
            self._executor = None

    def health(self) -> Health:
        """Not ready while a registry is unreachable (verdict `down`) or not probed yet; an auth failure
        or a finding is an alert, not unreadiness. /readyz takes this in place of a check of its own."""
        if self._ctx is None:
            return Health(False, "not started")
        down, pending = [], []
        for name, state in sorted(self._states.items()):
            result, assessment = state.result, state.assessment
            if result is None or assessment is None:
                pending.append(name)
            elif assessment.verdict == "down":
                down.append(f"registry:{name}: {result.failed_phase}: {result.reason}")
        if down:
            return Health(False, "; ".join(down))
        if pending:
            return Health(False, "not probed yet: " + ", ".join(pending))
        return Health(True)

    def status(self) -> dict[str, Any]:
        return {name: _status(self._states[name]) for name in sorted(self._states)}

    # ------------------------------------------------------------------ probing

    def run_probe(self, name: str) -> ProbeResult | None:
        """Probe one registry now and record the result (the scheduled job; tests call it directly)."""
        ctx, reg = self._ctx, self._registries.get(name)
        if ctx is None or reg is None:
            return None
        state = self._states[name]
        try:
            credential = self._credential(reg)
            result = self._probe(ProbeTarget.from_config(reg), credential)
            with state.lock:
                self._record(ctx, reg, state, result)
        except Exception:  # a job must never die; the next run tries again
            log.exception("probe_job_failed", registry=name)
            return None
        return result

    def _credential(self, reg: RegistryConfig) -> CredentialSecret | None:
        if reg.credential is None or self._lookup is None:
            return None
        try:
            return self._lookup(reg.credential)
        except Exception as exc:
            log.warning("probe_credential_unavailable", registry=reg.name, credential=reg.credential,
                        error=type(exc).__name__)
            return None

    def _record(self, ctx: Context, reg: RegistryConfig, state: _State, result: ProbeResult) -> None:
        first = state.result is None
        assessment = assess(result, expect_auth=reg.expect_auth,
                            tls_warning_seconds=ctx.config.detectors.tls_expiry_warning.total_seconds(),
                            now=time.time())
        self._update_metrics(ctx, reg.name, state, result, assessment)
        state.result, state.assessment = result, assessment  # after the metrics: /status shows it last
        failure_changed = self._report_failure(ctx, reg, state, result)
        state.damper, change = state.damper.observe(result.ok)
        if change is not None or first or (state.damper.firing and failure_changed):
            ctx.signal(_failed_signal(ctx.host, reg, result, firing=state.damper.firing))
        for finding, alertname in _FINDING_ALERTS.items():
            firing = _finding_state(finding, result, assessment)
            if firing is None or state.findings.get(finding) == firing:
                continue
            state.findings[finding] = firing
            ctx.signal(_finding_signal(ctx.host, reg, alertname, firing=firing, result=result,
                                       assessment=assessment))
        interval = next_interval(reg.probe_interval.total_seconds(), not result.ok, floor=self._floor)
        if interval != state.interval:
            state.interval = interval
            ctx.metrics.probe_interval.labels(reg.name).set(interval)
            with contextlib.suppress(LookupError):  # one-shot use has no scheduled job
                ctx.scheduler.reschedule_job(_job_id(reg.name), trigger="interval", seconds=interval)
        level = log.debug if result.ok else log.warning  # changes are logged as events; steady success is noise
        level("probe_finished", registry=reg.name, verdict=assessment.verdict, phase=result.failed_phase,
              reason=result.reason or None, duration_ms=round(result.duration * 1000, 2))

    def _report_failure(self, ctx: Context, reg: RegistryConfig, state: _State, result: ProbeResult) -> bool:
        """`probe.failed` when a failure starts or its phase/reason changes; `probe.recovered` at its end.
        Returns whether the failure (phase, reason) changed."""
        if result.ok:
            if state.failure is not None:
                ctx.emit(_event(ctx.host, reg, result, "probe.recovered", {"failures": state.damper.failures}))
            state.failure = None
            return False
        failure = (str(result.failed_phase), result.reason)
        if failure == state.failure:
            return False
        state.failure = failure
        ctx.emit(_event(ctx.host, reg, result, "probe.failed", {
            "phase": failure[0], "reason": failure[1], "consecutive_failures": state.damper.failures + 1}))
        return True

    @staticmethod
    def _update_metrics(ctx: Context, name: str, state: _State, result: ProbeResult, assessment: Assessment) -> None:
        series = state.series
        if series is None:
            series = state.series = _Series(ctx, name)
        ctx.metrics.probes.labels(name, assessment.verdict).inc()
        series.success.set(1 if result.ok else 0)
        series.reachable.set(0 if assessment.verdict == "down" else 1)
        for phase in PHASES:
            series.duration[phase].set(result.phases.get(phase, 0.0))
            series.failed_phase[phase].set(1 if result.failed_phase == phase else 0)
        series.http_status.set(result.http_status or 0)
        series.http_ssl.set(0 if result.plain_http else 1)
        m = ctx.metrics
        if result.cert_expiry is not None:
            series.ssl_expiry.set(result.cert_expiry)
        if result.realm_cert_expiry is not None:
            m.probe_realm_ssl_expiry.labels(name).set(result.realm_cert_expiry)
        if result.anonymous is not None:
            series.anonymous.set(1 if result.anonymous else 0)
        if result.auth_ok is not None:
            m.probe_auth_success.labels(name).set(1 if result.auth_ok else 0)
        if result.tls_version is not None and result.tls_version != state.tls_version:
            if state.tls_version is not None:
                m.probe_tls_version.remove(name, state.tls_version)
            m.probe_tls_version.labels(name, result.tls_version).set(1)
            state.tls_version = result.tls_version


class _Series:
    """A registry's labelled metric children, looked up once (`labels()` on every probe costs CPU)."""

    def __init__(self, ctx: Context, name: str) -> None:
        m = ctx.metrics
        self.success = m.probe_success.labels(name)
        self.reachable = m.dependency_up.labels("registry", name)
        self.duration = {phase: m.probe_duration.labels(name, phase) for phase in PHASES}
        self.failed_phase = {phase: m.probe_failed_phase.labels(name, phase) for phase in PHASES}
        self.http_status = m.probe_http_status.labels(name)
        self.http_ssl = m.probe_http_ssl.labels(name)
        self.ssl_expiry = m.probe_ssl_expiry.labels(name)
        self.anonymous = m.probe_anonymous.labels(name)


# --------------------------------------------------------------------------- pure helpers


def _job_id(name: str) -> str:
    return f"probe:{name}"


def _finding_state(finding: str, result: ProbeResult, assessment: Assessment) -> bool | None:
    """Whether a finding holds, or None when this probe could not tell (it failed before seeing it)."""
    if finding == "anonymous_access" and result.anonymous is None:
        return None
    if finding == "tls_expiring" and result.earliest_expiry is None:
        return None
    return finding in assessment.findings


def _failed_signal(host: str, reg: RegistryConfig, result: ProbeResult, *, firing: bool) -> Signal:
    annotations = {"summary": f"Registry {reg.name} probe is succeeding again", "url": reg.url}
    if firing:
        annotations = {
            "summary": f"Registry {reg.name} probe failing at phase {result.failed_phase}: {result.reason}",
            "description": f"{reg.failures_before_alert} or more consecutive probes of {reg.url} failed;"
                           f" the last at phase {result.failed_phase}: {result.reason}",
            "phase": str(result.failed_phase), "reason": result.reason, "url": reg.url,
        }
    return Signal(labels={"alertname": FAILED_ALERT, "registry": reg.name, "host": host}, firing=firing,
                  severity="critical", annotations=annotations, at=result.at)


def _finding_signal(host: str, reg: RegistryConfig, alertname: str, *, firing: bool, result: ProbeResult,
                    assessment: Assessment) -> Signal:
    severity: Any = "warning"
    days = assessment.tls_days_left
    if alertname == "RegistryAnonymousAccess":
        summary = f"Registry {reg.name} answers /v2/ without credentials although expect_auth is set"
    elif alertname == "RegistryPlainHTTP":
        summary = f"Registry {reg.name} is reached over plain HTTP ({reg.url})"
    else:
        summary = f"Registry {reg.name} TLS certificate chain expires in {days:.1f} days" if days is not None \
            else f"Registry {reg.name} TLS certificate chain expiry"
        if days is not None and days < 3:
            severity = "critical"
    if not firing:
        summary = f"Resolved: {summary}" if alertname != "RegistryTLSCertExpiring" else \
            f"Registry {reg.name} TLS certificate chain is no longer close to expiry"
    annotations = {"summary": summary, "url": reg.url}
    if days is not None and alertname == "RegistryTLSCertExpiring":
        annotations["days_left"] = f"{days:.1f}"
    return Signal(labels={"alertname": alertname, "registry": reg.name, "host": host}, firing=firing,
                  severity=severity, annotations=annotations, at=result.at)


def _event(host: str, reg: RegistryConfig, result: ProbeResult, kind: str, detail: dict[str, Any]) -> Event:
    return Event(
        source="regwarden", kind=kind, time=result.at, host=host,
        target=Target(registry=reg.name, address=reg.host_port),
        outcome="failure" if kind == "probe.failed" else "success", status=result.http_status,
        detail={"url": reg.url, **detail, "duration_ms": round(result.duration * 1000, 3)})


def _status(state: _State) -> dict[str, Any]:
    result, assessment = state.result, state.assessment
    if result is None or assessment is None:
        return {"verdict": "pending", "interval_seconds": state.interval}
    days = assessment.tls_days_left
    return {
        "verdict": assessment.verdict,
        "up": result.ok,
        "failed_phase": result.failed_phase,
        "reason": result.reason or None,
        "latency_ms": round(result.duration * 1000, 3),
        "phases_ms": {phase: round(seconds * 1000, 3) for phase, seconds in result.phases.items()},
        "tls_days_left": None if days is None else round(days, 2),
        "tls_version": result.tls_version,
        "anonymous": result.anonymous,
        "auth_check": None if result.auth_ok is None else ("ok" if result.auth_ok else "failed"),
        "findings": sorted(assessment.findings),
        "consecutive_failures": state.damper.failures,
        "alert_firing": state.damper.firing,
        "interval_seconds": state.interval,
        "last_probe": result.at.isoformat(),
    }
