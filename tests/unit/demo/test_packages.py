"""`regwarden demo --install-packages` installs exactly the Debian packages whose program is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from regwarden.demo.sandbox import DEBIAN_PACKAGES, missing_packages


def test_every_package_is_missing_on_an_empty_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With none of the programs on PATH (nor beside Python), all three packages are named."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert missing_packages() == ["docker-registry", "docker.io", "busybox-static"]


def test_a_program_on_path_drops_its_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An executable `dockerd` on PATH means docker.io is not installed again."""
    dockerd = tmp_path / "dockerd"
    dockerd.write_text("#!/bin/sh\n")
    dockerd.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert missing_packages() == [p for p in DEBIAN_PACKAGES.values() if p != "docker.io"]
