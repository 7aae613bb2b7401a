"""`compare`: a local trail (real files written by AuditWriter) against witnessed chain heads."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest

from regwarden.audit.chain import AuditWriter, ChainHead, RotatedFile, chain_files, chain_index, verify
from regwarden.audit.witness import Witnessed, WitnessHead, compare, head_location, local_hash_at


def _write(path: Path, count: int, *, max_bytes: int = 256 * 1024 * 1024, note: str = "r") -> ChainHead:
    writer = AuditWriter(path, max_bytes=max_bytes, fsync_interval=0)
    try:
        for i in range(count):
            writer.append({"kind": "test", "note": f"{note}{i}", "pad": "x" * 100})
        return writer.head
    finally:
        writer.close()


def _head(head: ChainHead, version: int, *, trail_first: int = 1) -> Witnessed:
    return Witnessed(version, f"2026-12-06T00:{version:02d}:00.000000Z",
                     WitnessHead(head.seq, head.hash, "audit.jsonl", 1, trail_first, "t", "interval", "h1"))


def _report(path: Path, heads: list[Witnessed]):  # type: ignore[no-untyped-def]
    files = chain_files(path)
    return compare(chain_index(files, [w.head.seq for w in heads if w.head]), heads)


def _truncate_to(path: Path, seq: int) -> None:
    lines = [line for line in path.read_bytes().splitlines(keepends=True) if json.loads(line)["seq"] <= seq]
    path.write_bytes(b"".join(lines))


def test_untouched_trail_matches_every_head(tmp_path: Path) -> None:
    """A trail that only grew since its heads were witnessed matches them all."""
    log = tmp_path / "audit.jsonl"
    first = _write(log, 10)
    second = _write(log, 10)
    _write(log, 3)  # written after the last head: not witnessed yet, not a mismatch
    report = _report(log, [_head(first, 1), _head(second, 2)])
    assert report.ok and report.heads == 2 and report.matched_through == 20 and not report.mismatches


def test_no_heads_is_not_a_confirmation(tmp_path: Path) -> None:
    """A trail with nothing witnessed is not reported as ok."""
    log = tmp_path / "audit.jsonl"
    _write(log, 3)
    report = _report(log, [])
    assert not report.ok and report.heads == 0 and report.first_bad_seq is None


def test_truncated_and_rechained_trail_is_rewritten_from_the_last_matching_head(tmp_path: Path) -> None:
    """Truncate to seq 12 and re-chain new records: the head at seq 20 no longer matches, the one at 10 does."""
    log = tmp_path / "audit.jsonl"
    h10 = _write(log, 10)
    h20 = _write(log, 10)
    _truncate_to(log, 12)
    _write(log, 15, note="forged")
    assert verify([log]).ok  # the chain alone cannot tell
    report = _report(log, [_head(h10, 1), _head(h20, 2)])
    assert not report.ok and report.matched_through == 10
    [m] = report.mismatches
    assert m.kind == "rewritten" and m.seq == 20 and "after seq 10" in m.why and m.version == 2


def test_truncated_trail_is_behind_the_witness(tmp_path: Path) -> None:
    """Records cut from the end: the first seq that no longer matches is the one after the trail's end."""
    log = tmp_path / "audit.jsonl"
    h20 = _write(log, 20)
    _truncate_to(log, 14)
    [m] = _report(log, [_head(h20, 1)]).mismatches
    assert m.kind == "behind" and m.seq == 15 and "ends at seq 14" in m.why


def test_older_copy_of_the_file_is_behind_the_witness(tmp_path: Path) -> None:
    """The whole file replaced with a copy from before the last head: reported as behind."""
    log = tmp_path / "audit.jsonl"
    h5 = _write(log, 5)
    shutil.copy(log, tmp_path / "old")
    h9 = _write(log, 4)
    shutil.copy(tmp_path / "old", log)
    report = _report(log, [_head(h5, 1), _head(h9, 2)])
    assert [(m.kind, m.seq) for m in report.mismatches] == [("behind", 6)] and report.matched_through == 5


def test_deleted_oldest_rotated_file_is_missing_from_the_witnessed_first_seq(tmp_path: Path) -> None:
    """With the oldest rotated file gone, the seqs it held are reported missing from seq 1."""
    log = tmp_path / "audit.jsonl"
    head = _write(log, 40, max_bytes=2048)
    files = chain_files(log)
    assert len(files) >= 3
    early = chain_index([files[0]], [])
    files[0].unlink()
    report = _report(log, [_head(head, 1)])
    [m] = report.mismatches
    assert m.kind == "missing" and m.seq == 1 and f"seq 1..{early.files[0].last_seq} are gone" in m.why


def test_deleted_middle_rotated_file_is_the_seq_gap(tmp_path: Path) -> None:
    """A witnessed seq inside a deleted middle file names the run of seqs no file holds."""
    log = tmp_path / "audit.jsonl"
    head = _write(log, 40, max_bytes=2048)
    middle = chain_files(log)[1]
    span = chain_index([middle], []).files[0]
    assert span.first_seq is not None and span.last_seq is not None
    witnessed = ChainHead(span.first_seq, chain_index([middle], [span.first_seq]).hashes[span.first_seq])
    middle.unlink()
    [m] = _report(log, [_head(witnessed, 1), _head(head, 2)]).mismatches
    assert m.kind == "missing" and m.seq == span.first_seq and f"{span.first_seq}..{span.last_seq}" in m.why


def test_edited_record_with_the_rest_rechained_is_rewritten(tmp_path: Path) -> None:
    """One record edited and everything after it re-chained (so verify passes): the witness finds it."""
    log = tmp_path / "audit.jsonl"
    h5 = _write(log, 5)
    h10 = _write(log, 5)
    records = [json.loads(line) for line in log.read_bytes().splitlines()]
    _truncate_to(log, 6)
    writer = AuditWriter(log, fsync_interval=0)
    for record in records[6:]:
        body = {k: v for k, v in record.items() if k not in ("seq", "prev", "hash")}
        writer.append({**body, "note": "edited"} if record["seq"] == 7 else body)
    writer.close()
    assert verify([log]).ok
    [m] = _report(log, [_head(h5, 1), _head(h10, 2)]).mismatches
    assert m.kind == "rewritten" and m.seq == 10 and "after seq 5" in m.why


def test_malformed_and_deleted_versions_are_problems_not_heads(tmp_path: Path) -> None:
    """Versions that hold no head are listed as problems and do not count as heads."""
    log = tmp_path / "audit.jsonl"
    head = _write(log, 3)
    report = _report(log, [_head(head, 1), Witnessed(2, "t", None, "not a chain head: field 'hash' is bad")])
    assert report.ok and report.heads == 1 and report.problems == ("version 2: not a chain head: field 'hash' is bad",)


@pytest.mark.parametrize(("data", "error"), [
    ({"seq": 1, "hash": "xyz"}, "hash"),
    ({"seq": -1, "hash": "a" * 64, "file_first_seq": 1, "trail_first_seq": 1}, "seq"),
    ({"seq": True, "hash": "a" * 64, "file_first_seq": 1, "trail_first_seq": 1}, "seq"),
    ({"seq": 1, "hash": "a" * 64, "trail_first_seq": 1}, "file_first_seq"),
])
def test_head_from_malformed_vault_data_names_the_field(data: dict[str, object], error: str) -> None:
    """A KV version that is not a head is refused with the field that is wrong."""
    with pytest.raises(ValueError, match=error):
        WitnessHead.from_data(data)


def test_head_round_trips_through_vault_data() -> None:
    """What the daemon writes is what the verifier reads (KV data may carry numbers as strings)."""
    head = WitnessHead(7, "b" * 64, "audit.jsonl", 3, 1, "2026-12-06T00:00:00Z", "rotation", "h1")
    assert WitnessHead.from_data(head.data()) == head
    assert WitnessHead.from_data({**head.data(), "seq": "7"}) == head


@pytest.mark.parametrize("host", ["a/b", "", "..x/y", "h 1"])
def test_host_names_that_cannot_be_one_key_are_refused(host: str) -> None:
    """The heads key is witness_path/<host>: a host name with a slash or space is refused."""
    with pytest.raises(ValueError, match="cannot name a Vault key"):
        head_location("secret/regwarden/audit-heads", host)


def test_head_location_splits_the_mount() -> None:
    """witness_path's first segment is the KV v2 mount."""
    assert head_location("secret/regwarden/audit-heads", "web-1.example") == \
        ("secret", "regwarden/audit-heads/web-1.example")


def test_writer_reports_each_rotation_with_the_closed_files_span(tmp_path: Path) -> None:
    """on_rotate gets the first seq and last head of each file as it is closed."""
    log = tmp_path / "audit.jsonl"
    writer = AuditWriter(log, max_bytes=1024, fsync_interval=0)
    rotated: list[RotatedFile] = []
    writer.on_rotate = rotated.append
    for i in range(30):
        writer.append({"kind": "test", "note": f"r{i}", "pad": "x" * 100})
    writer.close()
    assert len(rotated) >= 2
    assert rotated[0].first_seq == 1
    for before, after in itertools.pairwise(rotated):
        assert after.first_seq == before.last.seq + 1
    oldest = chain_files(log)[0]
    span = chain_index([oldest], []).files[0]
    assert (span.first_seq, span.last_seq) == (rotated[0].first_seq, rotated[0].last.seq)
    assert local_hash_at(log, rotated[0].last.seq) == rotated[0].last.hash
