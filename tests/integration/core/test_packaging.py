"""`python -m build` gives a wheel and an sdist that carry everything regwarden needs, and the wheel,
installed into a fresh virtualenv, validates the example config it ships.

Offline: the build uses this environment's setuptools (--no-isolation), and the fresh venv gets only
the wheel from pip (--no-deps --no-index); its dependencies come from this environment's
site-packages through a .pth file, so nothing is downloaded.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SHIPPED = {"config.example.toml": "config.example.toml", "regwarden.service": "systemd/regwarden.service",
           "regwarden-policy.hcl": "contrib/vault/regwarden-policy.hcl"}


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
                           capture_output=True, text=True, timeout=180)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,), (sdist,) = out.glob("*.whl"), out.glob("*.tar.gz")
    return Dist(wheel, sdist)


@pytest.fixture(scope="module")
def fresh_venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new virtualenv with the wheel installed (dependencies borrowed from this environment)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-index", "--no-cache-dir", str(dist.wheel)], capture_output=True, text=True,
                             timeout=120)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "zz_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    yield venv


def test_wheel_carries_plugins_entry_points_and_shipped_files(dist: Dist) -> None:
    """The wheel holds regwarden, the built-in sinks, both entry-point groups and the shipped files."""
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = set(wheel.namelist())
        entry_points = wheel.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        for name, source in SHIPPED.items():
            assert wheel.read(f"regwarden/data/{name}") == (REPO / source).read_bytes()
    for module in ("log", "slack", "alertmanager", "webhook"):
        assert f"regwarden_sinks/{module}.py" in names
        assert f"{module} = regwarden_sinks.{module}:" in entry_points
    assert "[regwarden.sinks]" in entry_points and "[regwarden.providers]" in entry_points
    for provider in ("htpasswd", "vault-pki", "command"):
        assert f"{provider} = regwarden.rotation.providers:" in entry_points
    assert "regwarden/demo/cli.py" in names and "regwarden = regwarden.cli:main" in entry_points


def test_sdist_carries_what_a_wheel_build_needs(dist: Dist) -> None:
    """The sdist holds setup.py, MANIFEST.in, the shipped files and the docs, so a wheel built from it is whole."""
    with tarfile.open(dist.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for path in ("setup.py", "MANIFEST.in", "pyproject.toml", "README.md", "CHANGELOG.md",
                 "docs/configuration.md", *SHIPPED.values()):
        assert path in names, path


def test_installed_wheel_validates_its_example_config(fresh_venv: Path) -> None:
    """In a fresh venv, `regwarden check-config -c <installed example config> --schema-only` passes, the
    example config and unit come from the installed package, and regwarden is imported from there."""
    regwarden = fresh_venv / "bin" / "regwarden"
    config = subprocess.run([str(regwarden), "example", "config", "--path"], capture_output=True, text=True,
                            timeout=60)
    assert config.returncode == 0, config.stderr
    installed = Path(config.stdout.strip())
    assert installed.is_relative_to(fresh_venv)
    assert installed.read_bytes() == (REPO / "config.example.toml").read_bytes()
    check = subprocess.run([str(regwarden), "check-config", "-c", str(installed), "--schema-only"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == f"{installed}: OK"
    where = subprocess.run([str(fresh_venv / "bin" / "python"), "-c",
                            "import regwarden, regwarden_sinks; print(regwarden.__file__, regwarden_sinks.__file__)"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(path).is_relative_to(fresh_venv) for path in where), where
    unit = subprocess.run([str(regwarden), "example", "unit"], capture_output=True, text=True, timeout=60)
    assert unit.stdout == (REPO / "systemd" / "regwarden.service").read_text()
