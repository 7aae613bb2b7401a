"""`regwarden alerts test | list | silence | unsilence`.

`test` sends a test notification straight through the configured sinks (not through the daemon's
outbox) and reports each sink's outcome. Silences are written to the state database in `state_dir`,
which the running daemon reads on every evaluation (SQLite WAL lets both processes use it).
"""

from __future__ import annotations

import getpass
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ..cli import config_option, echo_json, json_option, load_or_exit
from ..status_view import table

__all__ = ["alerts", "test_notification"]


@click.group("alerts")
def alerts() -> None:
    """Test sinks, list and silence alerts."""


def test_notification(host: str, receiver: str) -> Any:
    """The notification `alerts test` sends: one info alert `RegwardenTest` marked as a test."""
    from ..sink_api import Alert, Notification
    from .model import fingerprint

    now = datetime.now(UTC)
    labels = {"alertname": "RegwardenTest", "host": host}
    alert = Alert(labels=labels, annotations={"summary": f"Test notification from regwarden on {host}",
                                              "description": "Sent by `regwarden alerts test`; no action needed."},
                  severity="info", starts_at=now, ends_at=None, fingerprint=fingerprint(labels))
    return Notification(id=0, group_key='{alertname="RegwardenTest"}', status="firing", alerts=(alert,), host=host,
                        receiver=receiver, created_at=now, common_labels=labels, test=True)


@alerts.command("test")
@config_option
@json_option
@click.option("--sink", "names", multiple=True, help="Only this sink (repeatable); default: every sink.")
def test_command(config_path: Path, as_json: bool, names: tuple[str, ...]) -> None:
    """Send a test notification through the configured sinks and report each one: ok or failed."""
    from ..logging import configure_logging
    from ..redact import scrub_text
    from ..sinks import load_sinks
    from .outbox import attempt_send

    cfg = load_or_exit(config_path, host_checks=False)
    configure_logging("console", "error")
    configured = {s.name: s for s in cfg.sinks}
    unknown = [n for n in names if n not in configured]
    if unknown or not configured:
        click.echo(f"unknown sink: {', '.join(unknown)} (configured: {', '.join(configured) or 'none'})", err=True)
        sys.exit(2)
    chosen = [configured[n] for n in names] if names else list(configured.values())
    loaded = load_sinks(chosen)
    timeout = cfg.alerts.send_timeout.total_seconds()
    rows = []
    for sink_cfg in chosen:
        row: dict[str, Any] = {"sink": sink_cfg.name, "type": sink_cfg.type}
        sink = loaded.sinks.get(sink_cfg.name)
        if sink is None:
            row.update(ok=False, detail=scrub_text(loaded.broken.get(sink_cfg.name, "not loaded")))
        else:
            delivery = attempt_send(sink, test_notification(cfg.daemon.hostname, sink_cfg.name), timeout)
            row.update(ok=delivery.ok, detail=delivery.detail or ("delivered" if delivery.ok else "failed"))
        rows.append(row)
    if as_json:
        echo_json(rows)
    else:
        click.echo(table(["SINK", "TYPE", "RESULT", "DETAIL"],
                          [[r["sink"], r["type"], "ok" if r["ok"] else "FAILED", r["detail"]] for r in rows]))
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


def _store(cfg: Any) -> Any:
    from ..errors import StateError
    from ..state import StateStore
    from .store import AlertStore

    try:
        return AlertStore(StateStore(cfg.daemon.state_dir))
    except StateError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


@alerts.command("silence")
@config_option
@json_option
@click.option("--match", "matchers", multiple=True, required=True, metavar="LABEL=VALUE",
              help="Label matcher: NAME=VALUE, NAME!=VALUE, NAME=~REGEX, NAME!~REGEX (repeatable; all must match).")
@click.option("--for", "duration", required=True, help='How long, e.g. "2h", "30m", "1d".')
@click.option("--comment", required=True, help="Why (shown in `alerts list`).")
@click.option("--author", default=None, help="Who; default: $SUDO_USER or the current user.")
def silence_command(config_path: Path, as_json: bool, matchers: tuple[str, ...], duration: str, comment: str,
                    author: str | None) -> None:
    """Silence alerts matching every --match for a while (the daemon picks it up within a second)."""
    from ..config import format_duration, parse_duration
    from .model import parse_matcher

    try:
        parsed = [parse_matcher(m) for m in matchers]
        length = parse_duration(duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if length.total_seconds() <= 0:
        raise click.BadParameter("--for must be longer than 0s")
    cfg = load_or_exit(config_path, host_checks=False)
    who = author or os.environ.get("SUDO_USER") or getpass.getuser()
    silence = _store(cfg).add_silence(parsed, time.time() + length.total_seconds(), comment, who)
    if as_json:
        echo_json(silence.record())
    else:
        click.echo(f"silence {silence.id}: {', '.join(str(m) for m in parsed)} for {format_duration(length)}"
                   f" (until {silence.record()['until']})")


@alerts.command("unsilence")
@config_option
@click.argument("silence_id")
def unsilence_command(config_path: Path, silence_id: str) -> None:
    """End a silence now."""
    cfg = load_or_exit(config_path, host_checks=False)
    if not _store(cfg).expire_silence(silence_id):
        click.echo(f"no active silence {silence_id}", err=True)
        sys.exit(1)
    click.echo(f"silence {silence_id} expired")


@alerts.command("list")
@config_option
@json_option
def list_command(config_path: Path, as_json: bool) -> None:
    """List active alerts, active silences and undelivered notifications per sink."""
    cfg = load_or_exit(config_path, host_checks=False)
    store = _store(cfg)
    now = time.time()
    firing = sorted((a for a in store.load_alerts() if a.firing), key=lambda a: a.starts_at)
    data = {
        "alerts": [{"alertname": a.labels.get("alertname", ""), "severity": a.severity, "labels": a.labels,
                    "since": _iso(a.starts_at), "summary": a.annotations.get("summary", ""),
                    "fingerprint": a.fingerprint} for a in firing],
        "silences": [s.record() for s in store.silences(now)],
        "outbox": store.outbox_depth(),
    }
    if as_json:
        echo_json(data)
        return
    click.echo(table(["ALERT", "SEVERITY", "SINCE", "LABELS"], [
        [a["alertname"], a["severity"], a["since"],
         ",".join(f"{k}={v}" for k, v in sorted(a["labels"].items()) if k != "alertname")]
        for a in data["alerts"]]) if data["alerts"] else "no active alerts")
    click.echo("")
    click.echo(table(["SILENCE", "UNTIL", "MATCHERS", "AUTHOR", "COMMENT"], [
        [s["id"], s["until"], ",".join(s["matchers"]), s["author"], s["comment"]] for s in data["silences"]])
        if data["silences"] else "no active silences")
    pending = {k: v for k, v in data["outbox"].items() if v}
    if pending:
        click.echo("")
        click.echo("undelivered: " + ", ".join(f"{k}={v}" for k, v in sorted(pending.items())))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

