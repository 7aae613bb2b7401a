"""Files shipped with regwarden: the example config, the systemd unit and the Vault policy.

Their one source is the checkout (`config.example.toml`, `systemd/regwarden.service`,
`contrib/vault/regwarden-policy.hcl`); the wheel build copies them into `regwarden/data/` (see
`setup.py`), so an installed regwarden finds them as package data and an editable install finds them
in the checkout. `regwarden example config|unit|vault-policy` prints one (`--path`: where it is).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

__all__ = ["SHIPPED", "example_command", "shipped_path"]

# name used by the CLI -> path in the checkout (the file name is kept under regwarden/data/)
SHIPPED: dict[str, str] = {
    "config": "config.example.toml",
    "unit": "systemd/regwarden.service",
    "vault-policy": "contrib/vault/regwarden-policy.hcl",
}

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parents[1]  # daemon/regwarden -> the repository root, in an editable install


def shipped_path(name: str) -> Path:
    """Where the shipped file `name` (a key of SHIPPED) is: package data first, then the checkout."""
    source = SHIPPED[name]
    for candidate in (_PACKAGE / "data" / Path(source).name, _CHECKOUT / source):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"shipped file {source} is missing from this installation")


@click.command("example")
@click.argument("what", type=click.Choice(sorted(SHIPPED)))
@click.option("--path", "show_path", is_flag=True, help="Print where the file is instead of its content.")
def example_command(what: str, show_path: bool) -> None:
    """Print a shipped file: the example config, the systemd unit or the Vault policy."""
    try:
        path = shipped_path(what)
    except FileNotFoundError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(str(path) if show_path else path.read_text(encoding="utf-8"), nl=show_path)
