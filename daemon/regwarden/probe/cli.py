"""`regwarden probe [REGISTRY...]`: probe registries from the config once and print what was found.

Exit status 0 when every verdict is `up`, 1 otherwise, 2 for a bad config or an unknown registry.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click

from ..cli import config_option, echo_json, json_option, load_or_exit, registries_or_exit

__all__ = ["probe_command", "result_row"]


@click.command("probe")
@config_option
@json_option
@click.argument("registries", nargs=-1)
def probe_command(config_path: Path, as_json: bool, registries: tuple[str, ...]) -> None:
    """Probe REGISTRIES (default: every [[registries]] entry) once: DNS, TCP, TLS, /v2/, auth."""
    from .lookup import docker_lookup
    from .model import assess
    from .prober import ProbeTarget, probe

    cfg = load_or_exit(config_path, host_checks=False)
    chosen = registries_or_exit(cfg, registries)
    lookup = docker_lookup(cfg)
    warning = cfg.detectors.tls_expiry_warning.total_seconds()

    def run(reg: Any) -> dict[str, Any]:
        credential = lookup(reg.credential) if reg.credential else None
        result = probe(ProbeTarget.from_config(reg), credential)
        return result_row(result, assess(result, expect_auth=reg.expect_auth, tls_warning_seconds=warning,
                                         now=time.time()))

    with ThreadPoolExecutor(max_workers=min(16, len(chosen))) as pool:
        rows = list(pool.map(run, chosen))
    if as_json:
        echo_json(rows)
    else:
        click.echo(_table(rows))
    sys.exit(0 if all(row["verdict"] == "up" for row in rows) else 1)


def result_row(result: Any, assessment: Any) -> dict[str, Any]:
    """One registry's line: the fields of the table (and of `--json`)."""
    days = assessment.tls_days_left
    return {
        "registry": result.registry,
        "url": result.url,
        "verdict": assessment.verdict,
        "failed_phase": result.failed_phase,
        "reason": result.reason or None,
        "phases_ms": {phase: round(seconds * 1000, 2) for phase, seconds in result.phases.items()},
        "http_status": result.http_status,
        "tls_version": result.tls_version,
        "tls_days_left": None if days is None else round(days, 1),
        "anonymous": result.anonymous,
        "auth": None if result.auth_ok is None else ("ok" if result.auth_ok else "failed"),
        "findings": sorted(assessment.findings),
    }


def _table(rows: list[dict[str, Any]]) -> str:
    from ..status_view import table

    headers = ["registry", "verdict", "phase", "reason", "dns", "connect", "tls", "http", "auth", "ms total",
               "tls days", "anon", "auth ok"]
    lines = []
    for row in rows:
        ms = row["phases_ms"]
        lines.append([
            row["registry"], row["verdict"], row["failed_phase"], row["reason"],
            *(f"{ms[p]:.1f}" if p in ms else None for p in ("dns", "connect", "tls", "http", "auth")),
            f"{sum(ms.values()):.1f}",
            None if row["tls_days_left"] is None else f"{row['tls_days_left']:.1f}",
            _yes_no(row["anonymous"]), row["auth"],
        ])
    return table(headers, lines)


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")
