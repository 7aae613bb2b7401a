"""The `regwarden` command line. Imports are lazy so that `regwarden --help` stays fast.

Human output by default, `--json` for scripts. Each domain contributes its own command group
(audit, alerts, ...) from its package; this module only wires them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

__all__ = ["main", "registries_or_exit"]

DEFAULT_CONFIG = "/etc/regwarden/config.toml"
config_option = click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CONFIG, show_default=True, envvar="REGWARDEN_CONFIG", help="Config file.")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def load_or_exit(config_path: Path, *, host_checks: bool = True) -> Any:
    """Load the config or print one line per problem and exit 2."""
    from .config import check_host, load_config
    from .errors import ConfigError

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(2)
    if host_checks:
        problems = check_host(cfg, str(config_path))
        if problems:
            for problem in problems:
                click.echo(str(problem), err=True)
            sys.exit(2)
    return cfg


def registries_or_exit(cfg: Any, names: Sequence[str]) -> list[Any]:
    """The [[registries]] entries named (default: all), or a message and exit 2 for an unknown or no one."""
    known = {reg.name: reg for reg in cfg.registries}
    unknown = [name for name in names if name not in known]
    if unknown:
        click.echo(f"unknown registry: {', '.join(unknown)} (configured: {', '.join(known) or 'none'})", err=True)
        sys.exit(2)
    chosen = [known[name] for name in names] if names else list(known.values())
    if not chosen:
        click.echo("no [[registries]] in the config", err=True)
        sys.exit(2)
    return chosen


class LazyGroup(click.Group):
    """Subcommands imported on first use: `name -> "module:attribute"`."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            import importlib

            module, _, attr = self.lazy[name].partition(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List commands without importing the lazy ones (their one-line help is in LAZY_HELP)."""
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy:
                rows.append((name, LAZY_HELP.get(name, "")))
            elif (command := super().get_command(ctx, name)) is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


# one-line help of each lazy command, shown by --help without importing it
LAZY_HELP: dict[str, str] = {
    "alerts": "Test sinks, list and silence alerts.",
    "audit": "Verify, tail and query the audit trail.",
    "probe": "Probe registries once and print the verdicts.",
    "posture": "Check the registries' security posture now (TLS, auth, default logins, exposure).",
    "rotate": "Ask the running daemon to rotate a credential now.",
    "demo": "Run a self-contained sandbox and watch regwarden work.",
    "example": "Print the shipped example config, systemd unit or Vault policy.",
    "doctor": "Check what the service needs before `systemctl start`.",
}

# name -> "module:attribute"; each domain adds its command here
LAZY_COMMANDS: dict[str, str] = {
    "alerts": "regwarden.alerting.cli:alerts",
    "audit": "regwarden.audit.cli:audit",
    "probe": "regwarden.probe.cli:probe_command",
    "posture": "regwarden.posture.cli:posture_command",
    "rotate": "regwarden.rotation.cli:rotate",
    "demo": "regwarden.demo.cli:demo",
    "example": "regwarden.shipped:example_command",
    "doctor": "regwarden.doctor:doctor_command",
}


@click.group(cls=LazyGroup, lazy=LAZY_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="regwarden")
def main() -> None:
    """regwarden keeps Docker hosts' registry credentials fresh from Vault, keeps a tamper-evident
    audit trail, probes registries and alerts on-call."""
    # Log lines of one-shot commands go to stderr at warning level, so stdout carries only the command's
    # output (tables, --json). `run` and `demo` configure logging again from their config.
    from .logging import configure_logging

    configure_logging("auto", "warning", stream=sys.stderr)


@main.command("check-config")
@config_option
@click.option("--schema-only", is_flag=True, help="Validate the file only; skip checks of the host.")
@json_option
def check_config(config_path: Path, schema_only: bool, as_json: bool) -> None:
    """Validate a config file, then the host (referenced files exist, secret files are private)."""
    from .config import check_host, load_config
    from .errors import ConfigError

    try:
        cfg = load_config(config_path)
        problems = [] if schema_only else check_host(cfg, str(config_path))
    except ConfigError as exc:
        problems = exc.problems
    if as_json:
        echo_json({"ok": not problems, "problems": [
            {"file": p.file, "line": p.line, "key": p.key, "message": p.message} for p in problems]})
    else:
        for problem in problems:
            click.echo(str(problem), err=True)
        if not problems:
            click.echo(f"{config_path}: OK")
    sys.exit(1 if problems else 0)


@main.command()
@config_option
def run(config_path: Path) -> None:
    """Run the daemon in the foreground (as systemd does)."""
    from .daemon import run_daemon

    cfg = load_or_exit(config_path)
    sys.exit(run_daemon(config_path, cfg))


def local_api(config_path: Path) -> Any:
    """A client for the running daemon's unix socket, found through the config's state_dir."""
    import tomllib

    from .localapi import LocalApiClient

    # Read only daemon.state_dir, leniently: `reload` must reach the daemon even when the edited file is
    # invalid, so the daemon itself can say what is wrong with it.
    try:
        state_dir = tomllib.loads(config_path.read_text(encoding="utf-8"))["daemon"]["state_dir"]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError):
        state_dir = "/var/lib/regwarden"
    return LocalApiClient(Path(str(state_dir)) / "regwarden.sock")


def call_daemon(config_path: Path, method: str, endpoint: str, body: Any = None) -> Any:
    """Call the local API; on failure print why and exit 1."""
    from .localapi import LocalApiError

    try:
        return local_api(config_path).call(method, endpoint, body)
    except LocalApiError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@main.command()
@config_option
@json_option
def status(config_path: Path, as_json: bool) -> None:
    """Show what the running daemon is doing (through its local API)."""
    from .status_view import render_status

    answer = call_daemon(config_path, "GET", "/v1/status")
    if as_json:
        echo_json(answer)
    else:
        click.echo(render_status(answer))


@main.command()
@config_option
def reload(config_path: Path) -> None:
    """Ask the running daemon to reload its config (like SIGHUP, but says whether it was applied)."""
    from .localapi import LocalApiError

    try:
        local_api(config_path).call("POST", "/v1/reload")
    except LocalApiError as exc:
        click.echo(f"reload refused: {exc}", err=True)
        sys.exit(1)
    click.echo("configuration reloaded")
