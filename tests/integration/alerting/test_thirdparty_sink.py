"""A third-party sink, pip-installed as its own distribution, is found through the `regwarden.sinks`
entry points and delivers notifications; a plugin whose import fails is reported by name and skipped."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from regwarden import sinks
from regwarden.config import SinkConfig
from regwarden.events import Signal
from tests.integration.alerting.rig import PipelineRig, wait_for
from tests.unit.sinks.contract import make_notification

pytestmark = pytest.mark.integration

SOURCE = Path(__file__).parent / "thirdparty"
DIST = "regwarden-jsonl-sink"


def _pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
                          capture_output=True, text=True, timeout=120, check=False)
    # offline builds need setuptools and wheel in this venv (the `test` extra has them)
    assert done.returncode == 0, f"pip {args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def _forget_plugins() -> None:
    importlib.invalidate_caches()
    sinks._entry_points.cache_clear()
    for name in [m for m in sys.modules if m.startswith("regwarden_jsonl_sink")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The example distribution installed into the running venv (offline), uninstalled afterwards."""
    src = tmp_path_factory.mktemp("thirdparty") / "src"
    shutil.copytree(SOURCE, src)  # the build writes build/ and *.egg-info next to the sources
    _pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(src))
    _forget_plugins()
    try:
        yield
    finally:
        _pip("uninstall", "--yes", DIST)
        _forget_plugins()


def test_installed_plugin_is_listed(installed: None) -> None:
    """After `pip install`, the plugin's entry points are among the available sink types."""
    assert {"jsonl", "jsonl-broken"} <= set(sinks.available_sink_types())


def test_plugin_delivers_through_load_sinks(installed: None, tmp_path: Path) -> None:
    """A [[sinks]] table of the plugin's type loads, passes check() and delivers a notification."""
    out = tmp_path / "alerts.jsonl"
    loaded = sinks.load_sinks([SinkConfig.model_validate({"name": "archive", "type": "jsonl", "path": str(out)})])
    assert loaded.broken == {}
    assert loaded.sinks["archive"].send(make_notification(), timeout=5).ok
    [line] = out.read_text().splitlines()
    assert json.loads(line)["alerts"][0]["alertname"] == "RegistryDown"


def test_broken_plugin_is_reported_by_name_and_others_load(installed: None, tmp_path: Path) -> None:
    """A plugin whose import raises is marked unavailable with its name and error; the other sinks load."""
    loaded = sinks.load_sinks([
        SinkConfig.model_validate({"name": "archive", "type": "jsonl", "path": str(tmp_path / "a.jsonl")}),
        SinkConfig.model_validate({"name": "flaky", "type": "jsonl-broken"}),
        SinkConfig.model_validate({"name": "journal", "type": "log"}),
    ])
    assert sorted(loaded.sinks) == ["archive", "journal"]
    assert loaded.broken == {"flaky": "sink plugin 'jsonl-broken' failed to load: ImportError: "
                                      "regwarden-jsonl-sink: libexample is not installed"}


def test_plugin_receives_notifications_from_the_pipeline(installed: None, tmp_path: Path) -> None:
    """A signal on the bus reaches the third-party sink through the alert pipeline and its outbox."""
    out = tmp_path / "alerts.jsonl"
    rig = PipelineRig(tmp_path, [{"name": "archive", "type": "jsonl", "path": str(out)}])
    try:
        rig.ctx.signal(Signal(labels={"alertname": "RegistryDown", "registry": "internal"}, severity="critical",
                              annotations={"summary": "registry internal is down"}))
        line = wait_for(lambda: out.exists() and out.read_text().splitlines(), what="a line from the plugin")
    finally:
        rig.close()
    doc = json.loads(line[0])
    assert doc["status"] == "firing" and doc["alerts"][0]["registry"] == "internal"
