"""The local API on `state_dir/regwarden.sock` (mode 0600): the only way to change a running daemon.

JSON over HTTP/1.1 on a unix socket, so only root (or the socket's owner) can use it. Components
register routes (`POST /v1/credentials/NAME/rotate`, `POST /v1/silences`, ...); the daemon registers
`GET /v1/status` and `POST /v1/reload`. The TCP listener stays read-only.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import structlog

from .errors import RegwardenError
from .redact import scrub

__all__ = ["LocalApi", "LocalApiClient", "LocalApiError", "Route"]

log = structlog.get_logger(__name__)
# handler(params from the path pattern, JSON body) -> (HTTP status, JSON answer)
Route = Callable[[dict[str, str], Any], tuple[int, Any]]
MAX_BODY = 64 * 1024


class LocalApiError(RegwardenError):
    """The daemon is not running, or it refused the request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class LocalApi:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._routes: list[tuple[str, re.Pattern[str], Route]] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def route(self, method: str, pattern: str, handler: Route) -> None:
        """Register `handler` for e.g. ("POST", "/v1/credentials/{name}/rotate")."""
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
        with self._lock:
            self._routes = [r for r in self._routes if not (r[0] == method and r[1].pattern == regex.pattern)]
            self._routes.append((method, regex, handler))

    def unroute(self, prefix: str) -> None:
        """Drop every route whose pattern starts with `prefix` (a component stopping)."""
        with self._lock:
            self._routes = [r for r in self._routes if not r[1].pattern.startswith("^" + prefix)]

    def start(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = _Server(str(self.path), _make_handler(self))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.path.exists():
            self.path.unlink()

    def dispatch(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self._lock:
            routes = list(self._routes)
        allowed = False
        for route_method, regex, handler in routes:
            match = regex.match(path)
            if match is None:
                continue
            allowed = True
            if route_method != method:
                continue
            try:
                return handler(match.groupdict(), body)
            except RegwardenError as exc:
                return 409, {"error": str(exc)}
            except Exception as exc:
                log.exception("local_api_handler_failed", path=path)
                return 500, {"error": f"internal error: {type(exc).__name__}"}
        return (405, {"error": "method not allowed"}) if allowed else (404, {"error": f"no such endpoint {path}"})


def _make_handler(api: LocalApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "regwarden"
        sys_version = ""

        def address_string(self) -> str:  # unix sockets have no client address
            return "local"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._reply(413, {"error": "body too large"})
                return
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                self._reply(400, {"error": "body is not JSON"})
                return
            status, answer = api.dispatch(self.command, self.path.split("?", 1)[0], body)
            self._reply(status, answer)

        do_GET = do_POST = do_DELETE = _handle

        def _reply(self, status: int, answer: Any) -> None:
            data = json.dumps(scrub(answer), default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class LocalApiClient:
    """What the CLI uses to talk to a running daemon."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout

    def call(self, method: str, endpoint: str, body: Any = None) -> Any:
        conn = _UnixConnection(str(self.path), self.timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, endpoint, body=data, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            raw = response.read()
        except (FileNotFoundError, ConnectionRefusedError):
            raise LocalApiError(f"regwarden is not running (no daemon listening on {self.path})") from None
        except PermissionError:
            raise LocalApiError(f"permission denied on {self.path}: run as the daemon's user (root)") from None
        except (OSError, http.client.HTTPException) as exc:
            raise LocalApiError(f"local API call failed: {exc}") from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            raise LocalApiError("daemon answered with invalid JSON", response.status) from None
        if response.status >= 400:
            message = answer.get("error") if isinstance(answer, dict) else None
            raise LocalApiError(message or f"HTTP {response.status}", response.status)
        return answer
