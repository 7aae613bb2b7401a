"""The audit chain witnessed in a real OpenBao: heads written by the daemon's components, tampering
found by `regwarden audit verify --witness`, heads written after an outage."""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from click.testing import CliRunner

from regwarden.audit.chain import AuditWriter, chain_files, first_seq
from regwarden.audit.component import AuditTrail, close_writers
from regwarden.audit.witness import AuditWitness
from regwarden.bus import Bus
from regwarden.cli import main
from regwarden.component import Context
from regwarden.config import load_config
from regwarden.events import Event, utcnow
from regwarden.metrics import Metrics
from regwarden.shipped import shipped_path
from regwarden.state import StateStore
from regwarden.vault.shared import vault_for
from tests.integration.harness import OpenBaoRaft, secret_file

pytestmark = pytest.mark.integration


class WitnessedHost:
    """The audit trail and its witness, as the daemon runs them, on one host name against `address`."""

    def __init__(self, root: Path, address: str, token: str, *, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.host = "w-" + secrets.token_hex(4)
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        token_file = secret_file(root / "vault-token", token)
        self.config = root / "config.toml"
        self.config.write_text(f'''
[daemon]
state_dir = "{root}/state"
audit_log = "{root}/log/audit.jsonl"
host = "{self.host}"
[vault]
address = "{address}"
auth = {{ method = "token", token_file = "{token_file}" }}
timeout = "2s"
retry_max = "2s"
[audit]
max_bytes = {max_bytes}
fsync_interval = "0s"
witness_interval = "1s"
''')
        self.cfg = load_config(self.config)
        self.log = self.cfg.daemon.audit_log
        self.ctx: Context | None = None
        self._parts: list[Any] = []

    def start(self) -> None:
        metrics = Metrics()
        self.ctx = Context(config=self.cfg, metrics=metrics, state=StateStore(self.cfg.daemon.state_dir),
                           bus=Bus(metrics), scheduler=BackgroundScheduler(timezone="UTC"), host=self.host)
        self._parts = [AuditTrail(), AuditWitness()]
        for part in self._parts:
            part.start(self.ctx)
        self.ctx.bus.start()

    def pump(self) -> None:
        """Wait until the bus has delivered what was published."""
        assert self.ctx is not None
        self.ctx.bus.flush(5)

    def record(self, count: int, note: str = "r") -> None:
        assert self.ctx is not None
        for i in range(count):
            self.ctx.bus.publish(Event(source="regwarden", kind="test.record", time=utcnow(), host=self.host,
                                        detail={"note": f"{note}{i}", "pad": "x" * 200}))

    def witnessed_seq(self) -> int:
        assert self.ctx is not None
        return int(self.ctx.metrics.audit_witness_seq._value.get())

    def wait_witnessed(self, seq: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.witnessed_seq() < seq:
            assert time.monotonic() < deadline, f"head {seq} not witnessed: {self._parts[1].status()}"
            self.pump()
            time.sleep(0.05)

    def head(self) -> int:
        assert self.ctx is not None
        return int(self._parts[0].status()["seq"])

    def stop(self) -> None:
        if self.ctx is None:
            return
        self._parts[1].stop()
        self.ctx.bus.stop(5)
        self._parts[0].stop()
        close_writers()
        self.ctx.state.close()
        vault_for(self.ctx).close()
        self.ctx = None

    def verify(self, *extra: str) -> tuple[int, dict[str, Any], str]:
        done = CliRunner().invoke(main, ["audit", "verify", "-c", str(self.config), "--witness", "--json", *extra])
        return done.exit_code, json.loads(done.stdout), done.stderr

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for path in chain_files(self.log) for line in path.read_bytes().splitlines()]


@pytest.fixture
def witnessed(openbao: Any, tmp_path: Path) -> Iterator[Callable[..., WitnessedHost]]:
    made: list[WitnessedHost] = []

    def make(**kwargs: Any) -> WitnessedHost:
        host = WitnessedHost(tmp_path / f"h{len(made)}", openbao.address, openbao.token, **kwargs)
        made.append(host)
        host.start()
        return host

    yield make
    for host in made:
        host.stop()


def _kv_heads(openbao: Any, host: str) -> list[dict[str, Any]]:
    client = openbao.client()
    path = f"regwarden/audit-heads/{host}"
    meta = client.secrets.kv.v2.read_secret_metadata(path=path, mount_point="secret")["data"]
    return [client.secrets.kv.v2.read_secret_version(path=path, version=int(v), mount_point="secret",
                                                     raise_on_deleted_version=True)["data"]["data"]
            for v in sorted(meta["versions"], key=int)]


def _rotate_witnessed(host: WitnessedHost) -> None:
    """Four batches of records, each witnessed; with max_bytes=4096 the file rotates on the way."""
    for _ in range(4):
        host.record(6)
        host.pump()
        host.wait_witnessed(host.head())


def _await_mismatch(host: WitnessedHost) -> dict[str, Any]:
    """The one audit.witness_mismatch record the start check writes (within 20 s)."""
    deadline = time.monotonic() + 20
    while not any(r["kind"] == "audit.witness_mismatch" for r in host.records()):
        assert time.monotonic() < deadline
        host.pump()
        time.sleep(0.05)
    [record] = [r for r in host.records() if r["kind"] == "audit.witness_mismatch"]
    return record


def _rechain_after(log: Path, seq: int, note: str) -> None:
    """Root's rewrite: keep records up to `seq`, append new ones chained to it (verify alone passes)."""
    lines = [line for line in log.read_bytes().splitlines(keepends=True) if json.loads(line)["seq"] <= seq]
    log.write_bytes(b"".join(lines))
    writer = AuditWriter(log, fsync_interval=0)
    for i in range(5):
        writer.append({"kind": "test.record", "note": f"{note}{i}"})
    writer.close()


def test_heads_are_written_as_kv_versions(witnessed: Callable[..., WitnessedHost], openbao: Any) -> None:
    """Each moved head becomes a new KV version with seq, hash, file and time; an idle trail writes nothing."""
    host = witnessed()
    host.record(3)
    host.wait_witnessed(3)
    host.record(2)
    host.wait_witnessed(5)
    before = _kv_heads(openbao, host.host)
    time.sleep(2.5)  # two more intervals without records
    heads = _kv_heads(openbao, host.host)
    assert heads == before
    seqs = [h["seq"] for h in heads]
    assert seqs == sorted(set(seqs)) and seqs[-1] == 5 and 3 in seqs
    last = host.records()[-1]
    assert heads[-1]["hash"] == last["hash"] and heads[-1]["file"] == "audit.jsonl"
    assert heads[0]["reason"] == "start" and heads[-1]["reason"] == "interval" and heads[-1]["host"] == host.host


def test_untouched_trail_verifies_against_the_witness(witnessed: Callable[..., WitnessedHost]) -> None:
    """`audit verify --witness` passes on a trail nobody touched."""
    host = witnessed()
    host.record(4)
    host.wait_witnessed(4)
    code, out, _ = host.verify()
    assert code == 0 and out["ok"] and out["witness"]["ok"] and out["witness"]["matched_through"] == 4


def test_truncate_and_rechain_is_found(witnessed: Callable[..., WitnessedHost]) -> None:
    """Truncated and re-chained (plain verify passes): reported as rewritten, from the first head that differs."""
    host = witnessed()
    host.record(5)
    host.wait_witnessed(5)
    host.record(5)
    host.wait_witnessed(10)
    host.stop()
    _rechain_after(host.log, 7, "forged")
    assert CliRunner().invoke(main, ["audit", "verify", "-c", str(host.config)]).exit_code == 0
    code, out, _err = host.verify()
    assert code == 1 and out["witness"]["first_bad_seq"] == 10
    assert [m["kind"] for m in out["witness"]["mismatches"]] == ["rewritten"]
    assert "after seq 5" in out["witness"]["mismatches"][0]["why"]


def test_replacing_the_file_with_an_older_copy_is_found(witnessed: Callable[..., WitnessedHost]) -> None:
    """An older copy of audit.jsonl put back: the trail is behind the witness from the seq after its end."""
    host = witnessed()
    host.record(3)
    host.wait_witnessed(3)
    shutil.copy(host.log, host.root / "old-copy")
    host.record(4)
    host.wait_witnessed(7)
    host.stop()
    shutil.copy(host.root / "old-copy", host.log)
    code, out, _ = host.verify()
    assert code == 1 and out["ok"] is False
    assert [(m["kind"], m["seq"]) for m in out["witness"]["mismatches"]] == [("behind", 4)]


def test_deleting_a_rotated_file_is_found(witnessed: Callable[..., WitnessedHost], openbao: Any) -> None:
    """The oldest rotated file deleted: its seqs are missing from seq 1; rotations were witnessed too."""
    host = witnessed(max_bytes=4096)
    _rotate_witnessed(host)
    host.stop()
    assert any(h["reason"] == "rotation" for h in _kv_heads(openbao, host.host))
    files = chain_files(host.log)
    assert len(files) >= 3
    files[0].unlink()
    code, out, _ = host.verify()
    assert code == 1 and out["witness"]["first_bad_seq"] == 1
    assert {m["kind"] for m in out["witness"]["mismatches"]} == {"missing"}


def test_restart_after_the_oldest_rotated_file_was_deleted_records_the_mismatch(
        witnessed: Callable[..., WitnessedHost]) -> None:
    """A restart on an intact rotated trail records nothing; after the oldest file is deleted, the start check
    (the last head's trail_first_seq) records audit.witness_mismatch naming the seqs that are gone."""
    host = witnessed(max_bytes=4096)
    _rotate_witnessed(host)
    host.stop()
    host.start()  # intact: the start check runs before the start head is written
    host.record(1)
    host.pump()
    host.wait_witnessed(host.head())
    assert not any(r["kind"] == "audit.witness_mismatch" for r in host.records())
    host.stop()
    files = chain_files(host.log)
    assert len(files) >= 3
    gone_through = json.loads(files[1].read_bytes().splitlines()[0])["seq"] - 1
    files[0].unlink()
    host.start()
    record = _await_mismatch(host)
    assert f"seq 1..{gone_through} are gone" in record["detail"]["reason"]


def test_an_edited_record_is_found(witnessed: Callable[..., WitnessedHost]) -> None:
    """One record's content edited in place: the chain breaks at it; the command fails."""
    host = witnessed()
    host.record(6)
    host.wait_witnessed(6)
    host.stop()
    lines = host.log.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"note":"r2"', b'"note":"r9"')
    host.log.write_bytes(b"".join(lines))
    code, out, _ = host.verify()
    assert code == 1 and out["broken"]["seq"] == 3 and "edited" in out["broken"]["why"]


def test_restart_on_a_rewritten_trail_records_the_mismatch(witnessed: Callable[..., WitnessedHost]) -> None:
    """At start the witness finds the trail behind its last head and writes audit.witness_mismatch."""
    host = witnessed()
    host.record(6)
    host.wait_witnessed(6)
    host.stop()
    lines = host.log.read_bytes().splitlines(keepends=True)
    host.log.write_bytes(b"".join(lines[:3]))
    host.start()
    record = _await_mismatch(host)
    assert record["detail"]["witnessed_seq"] == 6 and record["detail"]["local_seq"] == 3
    assert "ends at seq 3" in record["detail"]["reason"]


def test_heads_missed_in_an_outage_are_written_on_recovery(
        openbao_raft_factory: Callable[[], OpenBaoRaft], tmp_path: Path) -> None:
    """Vault down: heads fail; back up: the current head is written, an audit.witness_gap record says
    since when, and the untouched trail verifies against the witness."""
    bao = openbao_raft_factory()
    host = WitnessedHost(tmp_path, bao.address, bao.token)
    host.start()
    try:
        host.record(3)
        host.wait_witnessed(3)
        bao.stop()
        host.record(4)
        assert host.ctx is not None
        deadline = time.monotonic() + 20
        while host.ctx.metrics.audit_witness_writes.labels("error")._value.get() < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        bao.start()
        host.wait_witnessed(7, timeout=60)
        host.pump()
        gaps = [r for r in host.records() if r["kind"] == "audit.witness_gap"]
        assert len(gaps) == 1 and gaps[0]["detail"]["heads_not_written"] >= 1 and gaps[0]["detail"]["since"]
        host.wait_witnessed(8)  # the gap record is itself witnessed
    finally:
        host.stop()
    code, out, _ = host.verify()
    assert code == 0 and out["witness"]["ok"], out
    assert [h for h in out["witness"]["mismatches"]] == []


def test_what_an_outage_left_unwitnessed_at_a_stop_is_written_after_the_restart(
        openbao_raft_factory: Callable[[], OpenBaoRaft], tmp_path: Path) -> None:
    """Vault down, the trail rotates (several times), the daemon stops: started again with Vault back, it witnesses
    each rotated file's last head (under the file's name by then), one audit.witness_gap record spans the
    restart, and the trail verifies against the witness."""
    bao = openbao_raft_factory()
    host = WitnessedHost(tmp_path, bao.address, bao.token, max_bytes=4096)
    host.start()
    try:
        host.record(3)
        host.wait_witnessed(3)
        bao.stop()
        host.record(25)  # ~680 bytes each: four rotations while Vault is down
        host.pump()
        deadline = time.monotonic() + 20
        while host._parts[1].status()["rotations_pending"] < 2 or not host._parts[1].status()["failing_since"]:
            assert time.monotonic() < deadline, host._parts[1].status()
            time.sleep(0.1)
        since = host._parts[1].status()["failing_since"]
        rotated = {first_seq(f): f.name for f in chain_files(host.log)[:-1]}
    finally:
        host.stop()
    bao.start()
    host.start()
    try:
        host.wait_witnessed(host.head(), timeout=60)
        host.pump()
        gaps = [r for r in host.records() if r["kind"] == "audit.witness_gap"]
        assert [g["detail"]["since"] for g in gaps] == [since]
        host.wait_witnessed(host.head())  # the gap record is itself witnessed
        assert host._parts[1].status()["rotations_pending"] == 0
    finally:
        host.stop()
    heads = _kv_heads(bao, host.host)
    witnessed_files = {h["file_first_seq"]: h["file"] for h in heads if h["file"] != "audit.jsonl"}
    assert len(rotated) >= 2 and {k: v for k, v in witnessed_files.items() if k in rotated} == rotated
    code, out, _ = host.verify()
    assert code == 0 and out["witness"]["ok"], out


def test_shipped_policy_writes_heads_but_cannot_erase_them(openbao: Any, tmp_path: Path) -> None:
    """With the shipped policy the host writes its heads and verifies them, and cannot delete versions or
    change the key's metadata."""
    client = openbao.client()
    client.sys.create_or_update_policy("regwarden-witness-test", shipped_path("vault-policy").read_text())
    token = client.auth.token.create(policies=["regwarden-witness-test"], ttl="10m")["auth"]["client_token"]
    host = WitnessedHost(tmp_path, openbao.address, token)
    host.start()
    try:
        host.record(2)
        host.wait_witnessed(2)
    finally:
        host.stop()
    assert host.verify()[0] == 0
    import hvac

    limited = hvac.Client(url=openbao.address, token=token)
    path = f"regwarden/audit-heads/{host.host}"
    with pytest.raises(hvac.exceptions.Forbidden):
        limited.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point="secret")
    with pytest.raises(hvac.exceptions.Forbidden):
        limited.secrets.kv.v2.destroy_secret_versions(path=path, versions=[1], mount_point="secret")
    with pytest.raises(hvac.exceptions.Forbidden):
        limited.secrets.kv.v2.update_metadata(path=path, max_versions=1, mount_point="secret")
