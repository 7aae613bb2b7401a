"""The rotation component: schedules due checks, resumes interrupted rotations, serves `rotate NAME`.

Every host runs it for every rotating credential; the Vault lock makes exactly one of them rotate.
The others (and the rotating host itself) pick the new version up through the credential watch.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import structlog

from ..backoff import jittered
from ..component import Context, Health
from ..config import CredentialConfig, RegistryConfig
from ..credentials.model import CredentialSecret
from ..errors import RegwardenError
from ..events import Event, Signal, Target
from .journal import Entry, Journal
from .lock import RotationLock
from .machine import RotationOutcome, Rotator
from .providers import load_provider

__all__ = ["RotationManager"]

log = structlog.get_logger(__name__)
_MAX_TICK = 60.0  # due checks at least this often, whatever the watch interval


def _verify(registry: RegistryConfig, secret: CredentialSecret) -> None:
    from ..registry.verify import verify_credential

    verify_credential(registry, secret, timeout=registry.probe_timeout.total_seconds())


class RotationManager:
    name = "rotation"

    def __init__(self) -> None:
        self._ctx: Context | None = None
        self._rotators: dict[str, Rotator] = {}
        self._stop = threading.Event()
        self._errors: dict[str, str] = {}
        self._next_due: dict[str, datetime] = {}
        self._workers: dict[str, threading.Thread] = {}  # a rotation runs for minutes (overlap): not in the job

    # ------------------------------------------------------------------ lifecycle

    def start(self, ctx: Context) -> None:
        from ..vault.shared import vault_for

        self._ctx = ctx
        self._stop.clear()
        journal = Journal(ctx.state)
        holder = ctx.state.get_cursor("rotation.holder")
        if not holder:
            holder = f"{ctx.host}/{uuid.uuid4().hex[:12]}"
            ctx.state.set_cursor("rotation.holder", holder)
        vault = vault_for(ctx)
        cfg = ctx.config
        assert cfg.vault is not None
        for cred in (c for c in cfg.credentials if c.rotates):
            try:
                provider = load_provider(cred, vault)
                provider.check()
            except RegwardenError as exc:
                self._errors[cred.name] = str(exc)
                log.error("rotation_disabled", credential=cred.name, error=str(exc))
                continue
            registries = [r for r in cfg.registries if r.credential == cred.name]
            self._rotators[cred.name] = Rotator(
                cred, registries, vault, provider, journal,
                RotationLock(vault, cfg.vault.lock_path, cred.name, holder, ctx.host), _verify,
                stop=self._stop, on_step=self._on_step)
            interval = min(_MAX_TICK, cred.watch_interval.total_seconds())
            ctx.scheduler.add_job(self._tick, "interval", seconds=jittered(interval), args=[cred.name],
                                  id=f"rotation:{cred.name}", replace_existing=True, max_instances=1,
                                  next_run_time=datetime.now(UTC))
        ctx.api.route("POST", "/v1/credentials/{name}/rotate", self._api_rotate)
        ctx.api.route("GET", "/v1/credentials/{name}/rotations", self._api_history)

    def stop(self) -> None:
        self._stop.set()
        if self._ctx is not None:
            for name in self._rotators:
                job = self._ctx.scheduler.get_job(f"rotation:{name}")
                if job is not None:
                    job.remove()
            self._ctx.api.unroute("/v1/credentials/")
        for worker in self._workers.values():
            worker.join(2.0)  # they watch the stop event; an unfinished rotation resumes at next start
        self._workers.clear()
        self._rotators.clear()

    def health(self) -> Health:
        return Health(True)  # a failed rotation alerts; it does not make the host not-ready

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, rotator in self._rotators.items():
            last = rotator._journal.last(name)
            out[name] = {
                "provider": rotator.credential.provider,
                "next_due": self._next_due.get(name),
                "last_rotation": last.id if last else None,
                "last_step": last.step if last else None,
                "last_started": datetime.fromtimestamp(last.started, UTC).isoformat() if last else None,
                "last_error": last.error if last else None,
            }
        for name, error in self._errors.items():
            out[name] = {"error": error}
        return out

    # ------------------------------------------------------------------ work

    def _tick(self, name: str) -> None:
        rotator = self._rotators.get(name)
        if rotator is None or self._stop.is_set():
            return
        try:
            self._next_due[name], rotated_at = rotator.due_at()
            self._check_age(rotator.credential, rotated_at)
            if rotator._journal.open_for(name) is None and self._next_due[name] > datetime.now(UTC):
                return
            worker = self._workers.get(name)
            if worker is not None and worker.is_alive():
                return
            worker = threading.Thread(target=self._run, args=(rotator,), kwargs={"force": False},
                                      name=f"rotation-{name}", daemon=True)
            self._workers[name] = worker
            worker.start()
        except RegwardenError as exc:
            log.warning("rotation_check_failed", credential=name, error=str(exc))

    def _run(self, rotator: Rotator, *, force: bool, published: threading.Event | None = None) -> RotationOutcome:
        assert self._ctx is not None
        name = rotator.credential.name
        started = time.monotonic()
        try:
            outcome = rotator.rotate(force=force, published=published)
        except RegwardenError as exc:
            outcome = RotationOutcome(None, False, f"rotation failed: {exc}")
        finally:
            if published is not None:
                published.set()
        entry = outcome.entry
        if entry is None or entry.error in ("lock held by another host", "rotated by another host meanwhile"):
            if entry is None and outcome.reason.startswith("rotation failed"):
                self._failed(name, outcome.reason)
            return outcome
        metrics = self._ctx.metrics
        if outcome.rotated and entry.step == "done":
            metrics.rotations.labels(name, "success").inc()
            metrics.rotation_duration.labels(name).observe(time.monotonic() - started)
            metrics.rotation_last_success.labels(name).set(time.time())
            self._ctx.signal(Signal(labels={"alertname": "CredentialRotationFailed", "credential": name},
                                    firing=False))
        elif entry.step == "rolled_back":
            self._failed(name, outcome.reason)
        return outcome

    def _failed(self, name: str, reason: str) -> None:
        assert self._ctx is not None
        self._ctx.metrics.rotations.labels(name, "failed").inc()
        log.error("credential_rotation_failed", credential=name, reason=reason)
        self._ctx.signal(Signal(
            labels={"alertname": "CredentialRotationFailed", "credential": name}, severity="critical",
            annotations={"summary": f"Rotation of credential {name} failed; the old credential stays in use",
                         "description": reason}))

    def _check_age(self, cred: CredentialConfig, rotated_at: datetime | None) -> None:
        assert self._ctx is not None
        if cred.max_age is None or rotated_at is None:
            return
        age = datetime.now(UTC) - rotated_at
        self._ctx.signal(Signal(
            labels={"alertname": "CredentialTooOld", "credential": cred.name}, firing=age > cred.max_age,
            severity="warning",
            annotations={"summary": f"Credential {cred.name} is {int(age.total_seconds())}s old"
                                    f" (max_age {int(cred.max_age.total_seconds())}s)"}))

    def _on_step(self, entry: Entry) -> None:
        assert self._ctx is not None
        kind = {"published": "credential.rotated", "rolled_back": "credential.rotation_rolled_back",
                "done": "credential.rotation_done"}.get(entry.step)
        log.info("rotation_step", credential=entry.credential, rotation=entry.id, step=entry.step)
        if kind is None:
            return
        registries = [r for r in self._ctx.config.registries if r.credential == entry.credential]
        self._ctx.emit(Event(
            source="regwarden", kind=kind, time=datetime.now(UTC), host=self._ctx.host,
            target=Target(registry=registries[0].name, address=registries[0].host_port) if registries else None,
            outcome="failure" if entry.step == "rolled_back" else "success",
            detail={"credential": entry.credential, "rotation_id": entry.id, "new_version": entry.new_version,
                    "old_ref": entry.old_ref, "new_ref": entry.new_ref, "error": entry.error}))

    # ------------------------------------------------------------------ local API

    def _api_rotate(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        name = params["name"]
        rotator = self._rotators.get(name)
        if rotator is None:
            why = self._errors.get(name) or f"no rotating credential named {name!r}"
            return 404, {"error": why}
        if isinstance(body, dict) and body.get("dry_run"):
            return 200, self._dry_run(rotator)
        published = threading.Event()
        result: dict[str, RotationOutcome] = {}

        def work() -> None:
            result["outcome"] = self._run(rotator, force=True, published=published)

        threading.Thread(target=work, name=f"rotate-{name}", daemon=True).start()
        published.wait(timeout=300)
        entry = rotator._journal.last(name)
        outcome = result.get("outcome")
        if outcome is not None and not outcome.rotated:
            return 409, {"error": outcome.reason, "rotation": entry.id if entry else None}
        return 200, {"rotation": entry.id if entry else None, "step": entry.step if entry else None,
                     "version": entry.new_version if entry else None,
                     "note": "published; the old credential is revoked after the overlap"}

    def _dry_run(self, rotator: Rotator) -> dict[str, Any]:
        state = rotator.kv_state()
        _, lock = rotator._lock.read()
        now = time.time()
        return {
            "credential": rotator.credential.name, "provider": rotator.credential.provider,
            "current_version": state.version, "rotated_at": state.rotated_at,
            "due_at": state.due_at(rotator.credential),
            "lock": None if lock is None or not lock.holder or lock.expires <= now
            else {"holder": lock.holder, "host": lock.host, "expires_in": round(lock.expires - now, 1)},
            "would_create": rotator._provider.plan(state.current) or "(chosen by the provider)",
            "would_revoke_after_overlap": rotator._provider.ref_of(state.current) if state.current else None,
            "registries_verified": [r.name for r in rotator._registries],
        }

    def _api_history(self, params: dict[str, str], _: Any) -> tuple[int, Any]:
        rotator = self._rotators.get(params["name"])
        if rotator is None:
            return 404, {"error": f"no rotating credential named {params['name']!r}"}
        return 200, [vars(e) for e in rotator._journal.history(params["name"])]
