"""`regwarden posture [REGISTRY...]`: check the security posture of registries from the config now.

A table of registry, check, severity, finding and fix (failed checks; `--all` shows the passed and
unknown ones too). Default logins are tried as the config says (`check_default_credentials`), at most
`[posture].default_credentials_max_attempts` per registry; `--no-default-logins` skips them.
With `[docker]` configured and no REGISTRY named, the engine audit's findings (insecure registries, plain
mirrors, the daemon's TCP socket, content trust, static credentials) are rows of registry `engine`.
Exit status 0 when no check fails, 1 when one does, 2 for a bad config or an unknown registry.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click

from ..cli import config_option, echo_json, json_option, load_or_exit, registries_or_exit

__all__ = ["posture_command"]


@click.command("posture")
@config_option
@json_option
@click.option("--all", "show_all", is_flag=True, help="Also list the checks that passed or could not tell.")
@click.option("--no-default-logins", is_flag=True, help="Do not try the well-known default logins.")
@click.option("--engine/--no-engine", default=None,
              help="Include the Docker engine's findings (default: when no REGISTRY is named).")
@click.option("--checks", "list_checks", is_flag=True, help="List the checks (name, alert, severity) and exit.")
@click.argument("registries", nargs=-1)
def posture_command(config_path: Path, as_json: bool, show_all: bool, no_default_logins: bool,
                    engine: bool | None, list_checks: bool, registries: tuple[str, ...]) -> None:
    """Check the security posture of REGISTRIES (default: every [[registries]] entry)."""
    from ..status_view import table
    from .checks import CHECKS
    from .report import check_registry, outcome_row

    if list_checks:
        rows = [{"check": c.name, "alertname": c.alertname, "severity": c.severity, "title": c.title,
                 "alerted_by": c.alerted_by} for c in CHECKS.values()]
        if as_json:
            echo_json(rows)
        else:
            click.echo(table(["check", "alert", "severity", "what it finds"],
                             [[r["check"], r["alertname"], r["severity"], r["title"]] for r in rows]))
        return
    cfg = load_or_exit(config_path, host_checks=False)
    # a config with [docker] and no [[registries]] still has the engine to check
    show_engine = cfg.docker is not None and (engine if engine is not None else not registries)
    engine_only = show_engine and not registries and not cfg.registries
    chosen = [] if engine_only else registries_or_exit(cfg, registries)
    warning = cfg.detectors.tls_expiry_warning.total_seconds()

    def run(reg: Any) -> Any:
        return check_registry(reg, cfg.posture, tls_warning_seconds=warning, login_attempts=cfg.default_login_attempts,
                              try_default_logins=not no_default_logins)

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(chosen)))) as pool:
        reports = list(pool.map(run, chosen))
    rows = [outcome_row(report.registry, outcome) for report in reports for outcome in report.outcomes]
    errors = {report.registry: list(report.errors) for report in reports if report.errors}
    if show_engine:
        engine_rows, engine_errors = _engine_rows(cfg)
        rows += engine_rows
        if engine_errors:
            errors["engine"] = engine_errors
    failed = any(row["state"] == "FAIL" for row in rows)
    if as_json:
        echo_json({"checks": rows, "errors": errors})
    else:
        shown = rows if show_all else [row for row in rows if row["state"] == "FAIL"]
        if shown:
            click.echo(table(["registry", "check", "state" if show_all else "severity", "finding", "fix"],
                             [[r["registry"], r["check"], f"{r['state']} {r['severity'] or ''}".strip() if show_all
                               else r["severity"], r["finding"], r["fix"]] for r in shown]))
        else:
            click.echo(f"no failed checks ({len(rows)} checks on {len(reports)} registries"
                       f"{' and the engine' if show_engine else ''})")
        for name, problems in sorted(errors.items()):
            for problem in problems:
                click.echo(f"{name}: could not check: {problem}", err=True)
    sys.exit(1 if failed else 0)


def _engine_rows(cfg: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The engine audit's findings as posture rows (only failures: the engine audit has no passed list)."""
    from ..docker.engine_audit import ALERTS, FIXES, engine_findings, engine_registry_config, normalize
    from ..errors import DockerError

    try:
        info = engine_registry_config(cfg.docker.host, cfg.docker.timeout.total_seconds())
    except DockerError as exc:
        return [], [str(exc)]
    findings, problems = engine_findings(cfg, normalize(info))
    rows = [{"registry": "engine", "check": f.kind, "state": "FAIL", "severity": f.severity, "finding": f.detail,
             "fix": FIXES[f.kind], "alertname": ALERTS[f.kind], "alerted_by": "engine-audit"} for f in findings]
    return rows, [f"static credential scan: {problem}" for problem in problems]
