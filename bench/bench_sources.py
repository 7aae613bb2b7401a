"""Audit sources throughput: the registry log tailer (read, split, parse, publish, cursor per batch) and
the notifications receiver (HTTP, auth, parse, dedupe, publish, answer once the audit log has it on disk).

    python bench/bench_sources.py [--lines 200000] [--envelopes 5000] [--clients 1,4]

The log cycles the real distribution 2.8 JSON capture (records and access lines) with fresh request ids.
Tailer numbers are end to end: until the bus dispatcher has handed every Event to a counting subscriber.
The receiver runs with the real audit trail (AuditTrail, the bus's durability keeper) writing to a file
in the temporary directory, so each answer waits for an fsync as in the daemon; `--clients 1` is how a
registry sends (one envelope at a time per endpoint).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.sources_support import free_port, make_context

from bench_audit import generate  # the same log: the real capture cycled with fresh request ids
from regwarden.audit.component import AuditTrail
from regwarden.config import RegistryNotificationsSource
from regwarden.sources.notifications import PATH, NotificationReceiver
from regwarden.sources.registry_log import RegistryLogSource


def bench_tailer(workdir: Path, lines: int) -> dict[str, float]:
    log = workdir / "registry.log"
    generate(log, lines)
    with make_context(workdir / "state-tail") as collected:
        source = RegistryLogSource(log, "internal", poll_interval=0.05)
        started, cpu = time.perf_counter(), time.process_time()
        source.start(collected.ctx)
        collected.wait("all lines", lambda: len(collected.events) >= lines, timeout=3600)
        seconds, cpu_used = time.perf_counter() - started, time.process_time() - cpu
        source.stop()
    return {"lines": lines, "seconds": seconds, "lines_per_s": lines / seconds, "cpu": cpu_used,
            "bytes": log.stat().st_size}


def envelope(event_id: str) -> bytes:
    return json.dumps({"events": [{
        "id": event_id, "timestamp": "2026-11-27T07:09:50.5Z", "action": "pull",
        "target": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "repository": "team/app",
                   "tag": "1", "digest": "sha256:" + "a" * 64,
                   "url": "http://127.0.0.1:5000/v2/team/app/manifests/sha256:" + "a" * 64},
        "request": {"id": "r-" + event_id, "addr": "127.0.0.1:4000", "host": "127.0.0.1:5000", "method": "GET",
                    "useragent": "docker/20.10"},
        "actor": {"name": "alice"}, "source": {"addr": "reg:5000", "instanceID": "x"}}]}).encode()


def bench_receiver(workdir: Path, envelopes: int, clients: int) -> dict[str, float]:
    token_file = workdir / "token"
    token_file.write_text("bench-token")
    token_file.chmod(0o600)
    port = free_port()
    latencies: list[float] = []
    lock = threading.Lock()
    local = threading.local()
    with make_context(workdir / f"state-notify-{clients}") as collected:
        ctx = collected.ctx
        ctx.config = ctx.config.model_copy(update={"daemon": ctx.config.daemon.model_copy(
            update={"audit_log": workdir / f"audit-notify-{clients}.jsonl"})})
        trail = AuditTrail()
        trail.start(ctx)
        receiver = NotificationReceiver(RegistryNotificationsSource(listen=f"127.0.0.1:{port}", token_file=token_file))
        receiver.start(ctx)
        url = f"http://127.0.0.1:{port}{PATH}"

        def post(n: int) -> int:
            session = getattr(local, "session", None) or requests.Session()
            local.session = session
            began = time.perf_counter()
            status = session.post(url, data=envelope(f"e{n}"), timeout=10,
                                  headers={"Authorization": "Bearer bench-token"}).status_code
            with lock:
                latencies.append(time.perf_counter() - began)
            return status

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            statuses = list(pool.map(post, range(envelopes)))
        collected.wait("all events", lambda: len(collected.events) >= envelopes, timeout=600)
        seconds = time.perf_counter() - started
        receiver.stop()
        trail.stop()
    assert statuses.count(200) == envelopes, statuses[:5]
    latencies.sort()
    return {"clients": clients, "envelopes": envelopes, "seconds": seconds, "per_s": envelopes / seconds,
            "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * latencies[int(0.99 * len(latencies))]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--envelopes", type=int, default=5_000)
    parser.add_argument("--clients", default="1,4", help="comma-separated: one receiver run per value")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps({"tailer": bench_tailer(Path(tmp), args.lines)}))
        for clients in (int(c) for c in args.clients.split(",")):
            print(json.dumps({"receiver": bench_receiver(Path(tmp), args.envelopes, clients)}))


if __name__ == "__main__":
    main()
