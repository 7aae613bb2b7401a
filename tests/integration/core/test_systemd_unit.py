"""The shipped systemd unit: lints clean and asks for what a notify service with a watchdog needs."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

UNIT = Path(__file__).resolve().parents[3] / "systemd" / "regwarden.service"


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_systemd_analyze_verify_passes(systemd_analyze: str, tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit (with ExecStart pointing at this venv's regwarden)."""
    bindir = Path(sys.executable).parent
    assert (bindir / "regwarden").exists(), "the project is not installed in this venv"
    unit = tmp_path / "regwarden.service"
    unit.write_text(UNIT.read_text().replace("/opt/regwarden/bin/", f"{bindir}/"))
    result = subprocess.run([systemd_analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "regwarden.service" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_unit_is_notify_with_watchdog_reload_and_hardening() -> None:
    """Type=notify, WatchdogSec, ExecReload, Restart=on-failure, systemd-managed dirs and the hardening set."""
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["ExecReload"].endswith("regwarden reload -c /etc/regwarden/config.toml")
    assert service["Restart"] == "on-failure"
    assert int(service["WatchdogSec"].rstrip("s")) >= 10
    assert "ConfigurationDirectory" not in service  # it would make /etc/regwarden writable to the daemon
    for key in ("StateDirectory", "LogsDirectory"):
        assert service[key] == "regwarden"
    for key, value in {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
                       "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
                       "ProtectControlGroups": "yes", "UMask": "0077"}.items():
        assert service[key] == value, key
    assert service["SystemCallFilter"].startswith(("@system-service", "~"))
    assert "AF_UNIX" in service["RestrictAddressFamilies"]
