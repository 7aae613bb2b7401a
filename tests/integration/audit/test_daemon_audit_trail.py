"""End to end: `regwarden run` tails a registry log into the hash-chained audit trail; the chain
survives a restart and `regwarden audit verify` passes on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.harness import daemon_table, free_port, reap, start_daemon, stop_daemon

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "tests" / "unit" / "audit" / "samples" / "distribution-2.8-json.log"


def registry_records(audit: Path) -> list[dict[str, object]]:
    if not audit.exists():
        return []
    # the daemon may be writing: a last line without its closing brace is not complete yet
    return [r for r in (json.loads(line) for line in audit.read_text().splitlines() if line.endswith("}"))
            if r["source"] == "registry-log"]


def wait_for(what: str, ready: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_registry_log_lines_reach_a_verifiable_chain_across_restarts(tmp_path: Path) -> None:
    """Every sample line becomes one audit record (kinds as parsed), nothing is lost at SIGTERM, and after
    a restart the chain continues and verifies."""
    registry_log = tmp_path / "registry.log"
    registry_log.touch()
    audit = tmp_path / "audit.jsonl"
    config = tmp_path / "config.toml"
    config.write_text(daemon_table(tmp_path, free_port(), audit_log=audit) + f'''[[registries]]
name = "internal"
url = "http://127.0.0.1:{free_port()}"
probe_interval = "1h"
[[sources.registry_logs]]
path = "{registry_log}"
registry = "internal"
poll_interval = "50ms"
''')
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    daemon_log = tmp_path / "daemon.log"

    proc = start_daemon(config, daemon_log)
    try:
        wait_for("the audit log", audit.exists)
        time.sleep(1.0)  # the tailer opens the (empty) log
        with registry_log.open("ab") as f:
            f.writelines(lines[:40])
        wait_for("40 registry records", lambda: len(registry_records(audit)) >= 40)
        with registry_log.open("ab") as f:
            f.writelines(lines[40:])
        stop_daemon(proc)  # the last lines may still be on the bus: they must be written before exit
    finally:
        reap(proc)
    first_run = registry_records(audit)
    assert len(first_run) in range(40, len(lines) + 1), daemon_log.read_text()[-2000:]

    proc = start_daemon(config, daemon_log)
    try:
        wait_for("all sample lines", lambda: len(registry_records(audit)) >= len(lines))
        stop_daemon(proc)
    finally:
        reap(proc)
    records = registry_records(audit)
    assert len(records) == len(lines)
    kinds = [r["kind"] for r in records]
    assert kinds.count("image.push") == 2 and kinds.count("auth.failure") == 2 and "registry.unparsed" not in kinds
    seqs = [json.loads(line)["seq"] for line in audit.read_text().splitlines()]
    assert seqs == list(range(1, len(seqs) + 1))
    verify = subprocess.run([sys.executable, "-m", "regwarden", "audit", "verify", "-c", str(config)],
                            capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO / "daemon")})
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.startswith(f"OK: {len(seqs)} records")
