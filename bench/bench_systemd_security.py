"""`systemd-analyze security` of the shipped unit, docker.service and ssh.service, in one booted host.

Boots the tests' systemd host (Debian 12, systemd as PID 1 under systemd-nspawn; see
tests/integration/systemd_host.py), installs regwarden there as README's "Install as a systemd service"
says, and prints each unit's overall exposure and the table of what still counts against regwarden's.

    python bench/bench_systemd_security.py            # as root; needs systemd-container and mmdebstrap
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.systemd.conftest import build_wheelhouse, install_regwarden
from tests.integration.systemd_host import SystemdHost

UNITS = ("regwarden.service", "docker.service", "ssh.service")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-systemd-") as tmp:
        workdir = Path(tmp)
        wheels = build_wheelhouse(workdir / "build")
        host = SystemdHost(workdir / "host", binds_ro={str(wheels): "/var/tmp/wheels"})
        host.start()
        try:
            install_regwarden(host)
            version = host.run(["systemctl", "--version"]).stdout.splitlines()[0]
            print(f"booted host: {version}")
            print("| unit | exposure |\n|---|---|")
            reports = {}
            for unit in UNITS:
                reports[unit] = host.run(["systemd-analyze", "security", "--no-pager", unit], check=False).stdout
                match = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\S+)", reports[unit])
                print(f"| {unit} | {match.group(1)} {match.group(2)} |" if match else f"| {unit} | ? |")
            print("\nregwarden.service, what still counts (exposure > 0):")
            for line in reports["regwarden.service"].splitlines():
                if line.startswith("✗"):
                    print(" ", line.strip())
        finally:
            host.stop()


if __name__ == "__main__":
    main()
