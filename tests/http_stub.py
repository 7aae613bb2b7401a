"""Local HTTP servers that answer each request from a function of its path: for endpoints that must answer
what no real component would (nonsense, odd status codes)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, dict[str, str], bytes]  # status, headers, body
Start = Callable[[Callable[[str], Answer]], tuple[str, list[dict[str, str]]]]


@contextmanager
def stub_servers() -> Iterator[Start]:
    """`start(answer)` serves `answer(path)` for GET/POST/DELETE on 127.0.0.1 and returns the base URL and the
    requests seen (path and headers); every server started is shut down on exit."""
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Callable[[str], Answer]) -> tuple[str, list[dict[str, str]]]:
        seen: list[dict[str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                seen.append({"path": self.path, **dict(self.headers)})
                status, headers, body = answer(self.path)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}", seen

    try:
        yield start
    finally:
        for httpd in servers:
            httpd.shutdown()
            httpd.server_close()
