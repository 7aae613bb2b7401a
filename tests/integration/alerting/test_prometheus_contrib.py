"""contrib/prometheus rules pass promtool's checks and tests; regwarden's /metrics passes `promtool check metrics`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from regwarden.config import load_config
from regwarden.daemon import Daemon
from regwarden.events import Signal
from regwarden.metrics import Metrics
from tests.integration.alerting.rig import wait_for
from tests.integration.harness import daemon_table, free_port

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[3] / "contrib" / "prometheus"


def _promtool(promtool: str, *args: str, stdin: bytes | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run([promtool, *args], input=stdin, capture_output=True, cwd=cwd, timeout=60)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    return output


def test_rules_pass_promtool_check(promtool: str) -> None:
    """promtool check rules accepts regwarden-rules.yml."""
    assert "SUCCESS" in _promtool(promtool, "check", "rules", str(RULES / "regwarden-rules.yml"))


def test_rules_pass_their_unit_tests(promtool: str) -> None:
    """promtool test rules: each rule fires (and stays quiet) where its tests say."""
    assert "SUCCESS" in _promtool(promtool, "test", "rules", "regwarden-rules.test.yml", cwd=RULES)


def test_every_metric_touched_passes_promtool_check_metrics(promtool: str) -> None:
    """Every metric regwarden declares, with a sample for each, passes promtool's metric lint."""
    metrics = Metrics(CollectorRegistry())
    touched = 0
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        child = value.labels(*["x"] * len(value._labelnames)) if value._labelnames else value
        for method, arg in (("inc", 1), ("set", 1), ("observe", 0.2)):
            if hasattr(child, method) and value._type != "info":
                getattr(child, method)(arg)
                break
        touched += 1
    assert touched > 40
    _promtool(promtool, "check", "metrics", stdin=generate_latest(metrics.registry))


def test_daemon_metrics_endpoint_passes_promtool_check_metrics(tmp_path: Path, promtool: str) -> None:
    """A running Daemon's /metrics, after an alert went through its pipeline, passes promtool check metrics."""
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(daemon_table(tmp_path, port) + """
[alerts]
group_wait = "0s"

[[sinks]]
name = "logs"
type = "log"
""")
    daemon = Daemon(config, load_config(config))
    daemon.start()
    try:
        daemon.ctx.signal(Signal(labels={"alertname": "RegistryDown", "registry": "internal"}))
        wait_for(lambda: daemon.metrics.registry.get_sample_value(
            "regwarden_notifications_total", {"sink": "logs", "outcome": "delivered"}), what="a delivery")
        body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).content
    finally:
        daemon.stop()
    assert b'regwarden_notifications_total{outcome="delivered",sink="logs"} 1.0' in body
    assert b'regwarden_sink_up{sink="logs"} 1.0' in body
    _promtool(promtool, "check", "metrics", stdin=body)
