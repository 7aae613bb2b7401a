"""The daemon runs the probes and the engine audit when the config has registries and a [docker] table."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from regwarden.config import load_config
from regwarden.daemon import Daemon
from tests.integration.harness import DockerEngine, RegistryServer, daemon_table, free_port, wait_for

pytestmark = pytest.mark.integration


def test_status_and_metrics_show_probes_and_engine_audit(
        tmp_path: Path, registry_factory: Callable[..., RegistryServer], dockerd: DockerEngine,
        promtool: str) -> None:
    """/status has a verdict per registry and the engine audit's findings; /metrics passes promtool."""
    up, down = registry_factory(auth=True), registry_factory(auth=True)
    down.stop()
    listen = f"127.0.0.1:{free_port()}"
    config = tmp_path / "config.toml"
    config.write_text(daemon_table(tmp_path, listen) + f"""
[docker]
host = "{dockerd.host}"

[[registries]]
name = "up"
url = "{up.url}"
probe_interval = "1s"

[[registries]]
name = "down"
url = "{down.url}"
probe_interval = "1s"
""")
    daemon = Daemon(config, load_config(config))
    daemon.start()
    try:
        def status() -> dict[str, Any]:
            return dict(requests.get(f"http://{listen}/status", timeout=5).json()["components"])

        wait_for("both registries probed and the engine audited", lambda: all(
            status()["probes"][name]["verdict"] != "pending" for name in ("up", "down"))
            and "digest" in status()["engine-audit"], 30)
        components = status()
        probes = components["probes"]
        assert (probes["up"]["verdict"], probes["up"]["failed_phase"]) == ("plain-http", None)
        down_status = probes["down"]
        assert (down_status["verdict"], down_status["failed_phase"], down_status["reason"]) == (
            "down", "connect", "connection refused")
        assert components["engine-audit"]["insecure_cidrs"] == ["127.0.0.0/8"]
        assert components["engine-audit"]["findings"] == []
        metrics = requests.get(f"http://{listen}/metrics", timeout=5).text
        assert 'regwarden_probe_success{registry="up"} 1.0' in metrics
        assert 'regwarden_probe_failed_phase{phase="connect",registry="down"} 1.0' in metrics
        lint = subprocess.run([promtool, "check", "metrics"], input=metrics, capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr
    finally:
        daemon.stop()
