"""The credentials component: one Vault client, one watch job per credential, Vault health alerts.

Each credential has its own APScheduler job (`credential-watch:NAME`, max_instances=1, jittered
interval), so a slow or failing path never delays the others; every call inside a job has a timeout.
A small `vault-upkeep` job renews the token when due even if no watch job is talking to Vault, and
raises or resolves `VaultUnreachable` and `VaultTokenExpiring`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import UTC, datetime
from typing import Any

import structlog
from apscheduler.jobstores.base import JobLookupError
from apscheduler.triggers.interval import IntervalTrigger

from ..component import Context, Health
from ..errors import VaultError
from ..vault import VaultClient
from ..vault.shared import vault_for
from .model import CredentialSecret
from .watch import Collaborators, CredentialWatch, Journal, SignalLatch

__all__ = ["UPKEEP_INTERVAL", "VAULT_DOWN_ALERT_AFTER", "CredentialsComponent", "token_expiring",
           "watch_schedule"]

log = structlog.get_logger(__name__)

UPKEEP_INTERVAL = 5.0  # seconds between token checks (no request unless renewal is due)
VAULT_DOWN_ALERT_AFTER = 30.0  # VaultUnreachable fires after this long without an answer
JITTER = 0.1  # consecutive watch rounds are (1 +- JITTER) x watch_interval apart


def watch_schedule(interval: float, jitter: float = JITTER) -> tuple[float, float]:
    """(base interval, jitter) for APScheduler's IntervalTrigger so rounds are interval x U(1-j, 1+j) apart.

    APScheduler adds U(0, jitter) to each fire time and schedules the next one from it, so the
    jitter accumulates: a base of (1 - j) x interval plus U(0, 2j x interval) averages `interval`.
    """
    return interval * (1 - jitter), interval * 2 * jitter


def token_expiring(renew_at: float | None, token_error: str | None, now: float) -> bool:
    """The token is past its renewal point and the last renewal or login failed."""
    return renew_at is not None and now >= renew_at and token_error is not None


class CredentialsComponent:
    name = "credentials"

    def __init__(self, *, collaborators: Collaborators | None = None) -> None:
        self._collaborators = collaborators
        self._ctx: Context | None = None
        self.vault: VaultClient | None = None
        self.watches: dict[str, CredentialWatch] = {}
        self._jobs: list[str] = []
        self._latch: SignalLatch | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def start(self, ctx: Context) -> None:
        cfg = ctx.config
        if cfg.vault is None:  # load_config refuses credentials without [vault]; keep mypy and readers sure
            raise VaultError("credentials need a [vault] table", retryable=False)
        self._ctx = ctx
        self.vault = vault_for(ctx)  # one client (one login, one token) shared with rotation
        journal = Journal(ctx.state)
        self._latch = SignalLatch(ctx.signal)
        self.watches = {c.name: CredentialWatch(ctx, c, self.vault, journal, self._latch,
                                                collaborators=self._collaborators) for c in cfg.credentials}
        now = datetime.now(UTC)
        self._add_job("vault-upkeep", self._upkeep, IntervalTrigger(seconds=UPKEEP_INTERVAL), now)
        for name, watch in self.watches.items():
            base, jitter = watch_schedule(watch.interval)
            self._add_job(f"credential-watch:{name}", watch.run, IntervalTrigger(seconds=base, jitter=jitter), now)
        log.info("credentials_started", credentials=sorted(self.watches), vault=",".join(cfg.vault.address),
                 auth_method=cfg.vault.auth.method)

    def _add_job(self, job_id: str, func: Any, trigger: IntervalTrigger, first: datetime) -> None:
        assert self._ctx is not None
        self._ctx.scheduler.add_job(func, trigger, id=job_id, name=job_id, max_instances=1, coalesce=True,
                                    next_run_time=first, replace_existing=True,
                                    misfire_grace_time=max(1, int(trigger.interval.total_seconds())))
        self._jobs.append(job_id)

    def stop(self) -> None:
        if self._ctx is not None:
            for job_id in self._jobs:
                with contextlib.suppress(JobLookupError):
                    self._ctx.scheduler.remove_job(job_id)
        self._jobs = []

    def applied_secret(self, name: str) -> CredentialSecret | None:
        """The applied version of credential `name` (the probe's credential lookup); None if none yet."""
        watch = self.watches.get(name)
        return watch.applied if watch is not None else None

    # ------------------------------------------------------------------ jobs

    def _upkeep(self) -> None:
        vault, latch = self.vault, self._latch
        if vault is None or latch is None:
            return
        try:
            vault.keep_token_fresh()
        except VaultError as exc:
            log.debug("vault_token_upkeep_failed", error=str(exc))
        vault.recheck_nodes()  # failed nodes whose back-off is over: back, or still failing?
        now = time.time()
        down = vault.up is False and vault.down_since is not None and now - vault.down_since >= VAULT_DOWN_ALERT_AFTER
        latch.set({"alertname": "VaultUnreachable"}, down, severity="critical",
                  summary="Vault is unreachable; credentials cannot be refreshed" if down else "",
                  description=vault.last_error or "" if down else "")
        token = vault.token
        expiring = token_expiring(token.renew_at if token else None, vault.token_error, now)
        latch.set({"alertname": "VaultTokenExpiring"}, expiring, severity="warning",
                  summary="The Vault token could not be renewed and will expire" if expiring else "",
                  description=vault.token_error or "" if expiring else "")

    # ------------------------------------------------------------------ reporting

    def health(self) -> Health:
        vault = self.vault
        if vault is None:
            return Health(False, "not started")
        if vault.up is False:
            return Health(False, f"Vault unreachable since {_iso(vault.down_since)}: {vault.last_error}")
        missing = sorted(n for n, w in self.watches.items() if w.record.applied_version is None)
        if missing:
            return Health(False, "not applied yet: " + ", ".join(missing))
        return Health(True)

    def status(self) -> dict[str, Any]:
        vault, now = self.vault, time.time()
        if vault is None:
            return {"started": False}
        token = vault.token
        return {
            "vault": {
                "up": vault.up,
                "down_since": _iso(vault.down_since),
                "last_error": vault.last_error,
                "auth_method": vault.auth_method,
                "token_expires_at": _iso(token.expires_at if token else None),
                "token_renewable": token.renewable if token else None,
                "token_error": vault.token_error,
                "node": vault.node,
                "nodes": [{"address": n.address, "preferred": n.preferred, "failing_since": _iso(n.failing_since),
                           "failed_at": _iso(n.failed_at), "retry_at": _iso(n.retry_at), "last_error": n.last_error}
                          for n in vault.nodes()],
            },
            "credentials": {name: w.status(now) for name, w in sorted(self.watches.items())},
        }


def _iso(value: float | None) -> str | None:
    return None if value is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
