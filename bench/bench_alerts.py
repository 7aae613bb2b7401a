"""Latency from a Signal on the bus to the notification arriving at a webhook receiver.

A real AlertPipeline (state store in a temp dir, bus started, logging configured as the daemon does at
level info, JSON to /dev/null) delivers through the built-in `webhook` sink to a local HTTP receiver.
Signals are published at a fixed rate, each a distinct alert (its own group), with `group_wait = "0s"`;
each carries its publication time, and the receiver notes when the notification arrives.

    python bench/bench_alerts.py --rate 100 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry

from regwarden.alerting.pipeline import AlertPipeline
from regwarden.bus import Bus
from regwarden.component import Context
from regwarden.config import parse_config
from regwarden.events import Signal
from regwarden.logging import configure_logging
from regwarden.metrics import Metrics
from regwarden.state import StateStore


class Receiver:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                now = time.time()
                with receiver.lock:
                    receiver.latencies += [now - float(a["annotations"]["sent_at"]) for a in body["alerts"]]
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/alerts"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="signals per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    configure_logging("json", "info", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run
    receiver = Receiver()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_config({"daemon": {"state_dir": str(Path(tmp) / "state"), "host": "bench"},
                            "alerts": {"group_wait": "0s", "group_interval": "1s"},
                            "sinks": [{"name": "hooks", "type": "webhook", "url": receiver.url}]})
        metrics = Metrics(CollectorRegistry())
        state = StateStore(cfg.daemon.state_dir)
        bus = Bus(metrics)
        ctx = Context(config=cfg, metrics=metrics, state=state, bus=bus, scheduler=BackgroundScheduler(),
                      host="bench")
        pipeline = AlertPipeline()
        pipeline.start(ctx)
        bus.start()
        total = int(args.rate * args.seconds)
        start = time.monotonic()
        for i in range(total):
            time.sleep(max(0.0, start + i / args.rate - time.monotonic()))
            bus.publish(Signal(labels={"alertname": f"Bench{i}", "registry": "internal"}, severity="warning",
                               annotations={"summary": f"bench alert {i}", "sent_at": repr(time.time())}))
        deadline = time.monotonic() + 60
        while len(receiver.latencies) < total and time.monotonic() < deadline:
            time.sleep(0.05)
        pipeline.stop()
        bus.stop(2.0)
        state.close()
    receiver.httpd.shutdown()
    got = receiver.latencies
    ms = [x * 1000 for x in got]
    print(f"signals {total} at {args.rate:g}/s, delivered {len(got)}")
    print(f"latency ms: p50 {percentile(ms, 0.5):.1f}  p99 {percentile(ms, 0.99):.1f}  max {max(ms):.1f}"
          f"  mean {statistics.fmean(ms):.1f}")


if __name__ == "__main__":
    main()
