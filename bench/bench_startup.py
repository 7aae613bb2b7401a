"""Start-up time: `regwarden --help`, and `regwarden run` until systemd would see READY=1.

Run: python bench/bench_startup.py [--runs N]
Prints median and p90 over N runs of each; record the numbers in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _regwarden() -> list[str]:
    exe = shutil.which("regwarden", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "regwarden"]


def time_help(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([*_regwarden(), "--help"], check=True, capture_output=True)
        out.append(time.perf_counter() - start)
    return out


def time_ready(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            sock_path = Path(tmp) / "notify.sock"
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify.bind(str(sock_path))
            notify.settimeout(30)
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            config = Path(tmp) / "config.toml"
            config.write_text(f'[daemon]\nstate_dir = "{tmp}/state"\naudit_log = "{tmp}/audit.jsonl"\n'
                              f'listen = "127.0.0.1:{port}"\nlog_format = "json"\n')
            env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
            start = time.perf_counter()
            proc = subprocess.Popen([*_regwarden(), "run", "-c", str(config)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while b"READY=1" not in notify.recv(4096):
                pass
            out.append(time.perf_counter() - start)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
            notify.close()
    return out


def _report(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p90 = ordered[max(0, int(len(ordered) * 0.9) - 1)]
    print(f"{name}: median {statistics.median(samples) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms,"
          f" min {ordered[0] * 1000:.0f} ms over {len(samples)} runs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    _report("regwarden --help", time_help(args.runs))
    _report("regwarden run -> READY=1", time_ready(max(3, args.runs // 2)))


if __name__ == "__main__":
    main()
