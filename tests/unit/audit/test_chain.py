"""The hash-chained writer and its verifier: every edit, deletion and reordering is found and named."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regwarden import redact
from regwarden.audit.chain import GENESIS, AuditWriter, chain_files, verify
from regwarden.errors import AuditError
from regwarden.events import Actor, Event, Target


def record(i: int, **extra: Any) -> dict[str, Any]:
    return {"time": "2026-11-27T07:09:50.000000Z", "source": "regwarden", "host": "h1", "kind": "test.event",
            "actor": {"user": f"u{i}"}, "target": {}, "outcome": "success", "status": None,
            "request_id": None, "detail": {"i": i, **extra}}


def write(path: Path, n: int, *, key: bytes | None = None, max_bytes: int = 1 << 30) -> None:
    writer = AuditWriter(path, key=key, max_bytes=max_bytes, fsync_interval=0.05)
    for i in range(n):
        writer.append(record(i))
    writer.close()


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


# --------------------------------------------------------------------------- format


def test_each_line_is_json_with_seq_prev_and_hash(log: Path) -> None:
    """Every line is one JSON object carrying the record, seq, prev and hash."""
    write(log, 3)
    parsed = [json.loads(line) for line in lines_of(log)]
    assert [p["seq"] for p in parsed] == [1, 2, 3]
    assert parsed[0]["prev"] == GENESIS
    assert parsed[1]["prev"] == parsed[0]["hash"] and parsed[2]["prev"] == parsed[1]["hash"]
    assert parsed[2]["detail"] == {"i": 2} and parsed[2]["kind"] == "test.event"


def test_hash_is_sha256_of_canonical_json_without_hash(log: Path) -> None:
    """hash = SHA-256 over the canonical JSON (seq, prev, then sorted keys, compact) without `hash`."""
    write(log, 2)
    for line in lines_of(log):
        obj = json.loads(line)
        stated = obj.pop("hash")
        head = {"seq": obj.pop("seq"), "prev": obj.pop("prev")}
        canonical = (json.dumps(head, separators=(",", ":"))[:-1] + ","
                     + json.dumps(obj, sort_keys=True, separators=(",", ":"))[1:])
        assert hashlib.sha256(canonical.encode()).hexdigest() == stated


def test_hmac_chain_verifies_only_with_the_key(log: Path) -> None:
    """With a key the hash is an HMAC: verify passes with the key and fails without it."""
    write(log, 5, key=b"k" * 32)
    assert verify([log], key=b"k" * 32).ok
    result = verify([log])
    assert not result.ok and result.broken is not None
    assert result.broken.line == 1 and "HMAC" in result.broken.why


def test_file_is_private(log: Path) -> None:
    """The audit log is created 0600 (and an existing one is made 0600)."""
    log.touch(mode=0o644)
    os.chmod(log, 0o644)
    write(log, 1)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_secrets_are_scrubbed_before_writing(log: Path) -> None:
    """A registered secret and a secret-named key never reach the file."""
    redact.register("hunter2-super-secret")
    writer = AuditWriter(log, fsync_interval=0)
    writer.append(record(1, msg="login with hunter2-super-secret", password="pw-value-123"))
    writer.close()
    text = log.read_text()
    assert "hunter2-super-secret" not in text and "pw-value-123" not in text
    assert verify([log]).ok


def test_reserved_keys_are_refused(log: Path) -> None:
    """A record that carries seq, prev or hash itself is refused."""
    writer = AuditWriter(log)
    with pytest.raises(ValueError, match="seq"):
        writer.append({"seq": 5})
    writer.close()


def test_unopenable_path_fails_at_construction(tmp_path: Path) -> None:
    """A path that cannot be opened fails when the writer is built, naming the path."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(AuditError, match="cannot open audit log"):
        AuditWriter(tmp_path / "file" / "audit.jsonl")


# --------------------------------------------------------------------------- resume and rotation


def test_resume_continues_the_chain(log: Path) -> None:
    """A new writer on an existing file continues seq and prev from its last record."""
    write(log, 3)
    write(log, 2)
    result = verify([log])
    assert result.ok and result.records == 5 and result.last_seq == 5


def test_resume_reads_only_the_tail(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resuming a large file reads a bounded tail, not the whole file."""
    write(log, 3000)
    size = log.stat().st_size
    read_sizes: list[int] = []
    real_open = Path.open

    def spy_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        real_read = handle.read

        def read(n: int = -1) -> Any:
            data = real_read(n)
            read_sizes.append(len(data))
            return data

        handle.read = read
        return handle

    monkeypatch.setattr(Path, "open", spy_open)
    writer = AuditWriter(log)
    writer.close()
    assert writer.head.seq == 3000
    assert sum(read_sizes) < size / 4


def test_torn_last_line_is_cut_on_start(log: Path) -> None:
    """An incomplete last line (crash mid-write) is cut and the chain continues after the last whole record."""
    write(log, 3)
    with log.open("ab") as f:
        f.write(b'{"seq":4,"prev":"abc')
    write(log, 1)
    result = verify([log])
    assert result.ok and result.records == 4


def test_torn_record_bytes_are_counted(log: Path) -> None:
    """The writer says how many bytes of an incomplete record it cut."""
    write(log, 2)
    with log.open("ab") as f:
        f.write(b'{"seq":3,"prev":"abc')
    writer = AuditWriter(log)
    writer.close()
    assert writer.torn_bytes == len(b'{"seq":3,"prev":"abc')


def test_foreign_unterminated_tail_is_kept_and_named(log: Path) -> None:
    """An unterminated last line that is not a chain record is kept (ended with a newline), the chain
    continues after the last valid record, and verify names the foreign line."""
    write(log, 3)
    with log.open("ab") as f:
        f.write(b"someone was here")
    write(log, 1)
    lines = lines_of(log)
    assert lines[3] == b"someone was here\n"
    assert json.loads(lines[4])["seq"] == 4
    broken = verify([log]).broken
    assert broken is not None and (broken.line, broken.why) == (4, "not a chain record (edited)")


def test_verify_reports_a_torn_line(log: Path) -> None:
    """verify names an incomplete last line."""
    write(log, 2)
    with log.open("ab") as f:
        f.write(b'{"seq":3,"prev":"abc')
    result = verify([log])
    assert result.broken is not None and (result.broken.line, result.broken.seq) == (3, 3)
    assert result.broken.why.startswith("incomplete line")


def test_rotation_continues_the_chain_across_files(log: Path) -> None:
    """Size-based rotation moves the log to .1, .2, ... and the chain continues across the files."""
    write(log, 200, max_bytes=8192)
    files = chain_files(log)
    assert len(files) >= 3
    assert files[-1] == log and files[-2].name == "audit.jsonl.1" and files[0].name == f"audit.jsonl.{len(files) - 1}"
    assert all(f.stat().st_size <= 8192 for f in files)
    first_of_current = json.loads(lines_of(log)[0])
    last_of_previous = json.loads(lines_of(files[-2])[-1])
    assert first_of_current["prev"] == last_of_previous["hash"]
    result = verify(files)
    assert result.ok and result.records == 200 and result.from_genesis


def test_resume_after_rotation_uses_the_rotated_file(log: Path) -> None:
    """When the current file is empty, the writer resumes from the newest rotated file."""
    write(log, 50, max_bytes=4096)
    log.write_bytes(b"")
    write(log, 1)
    assert verify(chain_files(log)).ok


def test_verify_without_the_oldest_files_is_anchored_mid_chain(log: Path) -> None:
    """Verifying from a later file checks the chain from there on and says it does not start at genesis."""
    write(log, 100, max_bytes=4096)
    result = verify(chain_files(log)[1:])
    assert result.ok and not result.from_genesis and result.first_seq is not None and result.first_seq > 1


def test_concurrent_appends_keep_one_chain(log: Path) -> None:
    """Appends from several threads produce one unbroken chain."""
    writer = AuditWriter(log, fsync_interval=0.01)

    def work(t: int) -> None:
        for i in range(300):
            writer.append(record(i, thread=t))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    result = verify([log])
    assert result.ok and result.records == 1200


def test_flush_thread_makes_records_durable(log: Path) -> None:
    """Within the fsync interval, appended records reach the file without an explicit flush."""
    writer = AuditWriter(log, fsync_interval=0.02)
    writer.append(record(1))
    deadline = threading.Event()
    for _ in range(200):
        if log.stat().st_size > 0:
            break
        deadline.wait(0.01)
    size = log.stat().st_size
    writer.close()
    assert size > 0


def test_write_through_hands_each_append_to_the_os(log: Path) -> None:
    """After write_through, each append is in the file when it returns."""
    writer = AuditWriter(log, fsync_interval=10)
    writer.write_through()
    writer.append(record(1))
    assert len(lines_of(log)) == 1
    writer.close()


# --------------------------------------------------------------------------- verify: tampering


def tamper(path: Path, change: Any) -> None:
    lines = lines_of(path)
    change(lines)
    path.write_bytes(b"".join(lines))


def test_verify_passes_a_clean_chain(log: Path) -> None:
    """An untouched chain verifies, with record count, last seq and last hash."""
    write(log, 20_000)
    result = verify([log])
    assert result.ok and result.records == 20_000 and result.last_seq == 20_000
    assert result.last_hash == json.loads(lines_of(log)[-1])["hash"]


def test_verify_names_an_edited_line(log: Path) -> None:
    """A record whose content was changed is named as edited."""
    write(log, 10)
    tamper(log, lambda lines: lines.__setitem__(4, lines[4].replace(b'"u4"', b'"mallory"')))
    result = verify([log])
    assert result.broken is not None
    assert (result.broken.file, result.broken.line, result.broken.seq) == (str(log), 5, 5)
    assert result.broken.why.startswith("edited") and result.records == 4


def test_verify_names_a_deleted_line(log: Path) -> None:
    """A deleted record is named as a seq gap at the record after it."""
    write(log, 10)
    tamper(log, lambda lines: lines.pop(6))
    result = verify([log])
    assert result.broken is not None and (result.broken.line, result.broken.seq) == (7, 8)
    assert result.broken.why == "deleted: seq 7 missing (seq gap)"


def test_verify_names_several_deleted_lines(log: Path) -> None:
    """A deleted run of records is named with the missing range."""
    write(log, 10)
    tamper(log, lambda lines: lines.__delitem__(slice(2, 5)))
    result = verify([log])
    assert result.broken is not None and result.broken.why == "deleted: seq 3..5 missing (seq gap)"


def test_verify_names_swapped_lines(log: Path) -> None:
    """Two swapped records are named as reordered."""
    write(log, 10)

    def swap(lines: list[bytes]) -> None:
        lines[3], lines[4] = lines[4], lines[3]

    tamper(log, swap)
    result = verify([log])
    assert result.broken is not None and (result.broken.line, result.broken.seq) == (4, 5)
    assert result.broken.why == "reordered: seq 5 comes before seq 4"


def test_verify_names_a_moved_back_line(log: Path) -> None:
    """A record moved after later ones is named as reordered."""
    write(log, 10)
    tamper(log, lambda lines: lines.append(lines.pop(2)))
    result = verify([log])
    assert result.broken is not None and result.broken.why.startswith(("reordered", "deleted"))
    assert result.broken.line == 3


def test_verify_names_a_rewritten_record_by_its_successor(log: Path) -> None:
    """A record replaced with a recomputed hash breaks the next record's prev."""
    write(log, 5)

    def rewrite(lines: list[bytes]) -> None:
        obj = json.loads(lines[1])
        obj.pop("hash")
        head = {"seq": obj.pop("seq"), "prev": obj.pop("prev")}
        obj["actor"]["user"] = "mallory"
        body = (json.dumps(head, separators=(",", ":"))[:-1] + ","
                + json.dumps(obj, sort_keys=True, separators=(",", ":"))[1:])
        digest = hashlib.sha256(body.encode()).hexdigest()
        lines[1] = (body[:-1] + f',"hash":"{digest}"}}\n').encode()

    tamper(log, rewrite)
    result = verify([log])
    assert result.broken is not None and (result.broken.line, result.broken.seq) == (3, 3)
    assert result.broken.why.startswith("bad prev")


def test_verify_names_garbage_and_a_deleted_file(log: Path) -> None:
    """A line that is not a chain record is named; a missing rotated file shows as a seq gap."""
    write(log, 100, max_bytes=4096)
    files = chain_files(log)
    assert not verify([files[0], *files[2:]]).ok
    broken = verify([files[0], *files[2:]]).broken
    assert broken is not None and broken.why.startswith("deleted") and broken.file == str(files[2])
    tamper(log, lambda lines: lines.insert(1, b"hello\n"))
    broken = verify(files).broken
    assert broken is not None and broken.why == "not a chain record (edited)"


@pytest.mark.skipif(os.environ.get("REGWARDEN_SLOW_TESTS") != "1",
                    reason="1,000,000 records take ~40 s to write; set REGWARDEN_SLOW_TESTS=1 (bench_audit.py runs it)")
def test_verify_passes_a_clean_million_record_file(log: Path) -> None:
    """A clean 1,000,000-record chain verifies."""
    write(log, 1_000_000)
    result = verify([log])
    assert result.ok and result.records == 1_000_000


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**70),
                       st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
_json = st.recursive(_json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                     max_leaves=12)


@given(st.lists(st.dictionaries(st.text(max_size=10).filter(lambda k: k not in ("seq", "prev", "hash")), _json,
                                max_size=5), min_size=1, max_size=5))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_json_records_round_trip_and_verify(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    """Arbitrary JSON records (any unicode, nesting) are written, read back unchanged and verify."""
    log = tmp_path / f"rt-{uuid.uuid4().hex}.jsonl"
    writer = AuditWriter(log, fsync_interval=0)
    for item in records:
        writer.append(item)
    writer.close()
    back = [json.loads(line) for line in lines_of(log)]
    for item, got in zip(records, back, strict=True):
        assert {k: v for k, v in got.items() if k not in ("seq", "prev", "hash")} == redact.scrub(item)
    assert verify([log]).ok


# --------------------------------------------------------------------------- batches of Events (the bus path)


def events(n: int, **detail: Any) -> list[Event]:
    at = datetime(2026, 11, 27, 7, 9, 50, 123456, tzinfo=UTC)
    return [Event(source="registry-log", kind="image.pull", time=at, observed=at, host="h1",
                  actor=Actor(user=f"u{i}", addr="10.0.0.1"), target=Target(registry="r", repository="team/app"),
                  outcome="success", status=200, detail={"i": i, **detail}) for i in range(n)]


def test_append_events_writes_what_append_writes(tmp_path: Path) -> None:
    """A batch of Events gives the same bytes as appending their records one by one."""
    batch = events(5)
    one, many = tmp_path / "one.jsonl", tmp_path / "many.jsonl"
    writer = AuditWriter(one, fsync_interval=0)
    for event in batch:
        writer.append(event.record())
    writer.close()
    writer = AuditWriter(many, fsync_interval=0)
    assert writer.append_events(batch) == 5
    writer.close()
    assert one.read_bytes() == many.read_bytes()
    assert verify([many]).ok


def test_append_events_scrubs_only_the_records_holding_a_secret(log: Path) -> None:
    """A registered secret in one record of a batch is replaced there; the others are written as they are."""
    redact.register("batch-secret-value-42")
    batch = events(3)
    batch[1] = batch[1].replace(detail={"msg": "token batch-secret-value-42 used"})
    writer = AuditWriter(log, fsync_interval=0)
    writer.append_events(batch)
    writer.close()
    parsed = [json.loads(line) for line in lines_of(log)]
    assert "batch-secret-value-42" not in log.read_text()
    assert parsed[1]["detail"]["msg"] == f"token {redact.REDACTED} used"
    assert parsed[0]["detail"] == {"i": 0} and parsed[2]["detail"] == {"i": 2}
    assert verify([log]).ok


@pytest.mark.parametrize("secret", ['quo"te-secret-1', "ümlaut-sécret-2", "back\\slash-secret-3", "tab\tsecret-4"])
def test_a_secret_that_json_escapes_is_found_too(log: Path, secret: str) -> None:
    """A secret with characters JSON escapes (quotes, backslashes, control or non-ASCII characters) is
    still recognised in the serialised record, by append and by append_events."""
    redact.register(secret)
    writer = AuditWriter(log, fsync_interval=0)
    writer.append(record(1, msg=f"x {secret} y"))
    writer.append_events(events(1, msg=f"x {secret} y"))
    writer.close()
    for line in lines_of(log):
        assert json.loads(line)["detail"]["msg"] == f"x {redact.REDACTED} y"
    assert verify([log]).ok


def test_records_are_written_in_ascii(log: Path) -> None:
    """Non-ASCII text is escaped (the file is ASCII), and reads back unchanged."""
    writer = AuditWriter(log, fsync_interval=0)
    writer.append_events(events(1, msg="Grüße ☃"))
    writer.close()
    raw = log.read_bytes()
    assert raw.isascii() and b"\\u00fc" in raw
    assert json.loads(raw)["detail"]["msg"] == "Grüße ☃"


def test_a_failed_batch_says_how_many_records_were_not_written(log: Path) -> None:
    """An append_events that cannot write raises AuditError with the count it did not take."""
    writer = AuditWriter(log, fsync_interval=0)
    writer.close()
    with pytest.raises(AuditError, match="closed") as caught:
        writer.append_events(events(4))
    assert caught.value.not_written == 4


def test_when_durable_runs_after_the_fsync_that_covers_the_records(log: Path) -> None:
    """Nothing pending: at once. Records written but not fsynced: at the next flush, in order."""
    ran: list[str] = []
    writer = AuditWriter(log, fsync_interval=3600)
    writer.when_durable(lambda: ran.append("empty"))
    writer.append_events(events(2))
    writer.when_durable(lambda: ran.append("two"))
    writer.append_events(events(1))
    writer.when_durable(lambda: ran.append("three"))
    assert ran == ["empty"]
    writer.flush()
    assert ran == ["empty", "two", "three"]
    writer.close()


def test_when_durable_soon_fsyncs_without_waiting_for_the_interval(log: Path) -> None:
    """Someone waiting (`soon=True`) gets the fsync now, and the earlier waiters with it; records on
    disk when the callback runs."""
    writer = AuditWriter(log, fsync_interval=3600)
    writer.append_events(events(2))
    patient, waiting = threading.Event(), threading.Event()
    writer.when_durable(patient.set)
    assert not patient.wait(0.3)  # the interval is an hour
    writer.append_events(events(1))
    writer.when_durable(lambda: waiting.set() if len(lines_of(log)) == 3 else None, soon=True)
    assert waiting.wait(10) and patient.is_set()
    writer.close()


def test_when_durable_with_fsync_on_every_append(log: Path) -> None:
    ran: list[int] = []
    writer = AuditWriter(log, fsync_interval=0)
    writer.append_events(events(1))
    writer.when_durable(lambda: ran.append(writer.head.seq))
    assert ran == [1]
    writer.close()


def test_a_record_with_keys_json_cannot_express_is_still_written(log: Path) -> None:
    """Keys that are not strings (an integer, a tuple) are written as strings; the record is not lost."""
    writer = AuditWriter(log, fsync_interval=0)
    writer.append_events([events(1)[0].replace(detail={"by_port": {(1, 2): "x", 5000: "y"}})])
    writer.close()
    assert json.loads(lines_of(log)[0])["detail"]["by_port"] == {"(1, 2)": "x", "5000": "y"}
    assert verify([log]).ok
