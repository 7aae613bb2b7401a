"""`AuditTrail`: the component that writes every Event on the bus to the hash-chained audit log.

Always on; the file is `daemon.audit_log`. The writer is kept per path for the life of the process,
so a reload (stop, start) continues the same chain and never has two writers on one file. `stop`
does not unsubscribe: the bus is drained after components stop, and what it still delivers is
handed to the OS before the handler returns, until the process exits.

With `audit.hmac_key_vault_path` the chain is HMAC-keyed with the key kept in Vault (KV v2 entry,
key `hmac_key`, at least 16 characters). The key is read in the background at start (retried with
backoff while Vault is unreachable); until it arrives Events are held in memory (up to
`buffer_limit`, older ones dropped and reported as an `audit.gap`) and the component is not ready.
The chain is never written with a weaker hash than configured.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from .. import redact
from ..backoff import Backoff
from ..bus import Checkpoint
from ..component import Context, Health
from ..errors import AuditError, RegwardenError
from ..events import Event, Signal, utcnow
from .chain import AuditWriter

if TYPE_CHECKING:
    from ..vault.client import VaultClient

__all__ = ["AuditTrail", "close_writers", "read_hmac_key", "vault_hmac_key", "writer_for"]

log = structlog.get_logger(__name__)

_writers: dict[Path, AuditWriter] = {}
_writers_lock = threading.Lock()
_MIN_KEY_CHARS = 16


def _shared_writer(path: Path, *, key: bytes | None, max_bytes: int, fsync_interval: float) -> AuditWriter:
    with _writers_lock:
        writer = _writers.get(path)
        if writer is None:
            writer = _writers[path] = AuditWriter(path, key=key, max_bytes=max_bytes,
                                                  fsync_interval=fsync_interval)
        else:
            writer.resume_batching(fsync_interval)
        return writer


def writer_for(path: Path) -> AuditWriter | None:
    """The writer of the audit log `path` in this process, once the trail has opened it."""
    with _writers_lock:
        return _writers.get(path)


def close_writers() -> None:
    """Close every audit writer of this process (tests; the daemon lets exit close them)."""
    with _writers_lock:
        for writer in _writers.values():
            writer.close()
        _writers.clear()


def vault_hmac_key(ctx: Context) -> bytes:
    """The chain's HMAC key from the daemon's shared Vault client (see `read_hmac_key`)."""
    from ..vault.shared import vault_for

    return read_hmac_key(vault_for(ctx), ctx.config.audit.hmac_key_vault_path or "")


def read_hmac_key(client: VaultClient, location: str) -> bytes:
    """Field `hmac_key` of the current version of the KV v2 entry `location` (MOUNT/PATH); registered
    for redaction."""
    mount, _, path = location.partition("/")
    data = client.read_version(mount, path, client.read_metadata(mount, path).current_version)
    value = data.get("hmac_key")
    if not isinstance(value, str) or len(value) < _MIN_KEY_CHARS:
        raise AuditError(f"Vault {location}: field 'hmac_key' is missing or shorter than {_MIN_KEY_CHARS}"
                         " characters")
    redact.register(value)
    return value.encode()


class AuditTrail:
    """Subscribes to the bus and appends each Event's record (Signals are not audit records).

    `key`: the HMAC key, or None. When None and `audit.hmac_key_vault_path` is set, `key_reader(ctx)`
    (default: `vault_hmac_key`) provides it.
    """

    name = "audit"
    bus_consumer = True  # stopped after the bus is drained, so no record is lost at shutdown

    def __init__(self, key: bytes | None = None, *, key_reader: Callable[[Context], bytes] | None = None,
                 buffer_limit: int = 10_000) -> None:
        self._key = key
        self._key_reader = key_reader or vault_hmac_key
        self._buffer_limit = buffer_limit
        self._ctx: Context | None = None
        self._writer: AuditWriter | None = None
        self._error: str | None = None
        self._key_error: str | None = None
        self._written = 0
        self._failed = 0  # appends that failed (or Events dropped while waiting) since the last loss report
        self._held: deque[Event | Checkpoint] = deque()  # in bus order, while there is no writer
        self._held_lock = threading.Lock()
        self._stop = threading.Event()
        self._fetcher: threading.Thread | None = None

    def start(self, ctx: Context) -> None:
        self._ctx = ctx
        self._stop.clear()
        ctx.bus.subscribe(self.name, self.handle, self.handle_batch)  # replaces a previous instance's
        ctx.bus.set_keeper(self.keep)
        if self._key is None and ctx.config.audit.hmac_key_vault_path:
            self._fetcher = threading.Thread(target=self._fetch_key, name="audit-hmac-key", daemon=True)
            self._fetcher.start()
        else:
            try:
                self._open()
            except AuditError as exc:
                self._error = str(exc)
                raise

    def _open(self) -> None:
        assert self._ctx is not None
        cfg = self._ctx.config
        writer = _shared_writer(cfg.daemon.audit_log, key=self._key, max_bytes=cfg.audit.max_bytes,
                                fsync_interval=cfg.audit.fsync_interval.total_seconds())
        writer.on_loss = self._ctx.bus.record_loss  # a recovery that lost records fails later checkpoints
        with self._held_lock:
            if self._stop.is_set():  # stopped while the key was on its way: stop() settled what was held
                return
            self._writer = writer
            held, self._held = self._held, deque()
            events: list[Event] = []
            for item in held:
                if isinstance(item, Event):
                    events.append(item)
                    continue
                if events:
                    self._write(events)
                    events = []
                self._settle(writer, item)
            if events:
                self._write(events)
        log.info("audit_trail_started", path=str(cfg.daemon.audit_log), seq=writer.head.seq,
                 hmac=self._key is not None, held=len(held))
        if writer.torn_bytes:
            self._report_loss([], why="the daemon stopped while writing a record")

    def _fetch_key(self) -> None:
        assert self._ctx is not None
        backoff = Backoff(initial=1.0, maximum=60.0)
        while not self._stop.is_set():
            try:
                self._key = self._key_reader(self._ctx)
            except RegwardenError as exc:
                self._key_error = str(exc)
                log.error("audit_hmac_key_unavailable", vault_path=self._ctx.config.audit.hmac_key_vault_path,
                          error=self._key_error, held=len(self._held))
                self._stop.wait(backoff.next())
                continue
            self._key_error = None
            try:
                self._open()
            except AuditError as exc:
                self._error = str(exc)
                log.error("audit_trail_start_failed", error=self._error)
            return

    def handle(self, item: Event | Signal) -> None:
        if isinstance(item, Event):
            self.handle_batch((item,))

    def keep(self, checkpoint: Checkpoint) -> None:
        """The bus's durability keeper: run the checkpoint once what came before it is fsynced, or
        fail it when some of that was lost (a write failed, records dropped while waiting for the key)."""
        with self._held_lock:
            if self._writer is None:
                self._hold(checkpoint)
                return
            writer = self._writer
        self._settle(writer, checkpoint)

    def _settle(self, writer: AuditWriter, checkpoint: Checkpoint) -> None:
        assert self._ctx is not None
        bus, since = self._ctx.bus, checkpoint.since
        # records lost after the publisher began (perhaps its own) fail it; asked under the writer's
        # lock, where a recovery counts what it lost, so that no loss slips between check and wait
        valid = None if since is None else (lambda: bus.losses == since)
        writer.when_durable(checkpoint.done, soon=checkpoint.urgent, failed=checkpoint.failed, valid=valid)

    def handle_batch(self, events: Sequence[Event]) -> None:
        if self._ctx is None:
            return
        with self._held_lock:
            if self._writer is None:  # waiting for the HMAC key
                for event in events:
                    self._hold(event)
                return
        self._write(events)

    def _hold(self, item: Event | Checkpoint) -> None:
        """Keep `item` until the writer opens (call with _held_lock); beyond buffer_limit drop the oldest.
        Stopped (a reload while the key was awaited), nothing will open: the item is lost at once."""
        if self._stop.is_set():
            if isinstance(item, Event):
                self._failed += 1
                self._lost()
            else:
                item.fail()
            return
        if len(self._held) >= self._buffer_limit:
            dropped = self._held.popleft()
            if isinstance(dropped, Event):
                self._failed += 1
                self._lost()
            else:
                dropped.fail()
        self._held.append(item)

    def _write(self, events: Sequence[Event]) -> None:
        assert self._ctx is not None and self._writer is not None
        metrics = self._ctx.metrics
        written = len(events)
        try:
            self._writer.append_events(events)
        except AuditError as exc:
            metrics.audit_write_errors.inc()
            if self._error is None:
                log.error("audit_write_failed", error=str(exc), records=exc.not_written)
            self._error = str(exc)
            self._failed += exc.not_written
            written -= exc.not_written
            self._lost()
        except Exception as exc:  # a bug, not the disk: still counted, and reported as a gap later
            metrics.audit_write_errors.inc()
            log.exception("audit_write_failed", records=len(events))
            self._error = f"{type(exc).__name__}: {exc}"
            self._failed += len(events)
            written = 0
            self._lost()
        if written:
            self._written += written
            metrics.audit_records.inc(written)
            for event in events[:written]:
                if event.kind == "audit.gap":
                    metrics.audit_gaps.labels(event.source).inc()
        if written < len(events):
            return
        lost = self._writer.take_lost()
        if lost or self._failed:
            self._report_loss(lost)

    def _lost(self) -> None:
        assert self._ctx is not None
        self._ctx.bus.record_loss()

    def _report_loss(self, lost: list[tuple[int, int]], why: str | None = None) -> None:
        """Records were not written (disk full, I/O error, dropped while waiting for the key) and the
        trail works again: say so with an audit.gap record (through the bus, so that the AuditGap
        detector sees it; written directly when the bus is full)."""
        assert self._ctx is not None and self._writer is not None
        why = why or self._error or (self._writer.last_failure if lost else None) or \
            "dropped while waiting for the HMAC key"
        detail: dict[str, Any] = {"reason": f"audit records were not written: {why}",
                                  "records_not_written": self._failed}
        if lost:
            detail["lost_seq"] = [list(r) for r in lost]
        if self._writer.torn_bytes:
            detail["incomplete_record_bytes_cut"] = self._writer.torn_bytes
            self._writer.torn_bytes = 0
        gap = Event(source="regwarden", kind="audit.gap", time=utcnow(), host=self._ctx.host, outcome="failure",
                    detail=detail)
        self._error, self._failed = None, 0
        log.error("audit_records_lost", **detail)
        try:
            self._ctx.bus.publish(gap, timeout=0)  # never wait on the bus from its own dispatcher
        except queue.Full:
            self._write((gap,))

    def stop(self) -> None:
        self._stop.set()
        if self._fetcher is not None:
            self._fetcher.join(2.0)
        with self._held_lock:  # stopped before the key came: what was held is lost
            held, self._held = self._held, deque()
        dropped = sum(isinstance(item, Event) for item in held)
        if dropped:
            self._lost()
            log.error("audit_records_lost", reason="stopped while waiting for the HMAC key", records=dropped)
        for item in held:
            if isinstance(item, Checkpoint):
                item.fail()
        if self._writer is not None:
            try:
                self._writer.write_through()
            except AuditError as exc:
                log.error("audit_flush_failed", error=str(exc))

    def health(self) -> Health:
        if self._ctx is None:
            return Health(False, "not started")
        if self._writer is None:
            if self._error is not None:
                return Health(False, self._error)
            reason = f": {self._key_error}" if self._key_error else ""
            return Health(False, f"waiting for the audit HMAC key from Vault ({len(self._held)} events held){reason}")
        if self._error is not None:
            return Health(False, f"audit writes failing: {self._error}")
        return Health(True)

    def status(self) -> dict[str, Any]:
        if self._writer is None:
            return {"started": False, "held": len(self._held), "key_error": self._key_error}
        head = self._writer.head
        return {"path": str(self._writer.path), "seq": head.seq, "last_hash": head.hash,
                "written": self._written, "hmac": self._key is not None, "error": self._error}
