"""The systemd host of the service tests: one booted container per session, regwarden installed in it
the way README's "Install as a systemd service" says (a wheel into /opt/regwarden, the shipped unit).

The wheel and its dependencies are built here once per session (`pip wheel`, a wheelhouse bound
read-only into the container), so the container installs with `--no-index` and needs no network of
its own. The session's dockerd socket is bound to /run/docker.sock inside.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import DockerEngine
from tests.integration.systemd_host import SystemdHost

REPO = Path(__file__).resolve().parents[3]
UNIT = "regwarden.service"
DROPIN_DIR = "/etc/systemd/system/regwarden.service.d"
WHEELS = "/var/tmp/wheels"
CONFIG = "/etc/regwarden/config.toml"


def build_wheelhouse(out: Path) -> Path:
    """regwarden's wheel (built from this checkout, offline) and the wheels of all its dependencies."""
    dist = out / "dist"
    build = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", str(dist),
                            str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = dist.glob("regwarden-*.whl")
    wheels = out / "wheels"
    fetch = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels), str(wheel)],
                           capture_output=True, text=True, timeout=600)
    assert fetch.returncode == 0, fetch.stdout[-3000:] + fetch.stderr[-3000:]
    return wheels


def install_regwarden(host: SystemdHost) -> None:
    """README's install steps, inside the host: venv in /opt/regwarden, the wheel, the shipped unit."""
    host.run(["python3", "-m", "venv", "/opt/regwarden"])
    host.run(["sh", "-c", f"/opt/regwarden/bin/pip install -q --no-index --find-links={WHEELS} "
                          f"{WHEELS}/regwarden-*.whl"], timeout=300)
    host.run(["install", "-d", "-m", "0750", "/etc/regwarden"])
    host.run(["sh", "-c", "/opt/regwarden/bin/regwarden example unit > /etc/systemd/system/regwarden.service"])
    host.systemctl("daemon-reload")


@pytest.fixture(scope="session")
def systemd_host(tmp_path_factory: pytest.TempPathFactory, dockerd: DockerEngine) -> Iterator[SystemdHost]:
    """A booted Debian 12 with systemd as PID 1 and regwarden installed (not yet configured or started)."""
    workdir = tmp_path_factory.mktemp("systemd-host")
    wheels = build_wheelhouse(workdir / "build")
    socket = Path(dockerd.host.removeprefix("unix://"))
    host = SystemdHost(workdir, binds={str(socket): "/run/docker.sock"}, binds_ro={str(wheels): WHEELS})
    host.start()
    try:
        install_regwarden(host)
        yield host
    finally:
        host.stop()
