"""contrib/grafana/regwarden-dashboard.json is a dashboard whose every query uses metrics regwarden exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from regwarden.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[3] / "contrib" / "grafana" / "regwarden-dashboard.json"
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
             "summary": ("_sum", "_count", "_created"), "info": ("_info",), "gauge": ("",)}


def exported_names() -> set[str]:
    """Every sample name the Metrics class can export."""
    names: set[str] = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def _targets(panels: list[dict[str, Any]]) -> list[str]:
    exprs = []
    for panel in panels:
        exprs += [t["expr"] for t in panel.get("targets", [])]
        exprs += _targets(panel.get("panels", []))
    return exprs


def test_dashboard_parses_with_panels_and_a_host_variable() -> None:
    """The file is JSON with a uid, a title, panels with queries and an instance variable."""
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "regwarden" and dash["title"]
    assert len(_targets(dash["panels"])) >= 20
    assert "instance" in {v["name"] for v in dash["templating"]["list"]}
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_every_query_references_an_exported_metric() -> None:
    """Every regwarden_* name in a query (and the variable's query) is a metric regwarden exports."""
    dash = json.loads(DASHBOARD.read_text())
    exported = exported_names()
    queries = [*_targets(dash["panels"]), *(v.get("definition", "") for v in dash["templating"]["list"])]
    used = {name for q in queries for name in re.findall(r"\bregwarden_[a-z0-9_]+", q)}
    assert used, "the dashboard queries regwarden metrics"
    assert used - exported == set()
    assert {"regwarden_outbox_depth", "regwarden_sink_up", "regwarden_notifications_total",
            "regwarden_alerts_active", "regwarden_notification_latency_seconds_bucket"} <= used
