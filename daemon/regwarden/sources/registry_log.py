"""A registry's log file → audit Events: a polling tailer that follows rotation and resumes.

- Complete lines only: a partial last line is kept until its newline arrives (or its file is
  finished by a rotation). A line longer than `max_line` bytes is cut there, emitted with
  `detail.truncated = true`, and the rest of it skipped.
- Rename rotation (`path` now has another inode): the old file is read to its end (the writer may
  still append to it until it reopens: we leave it once a new file exists and the old one stayed
  quiet for a second), then `path` is read from 0.
- copytruncate (`path` shorter than our offset, or the bytes just before our offset changed): the
  bytes we had not read yet were copied to `path.1` (logrotate's copy); when `path.1` holds the tail
  we last read at the same offset, its remainder is read first. Then `path` is read from 0.
  copytruncate is racy by nature; what this cannot see: lines written between the copy and the
  truncation (lost by the rotation itself), and a truncation followed by regrowth past our offset
  within the instant between the rotation check and the next read. A truncation while we stood at
  offset 0 (nothing read yet) is indistinguishable from growth.
- The cursor `(inode, offset, tail)` (offset = first byte not yet on the bus, tail = digest of the
  bytes before it) is taken after each batch of lines is published (the lines of one read, at most
  bus.MAX_BATCH) and stored once that batch is in the audit log on disk (a bus Checkpoint), so a crash
  re-reads what was not yet written, never skips it. On start: same inode and content at
  `path` → resume there; else if `path.1` has the stored inode (rotated while we were stopped), or
  is the copy of a copytruncate, finish that first; else the file is gone and an `audit.gap` is
  emitted before reading `path` from 0. No cursor: `path` is read from 0.
Each line goes through `parse_registry_line`; unparseable lines are emitted as `registry.unparsed`
and counted in `regwarden_input_rejected_total{source="registry-log"}`.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from ..audit.parse import UNPARSED, parse_registry_line
from ..bus import MAX_BATCH
from ..component import Context
from ..errors import AuditError
from ..events import Event, utcnow
from . import SourceComponent

__all__ = [
    "MAX_LINE",
    "FileState",
    "LineSplitter",
    "RegistryLogSource",
    "Rotation",
    "detect_rotation",
    "plan_resume",
    "tail_digest",
]

log = structlog.get_logger(__name__)

MAX_LINE = 1024 * 1024
_TAIL = 64  # bytes remembered before the offset to recognise the same file content
_CHUNK = 256 * 1024
_SETTLE = 1.0  # seconds a moved file must stay quiet before the tailer leaves it


class Rotation(Enum):
    NONE = "none"
    RENAMED = "renamed"  # path points at a new file (or is missing); the open one was moved away
    TRUNCATED = "truncated"  # same file, rewritten from the start (copytruncate)


@dataclass(frozen=True)
class FileState:
    """What `stat` and a short read say about a file: inode, size, and the bytes before our offset."""

    inode: int
    size: int
    tail: bytes = b""


def detect_rotation(*, inode: int, offset: int, tail: bytes, at_path: FileState | None) -> Rotation:
    """Has the file we read (inode, offset, last bytes `tail`) been rotated, given what is at `path`?"""
    if at_path is None or at_path.inode != inode:
        return Rotation.RENAMED
    if at_path.size < offset or (tail and at_path.tail != tail):
        return Rotation.TRUNCATED
    return Rotation.NONE


@dataclass(frozen=True)
class Resume:
    """Where to start: finish `rotated_offset` of `path.1` first (if set), then `path` at `offset`."""

    offset: int
    rotated_offset: int | None = None
    lost: str | None = None  # why lines may be missing (gap reason), if so


def tail_digest(tail: bytes) -> str:
    """A short fingerprint of the bytes just before an offset (stored in the cursor)."""
    return hashlib.blake2b(tail, digest_size=8).hexdigest()


def plan_resume(cursor: dict[str, Any] | None, *, at_path: FileState | None, rotated: FileState | None) -> Resume:
    """Where a tailer starts, given its stored cursor and what is at `path` and `path.1` now.

    The FileStates' `tail` must be the bytes before the stored offset; the cursor's `tail` is their
    digest when the cursor was stored (a file rewritten to the same size or larger is told apart).
    """
    if cursor is None:
        return Resume(0)
    inode, offset = int(cursor.get("inode", -1)), int(cursor.get("offset", 0))
    digest = cursor.get("tail")

    def same_content(state: FileState) -> bool:
        return state.size >= offset and (digest is None or tail_digest(state.tail) == digest)

    if at_path is not None and at_path.inode == inode:
        if same_content(at_path):
            return Resume(offset)
        if rotated is not None and same_content(rotated):  # copytruncate while we were stopped
            return Resume(0, rotated_offset=offset)
        return Resume(0, lost="truncated_while_stopped")
    if rotated is not None and rotated.inode == inode:
        return Resume(0, rotated_offset=min(offset, rotated.size))
    return Resume(0, lost="rotated_file_missing")


class LineSplitter:
    """Turns chunks of bytes into complete lines, holding back a partial last line.

    A line longer than `max_line` is emitted cut at `max_line` bytes (flagged), and the rest of it,
    up to its newline, is dropped. `pending` is the number of bytes held back (not yet a line).
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._skipping = False

    @property
    def pending(self) -> int:
        return 0 if self._skipping else len(self._buffer)

    def feed(self, chunk: bytes) -> Iterator[tuple[bytes, bool, int]]:
        """Yield `(line, truncated, consumed)`: each line without its newline, and how many bytes of
        `chunk` are consumed once that line is handled (for the cursor)."""
        start = 0
        while start < len(chunk):
            newline = chunk.find(b"\n", start)
            end = len(chunk) if newline < 0 else newline
            if self._skipping:
                if newline < 0:
                    return
                self._skipping = False
                start = newline + 1
                continue
            room = self.max_line - len(self._buffer)
            if end - start > room:
                line = bytes(self._buffer) + chunk[start:start + room]
                self._buffer.clear()
                if newline >= 0:
                    start = newline + 1
                else:
                    self._skipping, start = True, len(chunk)
                yield line, True, start
                continue
            if newline < 0:
                self._buffer += chunk[start:]
                return
            if self._buffer:
                line = bytes(self._buffer) + chunk[start:newline]
                self._buffer.clear()
            else:
                line = chunk[start:newline]
            start = newline + 1
            yield line, False, start

    def flush(self) -> bytes | None:
        """The partial line held back (the file is finished), if any."""
        if self._skipping or not self._buffer:
            self._buffer.clear()
            self._skipping = False
            return None
        line = bytes(self._buffer)
        self._buffer.clear()
        return line


def _file_state(path: Path, offset: int = 0) -> FileState | None:
    try:
        with path.open("rb") as handle:
            st = os.fstat(handle.fileno())
            tail = b""
            if 0 < offset <= st.st_size:
                start = max(0, offset - _TAIL)
                tail = os.pread(handle.fileno(), offset - start, start)
            return FileState(st.st_ino, st.st_size, tail)
    except FileNotFoundError:
        return None


class _Stopped(Exception):
    """Raised out of a long read when the source is asked to stop."""


@dataclass
class _Open:
    """The file being followed: position read so far, bytes held back, and the last bytes read."""

    handle: BinaryIO
    inode: int
    pos: int
    splitter: LineSplitter
    tail: bytes = b""
    moved_at: float | None = None  # when a rename was first seen (monotonic), or last growth after it

    @property
    def offset(self) -> int:
        return self.pos - self.splitter.pending


class RegistryLogSource(SourceComponent):
    """Tails one registry log file (`[[sources.registry_logs]]`)."""

    def __init__(self, path: Path, registry: str, poll_interval: float = 0.25, max_line: int = MAX_LINE,
                 address: str | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.registry = registry
        self.address = address  # the registry's host:port, for the records' target.address
        self.name = f"registry-log:{registry}:{self.path}"
        self._cursor_name = f"registry-log:{self.path}"
        self._rotated_path = self.path.with_name(self.path.name + ".1")
        self._poll = poll_interval
        self._max_line = max_line
        self.lines = 0
        self.rotations = 0
        self._cut_lines = 0  # lines cut at max_line since the last batch was published
        self._cursor: dict[str, int] | None = None

    def status(self) -> dict[str, Any]:
        return {**super().status(), "path": str(self.path), "registry": self.registry, "lines": self.lines,
                "rotations": self.rotations, "cursor": self._cursor}

    def prepare(self, ctx: Context) -> None:
        if not self.path.parent.is_dir():
            raise AuditError(f"registry log {self.path}: directory {self.path.parent} does not exist")

    # ------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event) -> None:
        try:
            self._follow(stop)
        except _Stopped:
            return
        except OSError as exc:
            raise AuditError(f"registry log {self.path}: {exc.strerror or exc}") from None

    def _follow(self, stop: threading.Event) -> None:
        stored = self.ctx.state.get_cursor(self._cursor_name)
        cursor = stored if isinstance(stored, dict) else None
        stored_offset = int(cursor.get("offset", 0)) if cursor else 0
        rotated = _file_state(self._rotated_path, stored_offset)
        plan = plan_resume(cursor, at_path=_file_state(self.path, stored_offset), rotated=rotated)
        if plan.lost is not None:
            self._emit_gap(plan.lost, cursor)
        if plan.rotated_offset is not None and rotated is not None and cursor is not None:
            renamed = rotated.inode == cursor.get("inode")
            self._drain(self._rotated_path, plan.rotated_offset, store=renamed)
        current: _Open | None = None
        start_at = plan.offset
        try:
            while not stop.is_set():
                if current is None:
                    current = self._open(start_at)
                    start_at = 0
                    if current is None:
                        self.mark_down(f"waiting for {self.path} to exist")
                        stop.wait(self._poll)
                        continue
                    self.mark_up()
                at_path = _file_state(self.path, current.pos)
                change = detect_rotation(inode=current.inode, offset=current.pos, tail=current.tail,
                                         at_path=at_path)
                if change is Rotation.NONE:
                    self._read(current)
                elif change is Rotation.RENAMED:
                    # the writer may go on writing the moved file until it reopens `path`: switch only
                    # once a new file is there and the old one has been quiet for a moment
                    now = time.monotonic()
                    if self._read(current) or current.moved_at is None:
                        current.moved_at = now
                    if at_path is not None and now - current.moved_at >= _SETTLE:
                        self._flush(current)
                        current.handle.close()
                        current = None
                        self._rotated("renamed")
                        continue
                else:
                    self._truncated(current)
                    continue
                stop.wait(self._poll)
        finally:
            if current is not None:
                current.handle.close()

    def _truncated(self, current: _Open) -> None:
        """copytruncate: read the rest from the copy at `path.1` if it is ours, then `path` from 0."""
        copy = _file_state(self._rotated_path, current.pos)
        if copy is not None and copy.size >= current.pos and copy.tail == current.tail:
            self._drain(self._rotated_path, current.pos, splitter=current.splitter)
        else:
            self._emit_gap("truncated_without_copy", {"inode": current.inode, "offset": current.offset})
        current.handle.seek(0)
        current.pos, current.tail = 0, b""
        current.splitter = LineSplitter(self._max_line)
        self._store(current.inode, 0)
        self._rotated("copytruncate")

    def _open(self, offset: int) -> _Open | None:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return None
        st = os.fstat(handle.fileno())
        inode, pos = st.st_ino, offset if offset <= st.st_size else 0
        handle.seek(pos)
        tail = os.pread(handle.fileno(), min(pos, _TAIL), pos - min(pos, _TAIL)) if pos else b""
        self._store(inode, pos, tail)
        return _Open(handle, inode, pos, LineSplitter(self._max_line), tail)

    def _read(self, current: _Open) -> int:
        """Read to the end of the file, publishing the lines of each read as one batch and storing the
        cursor after it; returns the number of bytes read."""
        begin = current.pos
        while chunk := current.handle.read(_CHUNK):
            batch: list[Event] = []
            observed = utcnow()  # one read, one instant: every line of it was seen now
            consumed = 0
            for line, truncated, consumed in current.splitter.feed(chunk):
                batch.append(self._event(line, truncated, observed))
                if len(batch) >= MAX_BATCH:
                    self._publish(batch, current, chunk, consumed)
                    batch = []
            if batch:
                self._publish(batch, current, chunk, consumed)
            current.pos += len(chunk)
            current.tail = (current.tail + chunk)[-_TAIL:]
        return current.pos - begin

    def _publish(self, batch: list[Event], current: _Open, chunk: bytes, consumed: int) -> None:
        """Publish a batch of lines read from `chunk`, the last ending at `consumed`; store the cursor
        after it (the bus holds it now: a crash before it is written re-reads, never skips)."""
        self._emit_batch(batch)
        tail = (current.tail + chunk[max(0, consumed - _TAIL):consumed])[-_TAIL:]
        self._store(current.inode, current.pos + consumed, tail)
        if self._stop_event is not None and self._stop_event.is_set():
            raise _Stopped  # mid-file (catching up on a large log): the cursor is exact

    def _flush(self, current: _Open) -> None:
        if (last := current.splitter.flush()) is not None:
            self._emit_batch([self._event(last, False, utcnow())])
            self._store(current.inode, current.pos, current.tail)

    def _drain(self, path: Path, offset: int, *, store: bool = False, splitter: LineSplitter | None = None) -> None:
        """Read a rotated file from `offset` to its end; its last line may lack a newline.

        `splitter` carries a partial line over from the live file (copytruncate); `store` keeps the
        cursor moving through a renamed file (so a crash here resumes in it).
        """
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            self._emit_gap("rotated_file_missing", {"offset": offset})
            return
        with handle:
            inode = os.fstat(handle.fileno()).st_ino
            handle.seek(offset)
            current = _Open(handle, inode, offset, splitter or LineSplitter(self._max_line))
            if store:
                self._read(current)
            else:
                while chunk := handle.read(_CHUNK):
                    observed = utcnow()
                    batch = [self._event(line, truncated, observed)
                             for line, truncated, _ in current.splitter.feed(chunk)]
                    for start in range(0, len(batch), MAX_BATCH):
                        self._emit_batch(batch[start:start + MAX_BATCH])
                    current.pos += len(chunk)
            if (last := current.splitter.flush()) is not None:
                self._emit_batch([self._event(last, False, utcnow())])

    # ------------------------------------------------------------------ emitting

    def _event(self, line: bytes, truncated: bool, observed: datetime) -> Event:
        event = parse_registry_line(line.rstrip(b"\r"), registry=self.registry, address=self.address,
                                    host=self.ctx.host, observed=observed)
        if truncated:
            event = event.replace(detail={**event.detail, "truncated": True, "max_line_bytes": self._max_line})
            self._cut_lines += 1  # counted when published
        return event

    def _emit_batch(self, batch: list[Event]) -> None:
        """Count what is worth counting, then publish (blocks while the bus is full)."""
        ctx = self.ctx
        unparsed = sum(1 for event in batch if event.kind == UNPARSED)
        truncated, self._cut_lines = self._cut_lines, 0
        if unparsed:
            ctx.metrics.input_rejected.labels("registry-log", "unparsed").inc(unparsed)
        if truncated:
            ctx.metrics.input_rejected.labels("registry-log", "line_too_long").inc(truncated)
        ctx.emit_batch(batch)
        self.lines += len(batch)
        last = batch[-1]
        ctx.metrics.source_lag.labels(self.name).set(max(0.0, (last.observed - last.time).total_seconds()))

    def _store(self, inode: int, offset: int, tail: bytes = b"") -> None:
        """Remember the cursor; it is written to the state store once what was published before it
        is in the audit log on disk (Context.checkpoint)."""
        self._cursor = {"inode": inode, "offset": offset}
        state, name, value = self.ctx.state, self._cursor_name, {**self._cursor, "tail": tail_digest(tail)}
        self.ctx.checkpoint(lambda: state.set_cursor(name, value))

    def _rotated(self, how: str) -> None:
        self.rotations += 1
        log.info("registry_log_rotated", path=str(self.path), how=how)

    def _emit_gap(self, reason: str, cursor: Any) -> None:
        log.warning("audit_gap", source="registry-log", path=str(self.path), reason=reason)
        now = utcnow()
        self.ctx.emit(Event(source="registry-log", kind="audit.gap", time=now, observed=now, host=self.ctx.host,
                            detail={"path": str(self.path), "registry": self.registry, "reason": reason,
                                    "cursor": cursor}))


