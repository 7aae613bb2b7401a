"""`AuditTrail`: the component that writes every Event on the bus to the hash-chained audit log.

Always on; the file is `daemon.audit_log`. The writer is kept per path for the life of the process,
so a reload (stop, start) continues the same chain and never has two writers on one file. `stop`
does not unsubscribe: the bus is drained after components stop, and what it still delivers is
written through (fsynced before the handler returns) until the process exits.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import structlog

from ..component import Context, Health
from ..errors import AuditError
from ..events import Event, Signal, utcnow
from .chain import AuditWriter

__all__ = ["AuditTrail"]

log = structlog.get_logger(__name__)

_writers: dict[Path, AuditWriter] = {}
_writers_lock = threading.Lock()


def _shared_writer(path: Path, *, key: bytes | None, max_bytes: int, fsync_interval: float) -> AuditWriter:
    with _writers_lock:
        writer = _writers.get(path)
        if writer is None:
            writer = _writers[path] = AuditWriter(path, key=key, max_bytes=max_bytes,
                                                  fsync_interval=fsync_interval)
        else:
            writer.resume_batching(fsync_interval)
        return writer


def close_writers() -> None:
    """Close every audit writer of this process (tests; the daemon lets exit close them)."""
    with _writers_lock:
        for writer in _writers.values():
            writer.close()
        _writers.clear()


class AuditTrail:
    """Subscribes to the bus and appends each Event's record (Signals are not audit records).

    `key`: the HMAC key for the chain, or None for plain SHA-256. When `audit.hmac_key_vault_path`
    is set, the daemon reads the key from Vault and passes it here (the Vault adapter's job).
    """

    name = "audit"

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key
        self._ctx: Context | None = None
        self._writer: AuditWriter | None = None
        self._error: str | None = None
        self._written = 0
        self._failed = 0  # appends that failed since the last loss report

    def start(self, ctx: Context) -> None:
        self._ctx = ctx
        cfg = ctx.config
        if cfg.audit.hmac_key_vault_path and self._key is None:
            log.warning("audit_hmac_key_missing", vault_path=cfg.audit.hmac_key_vault_path,
                        detail="chaining with plain SHA-256 until the key is provided")
        self._writer = _shared_writer(cfg.daemon.audit_log, key=self._key, max_bytes=cfg.audit.max_bytes,
                                      fsync_interval=cfg.audit.fsync_interval.total_seconds())
        ctx.bus.unsubscribe(self.name)  # a previous instance (before a reload) hands over
        ctx.bus.subscribe(self.name, self.handle)
        head = self._writer.head
        log.info("audit_trail_started", path=str(cfg.daemon.audit_log), seq=head.seq,
                 hmac=self._key is not None)

    def handle(self, item: Event | Signal) -> None:
        if not isinstance(item, Event) or self._writer is None or self._ctx is None:
            return
        metrics = self._ctx.metrics
        try:
            self._writer.append(item.record())
        except (AuditError, ValueError) as exc:
            metrics.audit_write_errors.inc()
            if self._error is None:
                log.error("audit_write_failed", error=str(exc), kind=item.kind)
            self._error = str(exc)
            self._failed += 1
            return
        self._written += 1
        metrics.audit_records.inc()
        if item.kind == "audit.gap":
            metrics.audit_gaps.labels(item.source).inc()
        lost = self._writer.take_lost()
        if lost or self._failed:
            self._report_loss(lost)

    def _report_loss(self, lost: list[tuple[int, int]]) -> None:
        """Writes failed (disk full, I/O error) and the writer recovered: say so with an audit.gap record
        (through the bus, so the AuditGap detector sees it; written directly if the bus is full)."""
        assert self._ctx is not None and self._writer is not None
        detail: dict[str, Any] = {"reason": f"audit log writes failed: {self._error}",
                                  "records_not_written": self._failed}
        if lost:
            detail["lost_seq"] = [list(r) for r in lost]
        gap = Event(source="regwarden", kind="audit.gap", time=utcnow(), host=self._ctx.host, outcome="failure",
                    detail=detail)
        self._error, self._failed = None, 0
        log.error("audit_records_lost", **detail)
        try:
            self._ctx.bus.publish(gap, timeout=0)  # never wait on the bus from its own dispatcher
        except queue.Full:
            self.handle(gap)

    def stop(self) -> None:
        if self._writer is not None:
            try:
                self._writer.write_through()
            except AuditError as exc:
                log.error("audit_flush_failed", error=str(exc))

    def health(self) -> Health:
        if self._writer is None:
            return Health(False, "not started")
        if self._error is not None:
            return Health(False, f"audit writes failing: {self._error}")
        return Health(True)

    def status(self) -> dict[str, Any]:
        if self._writer is None:
            return {"started": False}
        head = self._writer.head
        return {"path": str(self._writer.path), "seq": head.seq, "last_hash": head.hash,
                "written": self._written, "hmac": self._key is not None, "error": self._error}
