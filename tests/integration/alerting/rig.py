"""A running alert pipeline on a real state store, with real sinks loaded from `[[sinks]]` tables."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry

from regwarden.alerting.pipeline import AlertPipeline
from regwarden.bus import Bus
from regwarden.component import Context
from regwarden.config import parse_config
from regwarden.metrics import Metrics
from regwarden.state import StateStore

__all__ = ["PipelineRig", "wait_for"]


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until `condition()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class PipelineRig:
    """Config → Context → AlertPipeline (threads on, short tick), the bus started; `close()` stops all."""

    def __init__(self, tmp_path: Path, sinks: list[dict[str, Any]], alerts: dict[str, Any] | None = None) -> None:
        self.cfg = parse_config({
            "daemon": {"state_dir": str(tmp_path / "state"), "host": "docker-07"},
            "alerts": {"group_wait": "0s", "group_interval": "1s", "repeat_interval": "4h", "retry_max": "30s",
                       "send_timeout": "5s", **(alerts or {})},
            "sinks": sinks})
        self.metrics = Metrics(CollectorRegistry())
        self.state = StateStore(self.cfg.daemon.state_dir)
        self.bus = Bus(self.metrics)
        self.ctx = Context(config=self.cfg, metrics=self.metrics, state=self.state, bus=self.bus,
                           scheduler=BackgroundScheduler(), host="docker-07")
        self.pipeline = AlertPipeline(tick=0.05)
        self.pipeline.start(self.ctx)
        self.bus.start()

    def outbox_rows(self, sink: str) -> int:
        rows = self.state.query("SELECT COUNT(*) AS n FROM alert_outbox WHERE sink = ?", (sink,))
        return int(rows[0]["n"])

    def notifications(self, sink: str, outcome: str) -> float:
        """regwarden_notifications_total{sink, outcome}."""
        value = self.metrics.registry.get_sample_value("regwarden_notifications_total",
                                                       {"sink": sink, "outcome": outcome})
        return value or 0.0

    def close(self) -> None:
        self.pipeline.stop()
        self.bus.stop(2.0)
        self.state.close()
