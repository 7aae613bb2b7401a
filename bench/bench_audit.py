"""Audit trail throughput: ingest a 1,000,000-line registry log into the hash-chained audit log, beside a
bare `json.loads` loop over the same file, then `verify` the resulting chain.

    python bench/bench_audit.py [--lines 1000000] [--dir /tmp/x] [--keep] [--secrets 4]

Phases, each in its own process (so its peak RSS is its own), over the same file:
- `loads`: `for line in f: json.loads(line)` (the goal's yardstick);
- `ingest`: what the registry log source and the audit trail do per read, in one thread: read 256 KiB,
  split lines, `parse_registry_line` each (one `observed` per read), `AuditWriter.append_events` per
  batch of at most bus.MAX_BATCH (the secret check, canonical JSON, SHA-256 chain, write; fsync by the
  flush thread every 100 ms, rotation at 256 MiB);
- `daemon`: the same through the daemon's own parts and threads: `RegistryLogSource` (cursor in
  SQLite after each batch) -> `Bus` -> `AuditTrail` + `AuditDetectors`, until the audit log holds every line;
- `verify`: `regwarden audit verify` over the files written by `daemon`.
`--secrets N` registers N secret values first, as a daemon holding a Vault token and registry
passwords has (every record is checked for them).

The log cycles the real distribution 2.8 capture (JSON records and combined access lines, as
`log.formatter: json` writes them), with fresh request ids so no two lines are equal.
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "unit" / "audit" / "samples" / "distribution-2.8-json.log"


def generate(path: Path, lines: int) -> None:
    sample = SAMPLE.read_bytes().splitlines()
    with path.open("wb") as f:
        for i in range(lines):
            line = sample[i % len(sample)]
            if b'"http.request.id":"' in line:
                start = line.index(b'"http.request.id":"') + 19
                line = line[:start] + str(uuid.UUID(int=i)).encode() + line[start + 36:]
            f.write(line + b"\n")


def register_secrets(count: int) -> None:
    from regwarden import redact

    for _ in range(count):
        redact.register(secrets.token_urlsafe(24))


def phase_loads(log: Path) -> dict[str, float]:
    count = 0
    started, cpu = time.perf_counter(), time.process_time()
    with log.open("rb") as f:
        for line in f:
            try:  # noqa: SIM105  (contextlib.suppress would slow the baseline loop)
                json.loads(line)
            except ValueError:
                pass
            count += 1
    return {"lines": count, "seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}


def phase_ingest(log: Path, out: Path) -> dict[str, float]:
    from regwarden.audit.chain import AuditWriter
    from regwarden.audit.parse import parse_registry_line
    from regwarden.bus import MAX_BATCH
    from regwarden.events import utcnow
    from regwarden.sources.registry_log import LineSplitter

    writer = AuditWriter(out, max_bytes=256 * 1024 * 1024, fsync_interval=0.1)
    splitter = LineSplitter()
    count = 0
    started, cpu = time.perf_counter(), time.process_time()
    with log.open("rb") as f:
        while chunk := f.read(256 * 1024):
            observed = utcnow()
            batch = []
            for line, _, _ in splitter.feed(chunk):
                batch.append(parse_registry_line(line, registry="internal", host="bench", observed=observed))
                if len(batch) >= MAX_BATCH:
                    writer.append_events(batch)
                    count += len(batch)
                    batch = []
            if batch:
                writer.append_events(batch)
                count += len(batch)
    writer.close()
    return {"lines": count, "seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}


def phase_daemon(log: Path, out: Path, lines: int) -> dict[str, float]:
    from apscheduler.schedulers.background import BackgroundScheduler

    from regwarden.audit.component import AuditTrail, close_writers
    from regwarden.audit.detectors import AuditDetectors
    from regwarden.bus import Bus
    from regwarden.component import Context
    from regwarden.config import Config, DaemonConfig
    from regwarden.metrics import Metrics
    from regwarden.sources.registry_log import RegistryLogSource
    from regwarden.state import StateStore

    state_dir = out.parent / "state"
    metrics = Metrics()
    state = StateStore(state_dir)
    ctx = Context(config=Config(daemon=DaemonConfig(state_dir=state_dir, audit_log=out)), metrics=metrics,
                  state=state, bus=Bus(metrics), scheduler=BackgroundScheduler(timezone="UTC"), host="bench")
    trail, detectors = AuditTrail(), AuditDetectors(tick_interval=3600)
    source = RegistryLogSource(log, "internal", poll_interval=0.05)
    started, cpu = time.perf_counter(), time.process_time()
    trail.start(ctx)
    detectors.start(ctx)
    ctx.bus.start()
    source.start(ctx)
    while trail.status().get("written", 0) < lines:
        time.sleep(0.01)
    seconds, cpu_used = time.perf_counter() - started, time.process_time() - cpu
    source.stop()
    ctx.bus.stop(10.0)
    detectors.stop()
    trail.stop()
    close_writers()
    state.close()
    return {"lines": lines, "seconds": seconds, "cpu": cpu_used}


def phase_verify(out: Path) -> dict[str, float]:
    from regwarden.audit.chain import chain_files, verify

    files = chain_files(out)
    started, cpu = time.perf_counter(), time.process_time()
    result = verify(files)
    seconds = time.perf_counter() - started
    if not result.ok:
        raise SystemExit(f"verify failed: {result.broken}")
    return {"lines": result.records, "seconds": seconds, "cpu": time.process_time() - cpu, "files": len(files),
            "bytes": sum(p.stat().st_size for p in files)}


def child(phase: str, log: Path, out: Path, lines: int, secret_count: int) -> None:
    register_secrets(secret_count)
    result = {"loads": lambda: phase_loads(log), "ingest": lambda: phase_ingest(log, out),
              "daemon": lambda: phase_daemon(log, out, lines), "verify": lambda: phase_verify(out)}[phase]()
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run_phase(phase: str, log: Path, out: Path, lines: int, secret_count: int) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, "--child", phase, "--log", str(log), "--out", str(out),
                           "--lines", str(lines), "--secrets", str(secret_count)],
                          check=True, capture_output=True, text=True)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--secrets", type=int, default=4)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child")
    parser.add_argument("--log", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.log, args.out, args.lines, args.secrets)
        return
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-audit-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "registry.log"
    try:
        generate(log, args.lines)
        loads = run_phase("loads", log, work / "unused", args.lines, args.secrets)
        ingest = run_phase("ingest", log, work / "ingest" / "audit.jsonl", args.lines, args.secrets)
        daemon = run_phase("daemon", log, work / "daemon" / "audit.jsonl", args.lines, args.secrets)
        verified = run_phase("verify", log, work / "daemon" / "audit.jsonl", args.lines, args.secrets)
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        phases = (("bare json.loads loop", loads), ("ingest (read, split, parse, chain write)", ingest),
                  ("daemon (source -> bus -> audit trail + detectors)", daemon),
                  (f"audit verify ({verified['files']} files, {verified['bytes'] / 2**20:.0f} MiB)", verified))
        print(f"registry log: {args.lines:,} lines, {log.stat().st_size / 2**20:.0f} MiB; {args.secrets} secrets "
              f"registered; load average {load}")
        print("| phase | lines | wall | CPU | lines/s (wall) | lines/s (CPU) | peak RSS |")
        print("|---|---|---|---|---|---|---|")
        for name, r in phases:
            print(f"| {name} | {r['lines']:,.0f} | {r['seconds']:.1f} s | {r['cpu']:.1f} s |"
                  f" {r['lines'] / r['seconds']:,.0f} | {r['lines'] / r['cpu']:,.0f} | {r['peak_rss_mib']:.0f} MiB |")
        for name, r in (("ingest", ingest), ("daemon", daemon)):
            wall = (r["lines"] / r["seconds"]) / (loads["lines"] / loads["seconds"])
            cpu = (r["lines"] / r["cpu"]) / (loads["lines"] / loads["cpu"])
            print(f"{name} / json.loads rate: {wall:.2f} (wall), {cpu:.2f} (CPU)")
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
