"""The audit writer on a really full filesystem (a 128 KiB tmpfs): it fails loudly, recovers when space
returns, keeps one verifiable chain and reports what was lost as an audit.gap record."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from regwarden.audit.chain import AuditWriter, verify
from regwarden.audit.component import AuditTrail, close_writers
from regwarden.bus import Bus
from regwarden.component import Context
from regwarden.config import AuditConfig, Config, DaemonConfig
from regwarden.errors import AuditError
from regwarden.events import Event
from regwarden.metrics import Metrics
from regwarden.state import StateStore

WHEN = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "fs"
    mount.mkdir()
    # CI runs as root and can mount: there a missing tmpfs is a failure, elsewhere a skip
    unavailable = pytest.fail if os.environ.get("CI", "").lower() in {"true", "1", "yes"} else pytest.skip
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        close_writers()
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem completely with one file; remove it to give the space back."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:
        for size in (4096, 512, 16, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                continue
    return filler


def record(i: int) -> dict[str, object]:
    return {"kind": "test.event", "detail": {"i": i, "pad": "x" * 200}}


def started_trail(tmp_path: Path, fs: Path, fsync_interval: str) -> tuple[Context, AuditTrail]:
    """An AuditTrail writing `fs/audit.jsonl`, started on a Context of its own (bus not started)."""
    metrics = Metrics()
    cfg = Config(daemon=DaemonConfig(state_dir=tmp_path / "state", audit_log=fs / "audit.jsonl"),
                 audit=AuditConfig(fsync_interval=fsync_interval))  # type: ignore[arg-type]
    ctx = Context(config=cfg, metrics=metrics, state=StateStore(tmp_path / "state"), bus=Bus(metrics),
                  scheduler=BackgroundScheduler(timezone="UTC"), host="h1")
    trail = AuditTrail()
    trail.start(ctx)
    return ctx, trail


def test_write_failure_raises_and_the_chain_survives(small_fs: Path) -> None:
    """With the disk full an append raises AuditError; once space returns, appends go on and verify."""
    log = small_fs / "audit.jsonl"
    writer = AuditWriter(log, fsync_interval=0)
    for i in range(10):
        writer.append(record(i))
    filler = fill(small_fs)
    with pytest.raises(AuditError, match="No space left on device"):
        for i in range(10, 1000):
            writer.append(record(i))
    filler.unlink()
    writer.append(record(9999))
    writer.close()
    result = verify([log])
    assert result.ok, result.broken


def test_batched_records_lost_to_a_full_disk_are_reported(small_fs: Path) -> None:
    """Records acknowledged but lost in the buffer when the disk filled are reported by take_lost."""
    log = small_fs / "audit.jsonl"
    writer = AuditWriter(log, fsync_interval=3600)
    writer.append(record(0))
    writer.flush()
    filler = fill(small_fs)
    acknowledged = 0
    with pytest.raises(AuditError):
        for i in range(1, 5000):
            writer.append(record(i))
            acknowledged = i
    lost = writer.take_lost()
    assert lost and lost[0][0] >= 2 and lost[-1][1] == acknowledged + 1  # record(i) has seq i + 1
    filler.unlink()
    writer.append(record(10_000))
    writer.close()
    assert verify([log]).ok


def test_component_reports_lost_records_as_an_audit_gap(small_fs: Path, tmp_path: Path) -> None:
    """AuditTrail counts failed writes, turns not-ready, and writes an audit.gap record when it recovers."""
    ctx, trail = started_trail(tmp_path, small_fs, fsync_interval="10ms")
    metrics, state = ctx.metrics, ctx.state
    event = Event(source="docker", kind="container.start", time=WHEN, observed=WHEN, host="h1",
                  detail={"pad": "x" * 300})
    ctx.bus.dispatch(event)
    trail.stop()  # write-through: every append reaches the disk or fails
    filler = fill(small_fs)
    for _ in range(400):
        ctx.bus.dispatch(event)
        if (metrics.registry.get_sample_value("regwarden_audit_write_errors_total") or 0) > 0:
            break
    assert not trail.health().ready
    filler.unlink()
    ctx.bus.dispatch(event)
    ctx.bus.start()
    ctx.bus.stop(5)  # delivers the gap record the component published
    assert trail.health().ready
    records = [json.loads(line) for line in (small_fs / "audit.jsonl").read_text().splitlines()]
    gaps = [r for r in records if r["kind"] == "audit.gap"]
    assert len(gaps) == 1 and gaps[0]["source"] == "regwarden"
    assert gaps[0]["detail"]["records_not_written"] >= 1
    assert metrics.registry.get_sample_value("regwarden_audit_gaps_total", {"source": "regwarden"}) == 1
    assert verify([small_fs / "audit.jsonl"]).ok
    state.close()


def test_waiters_for_records_lost_to_a_full_disk_fail(small_fs: Path) -> None:
    """A `when_durable` waiter whose records a full disk lost gets `failed`, never `done`; one whose
    records reached the disk before gets `done`."""
    log = small_fs / "audit.jsonl"
    writer = AuditWriter(log, fsync_interval=3600)
    outcomes: list[str] = []
    writer.append(record(0))
    writer.when_durable(lambda: outcomes.append("done 0"), failed=lambda: outcomes.append("failed 0"))
    writer.flush()
    writer.append({"kind": "test.event", "detail": {"i": 1, "pad": "x" * 20_000}})  # more than a page
    writer.when_durable(lambda: outcomes.append("done 1"), failed=lambda: outcomes.append("failed 1"))
    filler = fill(small_fs)
    with pytest.raises(AuditError):
        for i in range(2, 5000):
            writer.append(record(i))
    assert outcomes == ["done 0", "failed 1"]
    filler.unlink()
    writer.close()
    assert verify([log]).ok


def test_a_notification_lost_to_a_full_disk_is_never_acknowledged(small_fs: Path, tmp_path: Path) -> None:
    """With the disk full the receiver answers 503 (its records were lost, not written); the registry's
    retry once there is space again is published anew, answered 200 and is in the audit log."""
    from regwarden.config import RegistryNotificationsSource
    from regwarden.sources.notifications import PATH, NotificationReceiver
    from tests.sources_support import free_port
    from tests.unit.sources.test_notifications import TOKEN, envelope, post

    ctx, trail = started_trail(tmp_path, small_fs, fsync_interval="1h")
    metrics, state = ctx.metrics, ctx.state
    ctx.bus.start()
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    receiver = NotificationReceiver(RegistryNotificationsSource(listen=f"127.0.0.1:{free_port()}",
                                                                token_file=token))
    receiver.start(ctx)
    url = "http://{}:{}{}".format(*receiver.address, PATH)
    try:
        assert post(url, envelope("before")).status_code == 200
        # a record larger than the page the file already has: it cannot land in that page's slack
        big = envelope("on-a-full-disk").replace(b'"useragent": "docker/20.10"', b'"useragent": "' + b"d" * 6000 + b'"')
        filler = fill(small_fs)
        refused = post(url, big)
        assert refused.status_code == 503
        assert metrics.registry.get_sample_value("regwarden_input_rejected_total",
                                                 {"source": "registry-notify", "reason": "not_durable"}) == 1
        filler.unlink()
        assert post(url, big).status_code == 200
    finally:
        receiver.stop()
        ctx.bus.stop(5)
        trail.stop()
        close_writers()
        state.close()
    records = [json.loads(line) for line in (small_fs / "audit.jsonl").read_text().splitlines()]
    ids = [r.get("id") for r in records if r["source"] == "registry-notify"]
    assert ids == ["before", "on-a-full-disk"]
    assert [r["kind"] for r in records if r["source"] == "regwarden"] == ["audit.gap"]
    assert verify([small_fs / "audit.jsonl"]).ok
