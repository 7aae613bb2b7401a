"""`regwarden run`: wires the components, serves HTTP, handles signals and talks to systemd.

SIGTERM/SIGINT: stop sources, drain the bus, flush, exit 0 within `daemon.shutdown_timeout`.
SIGHUP: load and validate the new config; apply it only if valid, else keep the old one and alert.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from . import __version__
from .bus import Bus
from .component import Component, Context, Health
from .config import Config, DockerConfig, check_host, load_config
from .errors import ConfigError, RegwardenError
from .events import Signal
from .health import DependencyChecker
from .localapi import LocalApi
from .logging import configure_logging
from .metrics import Metrics
from .redact import scrub_text
from .sdnotify import Notifier, watchdog_interval
from .state import StateStore
from .web import StatusServer

__all__ = ["Daemon", "build_components", "run_daemon"]

log = structlog.get_logger(__name__)

# settings that cannot change without a restart
_RESTART_ONLY = ("state_dir", "listen", "audit_log")
# the longest reload-refusal reason put in the systemd STATUS= line (the full text is in the log and /status)
_STATUS_REASON_MAX = 200


def build_components(cfg: Config) -> list[Component]:
    """The components a config asks for, in start order (sinks and the audit writer before sources)."""
    components: list[Component] = []
    components.append(DependencyChecker())
    from .audit.component import AuditTrail

    components.append(AuditTrail())  # always on; reads the HMAC key from Vault when configured
    if cfg.vault is not None and cfg.audit.witness:
        from .audit.witness import AuditWitness

        components.append(AuditWitness())
    from .audit.detectors import AuditDetectors

    components.append(AuditDetectors())
    if any(c.rotates for c in cfg.credentials):
        from .rotation.component import RotationManager

        components.append(RotationManager())
    from .alerting.pipeline import AlertPipeline

    components.append(AlertPipeline())
    credentials = None
    if cfg.credentials:
        from .credentials.component import CredentialsComponent

        credentials = CredentialsComponent()
    if cfg.registries:
        from .probe.component import ProbeComponent
        from .probe.lookup import docker_lookup, first_of

        # the version the credentials component applied; before that, what Docker itself would present
        applied = [credentials.applied_secret] if credentials is not None else []
        components.append(ProbeComponent(credential_lookup=first_of(*applied, docker_lookup(cfg))))
        if cfg.posture.enabled:
            from .posture.component import PostureComponent

            components.append(PostureComponent())
    if cfg.image_checks.signatures or cfg.image_checks.scanner is not None:
        from .images.component import ImageChecks
        from .probe.lookup import docker_lookup, first_of

        applied_secret = [credentials.applied_secret] if credentials is not None else []
        components.append(ImageChecks(credential_lookup=first_of(*applied_secret, docker_lookup(cfg))))
    if cfg.docker is not None:
        from .docker.engine_audit import EngineAudit

        components.append(EngineAudit())
    if credentials is not None:
        components.append(credentials)
    components.extend(_audit_sources(cfg))
    return components


def _audit_sources(cfg: Config) -> list[Component]:
    """The configured audit sources (started last, so that what they emit has somewhere to go)."""
    from .sources.docker_events import DockerEventsSource
    from .sources.notifications import NotificationReceiver
    from .sources.registry_log import RegistryLogSource

    sources: list[Component] = []
    if cfg.sources.docker_events is not None and cfg.sources.docker_events.enabled:
        docker = cfg.docker or DockerConfig()
        sources.append(DockerEventsSource(docker.host, docker.timeout.total_seconds()))
    for entry in cfg.sources.registry_logs:
        sources.append(RegistryLogSource(entry.path, entry.registry, entry.poll_interval.total_seconds(),
                                         address=cfg.registry(entry.registry).host_port))
    if cfg.sources.registry_notifications is not None:
        sources.append(NotificationReceiver(cfg.sources.registry_notifications))
    return sources


class Daemon:
    def __init__(self, config_path: Path, cfg: Config, metrics: Metrics | None = None) -> None:
        self.config_path = config_path
        self.metrics = metrics or Metrics()
        self.notifier = Notifier()
        self.started = time.time()
        self._commands: queue.Queue[tuple[str, queue.Queue[bool] | None]] = queue.Queue()
        state = StateStore(cfg.daemon.state_dir)
        self.ctx = Context(
            config=cfg, metrics=self.metrics, state=state,
            bus=Bus(self.metrics, capacity=cfg.daemon.bus_capacity),
            scheduler=BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1,
                                                                        "misfire_grace_time": 30}),
            host=cfg.daemon.hostname,
            api=LocalApi(cfg.daemon.state_dir / "regwarden.sock"),
        )
        self.components: list[Component] = []
        self.reload_error: str | None = None
        self.http = StatusServer(cfg.daemon.listen, self.metrics, self.readiness, self.status)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.metrics.start_time.set(self.started)
        self.metrics.config_reload_success.set(1)
        self.metrics.config_reload_time.set(time.time())
        self.ctx.bus.start()
        self.ctx.scheduler.start()
        self._start_components(self.ctx.config)
        self.http.start()
        self.ctx.api.route("GET", "/v1/status", lambda _, __: (200, self.status()))
        self.ctx.api.route("POST", "/v1/reload", self._api_reload)
        self.ctx.api.start()
        log.info("daemon_started", version=__version__, listen=self.ctx.config.daemon.listen,
                 components=[c.name for c in self.components], pid=os.getpid())

    def _start_components(self, cfg: Config) -> None:
        self.components = build_components(cfg)
        for component in self.components:
            try:
                component.start(self.ctx)
            except RegwardenError as exc:
                log.error("component_start_failed", component=component.name, error=str(exc))

    def _stop_components(self, flush_timeout: float = 5.0, budget: float | None = None) -> None:
        """Stop the producers, let the bus drain into the consumers (audit, detectors, alerts), stop those.

        With a `budget` (seconds: the shutdown), the producers get half of it, the drain until 70 % and
        the consumers until 90 %; a component whose stop() has not returned by then is left to finish
        on its own thread (logged `component_stop_timeout`), so a stop that hangs cannot make SIGTERM
        take longer than `shutdown_timeout`. A reload (no budget) waits for every stop."""
        began = time.monotonic()
        consumers = [c for c in self.components if getattr(c, "bus_consumer", False)]
        producers = [c for c in self.components if c not in consumers]
        for component in reversed(producers):
            self._stop_one(component, None if budget is None else began + 0.5 * budget)
        drain = flush_timeout if budget is None else max(0.1, began + 0.7 * budget - time.monotonic())
        if not self.ctx.bus.flush(drain):
            log.error("bus_not_drained", waiting=self.ctx.bus.depth())
        for component in reversed(consumers):
            self._stop_one(component, None if budget is None else began + 0.9 * budget)
        self.components = []
        # shared objects (the Vault client) belong to the daemon: rebuilt from the config at next start
        for shared in self.ctx.shared.values():
            close = getattr(shared, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    log.exception("shared_close_failed")
        self.ctx.shared.clear()

    @staticmethod
    def _stop_one(component: Component, until: float | None = None) -> None:
        """`component.stop()`; with `until` (a monotonic time) on a thread of its own, waited for until then."""
        def stop() -> None:
            try:
                component.stop()
            except Exception:
                log.exception("component_stop_failed", component=component.name)

        if until is None:
            stop()
            return
        thread = threading.Thread(target=stop, name=f"stop-{component.name}", daemon=True)
        thread.start()
        thread.join(max(0.05, until - time.monotonic()))
        if thread.is_alive():
            log.error("component_stop_timeout", component=component.name,
                      note="its stop() goes on; the daemon does not wait for it")

    def stop(self) -> None:
        budget = self.ctx.config.daemon.shutdown_timeout.total_seconds()
        deadline = time.monotonic() + budget
        self.ctx.stopping.set()
        self._stop_components(budget=budget)
        self.ctx.scheduler.shutdown(wait=False)
        if not self.ctx.bus.stop(max(0.5, deadline - time.monotonic() - 0.5)):
            log.error("bus_not_drained")
        self.http.stop()
        self.ctx.api.stop()
        self.ctx.state.close()
        log.info("daemon_stopped")

    def reload(self) -> bool:
        """Load the config again; apply it only if valid. Returns whether it was applied."""
        try:
            new = load_config(self.config_path)
            problems = check_host(new, str(self.config_path))
            if problems:
                raise ConfigError(problems)
        except ConfigError as exc:
            self.reload_error = str(exc)
            self.metrics.config_reload_success.set(0)
            log.error("config_reload_failed", problems=[str(p) for p in exc.problems])
            self.ctx.signal(Signal(labels={"alertname": "RegwardenConfigReloadFailed"}, severity="warning",
                                   annotations={"summary": "New configuration rejected; running on the old one",
                                                "description": str(exc)}))
            return False
        old = self.ctx.config
        for key in _RESTART_ONLY:
            if getattr(old.daemon, key) != getattr(new.daemon, key):
                log.warning("config_needs_restart", key=f"daemon.{key}")
        new = new.model_copy(update={"daemon": new.daemon.model_copy(
            update={k: getattr(old.daemon, k) for k in _RESTART_ONLY})})
        self._stop_components()
        self.ctx.config = new
        self._start_components(new)
        self.reload_error = None
        self.metrics.config_reload_success.set(1)
        self.metrics.config_reload_time.set(time.time())
        self.ctx.signal(Signal(labels={"alertname": "RegwardenConfigReloadFailed"}, firing=False))
        log.info("config_reloaded", components=[c.name for c in self.components])
        return True

    # ------------------------------------------------------------------ reporting

    def readiness(self) -> tuple[bool, dict[str, str]]:
        reasons: dict[str, str] = {}
        if not self.ctx.bus.alive(within=30):
            reasons["bus"] = "dispatcher stalled"
        for component in self.components:
            try:
                health = component.health()
            except Exception as exc:
                health = Health(False, f"health check raised {type(exc).__name__}")
            if not health.ready:
                reasons[component.name] = health.detail or "not ready"
        self.metrics.ready.set(0 if reasons else 1)
        return not reasons, reasons

    def status(self) -> dict[str, Any]:
        ready, reasons = self.readiness()
        out: dict[str, Any] = {
            "version": __version__,
            "host": self.ctx.host,
            "pid": os.getpid(),
            "started": self.started,
            "uptime_seconds": round(time.time() - self.started, 3),
            "ready": ready,
            "not_ready": reasons,
            "config": {"path": str(self.config_path), "last_reload_error": self.reload_error},
            "components": {},
        }
        for component in self.components:
            try:
                out["components"][component.name] = component.status()
            except Exception as exc:
                out["components"][component.name] = {"error": f"status raised {type(exc).__name__}"}
        return out

    # ------------------------------------------------------------------ main loop

    def request(self, command: str, reply: queue.Queue[bool] | None = None) -> None:
        """Queue `reload` or `stop` for the main loop (signal handlers and the local API use this)."""
        self._commands.put((command, reply))

    def _api_reload(self, _: dict[str, str], __: Any) -> tuple[int, Any]:
        reply: queue.Queue[bool] = queue.Queue()
        self.request("reload", reply)
        try:
            applied = reply.get(timeout=60)
        except queue.Empty:
            return 504, {"error": "reload did not finish within 60s"}
        if applied:
            return 200, {"reloaded": True}
        return 409, {"reloaded": False, "error": self.reload_error}

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code."""
        for signum, command in ((signal.SIGTERM, "stop"), (signal.SIGINT, "stop"), (signal.SIGHUP, "reload")):
            signal.signal(signum, lambda *_, c=command: self.request(c))
        self.start()
        self.notifier.ready(self._summary())
        watchdog = watchdog_interval()
        next_ping = time.monotonic()
        while True:
            timeout = max(0.0, next_ping - time.monotonic()) if watchdog else 1.0
            try:
                command, reply = self._commands.get(timeout=timeout)
            except queue.Empty:
                command, reply = "", None
            if command == "stop":
                break
            if command == "reload":
                self.notifier.reloading()
                applied = self.reload()
                self.notifier.notify("READY=1", f"STATUS={self._summary()}")
                if reply is not None:
                    reply.put(applied)
            if watchdog and time.monotonic() >= next_ping:
                if self.ctx.bus.alive(within=max(watchdog * 2, 30)):
                    self.notifier.watchdog()
                else:
                    log.error("watchdog_withheld", reason="bus dispatcher stalled")
                next_ping = time.monotonic() + watchdog
        log.info("daemon_stopping")
        self.notifier.stopping()
        self.stop()
        return 0

    def _summary(self) -> str:
        ready, reasons = self.readiness()
        cfg = self.ctx.config
        head = "ready" if ready else "degraded: " + ", ".join(sorted(reasons))
        summary = (f"{head}; {len(cfg.credentials)} credentials, {len(cfg.registries)} registries,"
                   f" {len(cfg.sinks)} sinks")
        if self.reload_error:  # `systemctl status` shows this line: say why the reload was refused
            reason = " ".join(scrub_text(self.reload_error).split())
            if len(reason) > _STATUS_REASON_MAX:
                reason = reason[:_STATUS_REASON_MAX - 1] + "…"
            summary += f"; config reload refused, running the previous config: {reason}"
        return summary


def run_daemon(config_path: Path, cfg: Config) -> int:
    configure_logging(cfg.daemon.log_format, cfg.daemon.log_level)
    try:
        daemon = Daemon(config_path, cfg)
    except (RegwardenError, OSError) as exc:
        log.error("daemon_start_failed", error=str(exc))
        return 1
    return daemon.serve()


