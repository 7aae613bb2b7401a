"""The hash-chained audit log: `AuditWriter` appends records, `verify` checks a chain of files.

Line format (one JSON object per line, ASCII only):

    {"seq":N,"prev":"<hash of record N-1>",<the record's own keys, sorted>,"hash":"<hash>"}

`hash` is SHA-256 (or HMAC-SHA256 with a key) in lowercase hex over the line's bytes without its
trailing `,"hash":"..."` member, that is over the canonical JSON of the record without `hash`:
`seq` and `prev` first, then the record's keys sorted, compact separators, non-ASCII escaped. So
anyone can check a line with `sed 's/,"hash":"[0-9a-f]*"}$/}/' | sha256sum`. The first record of a
chain has `prev` = 64 zeros; a rotated file's first record chains to the last one of the file before.

Rotation: when a line would take the current file past `max_bytes`, `audit.jsonl` becomes
`audit.jsonl.1` (older ones shift to `.2`, `.3`, ...; none is deleted) and a new file continues the
chain. Durability: lines are written through a buffer flushed and fsynced by a flush thread at most
`fsync_interval` apart; a crash loses at most that much. A record torn by a crash (an unterminated
last line that starts like a record) is cut off when the writer starts again; any other unterminated
last line is kept and ended with a newline, for verify to name.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import hmac
import json
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson
import structlog

from .. import redact
from ..errors import AuditError

if TYPE_CHECKING:
    from ..events import Event

__all__ = [
    "GENESIS",
    "AuditWriter",
    "Broken",
    "ChainHead",
    "ChainIndex",
    "FileSpan",
    "RotatedFile",
    "VerifyResult",
    "chain_files",
    "chain_index",
    "first_seq",
    "verify",
]

log = structlog.get_logger(__name__)

GENESIS = "0" * 64
_HASH_SUFFIX_LEN = len(',"hash":"') + 64 + len('"}')
_RESERVED = frozenset({"seq", "prev", "hash"})
_TAIL_WINDOW = 64 * 1024
_TORN_MAX = 4 * 1024 * 1024  # longer than any record regwarden writes
# the record's keys sorted, compact, ASCII only (non-ASCII escaped), anything else as str(); one
# encoder for all appends (json.dumps with options builds a new one per call)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
# orjson writes the same text for the common record in a fraction of the time (floats may differ in
# form, e.g. 1e20 for 1e+20, and NaN becomes null); `_serialise` falls back to the encoder above for
# what orjson cannot write in ASCII, and for records that need scrubbing
_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _serialise(record: Mapping[str, Any]) -> bytes:
    """The record's canonical JSON, secrets scrubbed (see the module doc for the format)."""
    data = _dump(record)
    if redact.may_hold_secret(record, data):
        data = _CANONICAL.encode(redact.scrub(record)).encode("ascii")
    return data


def _dump(record: Mapping[str, Any]) -> bytes:
    """The record's canonical JSON, not scrubbed."""
    try:
        data = orjson.dumps(record, default=str, option=_ORJSON_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        data = b""
    if data[:1] != b"{" or not data.isascii():
        try:
            data = _CANONICAL.encode(record).encode("ascii")
        except (TypeError, ValueError):  # keys that are not strings
            data = _CANONICAL.encode(_plain(record)).encode("ascii")
    return data


def _plain(value: Any) -> Any:
    """`value` with every mapping key made a string: what a record becomes rather than not being written."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _call(done: Callable[[], None]) -> None:
    try:
        done()
    except Exception:
        log.exception("audit_durable_callback_failed")


def _not_written(message: str, count: int) -> AuditError:
    return AuditError(message, not_written=count)


@dataclass(frozen=True)
class ChainHead:
    """The last record written: the next one gets `seq + 1` and `prev = hash`."""

    seq: int
    hash: str


@dataclass(frozen=True)
class RotatedFile:
    """A file the writer just closed and renamed to `<audit_log>.1`: its first and last record."""

    first_seq: int
    last: ChainHead


def _digest_hex(body: bytes, key: bytes | None) -> bytes:
    """SHA-256 (HMAC-SHA256 with a key) of `body`, lowercase hex as ASCII bytes."""
    if key is None:
        return binascii.hexlify(hashlib.sha256(body).digest())
    return binascii.hexlify(hmac.digest(key, body, "sha256"))


def _digest(body: bytes, key: bytes | None) -> str:
    return _digest_hex(body, key).decode("ascii")


def _split(line: bytes) -> tuple[int, str, str, bytes] | None:
    """`(seq, prev, hash, hashed bytes)` of a chain line (without newline), or None if it is not one."""
    if not line.startswith(b'{"seq":') or len(line) < _HASH_SUFFIX_LEN + 80:
        return None
    cut = line.find(b',"prev":"', 7)
    if cut < 0 or line[cut + 73: cut + 74] != b'"':
        return None
    suffix = line[-_HASH_SUFFIX_LEN:]
    if not suffix.startswith(b',"hash":"') or not suffix.endswith(b'"}'):
        return None
    try:
        seq = int(line[7:cut])
        prev = line[cut + 9: cut + 73].decode("ascii")
        stated = suffix[9:73].decode("ascii")
    except ValueError:
        return None
    return seq, prev, stated, line[:-_HASH_SUFFIX_LEN] + b"}"


def chain_files(path: Path) -> list[Path]:
    """The audit log and its rotated files, oldest first: `path.N`, ..., `path.1`, `path`."""
    numbered: list[tuple[int, Path]] = []
    prefix = path.name + "."
    if path.parent.is_dir():
        for candidate in path.parent.iterdir():
            suffix = candidate.name[len(prefix):]
            if candidate.name.startswith(prefix) and suffix.isdigit():
                numbered.append((int(suffix), candidate))
    files = [p for _, p in sorted(numbered, reverse=True)]
    if path.exists():
        files.append(path)
    return files


# --------------------------------------------------------------------------- writer


class AuditWriter:
    """Appends records to the hash chain in `path`; thread-safe.

    Fails fast at construction (AuditError) when the file cannot be opened or its chain cannot be
    resumed. `key` switches the hash to HMAC-SHA256 (the key comes from Vault; see AuditTrail).
    """

    def __init__(self, path: Path, *, key: bytes | None = None, max_bytes: int = 256 * 1024 * 1024,
                 fsync_interval: float = 0.1) -> None:
        self.path = path
        self._key = key
        self._max_bytes = max_bytes
        self._interval = fsync_interval
        self._lock = threading.Lock()
        self._dirty = False
        self._closed = False
        self._flush_each = False  # write_through: every append is flushed to the OS
        self._broken: str | None = None  # set when a write or fsync failed; the next append recovers
        self.last_failure: str | None = None  # what the last recovery recovered from
        self._lost: list[tuple[int, int]] = []  # seq ranges acknowledged but lost with a failed write
        self._size = 0  # bytes in the current file (set by _open)
        self._synced_size = 0  # of which known on disk: the size at the last good fsync (or at open)
        self._fsync_failed = False  # then what came after _synced_size may be gone whatever the cache shows
        self.on_loss: Callable[[], None] | None = None  # called (with the lock held) when a recovery lost records
        # called (with the lock held: it must not block) after a rotation, with the file just closed
        self.on_rotate: Callable[[RotatedFile], None] | None = None
        # when_durable callbacks by seq: (seq, done, failed); `_due`: settled ones to call outside the lock
        self._waiting: deque[tuple[int, Callable[[], None], Callable[[], None] | None]] = deque()
        self._due: list[Callable[[], None]] = []  # `failed` of lost records, `done` of durable ones
        self._delivering = threading.Lock()  # callbacks run in seq order, one thread at a time
        self.torn_bytes = 0  # bytes of an incomplete record cut at start or recovery (a crash, a failed write)
        self._stop_flush = threading.Event()  # stops the flusher
        self._soon = threading.Event()  # the flusher syncs now (a `when_durable(soon=True)` waits)
        self._flusher: threading.Thread | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            self._cut_torn_tail(path)
            self._head = self._resume()
            self._file = self._open()
            self._file_first_seq = first_seq(path) or self._head.seq + 1  # of the current file
        except OSError as exc:
            raise AuditError(f"cannot open audit log {path}: {exc.strerror or exc}") from None
        self._synced_size = self._size  # what an earlier run left is taken as on disk
        self._durable = self._head.seq  # the last seq known to be on disk (fsynced)
        if fsync_interval > 0:
            self._start_flusher()

    # -- public

    @property
    def head(self) -> ChainHead:
        with self._lock:
            return self._head

    def append(self, record: Mapping[str, Any]) -> int:
        """Scrub secrets from `record`, chain it and write it; returns its seq."""
        if "seq" in record or "prev" in record or "hash" in record:
            raise ValueError(f"an audit record must not carry {sorted(_RESERVED.intersection(record))}")
        return self._write([_serialise(record)])

    def append_events(self, events: Sequence[Event]) -> int:
        """Append the records of `events`, in order, as `append` would; returns the last seq.

        The fast path for the bus: an Event's record never has a key that names a secret (Event sees
        to it), so only registered secret values are looked for, in one pass over the whole batch.
        On AuditError, `not_written` of the exception says how many of the last events were not taken.
        """
        records = [event.record() for event in events]
        texts = [_dump(record) for record in records]
        if redact.holds_registered_value(b"\n".join(texts)):
            texts = [_CANONICAL.encode(redact.scrub(record)).encode("ascii") if redact.holds_registered_value(text)
                     else text for record, text in zip(records, texts, strict=True)]
        return self._write(texts)

    def _write(self, texts: list[bytes]) -> int:
        """Chain and write serialised records (under the lock, one write per batch); the last seq."""
        failure: AuditError | None = None
        with self._lock:
            if self._closed:
                raise _not_written(f"audit log {self.path} is closed", len(texts))
            if self._broken is not None:
                try:
                    self._recover()
                except AuditError as exc:
                    raise _not_written(str(exc), len(texts)) from None
            first = seq = self._head.seq
            prev = self._head.hash.encode("ascii")
            key, size, limit = self._key, self._size, self._max_bytes
            lines: list[bytes] = []
            try:
                for rest in texts:
                    raw = b'{"seq":%d,"prev":"%s%s' % (seq + 1, prev, b'"}' if rest == b"{}" else b'",' + rest[1:])
                    last, prev = prev, _digest_hex(raw, key)
                    line = b'%s,"hash":"%s"}\n' % (raw[:-1], prev)
                    if size > 0 and size + len(line) > limit:
                        self._file.write(b"".join(lines))
                        lines.clear()
                        self._size = size
                        self._rotate(ChainHead(seq, last.decode("ascii")))
                        size = 0
                    lines.append(line)
                    size += len(line)
                    seq += 1
                self._file.write(b"".join(lines))
                self._size = size
                if self._interval <= 0:
                    self._sync()
                else:
                    self._dirty = True
                    if self._flush_each:
                        self._file.flush()
            except OSError as exc:
                self._broken = exc.strerror or str(exc)
                with contextlib.suppress(AuditError):
                    self._recover()  # continues from the disk (a rotation may have taken some)
                failure = _not_written(f"cannot write audit log {self.path}: {exc.strerror or exc}",
                                       len(texts) - max(0, self._head.seq - first))
            else:
                self._head = ChainHead(seq, prev.decode("ascii"))
                if self._interval <= 0:
                    self._durable = seq  # fsynced above, after the last line
        if (self._interval <= 0 and self._waiting) or self._due:  # else the flusher runs them
            self._run_durable()
        if failure is not None:
            raise failure from None
        return seq

    def when_durable(self, done: Callable[[], None], *, soon: bool = False,
                     failed: Callable[[], None] | None = None, valid: Callable[[], bool] | None = None) -> None:
        """Call `done()` once every record appended so far is fsynced (now, if it already is; else from
        the thread that fsyncs next). How sources store their cursors (bus.Checkpoint). `soon`: someone
        is waiting, fsync now instead of at the end of the interval (appends meanwhile share it).
        `failed()` instead, if a failed write or fsync lost some of those records (never both), or if
        `valid()`, asked under the writer's lock (where a recovery counts its losses), says no."""
        with self._lock:
            if self._closed or (valid is not None and not valid()):
                if failed is not None:
                    self._due.append(failed)
            elif self._head.seq > self._durable:
                self._waiting.append((self._head.seq, done, failed))
                if self._flusher is None:  # fsync per append: only a failed one leaves records waiting
                    self._sync_or_recover()
                elif soon:
                    self._soon.set()
            else:
                self._due.append(done)  # already durable: delivered below, after those before it
        self._run_durable()

    def _run_durable(self) -> None:
        """Call the `when_durable` callbacks whose records are on disk now, and the `failed` ones of
        those whose records were lost (without the lock)."""
        with self._delivering:
            ready: list[Callable[[], None]] = []
            with self._lock:
                while self._waiting and self._waiting[0][0] <= self._durable:
                    ready.append(self._waiting.popleft()[1])
                due, self._due = self._due, []
            for callback in (*ready, *due):  # waiters before the checkpoints settled at once
                _call(callback)

    def take_lost(self) -> list[tuple[int, int]]:
        """Seq ranges that appends had acknowledged but a failed write lost (reported once)."""
        with self._lock:
            lost, self._lost = self._lost, []
            return lost

    def flush(self) -> None:
        """Write buffered lines and fsync them now (AuditError if that fails)."""
        with self._lock:
            if not self._closed and self._broken is None:
                self._checked_sync()
        self._run_durable()

    def write_through(self) -> None:
        """fsync now, and from now on hand every append to the OS before it returns (shutdown: what
        the bus still delivers survives the process's exit; fsync goes on at the interval)."""
        with self._lock:
            self._flush_each = True
            if not self._closed and self._broken is None:
                self._checked_sync()
        self._run_durable()

    def resume_batching(self, fsync_interval: float) -> None:
        """Back to buffered appends (a component started again after `write_through`), at the interval
        of the (perhaps reloaded) config; 0 means an fsync per append and no flusher thread."""
        with self._lock:
            self._flush_each = False
            self._interval = fsync_interval
        if fsync_interval <= 0:
            self._stop_flusher()
            with self._lock:  # what the flusher would have synced: from now on every append is
                self._sync_or_recover()
            self._run_durable()
        elif self._flusher is None:
            self._start_flusher()

    def close(self) -> None:
        self._stop_flusher()
        try:
            with self._lock:
                if self._closed:
                    return
                try:
                    if self._broken is None:
                        self._checked_sync()
                finally:
                    self._closed = True
                    with contextlib.suppress(OSError):
                        self._file.close()
                    # what is still waiting will never be on disk through this writer
                    self._fail_waiters_above(self._durable)
        finally:
            self._run_durable()

    # -- internals (call with the lock held)

    def _sync(self) -> None:
        self._file.flush()
        try:
            os.fsync(self._file.fileno())
        except OSError:
            self._fsync_failed = True
            raise
        self._dirty = False
        self._durable = self._head.seq
        self._synced_size = self._size

    def _checked_sync(self) -> None:
        try:
            self._sync()
        except OSError as exc:
            self._broken = exc.strerror or str(exc)
            raise AuditError(f"cannot flush audit log {self.path}: {self._broken}") from None

    def _recover(self) -> None:
        """After a failed write or fsync: drop the buffer, cut a torn line, continue from what is on
        disk (after a failed fsync: from what the last good fsync covered, since the kernel may have
        dropped the rest even if it still shows it). Records acknowledged but not on disk are
        remembered as lost (`take_lost`, `on_loss`), and their `when_durable` waiters fail."""
        before = self._head.seq
        with contextlib.suppress(OSError):
            self._file.close()  # closes the descriptor even when the final flush fails
        file = None
        try:
            if self._fsync_failed:
                os.truncate(self.path, self._synced_size)
            self._cut_torn_tail(self.path)
            head = self._resume()
            file = self._open()
            os.fsync(file.fileno())  # what is on disk now is durable, as `_durable` says below
            _fsync_dir(self.path.parent)
        except OSError as exc:
            if file is not None:
                with contextlib.suppress(OSError):
                    file.close()
            self._fsync_failed = True  # the next recovery trusts only what the last good fsync covered
            raise AuditError(f"audit log {self.path} still failing: {exc.strerror or exc}") from None
        self._head, self._file, self._fsync_failed = head, file, False
        self._synced_size = self._size
        log.error("audit_write_recovered", path=str(self.path), error=self._broken, seq=head.seq,
                  lost=before - head.seq)
        self.last_failure = self._broken
        self._broken = None
        self._dirty = False
        self._durable = head.seq
        if head.seq < before:
            self._lost.append((head.seq + 1, before))
            if self.on_loss is not None:
                self.on_loss()
        # waiters for records that are not on disk fail now (the next records reuse those seqs)
        self._fail_waiters_above(head.seq)

    def _fail_waiters_above(self, seq: int) -> None:
        self._due.extend(w[2] for w in self._waiting if w[0] > seq and w[2] is not None)
        self._waiting = deque(w for w in self._waiting if w[0] <= seq)

    def _open(self) -> IO[bytes]:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        self._size = os.fstat(fd).st_size
        return os.fdopen(fd, "ab", buffering=256 * 1024)

    def _rotate(self, last: ChainHead) -> None:
        """Close the current file (its last record: `last`) as `.1`, shifting older ones, and open a new one."""
        self._sync()
        self._file.close()
        rotated = [p for p in reversed(chain_files(self.path)) if p != self.path]  # newest first: .1, .2
        for older in reversed(rotated):
            number = int(older.name.rsplit(".", 1)[1])
            older.rename(older.with_name(f"{self.path.name}.{number + 1}"))
        self.path.rename(self.path.with_name(self.path.name + ".1"))
        self._file = self._open()
        self._synced_size = self._size
        _fsync_dir(self.path.parent)
        closed = RotatedFile(self._file_first_seq, last)
        self._file_first_seq = last.seq + 1
        log.info("audit_log_rotated", path=str(self.path), seq=last.seq)
        if self.on_rotate is not None:
            try:
                self.on_rotate(closed)
            except Exception:
                log.exception("audit_rotate_callback_failed")

    def _resume(self) -> ChainHead:
        for candidate in reversed(chain_files(self.path)):
            head = _last_record(candidate)
            if head is not None:
                return head
        return ChainHead(0, GENESIS)

    def _cut_torn_tail(self, path: Path) -> None:
        """End an incomplete last line. Our own torn record (a write cut short by a crash: it starts
        like a chain record and is not longer than a record can be) is cut off; anything else is kept
        and ended with a newline, so that verify names it and the evidence stays."""
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0:
            return
        with path.open("rb+") as f:
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            start = max(0, size - _TORN_MAX)
            f.seek(start)
            chunk = f.read(size - start)
            newline = chunk.rfind(b"\n")
            fragment = chunk[newline + 1:]
            ours = (newline >= 0 or start == 0) and fragment.startswith(b'{"seq":')
            if ours:
                f.truncate(start + newline + 1)
            else:
                f.seek(0, 2)
                f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.torn_bytes += len(fragment) if ours else 0
        log.warning("audit_torn_tail_cut" if ours else "audit_foreign_tail_ended", path=str(path),
                    bytes=len(fragment))

    def _start_flusher(self) -> None:
        self._stop_flush.clear()
        self._soon.clear()
        self._flusher = threading.Thread(target=self._flush_loop, name="audit-flush", daemon=True)
        self._flusher.start()

    def _stop_flusher(self) -> None:
        thread, self._flusher = self._flusher, None
        if thread is not None:
            self._stop_flush.set()
            self._soon.set()
            thread.join(2.0)

    def _flush_loop(self) -> None:
        while True:
            self._soon.wait(self._interval)
            self._soon.clear()
            if self._stop_flush.is_set():
                return
            with self._lock:
                if self._dirty or (self._broken is not None and self._waiting):
                    self._sync_or_recover()
            if self._waiting or self._due:
                self._run_durable()

    def _sync_or_recover(self) -> None:
        """fsync what is appended; if that fails, or failed before, and someone waits, recover at once so
        that they learn what was lost (call with the lock; the callbacks run in `_run_durable`)."""
        if self._closed:
            return
        if self._broken is None:
            try:
                self._sync()
                return
            except OSError as exc:
                self._broken = exc.strerror or str(exc)
                log.error("audit_fsync_failed", path=str(self.path), error=self._broken)
        if self._waiting:
            with contextlib.suppress(AuditError):
                self._recover()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_record(path: Path) -> ChainHead | None:
    """The chain head of the last valid record in `path`, reading only its tail."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size == 0:
        return None
    with path.open("rb") as f:
        window = _TAIL_WINDOW
        while True:
            start = max(0, size - window)
            f.seek(start)
            lines = f.read(size - start).split(b"\n")
            if start > 0:
                lines = lines[1:]  # the first piece may be the end of a longer line
            skipped = 0
            for line in reversed(lines):
                parts = _split(line) if line else None
                if parts is not None:
                    if skipped:
                        log.error("audit_resume_skipped_invalid_lines", path=str(path), lines=skipped)
                    return ChainHead(parts[0], parts[2])
                skipped += bool(line)
            if start == 0:
                raise AuditError(f"cannot resume the audit chain: {path} holds no valid chain record")
            window *= 4


# --------------------------------------------------------------------------- verifier


@dataclass(frozen=True)
class Broken:
    """The first record that breaks the chain: where it is and why."""

    file: str
    line: int
    seq: int | None
    why: str

    def __str__(self) -> str:
        seq = f" (seq {self.seq})" if self.seq is not None else ""
        return f"{self.file}:{self.line}{seq}: {self.why}"


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    files: tuple[str, ...]
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    from_genesis: bool = True  # False when the first file given does not start the chain (older files gone)
    broken: Broken | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok, "records": self.records, "files": list(self.files), "first_seq": self.first_seq,
            "last_seq": self.last_seq, "last_hash": self.last_hash, "from_genesis": self.from_genesis,
            "broken": None}
        if self.broken is not None:
            out["broken"] = {"file": self.broken.file, "line": self.broken.line, "seq": self.broken.seq,
                             "why": self.broken.why}
        return out


def first_seq(path: Path) -> int | None:
    """The seq of the first record in `path` (reads one line), or None: no such file, empty, not a record."""
    try:
        with path.open("rb") as f:
            return _peek_seq(f.readline(_TORN_MAX))
    except (FileNotFoundError, IsADirectoryError):
        return None


@dataclass(frozen=True)
class FileSpan:
    """The seqs of the chain records one file holds."""

    file: str
    first_seq: int | None
    last_seq: int | None


@dataclass(frozen=True)
class ChainIndex:
    """What a trail holds, read without judging it (that is `verify`'s part): the stated hash at each
    seq asked for (the last one, if a seq occurs twice) and each file's span."""

    hashes: dict[int, str]
    files: tuple[FileSpan, ...]

    @property
    def first_seq(self) -> int | None:
        return next((f.first_seq for f in self.files if f.first_seq is not None), None)

    @property
    def last_seq(self) -> int | None:
        return next((f.last_seq for f in reversed(self.files) if f.last_seq is not None), None)


def chain_index(paths: Iterable[Path], seqs: Iterable[int]) -> ChainIndex:
    """One streaming pass over `paths` (oldest first): see ChainIndex. Lines that are not chain
    records are passed over."""
    wanted = set(seqs)
    hashes: dict[int, str] = {}
    spans: list[FileSpan] = []
    for path in paths:
        first: int | None = None
        last: int | None = None
        try:
            with path.open("rb") as f:
                for line in f:
                    parts = _split(line.rstrip(b"\n"))
                    if parts is None:
                        continue
                    seq = parts[0]
                    first = seq if first is None else first
                    last = seq
                    if seq in wanted:
                        hashes[seq] = parts[2]
        except OSError as exc:
            raise AuditError(f"cannot read audit log: {path}: {exc.strerror}") from None
        spans.append(FileSpan(str(path), first, last))
    return ChainIndex(hashes, tuple(spans))


def _numbered_lines(paths: Iterable[Path]) -> Iterator[tuple[str, int, bytes]]:
    for path in paths:
        with path.open("rb") as f:
            for number, line in enumerate(f, 1):
                yield str(path), number, line


_SEQ_AT_START = re.compile(rb'^\{"seq":(\d+),')


def verify(paths: Iterable[Path], key: bytes | None = None) -> VerifyResult:
    """Check the chain across `paths` (oldest first), streaming; names the first broken record.

    Why a record breaks: `edited` (its hash does not match its content), `deleted` (seq gap),
    `reordered` (seq out of order), `bad prev` (it does not chain to the record before it: that one
    was replaced with a recomputed hash), `not a chain record`, `incomplete line`.
    """
    files = tuple(str(p) for p in paths)
    try:
        lines = _numbered_lines(Path(p) for p in files)
        return _verify_lines(lines, files, key)
    except OSError as exc:
        raise AuditError(f"cannot read audit log: {exc.filename}: {exc.strerror}") from None


def _verify_lines(lines: Iterator[tuple[str, int, bytes]], files: tuple[str, ...],
                  key: bytes | None) -> VerifyResult:
    count = 0
    first_seq: int | None = None
    expected_seq: int | None = None
    expected_prev = GENESIS
    from_genesis = True

    def result(broken: Broken | None) -> VerifyResult:
        return VerifyResult(ok=broken is None, records=count, files=files, first_seq=first_seq,
                            last_seq=None if expected_seq is None else expected_seq - 1,
                            last_hash=None if expected_seq is None else expected_prev,
                            from_genesis=from_genesis, broken=broken)

    for name, number, line in lines:
        if not line.endswith(b"\n"):
            return result(Broken(name, number, _peek_seq(line), "incomplete line (a torn or cut write)"))
        parts = _split(line[:-1])
        if parts is None:
            return result(Broken(name, number, _peek_seq(line), "not a chain record (edited)"))
        seq, prev, stated, body = parts
        if not hmac.compare_digest(_digest(body, key), stated):
            why = "edited: the hash does not match the record"
            if count == 0 and key is None:
                why += " (if this trail is HMAC-keyed, give the key)"
            return result(Broken(name, number, seq, why))
        if expected_seq is None:
            first_seq = seq
            from_genesis = seq == 1 and prev == GENESIS
        elif seq != expected_seq:
            if seq < expected_seq:
                why = f"reordered: seq {seq} after seq {expected_seq - 1}"
            elif _peek_seq(_next_line(lines)) == expected_seq:
                why = f"reordered: seq {seq} comes before seq {expected_seq}"
            else:
                missing = (f"seq {expected_seq}" if seq == expected_seq + 1
                           else f"seq {expected_seq}..{seq - 1}")
                why = f"deleted: {missing} missing (seq gap)"
            return result(Broken(name, number, seq, why))
        elif prev != expected_prev:
            return result(Broken(name, number, seq,
                                 "bad prev: does not chain to the hash of the record before it"))
        count += 1
        expected_seq = seq + 1
        expected_prev = stated
    return result(None)


def _next_line(lines: Iterator[tuple[str, int, bytes]]) -> bytes:
    return next(lines, ("", 0, b""))[2]


def _peek_seq(line: bytes) -> int | None:
    match = _SEQ_AT_START.match(line)
    return int(match[1]) if match else None
