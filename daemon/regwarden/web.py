"""The read-only HTTP listener (`daemon.listen`): /metrics, /healthz, /readyz, /status.

Nothing here changes state; the local API that does (rotate, silence, reload) is the unix socket.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import Metrics
from .redact import scrub

__all__ = ["StatusServer"]


class StatusServer:
    def __init__(self, listen: str, metrics: Metrics, ready: Callable[[], tuple[bool, dict[str, str]]],
                 status: Callable[[], dict[str, Any]]) -> None:
        host, _, port = listen.rpartition(":")
        handler = _make_handler(metrics, ready, status)
        self._server = ThreadingHTTPServer((host.strip("[]"), int(port)), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-status", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, which never ran if start() did not
            self._server.shutdown()
        self._server.server_close()


def _make_handler(metrics: Metrics, ready: Callable[[], tuple[bool, dict[str, str]]],
                  status: Callable[[], dict[str, Any]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "regwarden"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b"ok\n", "text/plain")
            elif path == "/readyz":
                ok, reasons = ready()
                body = "ready\n" if ok else "".join(f"{k}: {v}\n" for k, v in sorted(reasons.items()))
                self._send(200 if ok else 503, body.encode(), "text/plain")
            elif path == "/status":
                payload = json.dumps(scrub(status()), indent=2, sort_keys=True, default=str).encode()
                self._send(200, payload, "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def do_HEAD(self) -> None:
            self.do_GET()

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler
