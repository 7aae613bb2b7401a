"""`regwarden status`: tables of credentials, endpoints, sources, sinks and alerts, and `--json`.

Snapshots: a fixed status document (snapshots/status-document.json) and what `regwarden status` prints
for it, served by a real local API on a unix socket. After an intended change of the output, rewrite
the snapshots with REGWARDEN_UPDATE_SNAPSHOTS=1 and review the diff.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from regwarden.cli import main
from regwarden.localapi import LocalApi
from regwarden.status_view import render_status

SNAPSHOTS = Path(__file__).parent / "snapshots"
DOCUMENT: dict[str, Any] = json.loads((SNAPSHOTS / "status-document.json").read_text())


def assert_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("REGWARDEN_UPDATE_SNAPSHOTS"):
        path.write_text(text)
    assert text == path.read_text(), f"output differs from {path} (REGWARDEN_UPDATE_SNAPSHOTS=1 rewrites it)"


@pytest.fixture
def daemon_config(tmp_path: Path) -> Iterator[Path]:
    """A config whose state_dir holds a local API socket answering GET /v1/status with DOCUMENT."""
    api = LocalApi(tmp_path / "regwarden.sock")
    api.route("GET", "/v1/status", lambda _, __: (200, DOCUMENT))
    api.start()
    config = tmp_path / "config.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n')
    try:
        yield config
    finally:
        api.stop()


def test_tables_snapshot(daemon_config: Path) -> None:
    """`regwarden status` prints the header and the credentials, endpoints, sources, sinks and alerts tables."""
    result = CliRunner().invoke(main, ["status", "-c", str(daemon_config)])
    assert result.exit_code == 0, result.output
    assert_snapshot("status.txt", result.output)


def test_json_snapshot(daemon_config: Path) -> None:
    """`regwarden status --json` prints the daemon's document, keys sorted, unchanged."""
    result = CliRunner().invoke(main, ["status", "-c", str(daemon_config), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == DOCUMENT
    assert_snapshot("status.json", result.output)


def test_times_are_relative_to_the_document_clock() -> None:
    """The same document renders the same text whenever it is rendered (now = started + uptime)."""
    later = {**DOCUMENT, "started": DOCUMENT["started"] + 60}
    assert render_status(DOCUMENT) != render_status(later)
    assert render_status(DOCUMENT) == render_status(json.loads(json.dumps(DOCUMENT)))


def test_a_daemon_with_only_its_daemon_table() -> None:
    """A daemon with no credentials, registries or sources shows its header and no empty tables."""
    text = render_status({"version": "0.1.0", "host": "h", "pid": 1, "started": 0.0, "uptime_seconds": 5,
                          "ready": True, "not_ready": {}, "config": {"path": "/c.toml"},
                          "components": {"alerting": {"active_alerts": [], "sinks": {}, "silences": 0}}})
    assert text == "regwarden 0.1.0 on h (pid 1): ready, up 5s\nconfig: /c.toml\n\nACTIVE ALERTS\nnone"


def test_not_running(tmp_path: Path) -> None:
    """Without a daemon, `regwarden status` says so and exits 1."""
    config = tmp_path / "config.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n')
    result = CliRunner().invoke(main, ["status", "-c", str(config)])
    assert result.exit_code == 1
    assert "regwarden is not running" in result.output
