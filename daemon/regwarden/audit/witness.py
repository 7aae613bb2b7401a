"""The audit chain witnessed in Vault: what root on this host cannot rewrite unnoticed.

The hash chain proves integrity only to someone holding a copy: root can truncate `audit.jsonl`,
re-chain what is left and `audit verify` passes. So the daemon writes its chain head (`seq`, `hash`,
file name, time) to a per-host KV v2 key, `audit.witness_path/<host>` (default
`secret/regwarden/audit-heads/<host>`), every `witness_interval` when the head moved and at each
file rotation. Vault keeps the versions (with its own `created_time`); the host's policy may create
and update them, never delete them or change the key's metadata. `regwarden audit verify --witness`
then compares the local trail with every witnessed head still kept (`compare`, pure):

- behind     the trail ends before a witnessed seq: truncated, or replaced with an older copy;
- rewritten  the record at a witnessed seq has another hash: re-chained (or edited and re-chained)
             after the last witnessed head that still matches;
- missing    a witnessed seq is not in the trail: a rotated file was deleted (the oldest: the trail
             starts after the witnessed `trail_first_seq`; another: a seq gap between files).

What the witness cannot see: records rewritten after the last head written (at most one
`witness_interval`), and history beyond what the KV mount keeps (`max_versions`: set it on the mount
or the key so that it covers the period you audit; docs/security.md).

Heads the daemon could not write (Vault down) are retried with backoff; on recovery the current head
is written and the gap is itself an audit record (`audit.witness_gap`). At start the daemon compares
the trail with the last witnessed head (its seq and hash; and the trail's first seq, so a deleted oldest
file shows) and records `audit.witness_mismatch` (AuditTrailRewritten) when they disagree.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog

from ..backoff import Backoff
from ..component import Context, Health
from ..errors import RegwardenError, VaultError
from ..events import Event, iso, utcnow
from .chain import ChainHead, ChainIndex, RotatedFile, chain_files, chain_index, first_seq

if TYPE_CHECKING:
    from ..vault.client import VaultClient
    from .chain import AuditWriter

__all__ = [
    "AuditWitness",
    "Mismatch",
    "WitnessHead",
    "WitnessReport",
    "Witnessed",
    "compare",
    "head_location",
    "read_witnessed",
]

log = structlog.get_logger(__name__)

_HOST = re.compile(r"^[A-Za-z0-9_.-]+$")
_PENDING_KEY = "audit-witness:pending"  # state store: what is still to be witnessed, across restarts
_HASH = re.compile(r"^[0-9a-f]{64}$")
Reason = Literal["start", "interval", "rotation", "recovery"]
MismatchKind = Literal["behind", "rewritten", "missing"]


def head_location(witness_path: str, host: str) -> tuple[str, str]:
    """`(mount, path)` of a host's heads key; ValueError for a host name that is not one path segment."""
    if not _HOST.match(host):
        raise ValueError(f"host name {host!r} cannot name a Vault key (letters, digits, '_', '.', '-')")
    mount, _, prefix = witness_path.strip("/").partition("/")
    return mount, f"{prefix}/{host}"


@dataclass(frozen=True)
class WitnessHead:
    """A chain head as written to Vault: the record `seq` with `hash`, in `file` (whose first record is
    `file_first_seq`), in a trail whose oldest record was `trail_first_seq`."""

    seq: int
    hash: str
    file: str
    file_first_seq: int
    trail_first_seq: int
    time: str
    reason: str
    host: str

    def data(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "file": self.file, "file_first_seq": self.file_first_seq,
                "trail_first_seq": self.trail_first_seq, "time": self.time, "reason": self.reason,
                "host": self.host}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> WitnessHead:
        """The head in a KV version's data; ValueError saying which field is wrong."""
        def integer(name: str) -> int:
            value = data.get(name)
            if isinstance(value, str) and value.isdigit():  # KV data written by hand or another tool
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"field {name!r} is not a non-negative integer")
            return value

        digest = data.get("hash")
        if not isinstance(digest, str) or not _HASH.match(digest):
            raise ValueError("field 'hash' is not 64 lowercase hex digits")
        return cls(seq=integer("seq"), hash=digest, file=str(data.get("file", "")),
                   file_first_seq=integer("file_first_seq"), trail_first_seq=integer("trail_first_seq"),
                   time=str(data.get("time", "")), reason=str(data.get("reason", "")),
                   host=str(data.get("host", "")))


@dataclass(frozen=True)
class Witnessed:
    """One version of the heads key: Vault's version number and `created_time`, and the head in it (None
    with `problem` when the version is deleted or does not hold a head)."""

    version: int
    created: str
    head: WitnessHead | None
    problem: str | None = None


@dataclass(frozen=True)
class Mismatch:
    kind: MismatchKind
    seq: int  # the first seq that no longer matches the witness
    why: str
    version: int
    witnessed_at: str


@dataclass(frozen=True)
class WitnessReport:
    ok: bool
    heads: int  # heads compared
    oldest: str | None  # Vault's created_time of the oldest head compared: how far back the witness reaches
    newest: WitnessHead | None
    matched_through: int | None  # the highest witnessed seq the trail still holds with the same hash
    mismatches: tuple[Mismatch, ...] = ()
    problems: tuple[str, ...] = ()  # versions that are not heads (deleted, malformed)

    @property
    def first_bad_seq(self) -> int | None:
        return min((m.seq for m in self.mismatches), default=None)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "heads": self.heads, "oldest": self.oldest,
                "newest": None if self.newest is None else self.newest.data(),
                "matched_through": self.matched_through, "first_bad_seq": self.first_bad_seq,
                "mismatches": [{"kind": m.kind, "seq": m.seq, "why": m.why, "version": m.version,
                                "witnessed_at": m.witnessed_at} for m in self.mismatches],
                "problems": list(self.problems)}


def compare(index: ChainIndex, witnessed: Sequence[Witnessed]) -> WitnessReport:
    """The local trail (`index`, with the hashes at every witnessed seq) against the witnessed heads.

    One mismatch per kind is reported, the one with the lowest seq; `ok` only when there are heads and
    every one matches (a trail nothing witnessed is not confirmed).
    """
    heads = sorted((w for w in witnessed if w.head is not None), key=lambda w: w.version)
    problems = tuple(f"version {w.version}: {w.problem}" for w in witnessed if w.head is None)
    first, last = index.first_seq, index.last_seq
    matched = sorted(w.head.seq for w in heads if w.head is not None and index.hashes.get(w.head.seq) == w.head.hash)
    found: dict[MismatchKind, Mismatch] = {}

    def report(kind: MismatchKind, seq: int, why: str, w: Witnessed) -> None:
        if kind not in found or seq < found[kind].seq:
            found[kind] = Mismatch(kind, seq, why, w.version, w.created)

    for w in heads:
        head = w.head
        assert head is not None
        at = f"witnessed at {w.created or head.time} (version {w.version})"
        if first is not None and head.trail_first_seq < first:
            report("missing", head.trail_first_seq,
                   f"seq {head.trail_first_seq}..{first - 1} are gone: the trail starts at seq {first} but held "
                   f"seq {head.trail_first_seq} when seq {head.seq} was {at} (oldest rotated file(s) deleted)", w)
        if last is None or head.seq > last:
            ends = "the trail is empty" if last is None else f"the trail ends at seq {last}"
            report("behind", 1 if last is None else last + 1,
                   f"{ends} but seq {head.seq} was {at}: truncated, or replaced with an older copy", w)
        elif first is not None and head.seq < first:
            report("missing", head.seq, f"seq {head.seq} was {at} but the trail starts at seq {first} "
                   "(rotated file(s) deleted)", w)
        elif head.seq not in index.hashes:
            gap = _gap_around(index, head.seq)
            report("missing", gap[0], f"seq {head.seq} was {at} but no file holds seq {gap[0]}..{gap[1]} "
                   "(a rotated file deleted)", w)
        elif index.hashes[head.seq] != head.hash:
            before = max((s for s in matched if s < head.seq), default=None)
            since = "the start" if before is None else f"seq {before}, the last witnessed head that matches"
            report("rewritten", head.seq, f"seq {head.seq} has another hash than {at}: the records after "
                   f"{since} were rewritten and re-chained", w)
    newest = heads[-1].head if heads else None
    mismatches = tuple(sorted(found.values(), key=lambda m: m.seq))
    return WitnessReport(ok=bool(heads) and not mismatches, heads=len(heads),
                         oldest=heads[0].created if heads else None, newest=newest,
                         matched_through=matched[-1] if matched else None,
                         mismatches=mismatches, problems=problems)


def _gap_around(index: ChainIndex, seq: int) -> tuple[int, int]:
    """The run of seqs missing between the files' spans that contains `seq` (just `seq` if none does)."""
    below = max((f.last_seq for f in index.files if f.last_seq is not None and f.last_seq < seq), default=seq - 1)
    above = min((f.first_seq for f in index.files if f.first_seq is not None and f.first_seq > seq), default=seq + 1)
    return below + 1, above - 1


def read_witnessed(client: VaultClient, mount: str, path: str, *, since: datetime | None = None,
                   workers: int = 8) -> list[Witnessed]:
    """Every version the heads key keeps (created at or after `since`), read `workers` at a time."""
    try:
        versions = client.versions(mount, path)
    except VaultError as exc:
        if exc.status != 404:
            raise
        versions = []  # nothing witnessed for this host
    kept = [v for v in versions if since is None or _created(v.created_time) >= since]

    def read(version: int, created: str, deleted: bool) -> Witnessed:
        if deleted:
            return Witnessed(version, created, None, "deleted or destroyed (the daemon's policy cannot do that)")
        try:
            return Witnessed(version, created, WitnessHead.from_data(client.read_version(mount, path, version)))
        except ValueError as exc:
            return Witnessed(version, created, None, f"not a chain head: {exc}")

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="witness-read") as pool:
        return list(pool.map(lambda v: read(*v), kept))


def _created(value: str) -> datetime:
    try:  # Vault: RFC 3339 with nanoseconds, e.g. 2026-12-06T01:02:03.123456789Z
        return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00")))
    except ValueError:
        return datetime.min.replace(tzinfo=utcnow().tzinfo)


def trail_first_seq(audit_log: Path) -> int | None:
    """The seq of the trail's oldest record (the first line of the oldest file that holds one)."""
    return next((seq for seq in map(first_seq, chain_files(audit_log)) if seq is not None), None)


def local_hash_at(audit_log: Path, seq: int) -> str | None:
    """The stated hash of record `seq` in the trail of `audit_log`, reading only the file that holds it."""
    for path in reversed(chain_files(audit_log)):
        start = first_seq(path)
        if start is not None and start <= seq:
            return chain_index([path], [seq]).hashes.get(seq)
    return None


# ------------------------------------------------------------------------------------ the component


@dataclass
class _Pending:
    rotations: deque[RotatedFile] = field(default_factory=deque)
    failures: int = 0  # heads not written since `since`
    since: str | None = None  # first failure of the current outage
    error: str | None = None


class AuditWitness:
    """Writes this host's chain head to Vault (see the module doc). Started with a [vault] table and
    `audit.witness` on. `writer_lookup(path)` gives the audit trail's writer once it is open."""

    name = "audit-witness"

    def __init__(self, writer_lookup: Callable[[Path], AuditWriter | None] | None = None,
                 client_for: Callable[[Context], VaultClient] | None = None) -> None:
        from ..vault.shared import vault_for
        from .component import writer_for

        self._writer_lookup = writer_lookup or writer_for
        self._client_for = client_for or vault_for
        self._ctx: Context | None = None
        self._writer: AuditWriter | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending = _Pending()
        self._saved: dict[str, Any] | None = None  # the pending state as last stored
        self._written: ChainHead | None = None
        self._written_at: str | None = None
        self._error: str | None = None  # a problem that stops witnessing (bad host name)
        self._mismatch: str | None = None

    def start(self, ctx: Context) -> None:
        self._ctx = ctx
        self._stop.clear()
        try:
            self._location = head_location(ctx.config.audit.witness_path, ctx.host)
        except ValueError as exc:
            self._error = str(exc)
            log.error("audit_witness_disabled", error=self._error)
            return
        self._load_pending(ctx)
        self._thread = threading.Thread(target=self._run, name="audit-witness", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._writer is not None and self._writer.on_rotate == self._rotated:
            self._writer.on_rotate = None
        if self._ctx is not None and self._thread is not None:
            self._save_pending(self._ctx)  # a rotation head or an outage not yet written: the next start has it

    def _load_pending(self, ctx: Context) -> None:
        """What an earlier run could not witness (Vault down at its stop): rotated files' last heads and
        the outage, so that they are written, and the gap recorded, once Vault answers."""
        stored = ctx.state.get_cursor(_PENDING_KEY)
        if not isinstance(stored, dict):
            return
        try:
            rotations = deque(RotatedFile(int(first), ChainHead(int(seq), str(digest)))
                              for first, seq, digest in stored.get("rotations") or ())
            pending = _Pending(rotations, int(stored.get("failures") or 0),
                               str(stored["since"]) if stored.get("since") else None,
                               str(stored["error"]) if stored.get("error") else None)
        except (TypeError, ValueError) as exc:
            log.error("audit_witness_pending_unreadable", error=str(exc))
            return
        with self._lock:
            pending.rotations.extend(self._pending.rotations)
            self._pending = pending
        self._saved = stored
        log.info("audit_witness_pending_resumed", rotations=len(rotations), outage_since=pending.since)

    def _save_pending(self, ctx: Context) -> None:
        with self._lock:
            p = self._pending
            doc = {"rotations": [[r.first_seq, r.last.seq, r.last.hash] for r in p.rotations],
                   "failures": p.failures, "since": p.since, "error": p.error} if p.rotations or p.since else None
        if doc != self._saved:
            try:
                ctx.state.set_cursor(_PENDING_KEY, doc)
            except RegwardenError as exc:
                log.error("audit_witness_pending_not_saved", error=str(exc))
                return
            self._saved = doc

    def _rotated(self, closed: RotatedFile) -> None:  # the writer's lock is held: only note it
        with self._lock:
            self._pending.rotations.append(closed)
        self._wake.set()

    def _run(self) -> None:
        assert self._ctx is not None
        interval = self._ctx.config.audit.witness_interval.total_seconds()
        backoff = Backoff(initial=min(5.0, interval), maximum=interval)
        checked = False
        reason: Reason = "start"
        while not self._stop.is_set():
            wait = interval
            if self._attach():
                try:
                    if not checked:
                        self._check_start()
                        checked = True
                    self._write_due(reason)
                    reason = "interval"
                    backoff.reset()
                except RegwardenError as exc:
                    self._failed(exc)
                    wait = backoff.next()
                self._save_pending(self._ctx)
            else:
                wait = 0.2  # the trail's writer is not open yet (waiting for the HMAC key)
            self._wake.wait(wait)
            self._wake.clear()

    def _attach(self) -> bool:
        assert self._ctx is not None
        if self._writer is None:
            writer = self._writer_lookup(self._ctx.config.daemon.audit_log)
            if writer is None:
                return False
            writer.on_rotate = self._rotated
            self._writer = writer
        return True

    def _check_start(self) -> None:
        """Compare the trail with the last head Vault holds (its seq and hash, and the trail's first seq then);
        a trail that lost or rewrote witnessed records is an `audit.witness_mismatch` record. Cheap: reads
        one file and the first line of each; `audit verify --witness` compares every kept head."""
        assert self._ctx is not None and self._writer is not None
        client, (mount, path) = self._client_for(self._ctx), self._location
        try:
            current = client.read_metadata(mount, path).current_version
        except VaultError as exc:
            if exc.status == 404:
                return  # nothing witnessed yet for this host
            raise
        if current == 0:
            return
        try:
            head = WitnessHead.from_data(client.read_version(mount, path, current))
        except ValueError as exc:
            log.error("audit_witness_unreadable", vault_path=f"{mount}/{path}", version=current, error=str(exc))
            return
        local = self._writer.head
        why = None
        if head.seq > local.seq:
            why = f"the trail ends at seq {local.seq} but Vault witnessed seq {head.seq} at {head.time}"
        else:
            found = local_hash_at(self._ctx.config.daemon.audit_log, head.seq)
            if found is None:
                why = f"the trail no longer holds seq {head.seq}, witnessed at {head.time}"
            elif found != head.hash:
                why = f"seq {head.seq} has another hash than Vault witnessed at {head.time}"
        if why is None:
            first = trail_first_seq(self._ctx.config.daemon.audit_log)
            if first is not None and head.trail_first_seq < first:
                why = (f"seq {head.trail_first_seq}..{first - 1} are gone: the trail starts at seq {first} but "
                       f"held seq {head.trail_first_seq} at {head.time} (oldest rotated file(s) deleted)")
        if why is None:
            return
        self._mismatch = why
        self._ctx.metrics.audit_witness_mismatches.inc()
        log.error("audit_witness_mismatch", reason=why, witnessed_seq=head.seq, local_seq=local.seq)
        self._ctx.emit(Event(source="regwarden", kind="audit.witness_mismatch", time=utcnow(), host=self._ctx.host,
                             outcome="failure",
                             detail={"reason": why, "witnessed_seq": head.seq, "witnessed_hash": head.hash,
                                     "witnessed_at": head.time, "local_seq": local.seq,
                                     "vault_path": f"{mount}/{path}", "vault_version": current}))

    def _write_due(self, reason: Reason) -> None:
        """Write the pending rotation heads, then the current head if it moved since the last write."""
        assert self._ctx is not None and self._writer is not None
        audit_log = self._ctx.config.daemon.audit_log
        while True:
            with self._lock:
                closed = self._pending.rotations[0] if self._pending.rotations else None
            if closed is None:
                break
            # `.1` when it was closed; older by now if more rotations happened before it could be written
            name = next((f.name for f in chain_files(audit_log)[:-1] if first_seq(f) == closed.first_seq),
                        f"{audit_log.name}.1")
            self._put(closed.last, name, closed.first_seq, "rotation")
            with self._lock:
                self._pending.rotations.popleft()
        head = self._writer.head
        if head.seq == 0 or head == self._written:
            return
        self._put(head, audit_log.name, first_seq(audit_log) or head.seq, reason)

    def _put(self, head: ChainHead, file: str, file_first: int, reason: Reason) -> None:
        assert self._ctx is not None
        ctx, (mount, path) = self._ctx, self._location
        trail_first = trail_first_seq(ctx.config.daemon.audit_log) or file_first
        with self._lock:
            outage = self._pending.since
        now = iso(utcnow())
        witnessed = WitnessHead(head.seq, head.hash, file, file_first, trail_first, now,
                                "recovery" if outage else reason, ctx.host)
        self._client_for(ctx).write(mount, path, witnessed.data(), cas=None)
        self._written, self._written_at = head, now
        ctx.metrics.audit_witness_writes.labels("ok").inc()
        ctx.metrics.audit_witness_seq.set(head.seq)
        ctx.metrics.audit_witness_last_success.set(utcnow().timestamp())
        if outage:
            with self._lock:
                pending, self._pending = self._pending, _Pending(rotations=self._pending.rotations)
            log.warning("audit_witness_recovered", since=pending.since, heads_not_written=pending.failures,
                        seq=head.seq)
            ctx.emit(Event(source="regwarden", kind="audit.witness_gap", time=utcnow(), host=ctx.host,
                           outcome="failure",
                           detail={"reason": "chain heads could not be written to Vault", "since": pending.since,
                                   "until": now, "heads_not_written": pending.failures, "error": pending.error,
                                   "witnessed_seq": head.seq}))

    def _failed(self, exc: RegwardenError) -> None:
        assert self._ctx is not None
        self._ctx.metrics.audit_witness_writes.labels("error").inc()
        with self._lock:
            first = self._pending.since is None
            self._pending.failures += 1
            self._pending.since = self._pending.since or iso(utcnow())
            self._pending.error = str(exc)
        (log.warning if first else log.debug)("audit_witness_write_failed", error=str(exc))

    def health(self) -> Health:
        return Health(True)  # witnessing is best effort: the trail itself is what readiness is about

    def status(self) -> dict[str, Any]:
        with self._lock:
            pending = self._pending
            out: dict[str, Any] = {"seq": None if self._written is None else self._written.seq,
                                   "written_at": self._written_at, "failing_since": pending.since,
                                   "error": self._error or pending.error, "mismatch": self._mismatch,
                                   "rotations_pending": len(pending.rotations)}
        if self._ctx is not None and self._error is None:
            out["vault_path"] = "/".join(self._location)
        return out
