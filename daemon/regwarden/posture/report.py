"""One registry's posture: run the scans its config asks for and evaluate every check (the CLI and the
daemon share this)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from ..config import PostureConfig, RegistryConfig
from .checks import CHECKS, Exposure, Outcome, TlsScan, evaluate
from .httpscan import DEFAULT_CREDENTIALS, scan_auth
from .sockets import exposure
from .tlsscan import scan_tls

__all__ = ["Remembered", "Report", "check_registry", "outcome_row"]

_TLS_CHECKS = frozenset({"tls_legacy_protocol", "tls_weak_cipher", "tls_untrusted_chain", "tls_hostname_mismatch",
                         "tls_self_signed", "tls_expiring"})


@dataclass(frozen=True)
class Remembered:
    """The result of the last default-login run (kept in the state store: once per interval)."""

    at: float
    user: str | None
    attempts: int


@dataclass(frozen=True)
class Report:
    registry: str
    url: str
    at: datetime
    outcomes: tuple[Outcome, ...]
    errors: tuple[str, ...]
    default_attempts: int  # default logins tried in this run (0 when remembered or off)
    duration: float
    default_user: str | None = None  # the user a default login of this run worked for

    @property
    def findings(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.firing]


def check_registry(reg: RegistryConfig, cfg: PostureConfig, *, tls_warning_seconds: float, login_attempts: int,
                   try_default_logins: bool, remembered: Remembered | None = None) -> Report:
    """Scan `reg` and evaluate. `try_default_logins`: this run may try them (else `remembered` stands in)."""
    started = time.monotonic()
    at = datetime.now(UTC)
    parts = urlsplit(reg.url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    timeout = cfg.timeout.total_seconds()
    skip = set(cfg.skip)
    tls: TlsScan | None = None
    if https and not skip >= _TLS_CHECKS:
        tls = scan_tls(host, port, ca_cert=str(reg.ca_cert) if reg.ca_cert else None, timeout=timeout)
    pairs: Sequence[tuple[str, str]] = ()
    if reg.default_credentials_check and "default_credentials" not in skip and try_default_logins:
        pairs = DEFAULT_CREDENTIALS[:login_attempts]
    auth = scan_auth(reg.url, repository=cfg.repository, timeout=timeout, default_pairs=pairs)
    if not pairs and remembered is not None and reg.default_credentials_check and auth.error is None:
        auth = replace(auth, default_checked=True, default_user=remembered.user, default_attempts=remembered.attempts)
    seen: Exposure | None = None
    if "exposure" not in skip:
        seen = exposure(host, port, reg.expected_exposure)
    outcomes = [o for o in evaluate(tls=tls, auth=auth, exposure=seen, private=reg.private,
                                    tls_warning_seconds=tls_warning_seconds, now=time.time())
                if o.check not in skip]
    errors = [*auth.errors]
    if tls is not None and tls.error:
        errors.append(f"tls: {tls.error}")
    if auth.error:
        errors.append(f"auth: {auth.error}")
    return Report(reg.name, reg.url, at, tuple(outcomes), tuple(errors),
                  auth.default_attempts if pairs else 0, time.monotonic() - started,
                  auth.default_user if pairs else None)


def outcome_row(registry: str, outcome: Outcome) -> dict[str, Any]:
    """One line of `regwarden posture` and of /status."""
    check = CHECKS[outcome.check]
    state = "unknown" if outcome.firing is None else ("FAIL" if outcome.firing else "pass")
    if outcome.firing:
        finding: str | None = f"{check.title}: {outcome.detail}" if outcome.detail else check.title
    else:
        finding = outcome.detail or None
    return {"registry": registry, "check": outcome.check, "state": state,
            "severity": outcome.severity if outcome.firing else None, "finding": finding,
            "fix": check.fix if outcome.firing else None, "alertname": check.alertname,
            "alerted_by": check.alerted_by}
