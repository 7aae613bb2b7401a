"""The registry notifications receiver: `POST /v1/registry-events` → audit Events.

A threaded HTTP(S) server. Per request, in this order:
- another path → 404, another method → 405;
- `Authorization: Bearer <token>` compared in constant time; missing or wrong → 401;
- no `Content-Length` → 411; over `max_body_bytes` → 413, the body is not read;
- a body that is not a distribution envelope → 400 with a short reason;
- otherwise every event whose id was not seen before is put on the bus → 200 once the audit log has
  it on disk (see `accept`). A full bus (the daemon cannot keep up) or an audit log that does not
  get it to disk within DURABLE_TIMEOUT → 503, so the registry retries the envelope later.
Every refusal is counted in `regwarden_input_rejected_total{source="registry-notify",reason}`.
Connections have a read timeout (slow clients cannot hold a thread for long) and their number is
bounded; the TLS handshake runs in the connection's thread, never in the accept loop.
Seen ids are kept in the state store for `SEEN_RETENTION` (and at most `SEEN_MAX` of them).
"""

from __future__ import annotations

import hmac
import queue
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog

from ..component import Context, Health
from ..config import RegistryNotificationsSource, read_secret
from ..errors import AuditError
from ..events import Event, utcnow
from ..state import StateStore

__all__ = ["PATH", "NotificationReceiver", "SeenIds", "authorized", "body_problem"]

log = structlog.get_logger(__name__)

PATH = "/v1/registry-events"
SEEN_RETENTION = 24 * 3600.0
SEEN_MAX = 100_000
CONNECTION_TIMEOUT = 10.0
MAX_CONNECTIONS = 64
PUBLISH_TIMEOUT = 2.0
DURABLE_TIMEOUT = 5.0
BODY_DEADLINE = 30.0

_DDL = """
CREATE TABLE IF NOT EXISTS notify_seen (id TEXT PRIMARY KEY, seen REAL NOT NULL);
CREATE INDEX IF NOT EXISTS notify_seen_by_time ON notify_seen (seen);
"""


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries exactly `Bearer <token>` (constant-time compare)."""
    expected = f"Bearer {token}".encode()
    return hmac.compare_digest((header or "").strip().encode("utf-8", "replace"), expected)


def body_problem(content_length: str | None, max_bytes: int) -> tuple[int, str] | None:
    """The refusal `(status, reason)` a Content-Length calls for before reading the body, if any."""
    if content_length is None:
        return 411, "no_length"
    try:
        length = int(content_length)
    except ValueError:
        return 400, "bad_length"
    if length < 0:
        return 400, "bad_length"
    if length > max_bytes:
        return 413, "too_large"
    return None


class SeenIds:
    """Notification event ids already on the bus, persisted with bounded retention."""

    def __init__(self, state: StateStore, retention: float = SEEN_RETENTION, maximum: int = SEEN_MAX) -> None:
        self._state = state
        self._retention = retention
        self._max = maximum
        self._inserts = 0
        state.ensure_schema("sources.notifications", _DDL)

    def unseen(self, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        rows = self._state.query(f"SELECT id FROM notify_seen WHERE id IN ({marks})", ids)  # noqa: S608
        return set(ids) - {row["id"] for row in rows}

    def remember(self, ids: list[str], now: float | None = None) -> None:
        stamp = time.time() if now is None else now
        with self._state.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO notify_seen VALUES (?, ?)", [(i, stamp) for i in ids])
        self._inserts += len(ids)
        if self._inserts >= 1000:
            self.prune(stamp)

    def prune(self, now: float | None = None) -> None:
        stamp = time.time() if now is None else now
        self._inserts = 0
        with self._state.transaction() as db:
            db.execute("DELETE FROM notify_seen WHERE seen < ?", (stamp - self._retention,))
            db.execute("DELETE FROM notify_seen WHERE id NOT IN"
                       " (SELECT id FROM notify_seen ORDER BY seen DESC LIMIT ?)", (self._max,))


class _Publication:
    """The events of one envelope on the bus, and their checkpoint: durable, or lost by the audit log."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.ok = False
        self.settled = threading.Event()

    def durable(self) -> None:
        self.ok = True
        self.settled.set()

    def lost(self) -> None:
        self.settled.set()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 tls: ssl.SSLContext | None) -> None:
        self.tls = tls
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        if self.tls is not None:  # the handshake happens in the connection's thread (setup)
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many connections: refuse this one
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("notify_connection_error", client=str(client_address[0]) if client_address else None)


class NotificationReceiver:
    """The `[sources.registry_notifications]` component."""

    name = "registry-notifications"

    def __init__(self, cfg: RegistryNotificationsSource) -> None:
        self._cfg = cfg
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ctx: Context | None = None
        self._seen: SeenIds | None = None
        self._pending: dict[str, _Publication] = {}  # ids on the bus, not known durable yet (oldest first)
        self._lock = threading.Lock()
        self.accepted = 0
        self.duplicates = 0
        self.rejected = 0
        self.last_error: str | None = None
        self.stopped = False

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("receiver not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self, ctx: Context) -> None:
        self._ctx = ctx
        self.stopped = False
        token = read_secret(self._cfg.token_file, self._cfg.token_env)
        if not token:
            raise AuditError("registry notifications: the bearer token is empty")
        tls = None
        if self._cfg.tls_cert_file is not None and self._cfg.tls_key_file is not None:
            tls = _tls_context(self._cfg.tls_cert_file, self._cfg.tls_key_file)
        self._seen = SeenIds(ctx.state)
        self._seen.prune()
        host, _, port = self._cfg.listen.rpartition(":")
        try:
            self._server = _Server((host.strip("[]"), int(port)), self._handler(token), tls)
        except OSError as exc:
            ctx.metrics.source_up.labels(self.name).set(0)
            self.last_error = f"cannot listen on {self._cfg.listen}: {exc.strerror}"
            raise AuditError(f"registry notifications: {self.last_error}") from None
        self._thread = threading.Thread(target=self._serve, name="source-registry-notifications", daemon=True)
        self._thread.start()
        log.info("notify_listening", listen=self._cfg.listen, tls=tls is not None)

    def _serve(self) -> None:
        assert self._server is not None and self._ctx is not None
        self._ctx.metrics.source_up.labels(self.name).set(1)
        try:
            self._server.serve_forever(poll_interval=0.1)
        finally:
            self._ctx.metrics.source_up.labels(self.name).set(0)

    def stop(self) -> None:
        self.stopped = True  # keep-alive connections still open get 503 and are closed
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(2.0)

    def health(self) -> Health:
        if self._thread is None or not self._thread.is_alive():
            return Health(False, self.last_error or "not listening")
        return Health(True)

    def status(self) -> dict[str, Any]:
        from . import source_lag

        listening = self._thread is not None and self._thread.is_alive()
        return {"state": "up" if listening else "down", "last_error": self.last_error,
                "lag_seconds": source_lag(self._ctx, self.name) if self._ctx is not None else None,
                "listen": self._cfg.listen, "tls": self._cfg.tls_cert_file is not None,
                "accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected,
                "listening": listening}

    # ------------------------------------------------------------------ per request

    def reject(self, reason: str) -> None:
        self.rejected += 1
        assert self._ctx is not None
        self._ctx.metrics.input_rejected.labels("registry-notify", reason).inc()

    def accept(self, body: bytes) -> tuple[int, str]:
        """Parse, dedupe and publish one envelope, then wait until its records are on disk in the audit
        log; returns the HTTP status and a short reason.

        The registry forgets an envelope once it got 200, so 200 means durable: the events go on the
        bus followed by an urgent Checkpoint (the audit writer fsyncs at once, not at its interval).
        Ids are remembered as seen (SQLite) only then. Until then they are pending, tied to the
        publication that carries them: a retry of the envelope does not publish them again but waits
        for that publication, and if it failed (a write lost them) they are forgotten, so that the
        next retry publishes them again. Not settled within DURABLE_TIMEOUT → 503, the registry retries.
        """
        from ..audit.parse import parse_notification_envelope

        assert self._ctx is not None and self._seen is not None
        ctx = self._ctx
        observed = utcnow()
        try:
            events = parse_notification_envelope(body, host=ctx.host, observed=observed,
                                                 names=ctx.config.registry_names)
        except ValueError as exc:
            self.reject("malformed")
            return 400, str(exc)[:200]
        mine = _Publication()
        awaited: dict[int, _Publication] = {}  # the publications this envelope's ids depend on
        waiting: list[str] = []  # ids of this envelope not yet remembered as seen
        with self._lock:  # one envelope at a time: check, publish and mark pending stay consistent
            fresh = self._seen.unseen([e.id for e in events if e.id])
            since = ctx.bus.losses  # a loss after this point (perhaps of these events) fails the checkpoint
            try:
                for event in events:
                    if event.id is None or event.id not in fresh:
                        self.duplicates += 1
                        continue
                    if event.id in waiting:  # the same id twice in one envelope
                        continue
                    waiting.append(event.id)
                    earlier = self._pending.get(event.id)
                    if earlier is not None and earlier.settled.is_set() and not earlier.ok:
                        earlier = None  # lost: published again below
                    if earlier is not None:  # a retry: published before, not known durable yet
                        self.duplicates += 1
                        awaited[id(earlier)] = earlier
                        continue
                    ctx.bus.publish(event, timeout=PUBLISH_TIMEOUT)
                    self._lag(event)
                    self._pending[event.id] = mine
                    mine.ids.append(event.id)
                    self.accepted += 1
                if mine.ids:
                    ctx.bus.publish_checkpoint(mine.durable, timeout=PUBLISH_TIMEOUT, urgent=True, failed=mine.lost,
                                               since=since)
                    awaited[id(mine)] = mine
            except queue.Full:  # what went on the bus has no checkpoint: a retry publishes it again
                self._forget(mine)
                self.reject("busy")
                return 503, "event bus full, retry later"
            finally:
                while len(self._pending) > SEEN_MAX:  # a sender that never retries: forget the oldest
                    del self._pending[next(iter(self._pending))]
        deadline = time.monotonic() + DURABLE_TIMEOUT
        settled = [p.settled.wait(max(0.0, deadline - time.monotonic())) for p in awaited.values()]
        if all(settled) and all(p.ok for p in awaited.values()):
            if waiting:
                self._remember(waiting)
            return 200, "ok"
        with self._lock:
            for publication in awaited.values():
                if publication.settled.is_set() and not publication.ok:
                    self._forget(publication)
        self.reject("not_durable")
        return 503, "audit log not written yet, retry later"

    def _forget(self, publication: _Publication) -> None:
        """Its ids are no longer pending (call with _lock): the next retry publishes them again."""
        for event_id in publication.ids:
            if self._pending.get(event_id) is publication:
                del self._pending[event_id]

    def _remember(self, ids: list[str]) -> None:
        """Durable: remember the ids as seen. If the state store is gone (the daemon stopping), the
        records are on disk all the same; a resend after the restart gives a duplicate, not a loss."""
        assert self._seen is not None
        with self._lock:
            try:
                self._seen.remember(ids)
            except Exception as exc:
                log.warning("notify_seen_not_stored", ids=len(ids), error=type(exc).__name__)
            for event_id in ids:
                self._pending.pop(event_id, None)

    def _lag(self, event: Event) -> None:
        assert self._ctx is not None
        self._ctx.metrics.source_lag.labels(self.name).set(
            max(0.0, (event.observed - event.time).total_seconds()))

    def _handler(self, token: str) -> type[BaseHTTPRequestHandler]:
        receiver = self
        max_bytes = self._cfg.max_body_bytes

        class Handler(BaseHTTPRequestHandler):
            server_version = "regwarden"
            sys_version = ""
            protocol_version = "HTTP/1.1"
            timeout = CONNECTION_TIMEOUT

            def setup(self) -> None:
                super().setup()
                # answers are headers + body in two writes: without this, Nagle + delayed ACK add 40 ms
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if isinstance(self.connection, ssl.SSLSocket):
                    self.connection.do_handshake()

            def do_POST(self) -> None:
                if receiver.stopped:  # a keep-alive connection outliving a stop (a reload): the new
                    self._answer(503, "restarting, retry", close=True)  # receiver takes the retry
                    return
                if self.path.split("?", 1)[0] != PATH:
                    receiver.reject("not_found")
                    self._answer(404, "not found", close=True)
                    return
                if not authorized(self.headers.get("Authorization"), token):
                    receiver.reject("unauthorized")
                    self._answer(401, "unauthorized", close=True)
                    return
                problem = body_problem(self.headers.get("Content-Length"), max_bytes)
                if problem is not None:
                    receiver.reject(problem[1])
                    self._answer(problem[0], problem[1].replace("_", " "), close=True)
                    return
                body = self._body(int(self.headers["Content-Length"]))
                if body is None:
                    receiver.reject("slow_body")
                    self._answer(408, "request body too slow", close=True)
                    return
                status, reason = receiver.accept(body)
                self._answer(status, reason)

            def _body(self, length: int) -> bytes | None:
                """The body, or None if it did not arrive within BODY_DEADLINE (each read also times out)."""
                deadline = time.monotonic() + BODY_DEADLINE
                parts: list[bytes] = []
                while length > 0:
                    if time.monotonic() > deadline:
                        return None
                    part = self.rfile.read1(min(length, 65536))
                    if not part:
                        return None
                    parts.append(part)
                    length -= len(part)
                return b"".join(parts)

            def do_GET(self) -> None:
                receiver.reject("method")
                self._answer(405, "use POST " + PATH, close=True)

            do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

            def _answer(self, status: int, reason: str, close: bool = False) -> None:
                body = (reason + "\n").encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Bearer realm="regwarden"')
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler


def _tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise AuditError(f"registry notifications: cannot load TLS certificate {cert} / key {key}: {exc}") from None
    return context

