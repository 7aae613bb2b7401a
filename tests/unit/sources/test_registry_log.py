"""The registry log tailer: its pure decisions (table tests) and the tailer on plain temp files."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from regwarden.sources.registry_log import (
    FileState,
    LineSplitter,
    RegistryLogSource,
    Resume,
    Rotation,
    detect_rotation,
    plan_resume,
    tail_digest,
)
from tests.sources_support import Collected

# --------------------------------------------------------------------------- pure decisions


@pytest.mark.parametrize(("inode", "offset", "tail", "at_path", "expected"), [
    (7, 100, b"xy", FileState(7, 100, b"xy"), Rotation.NONE),
    (7, 100, b"xy", FileState(7, 180, b"xy"), Rotation.NONE),
    (7, 100, b"xy", None, Rotation.RENAMED),
    (7, 100, b"xy", FileState(8, 500, b"xy"), Rotation.RENAMED),
    (7, 100, b"xy", FileState(7, 40, b""), Rotation.TRUNCATED),
    (7, 100, b"xy", FileState(7, 300, b"zz"), Rotation.TRUNCATED),  # truncated, then grew past us
    (7, 0, b"", FileState(7, 0, b""), Rotation.NONE),
])
def test_detect_rotation(inode: int, offset: int, tail: bytes, at_path: FileState | None,
                         expected: Rotation) -> None:
    """A new inode at the path is a rename; a shorter or rewritten file is a copytruncate."""
    assert detect_rotation(inode=inode, offset=offset, tail=tail, at_path=at_path) is expected


@pytest.mark.parametrize(("cursor", "at_path", "rotated", "expected"), [
    (None, FileState(7, 100), None, Resume(0)),
    ({"inode": 7, "offset": 60}, FileState(7, 100), None, Resume(60)),
    ({"inode": 7, "offset": 60}, FileState(8, 100), FileState(7, 90), Resume(0, rotated_offset=60)),
    ({"inode": 7, "offset": 60}, FileState(8, 100), None, Resume(0, lost="rotated_file_missing")),
    ({"inode": 7, "offset": 60}, None, FileState(9, 90), Resume(0, lost="rotated_file_missing")),
    ({"inode": 7, "offset": 60}, FileState(7, 10), FileState(9, 90), Resume(0, rotated_offset=60)),
    ({"inode": 7, "offset": 60}, FileState(7, 10), None, Resume(0, lost="truncated_while_stopped")),
    # rewritten to at least the same size: the bytes before the offset tell
    ({"inode": 7, "offset": 60, "tail": tail_digest(b"old")}, FileState(7, 60, b"new"),
     FileState(9, 90, b"old"), Resume(0, rotated_offset=60)),
    ({"inode": 7, "offset": 60, "tail": tail_digest(b"old")}, FileState(7, 99, b"old"), None, Resume(60)),
])
def test_plan_resume(cursor: dict[str, int] | None, at_path: FileState | None, rotated: FileState | None,
                     expected: Resume) -> None:
    """Resume at the stored offset, finish a file rotated while stopped first, or say lines were lost."""
    assert plan_resume(cursor, at_path=at_path, rotated=rotated) == expected


def test_splitter_holds_a_partial_line_until_its_newline() -> None:
    """Only complete lines come out; `consumed` points just past each newline."""
    splitter = LineSplitter()
    assert list(splitter.feed(b"one\ntw")) == [(b"one", False, 4)]
    assert splitter.pending == 2
    assert list(splitter.feed(b"o\nthree\n")) == [(b"two", False, 2), (b"three", False, 8)]
    assert splitter.pending == 0


def test_splitter_cuts_an_overlong_line_and_skips_its_rest() -> None:
    """A line over max_line is emitted cut and flagged; its remainder is dropped; the next is intact."""
    splitter = LineSplitter(max_line=8)
    out = list(splitter.feed(b"abcdefghijkl"))
    assert out == [(b"abcdefgh", True, 12)]
    assert splitter.pending == 0
    assert list(splitter.feed(b"mnop\nok\n")) == [(b"ok", False, 8)]


def test_splitter_flush_returns_the_unterminated_last_line() -> None:
    """When a file is finished, its last line without newline still counts."""
    splitter = LineSplitter()
    assert list(splitter.feed(b"a\nb")) == [(b"a", False, 2)]
    assert splitter.flush() == b"b"
    assert splitter.flush() is None


# --------------------------------------------------------------------------- the tailer on temp files


def line(n: int) -> bytes:
    return f'127.0.0.1 - - [27/Nov/2026:07:09:50 +0000] "GET /v2/r/manifests/t{n} HTTP/1.1" 200 2 "" "ua"\n'.encode()


def numbers(collected: Collected) -> list[int]:
    return [int(str(e.detail["uri"]).rsplit("t", 1)[1]) for e in collected.of("registry-log", "image.pull")]


@contextlib.contextmanager
def tailer(collected: Collected, path: Path, **kwargs: float) -> Iterator[RegistryLogSource]:
    source = RegistryLogSource(path, "internal", poll_interval=0.01, **kwargs)  # type: ignore[arg-type]
    source.start(collected.ctx)
    try:
        yield source
    finally:
        source.stop()
        collected.ctx.bus.flush(5.0)  # the cursor is stored by a bus checkpoint after the last batch


def wait_count(collected: Collected, count: int) -> None:
    collected.wait(f"{count} lines", lambda: len(numbers(collected)) >= count)


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def test_partial_line_is_emitted_once_complete(collected: Collected, tmp_path: Path) -> None:
    """A line written in two pieces becomes one event, after its newline arrives."""
    path = tmp_path / "registry.log"
    raw = line(1)
    append(path, raw[:20])
    with tailer(collected, path) as source:
        collected.wait("tailer to open", lambda: source.status()["cursor"] is not None)
        append(path, raw[20:] + line(2))
        wait_count(collected, 2)
    assert numbers(collected) == [1, 2]


def test_rename_rotation_finishes_the_old_file_then_reads_the_new(collected: Collected, tmp_path: Path) -> None:
    """Lines written to the moved file before the writer reopens, and to the new file, appear once each."""
    path = tmp_path / "registry.log"
    append(path, line(1))
    with tailer(collected, path):
        wait_count(collected, 1)
        old = path.open("ab")
        os.rename(path, tmp_path / "registry.log.1")
        old.write(line(2))  # the writer has not reopened yet
        old.flush()
        append(path, line(3))
        old.write(line(4))
        old.close()
        append(path, line(5))
        wait_count(collected, 5)
    assert sorted(numbers(collected)) == [1, 2, 3, 4, 5]
    assert numbers(collected)[:3] == [1, 2, 4]  # the old file is finished before the new one is read


def test_copytruncate_reads_the_unread_tail_from_the_copy(collected: Collected, tmp_path: Path) -> None:
    """Lines copied to path.1 and truncated away before the tailer read them still appear once."""
    path = tmp_path / "registry.log"
    append(path, line(1))
    with tailer(collected, path) as source:
        wait_count(collected, 1)
        source.stop()  # hold the tailer still while the file is rotated under it
        append(path, line(2) + line(3))
    shutil.copyfile(path, tmp_path / "registry.log.1")
    os.truncate(path, 0)
    append(path, line(4))
    with tailer(collected, path):
        wait_count(collected, 4)
    assert numbers(collected) == [1, 2, 3, 4]


def test_copytruncate_while_running(collected: Collected, tmp_path: Path) -> None:
    """A live copytruncate (copy made between two writes) loses and repeats nothing."""
    path = tmp_path / "registry.log"
    append(path, line(0))
    with tailer(collected, path) as source:
        wait_count(collected, 1)
        for n in range(1, 201):
            append(path, line(n))
            if n % 20 == 0:
                time.sleep(0.002)  # a steady writer, not a burst within one read
            if n == 100:
                shutil.copyfile(path, tmp_path / "registry.log.1")
                os.truncate(path, 0)
        wait_count(collected, 201)
        assert source.status()["restarts"] == 0 and source.rotations == 1  # followed, not recovered by a restart
    assert sorted(numbers(collected)) == list(range(201))


def test_restart_resumes_from_the_stored_offset(collected: Collected, tmp_path: Path) -> None:
    """A new tailer with the same state store emits only lines written after the last one emitted."""
    path = tmp_path / "registry.log"
    append(path, line(1) + line(2))
    with tailer(collected, path):
        wait_count(collected, 2)
    append(path, line(3))
    with tailer(collected, path):
        wait_count(collected, 3)
    assert numbers(collected) == [1, 2, 3]


def test_restart_after_rename_while_stopped_finishes_the_rotated_file(collected: Collected, tmp_path: Path) -> None:
    """If the file was renamed to path.1 while regwarden was down, its unread lines come first."""
    path = tmp_path / "registry.log"
    append(path, line(1))
    with tailer(collected, path):
        wait_count(collected, 1)
    append(path, line(2))
    os.rename(path, tmp_path / "registry.log.1")
    append(path, line(3))
    with tailer(collected, path):
        wait_count(collected, 3)
    assert numbers(collected) == [1, 2, 3]
    assert collected.of(kind="audit.gap") == []


def test_restart_with_the_old_file_gone_records_a_gap(collected: Collected, tmp_path: Path) -> None:
    """When the file we stopped in is nowhere to be found, an audit.gap says lines may be lost."""
    path = tmp_path / "registry.log"
    append(path, line(1))
    with tailer(collected, path):
        wait_count(collected, 1)
    os.rename(path, tmp_path / "archived.log")  # not where the tailer looks (and keeps the inode taken)
    append(path, line(2))
    with tailer(collected, path):
        wait_count(collected, 2)
    gaps = collected.of("registry-log", "audit.gap")
    assert [g.detail["reason"] for g in gaps] == ["rotated_file_missing"]


def test_overlong_line_is_cut_marked_and_counted(collected: Collected, tmp_path: Path) -> None:
    """A 2 MiB line becomes one flagged event of at most max_line bytes; the next line is intact."""
    path = tmp_path / "registry.log"
    append(path, b"x" * (2 * 1024 * 1024) + b"\n" + line(1))
    with tailer(collected, path, max_line=64 * 1024):
        wait_count(collected, 1)
    cut = [e for e in collected.events if e.detail.get("max_line_bytes")]
    assert len(cut) == 1 and cut[0].detail["truncated"] is True
    assert cut[0].detail["length"] == 64 * 1024
    assert collected.rejected("registry-log", "line_too_long") == 1


def test_garbage_lines_are_kept_as_unparsed_and_counted(collected: Collected, tmp_path: Path) -> None:
    """A line that is no known format is emitted as registry.unparsed and counted as rejected."""
    path = tmp_path / "registry.log"
    append(path, b"\x00\xff garbage\n" + line(1))
    with tailer(collected, path):
        wait_count(collected, 1)
    assert len(collected.of("registry-log", "registry.unparsed")) == 1
    assert collected.rejected("registry-log", "unparsed") == 1


def test_missing_file_is_not_ready_until_it_appears(collected: Collected, tmp_path: Path) -> None:
    """A log file that does not exist yet makes the source not ready (saying so), then it follows it."""
    path = tmp_path / "registry.log"
    with tailer(collected, path) as source:
        collected.wait("not ready", lambda: "waiting for" in source.health().detail)
        assert not source.health().ready
        append(path, line(1))
        wait_count(collected, 1)
        assert source.health().ready


def test_stop_while_catching_up_resumes_exactly(collected: Collected, tmp_path: Path) -> None:
    """Stopped in the middle of a large backlog, the tailer stops promptly and a new one continues at
    the next line: every line once."""
    path = tmp_path / "registry.log"
    append(path, b"".join(line(n) for n in range(20_000)))
    with tailer(collected, path):
        collected.wait("some lines", lambda: len(numbers(collected)) >= 500)
    stopped_at = len(numbers(collected))
    with tailer(collected, path):
        wait_count(collected, 20_000)
    assert stopped_at < 20_000
    assert numbers(collected) == list(range(20_000))


def test_lines_of_one_read_travel_as_batches_with_the_cursor_after_each(collected: Collected, tmp_path: Path) -> None:
    """A backlog is published in batches of at most bus.MAX_BATCH lines, each line once and in order,
    every line of a read observed at the same instant; the stored cursor is the end of the file."""
    from regwarden.bus import MAX_BATCH

    path = tmp_path / "registry.log"
    total = MAX_BATCH * 2 + 10
    append(path, b"".join(line(n) for n in range(total)))
    sizes: list[int] = []
    collected.ctx.bus.subscribe("sizes", lambda item: sizes.append(1), lambda events: sizes.append(len(events)))
    with tailer(collected, path) as source:
        wait_count(collected, total)
        collected.wait("the cursor", lambda: (source.status()["cursor"] or {}).get("offset") == path.stat().st_size)
    assert numbers(collected) == list(range(total))
    assert max(sizes) == MAX_BATCH and sum(sizes) == total and len(sizes) < total / 100
    assert len({e.observed for e in collected.events[:MAX_BATCH]}) == 1  # the first batch: lines of one read
