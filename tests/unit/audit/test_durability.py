"""What the audit trail promises a waiting Checkpoint: `done` only when every record published before it
is on disk, `failed` when some may not be. Failures are injected at the file (a stand-in whose writes
vanish and whose flush fails, or a failing fsync); tests/unit/audit/test_disk_full.py does it on a really
full filesystem. Checkpoints carry `since` (Bus.losses when the publisher began), as the notifications
receiver's do."""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from regwarden.audit import chain
from regwarden.audit.chain import AuditWriter
from regwarden.audit.component import AuditTrail, close_writers
from regwarden.bus import Bus, Checkpoint
from regwarden.component import Context
from regwarden.config import AuditConfig, Config, DaemonConfig
from regwarden.errors import AuditError, RegwardenError
from regwarden.events import Event
from regwarden.metrics import Metrics
from regwarden.state import StateStore

WHEN = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


class VanishingFile:
    """In place of the writer's file: what is written vanishes, and flushing it fails (a full disk)."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def fileno(self) -> int:
        return int(self.real.fileno())

    def close(self) -> None:
        self.real.close()


class Outcome:
    """A checkpoint's callbacks, recorded."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.settled = threading.Event()

    def done(self) -> None:
        self.calls.append("done")
        self.settled.set()

    def failed(self) -> None:
        self.calls.append("failed")
        self.settled.set()


def event(event_id: str, source: str = "registry-notify") -> Event:
    return Event(source=source, kind="image.push", time=WHEN, observed=WHEN, host="h1", id=event_id)


def ids_in(log: Path) -> list[str]:
    return [json.loads(line).get("id") for line in log.read_text().splitlines()]


def fail_fsync_once(monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = chain.os.fsync, []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(chain.os, "fsync", fsync)


@pytest.fixture
def trail_on(tmp_path: Path) -> Iterator[Any]:
    def start(fsync_interval: str, key_reader: Any = None, **audit: Any) -> tuple[Context, AuditTrail]:
        metrics = Metrics()
        cfg = Config(daemon=DaemonConfig(state_dir=tmp_path / "state", audit_log=tmp_path / "audit.jsonl"),
                     audit=AuditConfig(fsync_interval=fsync_interval, **audit))  # type: ignore[arg-type]
        ctx = Context(config=cfg, metrics=metrics, state=StateStore(tmp_path / "state"), bus=Bus(metrics),
                      scheduler=BackgroundScheduler(timezone="UTC"), host="h1")
        trail = AuditTrail(key_reader=key_reader, buffer_limit=2) if key_reader else AuditTrail()
        trail.start(ctx)
        return ctx, trail

    yield start
    close_writers()


def test_a_lost_write_fails_the_waiting_checkpoint_even_after_another_sources(trail_on: Any, tmp_path: Path) -> None:
    """e1's write is lost; a log tailer's checkpoint comes next; the receiver's checkpoint for e1 fails."""
    ctx, trail = trail_on("0s")
    since = ctx.bus.losses
    trail._writer._file = VanishingFile(trail._writer._file)
    trail.handle_batch([event("e1")])
    tailer, receiver = Outcome(), Outcome()
    trail.keep(Checkpoint(tailer.done))
    trail.keep(Checkpoint(receiver.done, urgent=True, failed=receiver.failed, since=since))
    assert receiver.calls == ["failed"] and "e1" not in ids_in(tmp_path / "audit.jsonl")


def test_records_lost_in_the_buffer_fail_a_checkpoint_kept_after_the_recovery(
        trail_on: Any, tmp_path: Path) -> None:
    """e1a is buffered and lost when the flush fails with nobody waiting; e1b's append recovers and takes
    e1a's seq; the checkpoint for both fails."""
    ctx, trail = trail_on("1h")
    since = ctx.bus.losses
    writer = trail._writer
    writer._file = VanishingFile(writer._file)
    trail.handle_batch([event("e1a")])
    with pytest.raises(AuditError):
        writer.flush()
    trail.handle_batch([event("e1b")])
    outcome = Outcome()
    trail.keep(Checkpoint(outcome.done, urgent=True, failed=outcome.failed, since=since))
    writer.flush()
    assert outcome.calls == ["failed"]
    assert ids_in(tmp_path / "audit.jsonl") == ["e1b"]


def test_a_recovery_by_the_flusher_fails_waiters_and_later_checkpoints(trail_on: Any) -> None:
    """The flusher's flush fails while a tailer waits: it recovers at once and the tailer's checkpoint
    fails; a receiver checkpoint kept afterwards for a record lost with it fails too."""
    ctx, trail = trail_on("1h")
    since = ctx.bus.losses
    writer = trail._writer
    writer._file = VanishingFile(writer._file)
    trail.handle_batch([event("x", source="docker")])
    tailer = Outcome()
    trail.keep(Checkpoint(tailer.done, failed=tailer.failed))
    trail.handle_batch([event("e1")])
    writer._soon.set()  # the flusher's tick
    assert tailer.settled.wait(5) and tailer.calls == ["failed"]
    receiver = Outcome()
    trail.keep(Checkpoint(receiver.done, urgent=True, failed=receiver.failed, since=since))
    assert receiver.calls == ["failed"]


def test_records_dropped_while_waiting_for_the_key_fail_the_checkpoint(trail_on: Any) -> None:
    """Held beyond buffer_limit, e1 is dropped; a tailer's checkpoint held after it does not save the
    receiver's: once the key comes, the receiver's checkpoint fails."""
    key = threading.Event()

    def key_reader(_: Context) -> bytes:
        key.wait(10)
        return b"0123456789abcdef-key"

    ctx, trail = trail_on("100ms", key_reader=key_reader, hmac_key_vault_path="kv/audit")
    since = ctx.bus.losses
    receiver = Outcome()
    trail.handle_batch([event("e1")])
    trail.keep(Checkpoint(lambda: None))
    trail.handle_batch([event("e2"), event("e3")])  # buffer_limit 2: e1 and the tailer's checkpoint go
    trail.keep(Checkpoint(receiver.done, urgent=True, failed=receiver.failed, since=since))
    key.set()
    assert receiver.settled.wait(5) and receiver.calls == ["failed"]
    trail.stop()


def test_stopping_before_the_key_came_fails_the_held_checkpoints(trail_on: Any) -> None:
    """A trail stopped (a reload) while it still waits for the HMAC key fails what it holds."""
    def no_key(_: Context) -> bytes:
        raise RegwardenError("vault down")

    ctx, trail = trail_on("100ms", key_reader=no_key, hmac_key_vault_path="kv/audit")
    receiver = Outcome()
    trail.handle_batch([event("e1")])
    trail.keep(Checkpoint(receiver.done, urgent=True, failed=receiver.failed, since=ctx.bus.losses))
    trail.stop()
    assert receiver.calls == ["failed"]


def test_after_a_failed_fsync_only_what_an_fsync_covered_counts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel may drop pages whose fsync failed while still showing them: the recovery goes back to
    the size of the last good fsync, reports the rest as lost and fails its waiters."""
    log = tmp_path / "audit.jsonl"
    writer = AuditWriter(log, fsync_interval=3600)
    writer.append({"kind": "kept"})
    writer.flush()
    writer.append({"kind": "unsure"})
    outcome = Outcome()
    writer.when_durable(outcome.done, failed=outcome.failed)
    fail_fsync_once(monkeypatch)
    with pytest.raises(AuditError):
        writer.flush()
    writer.append({"kind": "after"})
    writer.close()
    assert outcome.calls == ["failed"]
    assert [json.loads(line)["kind"] for line in log.read_text().splitlines()] == ["kept", "after"]
    assert writer.take_lost() == [(2, 2)]


def test_a_recovery_that_fails_half_way_still_reports_the_loss(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A recovery whose fsync fails leaves the head as it was, so the next one still reports the lost range."""
    writer = AuditWriter(tmp_path / "audit.jsonl", fsync_interval=3600)
    writer._file = VanishingFile(writer._file)
    writer.append({"kind": "a"})
    with pytest.raises(AuditError):
        writer.flush()
    fail_fsync_once(monkeypatch)
    with pytest.raises(AuditError):
        writer.append({"kind": "b"})  # the recovery's fsync fails
    writer.append({"kind": "c"})
    assert writer.take_lost() == [(1, 1)]
    writer.close()


def test_close_with_a_failing_fsync_fails_the_waiters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = AuditWriter(tmp_path / "audit.jsonl", fsync_interval=3600)
    writer.append({"kind": "a"})
    outcome = Outcome()
    writer.when_durable(outcome.done, failed=outcome.failed)
    fail_fsync_once(monkeypatch)
    with pytest.raises(AuditError):
        writer.close()
    assert outcome.calls == ["failed"]


def test_an_interval_of_zero_after_a_reload_stops_the_flusher(tmp_path: Path) -> None:
    """fsync_interval 0 means an fsync per append: no flusher thread left spinning; back to >0, one again."""
    def flushers() -> int:
        return sum(t.name == "audit-flush" and t.is_alive() for t in threading.enumerate())

    before = flushers()
    writer = AuditWriter(tmp_path / "audit.jsonl", fsync_interval=0.1)
    assert flushers() == before + 1
    writer.resume_batching(0)
    assert flushers() == before
    writer.append({"kind": "a"})
    outcome = Outcome()
    writer.when_durable(outcome.done)
    assert outcome.calls == ["done"]
    writer.resume_batching(0.1)
    assert flushers() == before + 1
    writer.close()


class FailingWrite:
    """In place of the writer's file: writes fail (a full disk); flushing what is already there works."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        self.real.flush()

    def fileno(self) -> int:
        return int(self.real.fileno())

    def close(self) -> None:
        self.real.close()


def test_a_recovery_whose_fsync_failed_is_not_trusted_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write fails and the recovery's own fsync fails too: the next recovery does not take the page
    cache for the disk (the kernel reports a failed fsync once): the unsure record is lost, not `done`."""
    log = tmp_path / "audit.jsonl"
    writer = AuditWriter(log, fsync_interval=3600)
    writer.append({"kind": "kept"})
    writer.flush()
    writer.append({"kind": "unsure"})
    writer._file.flush()  # in the page cache, never fsynced
    outcome = Outcome()
    writer.when_durable(outcome.done, failed=outcome.failed)
    writer._file = FailingWrite(writer._file)
    fail_fsync_once(monkeypatch)
    with pytest.raises(AuditError):
        writer.append({"kind": "c"})
    writer.append({"kind": "d"})
    writer.close()
    assert outcome.calls == ["failed"]
    assert [json.loads(line)["kind"] for line in log.read_text().splitlines()] == ["kept", "d"]


def test_no_loss_slips_between_the_check_and_the_wait(trail_on: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flusher's fsync fails and its recovery drops e1 right after the keeper compared the loss count
    and before it registered the wait: the checkpoint still fails (the count is read under the writer's lock)."""
    ctx, trail = trail_on("1h")
    bus, since = ctx.bus, ctx.bus.losses
    writer = trail._writer
    tailer = Outcome()
    trail.handle_batch([event("x", source="docker")])
    writer.when_durable(tailer.done, failed=tailer.failed)  # someone waits: the flusher recovers at once
    trail.handle_batch([event("e1")])
    real_when_durable = writer.when_durable

    def recovery_in_between(*args: Any, **kwargs: Any) -> None:
        fail_fsync_once(monkeypatch)
        writer._soon.set()
        assert tailer.settled.wait(5) and tailer.calls == ["failed"]
        real_when_durable(*args, **kwargs)

    monkeypatch.setattr(writer, "when_durable", recovery_in_between)
    receiver = Outcome()
    trail.keep(Checkpoint(receiver.done, urgent=True, failed=receiver.failed, since=since))
    assert bus.losses == since + 1 and receiver.calls == ["failed"]


def test_a_stopped_trail_still_waiting_for_the_key_loses_what_comes_and_says_so(trail_on: Any) -> None:
    """After stop() (a reload) the old trail may still be handed items: they count as lost, and a
    checkpoint fails at once instead of being held where nothing will ever settle it."""
    def no_key(_: Context) -> bytes:
        raise RegwardenError("vault down")

    ctx, trail = trail_on("100ms", key_reader=no_key, hmac_key_vault_path="kv/audit")
    trail.stop()
    since = ctx.bus.losses
    trail.handle_batch([event("e1")])
    receiver = Outcome()
    trail.keep(Checkpoint(receiver.done, urgent=True, failed=receiver.failed, since=since))
    assert receiver.calls == ["failed"] and ctx.bus.losses == since + 1


def test_switching_to_an_fsync_per_append_settles_the_waiters(tmp_path: Path) -> None:
    """A reload to fsync_interval 0 stops the flusher; what it would have synced is synced then."""
    writer = AuditWriter(tmp_path / "audit.jsonl", fsync_interval=3600)
    writer.append({"kind": "a"})
    outcome = Outcome()
    writer.when_durable(outcome.done, failed=outcome.failed)
    writer.resume_batching(0)
    assert outcome.calls == ["done"]
    writer.close()
