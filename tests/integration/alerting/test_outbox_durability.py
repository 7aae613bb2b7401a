"""At-least-once delivery through a two-minute sink outage with a pipeline restart in the middle."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from regwarden.events import Signal
from tests.integration.alerting.rig import PipelineRig, wait_for
from tests.integration.harness import free_port

pytestmark = pytest.mark.integration

OUTAGE = 120.0  # seconds the receiver is down: 500s for half of it, then nothing listening


class Receiver:
    """A webhook receiver on a fixed port answering `status`; keeps the bodies it answered 2xx."""

    def __init__(self, port: int, status: int) -> None:
        self.status = status
        self.accepted: list[dict[str, Any]] = []
        self.refused = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if 200 <= receiver.status < 300:
                    receiver.accepted.append(json.loads(body))
                else:
                    receiver.refused += 1
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def signal(name: str, firing: bool = True) -> Signal:
    return Signal(labels={"alertname": "RegistryDown", "registry": name}, firing=firing, severity="critical",
                  annotations={"summary": f"registry {name} is down"})


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        receiver.close()


@pytest.mark.timeout(300)
def test_two_minute_outage_with_restart_loses_nothing_and_keeps_order(tmp_path: Path, port: int,
                                                                      receivers: list[Receiver]) -> None:
    """Every notification queued during a 2-minute outage (500s, then a closed port, with a pipeline
    restart in between) is delivered after recovery, none lost, in order per alert."""
    sinks = [{"name": "hooks", "type": "webhook", "url": f"http://127.0.0.1:{port}/alerts"}]
    knobs = {"retry_max": "5s"}
    receivers.append(Receiver(port, 500))
    start = time.monotonic()

    def at(offset: float) -> None:
        time.sleep(max(0.0, start + offset - time.monotonic()))

    first = PipelineRig(tmp_path, sinks, knobs)
    first.ctx.signal(signal("a"))
    first.ctx.signal(signal("b"))
    at(20)
    first.ctx.signal(signal("c"))
    at(40)
    first.ctx.signal(signal("a", firing=False))
    at(60)
    receivers[0].close()  # nothing listens any more: connection refused
    refused_while_500 = receivers[0].refused
    at(70)
    first.close()  # the daemon restarts while the sink is down
    second = PipelineRig(tmp_path, sinks, knobs)
    try:
        at(80)
        second.ctx.signal(signal("b", firing=False))
        second.ctx.signal(signal("d"))
        at(OUTAGE)
        receivers.append(Receiver(port, 200))
        wait_for(lambda: second.outbox_rows("hooks") == 0, timeout=60, what="the outbox to drain")
        queued = int(second.state.query("SELECT seq FROM sqlite_sequence WHERE name = 'alert_outbox'")[0]["seq"])
        assert not second.pipeline.broken
    finally:
        second.close()

    delivered = receivers[1].accepted
    ids = [n["notification_id"] for n in delivered]
    assert refused_while_500 >= 2  # the sink really was failing, and was retried
    assert sorted(set(ids)) == list(range(1, queued + 1))  # none lost
    assert ids == sorted(ids)  # in the order they were queued
    history: dict[str, list[str]] = {}
    for notification in delivered:
        for alert in notification["alerts"]:
            seq = history.setdefault(alert["labels"]["registry"], [])
            if not seq or seq[-1] != alert["status"]:
                seq.append(alert["status"])
    assert history == {"a": ["firing", "resolved"], "b": ["firing", "resolved"], "c": ["firing"],
                       "d": ["firing"]}
