"""The shipped files (example config, systemd unit, Vault policy) have one source and are found."""

from __future__ import annotations

import ast
from pathlib import Path

from click.testing import CliRunner

from regwarden.cli import main
from regwarden.shipped import SHIPPED, shipped_path

ROOT = Path(__file__).resolve().parents[3]


def test_setup_py_copies_exactly_the_shipped_files() -> None:
    """setup.py's build hook copies the same files that regwarden.shipped looks up."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    copied = next(ast.literal_eval(node.value) for node in tree.body
                  if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SHIPPED")
    assert sorted(copied) == sorted(SHIPPED.values())


def test_manifest_puts_every_shipped_file_in_the_sdist() -> None:
    """MANIFEST.in names each shipped file (or its directory), so a wheel built from the sdist has them."""
    manifest = (ROOT / "MANIFEST.in").read_text()
    for source in SHIPPED.values():
        assert source in manifest or source.split("/", 1)[0] in manifest, source


def test_each_shipped_file_is_found_in_the_checkout() -> None:
    """In an editable install each shipped file resolves to the checkout's own copy."""
    for name, source in SHIPPED.items():
        assert shipped_path(name) == ROOT / source


def test_example_command_prints_the_file_or_its_path() -> None:
    """`regwarden example unit` prints the unit; `--path` prints where it is."""
    runner = CliRunner()
    content = runner.invoke(main, ["example", "unit"])
    path = runner.invoke(main, ["example", "vault-policy", "--path"])
    assert content.exit_code == 0 and content.output == (ROOT / "systemd/regwarden.service").read_text()
    assert path.exit_code == 0 and path.output.strip() == str(ROOT / "contrib/vault/regwarden-policy.hcl")
