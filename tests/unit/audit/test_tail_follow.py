"""`regwarden audit tail -f` keeps printing new records, also across a rotation."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from regwarden.audit.chain import AuditWriter


def read_lines(lines: queue.Queue[bytes], count: int, timeout: float = 20.0) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        try:
            out.append(json.loads(lines.get(timeout=max(0.01, deadline - time.monotonic()))))
        except queue.Empty:
            break
    return out


def start_reader(proc: subprocess.Popen[bytes]) -> queue.Queue[bytes]:
    lines: queue.Queue[bytes] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_tail_follow_prints_new_records_across_rotation(tmp_path: Path) -> None:
    """tail -f prints the last records, then each new one, and goes on in the new file after rotation."""
    log = tmp_path / "audit.jsonl"
    writer = AuditWriter(log, max_bytes=4096, fsync_interval=0)
    writer.append({"kind": "before", "detail": {"i": 0}})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-c", "from regwarden.cli import main; main()",
               "audit", "tail", "-n", "1", "-f", "--json", str(log)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
    lines = start_reader(proc)
    try:
        assert [r["kind"] for r in read_lines(lines, 1)] == ["before"]
        time.sleep(0.5)  # let it reach the end of the file and start polling
        for i in range(1, 41):  # ~150 bytes each: rotates at least once
            writer.append({"kind": "after", "detail": {"i": i}})
            time.sleep(0.02)
        got = read_lines(lines, 40)
    finally:
        proc.terminate()
        proc.wait(5)
        writer.close()
    assert (tmp_path / "audit.jsonl.1").exists()
    seen = [r["detail"]["i"] for r in got]  # type: ignore[index]
    assert seen == list(range(1, 41))
