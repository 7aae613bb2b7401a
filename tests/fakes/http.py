"""A real HTTP server on 127.0.0.1 that records every request and answers from a script.

Used where the service on the other end is a plain HTTP receiver (webhooks) or cannot run here (Slack,
see `tests.fakes.slack`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Answer", "Received", "RecordingServer", "recording_server"]


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    at: float = field(default_factory=time.monotonic)  # when it arrived (time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: bytes | str | dict[str, Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None  # answer only once this is set (released when the server stops)

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, dict):
            return json.dumps(self.body).encode(), "application/json; charset=utf-8"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return self.body, "application/octet-stream"


class RecordingServer:
    """`answer_next(...)` queues answers; without one, `respond(request)` decides (default: 200)."""

    def __init__(self, respond: Callable[[Received], Answer] | None = None) -> None:
        self.received: list[Received] = []
        self._respond = respond or (lambda _: Answer(200, "ok"))
        self._queue: list[Answer] = []
        self._holds: list[threading.Event] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="recording-server",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def answer_next(self, *answers: Answer) -> None:
        with self._lock:
            self._queue.extend(answers)

    def hold_answers(self) -> threading.Event:
        """From now on, answer nothing until the returned event is set (or the server stops)."""
        event = threading.Event()
        with self._lock:
            self._holds.append(event)
        before = self._respond
        self._respond = lambda request: before(request) if event.is_set() else Answer(200, "ok", hold=event)
        return event

    def close(self) -> None:
        for event in self._holds:
            event.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def _answer(self, request: Received) -> Answer:
        with self._lock:
            self.received.append(request)
            if self._queue:
                return self._queue.pop(0)
        return self._respond(request)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                answer = server._answer(Received(self.command, self.path, headers, body))
                if answer.hold is not None:
                    answer.hold.wait(30)
                payload, content_type = answer.encoded()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (timeout test)
                    pass

            do_PUT = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler


@contextmanager
def recording_server(respond: Callable[[Received], Answer] | None = None) -> Iterator[RecordingServer]:
    server = RecordingServer(respond)
    try:
        yield server
    finally:
        server.close()
