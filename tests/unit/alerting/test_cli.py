"""`regwarden alerts test | silence | unsilence | list` against a real state directory and local HTTP servers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from regwarden.alerting.pipeline import AlertPipeline
from regwarden.bus import Bus
from regwarden.cli import main
from regwarden.component import Context
from regwarden.config import load_config
from regwarden.events import Signal
from regwarden.metrics import Metrics
from regwarden.sinks import LoadedSinks
from regwarden.state import StateStore
from tests.fakes.http import Answer, recording_server
from tests.unit.alerting.test_pipeline import RecordingSink


def _config(tmp_path: Path, sinks: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"""
[daemon]
state_dir = "{tmp_path / 'state'}"
audit_log = "{tmp_path / 'audit.jsonl'}"
host = "h1"
{sinks}
""")
    return path


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_alerts_test_reports_each_sink_without_secrets(tmp_path: Path) -> None:
    """`alerts test` sends through every sink, reports ok/FAILED per sink, exits 1 on a failure, leaks nothing."""
    token = tmp_path / "token"
    token.write_text("sup3r-secret-token-value")
    os.chmod(token, 0o600)
    with recording_server() as good, recording_server(lambda _: Answer(500, "boom")) as bad:
        cfg = _config(tmp_path, f"""
[[sinks]]
name = "am-good"
type = "alertmanager"
url = "{good.url}"
bearer_token_file = "{token}"

[[sinks]]
name = "am-bad"
type = "alertmanager"
url = "{bad.url}"
bearer_token_file = "{token}"
""")
        code, out = _run("alerts", "test", "-c", str(cfg), "--json")
        [sent] = good.received
    rows = {r["sink"]: r for r in json.loads(out)}
    assert code == 1
    assert rows["am-good"]["ok"] is True and rows["am-bad"]["ok"] is False
    assert "HTTP 500" in rows["am-bad"]["detail"]
    assert sent.json()[0]["labels"]["alertname"] == "RegwardenTest"
    assert "sup3r-secret-token-value" not in out


def test_alerts_test_reports_a_sink_that_fails_its_check(tmp_path: Path) -> None:
    """A sink whose check() fails (missing secret file) is reported FAILED with the reason."""
    cfg = _config(tmp_path, f"""
[[sinks]]
name = "am"
type = "alertmanager"
url = "http://127.0.0.1:9"
bearer_token_file = "{tmp_path / 'missing'}"
""")
    code, out = _run("alerts", "test", "-c", str(cfg), "--sink", "am")
    assert code == 1 and "FAILED" in out and "bearer_token" in out


def test_alerts_test_unknown_sink_is_an_error(tmp_path: Path) -> None:
    """Asking for a sink that is not configured exits 2 naming it."""
    cfg = _config(tmp_path, '[[sinks]]\nname = "logs"\ntype = "log"\n')
    code, out = _run("alerts", "test", "-c", str(cfg), "--sink", "nope")
    assert code == 2 and "nope" in out


def test_silence_written_by_the_cli_is_honoured_by_the_pipeline(tmp_path: Path) -> None:
    """A silence added with the CLI is stored in state_dir and suppresses the daemon's notifications."""
    cfg_path = _config(tmp_path, '[[sinks]]\nname = "logs"\ntype = "log"\n')
    code, out = _run("alerts", "silence", "-c", str(cfg_path), "--match", "alertname=RegistryDown", "--for", "2h",
                     "--comment", "maintenance window", "--json")
    assert code == 0, out
    silence_id = json.loads(out)["id"]
    cfg = load_config(cfg_path)
    metrics = Metrics(CollectorRegistry())
    state = StateStore(cfg.daemon.state_dir)
    ctx = Context(config=cfg, metrics=metrics, state=state, bus=Bus(metrics), scheduler=BackgroundScheduler(),
                  host="h1")
    pipeline = AlertPipeline(loaded=LoadedSinks({"logs": RecordingSink("logs")}, {}), run_threads=False)
    pipeline.start(ctx)
    try:
        pipeline.ingest(Signal(labels={"alertname": "RegistryDown"}))
        later = time.time() + 60
        pipeline.evaluate(later)
        assert state.query("SELECT COUNT(*) AS n FROM alert_outbox")[0]["n"] == 0
        assert _run("alerts", "unsilence", "-c", str(cfg_path), silence_id)[0] == 0
        pipeline.evaluate(later + 1)
        assert state.query("SELECT COUNT(*) AS n FROM alert_outbox")[0]["n"] == 1
    finally:
        pipeline.stop()
        state.close()


def test_list_shows_active_alerts_and_silences(tmp_path: Path) -> None:
    """`alerts list --json` shows firing alerts from the state DB and the active silences."""
    cfg_path = _config(tmp_path)
    _run("alerts", "silence", "-c", str(cfg_path), "--match", "registry=~int.*", "--for", "30m", "--comment", "c")
    cfg = load_config(cfg_path)
    metrics = Metrics(CollectorRegistry())
    state = StateStore(cfg.daemon.state_dir)
    ctx = Context(config=cfg, metrics=metrics, state=state, bus=Bus(metrics), scheduler=BackgroundScheduler(),
                  host="h1")
    pipeline = AlertPipeline(loaded=LoadedSinks({}, {}), run_threads=False)
    pipeline.start(ctx)
    pipeline.ingest(Signal(labels={"alertname": "TlsExpiring", "registry": "internal"}, severity="critical"))
    pipeline.stop()
    state.close()
    code, out = _run("alerts", "list", "-c", str(cfg_path), "--json")
    data = json.loads(out)
    assert code == 0
    assert [(a["alertname"], a["severity"]) for a in data["alerts"]] == [("TlsExpiring", "critical")]
    assert data["silences"][0]["matchers"] == ["registry=~int.*"]
    code, out = _run("alerts", "list", "-c", str(cfg_path))
    assert "TlsExpiring" in out and "registry=~int.*" in out


def test_silence_refuses_a_bad_matcher(tmp_path: Path) -> None:
    """A malformed --match is refused with the reason, nothing is stored."""
    code, out = _run("alerts", "silence", "-c", str(_config(tmp_path)), "--match", "no-equals", "--for", "1h",
                     "--comment", "x")
    assert code == 2 and "invalid matcher" in out

