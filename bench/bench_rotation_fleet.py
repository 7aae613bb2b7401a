"""A fleet on one machine: N `regwarden run` processes share one rotated credential.

Measures, after a rotation published by one of them, how long until every instance has verified and
applied the new version (goal: <= watch_interval + 2 s), and the Vault requests per instance per hour
(from each instance's `regwarden_vault_requests_total`).

Run (root, with the system packages of .ci/run): python bench/bench_rotation_fleet.py --instances 50
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.integration.harness import OpenBaoDev, RegistryServer, free_port, running  # noqa: E402


def _config(workdir: Path, index: int, bao: OpenBaoDev, token: Path, registry: RegistryServer,
            watch: str, port: int) -> Path:
    overlap = f"{2 * float(watch.rstrip('s')) + 5:g}s"  # just over the 2 x watch_interval minimum
    config = workdir / "regwarden.toml"
    config.write_text(f"""
[daemon]
state_dir = "{workdir / 'state'}"
audit_log = "{workdir / 'audit.jsonl'}"
listen = "127.0.0.1:{port}"
log_format = "json"
log_level = "warning"
host = "bench-{index}"

[vault]
address = "{bao.address}"
auth = {{ method = "token", token_file = "{token}" }}
lock_path = "secret/bench/locks"

[docker]
client_configs = ["{workdir / 'config.json'}"]
certs_dir = "{workdir / 'certs.d'}"

[[registries]]
name = "reg"
url = "{registry.url}"
credential = "fleet"
probe_interval = "1h"

[[credentials]]
name = "fleet"
provider = "htpasswd"
vault_path = "secret/bench/fleet"
watch_interval = "{watch}"
rotate_every = "24h"
overlap = "{overlap}"
htpasswd = {{ file = "{registry.htpasswd_path}", usernames = ["fleet-a", "fleet-b"] }}
""")
    return config


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _held_password(path: Path, host_port: str) -> str | None:
    try:
        entry = json.loads(path.read_text())["auths"][host_port]["auth"]
    except (OSError, ValueError, KeyError):
        return None
    return base64.b64decode(entry).decode().partition(":")[2]


def _wait_lock_free(kv: object, timeout: float = 300) -> None:
    """Wait until no host holds the rotation lock (the previous rotation finished its overlap)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            lock = kv.read_secret_version(path="bench/locks/fleet", mount_point="secret",  # type: ignore[attr-defined]
                                          raise_on_deleted_version=True)["data"]["data"]
        except Exception:
            return
        if not lock.get("holder"):
            return
        time.sleep(0.5)
    raise TimeoutError("the rotation lock was not released")


def _vault_requests(port: int) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(float(m.group(1)) for m in re.finditer(r"^regwarden_vault_requests_total\{[^}]*\} (\S+)$", text,
                                                       re.MULTILINE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--watch-interval", default="15s")
    parser.add_argument("--rotations", type=int, default=3)
    args = parser.parse_args()
    watch_s = float(args.watch_interval.rstrip("s"))
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'daemon'}{os.pathsep}{REPO / 'plugins'}"}
    with tempfile.TemporaryDirectory() as tmp, running(OpenBaoDev(Path(tmp))) as bao, \
            running(RegistryServer(_mkdir(Path(tmp) / "registry"))) as registry:
        token = Path(tmp) / "token"
        token.write_text(bao.token)
        token.chmod(0o600)
        procs, ports, dirs = [], [], []
        for i in range(args.instances):
            workdir = Path(tmp) / f"i{i}"
            workdir.mkdir()
            port = free_port()
            config = _config(workdir, i, bao, token, registry, args.watch_interval, port)
            procs.append(subprocess.Popen([sys.executable, "-m", "regwarden", "run", "-c", str(config)], env=env,
                                          stdout=subprocess.DEVNULL, stderr=(workdir / "log").open("wb")))
            ports.append(port)
            dirs.append(workdir)
        kv = bao.client().secrets.kv.v2
        try:
            deadline = time.time() + 120
            while time.time() < deadline and not all(_held_password(d / "config.json", registry.host_port)
                                                      for d in dirs):
                time.sleep(0.5)
            started = time.time()
            base = sum(_vault_requests(p) for p in ports)
            delays: list[float] = []
            for _ in range(args.rotations):
                _wait_lock_free(kv)
                subprocess.run([sys.executable, "-m", "regwarden", "rotate", "fleet", "-c",
                                str(dirs[0] / "regwarden.toml")], env=env, check=True, capture_output=True)
                meta = kv.read_secret_metadata(path="bench/fleet", mount_point="secret")["data"]
                version = meta["current_version"]
                published = datetime.fromisoformat(
                    meta["versions"][str(version)]["created_time"].replace("Z", "+00:00")).timestamp()
                password = kv.read_secret_version(path="bench/fleet", mount_point="secret",
                                                  raise_on_deleted_version=True)["data"]["data"]["password"]
                pending = set(range(args.instances))
                while pending and time.time() - published < 120:
                    for i in list(pending):
                        if _held_password(dirs[i] / "config.json", registry.host_port) == password:
                            pending.discard(i)
                    time.sleep(0.05)
                delays.append(time.time() - published)
                print(f"rotation to v{version}: all {args.instances - len(pending)}/{args.instances} instances"
                      f" applied it {delays[-1]:.2f} s after it was published")
            elapsed = time.time() - started
            requests_made = sum(_vault_requests(p) for p in ports) - base
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
        per_hour = requests_made / args.instances / elapsed * 3600
        print(f"instances: {args.instances}, watch_interval: {args.watch_interval}")
        print(f"publish -> all applied: median {statistics.median(delays):.2f} s, max {max(delays):.2f} s"
              f" (goal <= {watch_s + 2:.0f} s)")
        print(f"Vault requests per instance per hour: {per_hour:.0f} (measured over {elapsed:.0f} s)")


if __name__ == "__main__":
    main()
