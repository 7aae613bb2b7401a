"""Audit trail throughput: ingest a 1,000,000-line registry log (parse + hash-chained write) beside a
bare `json.loads` loop over the same file, then `verify` the resulting 1,000,000-record chain.

    python bench/bench_audit.py [--lines 1000000] [--dir /tmp/x] [--keep]

Each phase runs in its own process so its peak RSS is its own. The log cycles the real distribution
2.8 capture (JSON records and combined access lines, as `log.formatter: json` writes them), with fresh
request ids so no two lines are equal. The writer runs as in the daemon: batched fsync every 100 ms,
rotation at 256 MiB.
"""

from __future__ import annotations

import argparse
import json
import resource
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


def phase_parse(log: Path) -> dict[str, float]:
    from datetime import UTC, datetime

    from regwarden.audit.parse import parse_registry_line

    count = 0
    started, cpu = time.perf_counter(), time.process_time()
    with log.open("rb") as f:
        for line in f:
            parse_registry_line(line, registry="internal", host="bench", observed=datetime.now(UTC)).record()
            count += 1
    return {"lines": count, "seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}


def phase_ingest(log: Path, out: Path) -> dict[str, float]:
    from datetime import UTC, datetime

    from regwarden.audit.chain import AuditWriter
    from regwarden.audit.parse import parse_registry_line

    writer = AuditWriter(out, max_bytes=256 * 1024 * 1024, fsync_interval=0.1)
    count = 0
    started, cpu = time.perf_counter(), time.process_time()
    with log.open("rb") as f:
        for line in f:
            writer.append(parse_registry_line(line, registry="internal", host="bench",
                                              observed=datetime.now(UTC)).record())
            count += 1
    writer.close()
    return {"lines": count, "seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}


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


def child(phase: str, log: Path, out: Path) -> None:
    result = {"loads": lambda: phase_loads(log), "parse": lambda: phase_parse(log),
              "ingest": lambda: phase_ingest(log, out), "verify": lambda: phase_verify(out)}[phase]()
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run_phase(phase: str, log: Path, out: Path) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, "--child", phase, "--log", str(log), "--out", str(out)],
                          check=True, capture_output=True, text=True)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child")
    parser.add_argument("--log", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.log, args.out)
        return
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-audit-"))
    work.mkdir(parents=True, exist_ok=True)
    log, out = work / "registry.log", work / "audit.jsonl"
    try:
        generate(log, args.lines)
        loads = run_phase("loads", log, out)
        parsed = run_phase("parse", log, out)
        ingest = run_phase("ingest", log, out)
        verified = run_phase("verify", log, out)
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        phases = (("bare json.loads loop", loads), ("parse only (parse_registry_line + record())", parsed),
                  ("ingest (parse + chain write)", ingest),
                  (f"audit verify ({verified['files']} files, {verified['bytes'] / 2**20:.0f} MiB)", verified))
        print(f"registry log: {args.lines:,} lines, {log.stat().st_size / 2**20:.0f} MiB; load average {load}")
        print("| phase | lines | wall | CPU | lines/s (CPU) | peak RSS |")
        print("|---|---|---|---|---|---|")
        for name, r in phases:
            print(f"| {name} | {r['lines']:,.0f} | {r['seconds']:.1f} s | {r['cpu']:.1f} s |"
                  f" {r['lines'] / r['cpu']:,.0f} | {r['peak_rss_mib']:.0f} MiB |")
        ratio = (ingest["lines"] / ingest["cpu"]) / (loads["lines"] / loads["cpu"])
        print(f"ingest / json.loads rate (CPU): {ratio:.2f}")
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
