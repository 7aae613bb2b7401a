"""AuditTrail on a real bus: every Event is chained to the file, Signals are not, gaps are counted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from regwarden.audit.chain import verify
from regwarden.audit.component import AuditTrail, close_writers
from regwarden.bus import Bus
from regwarden.component import Context
from regwarden.config import AuditConfig, Config, DaemonConfig
from regwarden.errors import AuditError
from regwarden.events import Event, Signal
from regwarden.metrics import Metrics
from regwarden.state import StateStore

WHEN = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    metrics = Metrics()
    state = StateStore(tmp_path / "state")
    cfg = Config(daemon=DaemonConfig(state_dir=tmp_path / "state", audit_log=tmp_path / "log" / "audit.jsonl"),
                 audit=AuditConfig(fsync_interval="10ms"))  # type: ignore[arg-type]
    context = Context(config=cfg, metrics=metrics, state=state, bus=Bus(metrics),
                      scheduler=BackgroundScheduler(timezone="UTC"), host="h1")
    yield context
    close_writers()
    state.close()


def event(kind: str = "image.push", source: str = "registry-notify") -> Event:
    return Event(source=source, kind=kind, time=WHEN, observed=WHEN, host="h1")  # type: ignore[arg-type]


def records(ctx: Context) -> list[dict[str, object]]:
    return [json.loads(line) for line in ctx.config.daemon.audit_log.read_text().splitlines()]


def test_events_are_written_and_signals_are_not(ctx: Context) -> None:
    """Each Event on the bus becomes one chained record; Signals are not audit records."""
    trail = AuditTrail()
    trail.start(ctx)
    ctx.bus.dispatch(event())
    ctx.bus.dispatch(Signal(labels={"alertname": "X"}))
    ctx.bus.dispatch(event("container.start", "docker"))
    trail.stop()
    written = records(ctx)
    assert [(r["seq"], r["kind"]) for r in written] == [(1, "image.push"), (2, "container.start")]
    assert verify([ctx.config.daemon.audit_log]).ok


def test_records_and_gaps_are_counted(ctx: Context) -> None:
    """regwarden_audit_records_total counts records; audit.gap records count in regwarden_audit_gaps_total."""
    trail = AuditTrail()
    trail.start(ctx)
    for item in (event(), event("audit.gap", "docker"), event("audit.gap", "docker")):
        ctx.bus.dispatch(item)
    trail.stop()
    registry = ctx.metrics.registry
    assert registry.get_sample_value("regwarden_audit_records_total") == 3
    assert registry.get_sample_value("regwarden_audit_gaps_total", {"source": "docker"}) == 2


def test_restart_continues_the_same_chain(ctx: Context) -> None:
    """A stop and start (reload) keeps one handler and one unbroken chain."""
    first = AuditTrail()
    first.start(ctx)
    ctx.bus.dispatch(event())
    first.stop()
    ctx.bus.dispatch(event())  # delivered after stop (bus drain): still written
    second = AuditTrail()
    second.start(ctx)
    ctx.bus.dispatch(event())
    second.stop()
    assert [r["seq"] for r in records(ctx)] == [1, 2, 3]
    assert verify([ctx.config.daemon.audit_log]).ok


def test_health_and_status(ctx: Context) -> None:
    """The component is ready once started and reports the chain head."""
    trail = AuditTrail()
    assert not trail.health().ready
    trail.start(ctx)
    ctx.bus.dispatch(event())
    assert trail.health().ready
    status = trail.status()
    assert status["seq"] == 1 and status["written"] == 1 and status["hmac"] is False
    trail.stop()


def test_hmac_key_is_used(ctx: Context) -> None:
    """With a key the chain verifies only with that key."""
    trail = AuditTrail(key=b"secret-key-0123456789")
    trail.start(ctx)
    ctx.bus.dispatch(event())
    trail.stop()
    assert verify([ctx.config.daemon.audit_log], key=b"secret-key-0123456789").ok
    assert not verify([ctx.config.daemon.audit_log]).ok


def keyed_ctx(ctx: Context) -> Context:
    ctx.config = ctx.config.model_copy(update={"audit": ctx.config.audit.model_copy(
        update={"hmac_key_vault_path": "secret/regwarden/audit-hmac"})})
    return ctx


def wait_for(what: str, ready: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_events_wait_for_the_hmac_key_and_are_chained_with_it(ctx: Context) -> None:
    """With hmac_key_vault_path set, nothing is written until the key is read (retried); held Events are
    then written in order with the key, and the component is not ready meanwhile."""
    ctx = keyed_ctx(ctx)
    answers: list[bytes | Exception] = [AuditError("Vault unreachable"), b"0123456789abcdef-key"]

    def reader(_: Context) -> bytes:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    trail = AuditTrail(key_reader=reader)
    trail.start(ctx)
    ctx.bus.dispatch(event("image.push"))
    ctx.bus.dispatch(event("image.pull"))
    assert not trail.health().ready
    wait_for("the key", lambda: trail.health().ready)
    ctx.bus.dispatch(event("container.start"))
    trail.stop()
    assert [r["kind"] for r in records(ctx)] == ["image.push", "image.pull", "container.start"]
    assert verify([ctx.config.daemon.audit_log], key=b"0123456789abcdef-key").ok
    assert not verify([ctx.config.daemon.audit_log]).ok


def test_events_dropped_while_waiting_for_the_key_are_reported_as_a_gap(ctx: Context) -> None:
    """Beyond buffer_limit the oldest held Events are dropped, and an audit.gap record says how many."""
    ctx = keyed_ctx(ctx)
    release = threading.Event()

    def reader(_: Context) -> bytes:
        release.wait(10)
        return b"0123456789abcdef-key"

    trail = AuditTrail(key_reader=reader, buffer_limit=2)
    trail.start(ctx)
    for kind in ("a.one", "a.two", "a.three", "a.four", "a.five"):
        ctx.bus.dispatch(event(kind))
    ctx.bus.start()
    release.set()
    wait_for("the key", lambda: trail.health().ready)
    # the gap record is published once the held records are written; the bus then brings it back
    wait_for("the gap record", lambda: trail.status().get("written") == 3)
    ctx.bus.stop(5)
    trail.stop()
    written = records(ctx)
    assert [r["kind"] for r in written] == ["a.four", "a.five", "audit.gap"]
    assert written[2]["detail"]["records_not_written"] == 3  # type: ignore[index]


def test_unopenable_audit_log_fails_start_and_health_says_why(ctx: Context, tmp_path: Path) -> None:
    """An audit_log that cannot be opened fails the start with AuditError and shows in health."""
    (tmp_path / "blocker").write_text("a file where a directory should be")
    ctx.config = ctx.config.model_copy(update={"daemon": ctx.config.daemon.model_copy(
        update={"audit_log": tmp_path / "blocker" / "audit.jsonl"})})
    trail = AuditTrail()
    with pytest.raises(AuditError, match="cannot open audit log"):
        trail.start(ctx)
    health = trail.health()
    assert not health.ready and "cannot open audit log" in health.detail


def test_record_torn_by_a_crash_is_reported_as_a_gap(ctx: Context) -> None:
    """Starting on a log whose last record was cut short writes an audit.gap record saying so."""
    log = ctx.config.daemon.audit_log
    first = AuditTrail()
    first.start(ctx)
    ctx.bus.dispatch(event())
    first.stop()
    close_writers()
    with log.open("ab") as f:
        f.write(b'{"seq":2,"prev":"0123')
    second = AuditTrail()
    second.start(ctx)  # the gap Event goes on the bus
    ctx.bus.start()
    ctx.bus.stop(5)
    second.stop()
    written = records(ctx)
    assert [r["kind"] for r in written] == ["image.push", "audit.gap"]
    assert written[1]["detail"]["incomplete_record_bytes_cut"] == 21  # type: ignore[index]
    assert verify([log]).ok


# --------------------------------------------------------------------------- checkpoints (source cursors)


def test_a_checkpoint_runs_only_once_what_came_before_is_fsynced(ctx: Context) -> None:
    """The bus hands checkpoints to the trail, which runs them after the fsync that covers the records
    published before them, never earlier."""
    ctx.config = ctx.config.model_copy(update={"audit": AuditConfig(fsync_interval="1h")})  # type: ignore[arg-type]
    trail = AuditTrail()
    trail.start(ctx)
    ran: list[str] = []
    ctx.bus.start()
    ctx.bus.publish_batch([event(), event()])
    ctx.bus.publish_checkpoint(lambda: ran.append("after two"))
    assert ctx.bus.flush(5.0)
    assert trail.status()["written"] == 2 and ran == []  # written, not yet on disk
    trail.stop()  # write_through: fsync now
    assert ran == ["after two"]
    ctx.bus.publish_checkpoint(lambda: ran.append("nothing pending"))
    assert ctx.bus.flush(5.0) and ran == ["after two", "nothing pending"]
    ctx.bus.stop(5.0)


def test_checkpoints_wait_for_the_hmac_key_with_the_events(ctx: Context) -> None:
    """While the trail waits for its key, checkpoints are held in order with the events: none runs
    before the records it follows are written and fsynced."""
    ctx.config = ctx.config.model_copy(update={"audit": AuditConfig(hmac_key_vault_path="secret/audit")})
    key = threading.Event()

    def reader(_: Context) -> bytes:
        key.wait(10)
        return b"k" * 32

    trail = AuditTrail(key_reader=reader)
    trail.start(ctx)
    ran: list[int] = []
    ctx.bus.start()
    ctx.bus.publish(event())
    ctx.bus.publish_checkpoint(lambda: ran.append(len(records(ctx))))
    assert ctx.bus.flush(5.0) and ran == []
    key.set()
    deadline = time.monotonic() + 10
    while not ran and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ran == [1]
    trail.stop()
    ctx.bus.stop(5.0)


def test_an_unexpected_write_error_is_counted_and_reported_as_a_gap(ctx: Context,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch the writer cannot take for any reason is not lost silently: the next record written is
    preceded by an audit.gap saying how many were not written."""
    trail = AuditTrail()
    trail.start(ctx)
    writer = trail._writer
    assert writer is not None
    original = writer.append_events

    def broken(events: object) -> int:
        raise RuntimeError("bug")

    monkeypatch.setattr(writer, "append_events", broken)
    ctx.bus.dispatch_batch([event(), event()])
    assert not trail.health().ready and "RuntimeError" in trail.health().detail
    monkeypatch.setattr(writer, "append_events", original)
    ctx.bus.start()
    ctx.bus.dispatch(event())
    assert ctx.bus.flush(5.0)
    trail.stop()
    ctx.bus.stop(5.0)
    gaps = [r for r in records(ctx) if r["kind"] == "audit.gap"]
    assert len(gaps) == 1 and gaps[0]["detail"]["records_not_written"] == 2  # type: ignore[index]
    assert ctx.metrics.registry.get_sample_value("regwarden_audit_write_errors_total") == 1
