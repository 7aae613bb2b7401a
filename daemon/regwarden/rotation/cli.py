"""`regwarden rotate NAME [--dry-run]`: ask the running daemon to rotate a credential now."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli import call_daemon, config_option, echo_json, json_option

__all__ = ["rotate"]


@click.command()
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="Say what would happen (lock, slot, revocation) without doing it.")
@config_option
@json_option
def rotate(name: str, dry_run: bool, config_path: Path, as_json: bool) -> None:
    """Ask the running daemon to rotate credential NAME now (waits until the new version is published)."""
    answer = call_daemon(config_path, "POST", f"/v1/credentials/{name}/rotate", {"dry_run": dry_run})
    if as_json:
        echo_json(answer)
    elif dry_run:
        lock = answer.get("lock")
        click.echo(f"credential {answer['credential']} ({answer['provider']}): KV version"
                   f" {answer['current_version']}, due at {answer['due_at']}")
        click.echo(f"  lock: {'free' if lock is None else 'held by ' + lock['holder']}")
        click.echo(f"  would create: {answer['would_create']}; would revoke after the overlap:"
                   f" {answer['would_revoke_after_overlap'] or 'nothing'}")
        click.echo(f"  would verify against: {', '.join(answer['registries_verified']) or 'no registry'}")
    else:
        click.echo(f"credential {name}: version {answer['version']} published (rotation {answer['rotation']});"
                   " the old credential is revoked after the overlap")
