"""Vault load of the credential watch, and the time from a KV write to the credential verified on the host.

A real daemon (in-process `Daemon`, logging as the daemon does at level info, JSON to /dev/null) watches
`--credentials` consume-only credentials in an OpenBao dev server (token-file auth, the README's policy),
verifying against a local registry and applying to a Docker client config.json.

1. Requests: OpenBao's file audit device counts every request the daemon's token makes (server side)
   during `--seconds` of steady state; compared with the schedule (3600 / watch_interval reads per
   credential per hour) and with the daemon's own `regwarden_vault_requests_total`.
2. Latency: `--writes` times, after a random pause of up to one watch_interval (a writer does not know
   the host's watch phase), a new KV version naming another (pre-registered) registry user is written;
   the time until config.json holds it (polled every 10 ms) is one sample.

    python bench/bench_vault.py --watch-interval 15s --seconds 180 --writes 20
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.integration.harness

from tests.integration.harness import OpenBaoDev, RegistryServer, free_port, running

from regwarden.config import load_config, parse_duration
from regwarden.daemon import Daemon
from regwarden.docker.client_config import registry_key
from regwarden.logging import configure_logging

POLICY = """
path "secret/metadata/regwarden/*" { capabilities = ["read"] }
path "secret/data/regwarden/*"     { capabilities = ["read"] }
"""


def write_config(work: Path, bao: OpenBaoDev, registry: RegistryServer, creds: list[str], interval: str) -> Path:
    text = f"""
[daemon]
state_dir = "{work / 'state'}"
audit_log = "{work / 'audit.jsonl'}"
listen = "127.0.0.1:{free_port()}"
log_format = "json"

[vault]
address = "{bao.address}"
auth = {{ method = "token", token_file = "{work / 'vault-token'}" }}

[docker]
host = "unix://{work / 'no-docker.sock'}"
client_configs = ["{work / 'config.json'}"]
"""
    for index, name in enumerate(creds):
        text += f"""
[[registries]]
name = "r{index}"
url = "{registry.url}"
credential = "{name}"

[[credentials]]
name = "{name}"
vault_path = "secret/regwarden/{name}"
watch_interval = "{interval}"
"""
    path = work / "regwarden.toml"
    path.write_text(text)
    return path


def applied_user(config_json: Path, key: str) -> str | None:
    try:
        entry = json.loads(config_json.read_text())["auths"][key]
    except (FileNotFoundError, KeyError, ValueError):
        return None
    return base64.b64decode(entry["auth"]).decode().partition(":")[0]


def audit_requests(path: Path) -> list[dict[str, Any]]:
    """Response entries of the daemon's token (root-token writes by this script excluded)."""
    out = []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("type") == "response" and "root" not in (entry.get("auth") or {}).get("policies", []):
            out.append(entry)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watch-interval", default="15s")
    parser.add_argument("--credentials", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--writes", type=int, default=20)
    args = parser.parse_args()
    interval = parse_duration(args.watch_interval).total_seconds()
    configure_logging("json", "info", stream=open("/dev/null", "w"))  # noqa: SIM115

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        for sub in ("bao", "registry"):
            (work / sub).mkdir()
        audit_log = work / "bao-audit.log"
        (work / "audit.hcl").write_text(  # OpenBao 2 enables audit devices only from its config
            f'audit "file" "bench" {{\n  options {{\n    file_path = "{audit_log}"\n  }}\n}}\n')
        bao = OpenBaoDev(work / "bao")
        bao.process.argv = [*bao.process.argv, f"-config={work / 'audit.hcl'}"]
        bao = stack.enter_context(running(bao))
        registry = stack.enter_context(running(RegistryServer(work / "registry")))
        root = bao.client()
        root.sys.create_or_update_policy("regwarden-consume", POLICY)
        token = root.auth.token.create(policies=["regwarden-consume"], ttl="1h")["auth"]["client_token"]
        (work / "vault-token").write_text(token)
        (work / "vault-token").chmod(0o600)
        creds = [f"bench{i}" for i in range(args.credentials)]
        users = [f"user{i}" for i in range(args.writes + 1)]
        passwords = {u: secrets.token_urlsafe(16) for u in users}
        for user in users:
            registry.add_user(user, passwords[user])
        for name in creds:
            root.secrets.kv.v2.create_or_update_secret(
                path=f"regwarden/{name}", secret={"username": users[0], "password": passwords[users[0]]},
                mount_point="secret")
        config = write_config(work, bao, registry, creds, args.watch_interval)
        daemon = Daemon(config, load_config(config))
        daemon.start()
        try:
            key = registry_key(registry.url)
            deadline = time.monotonic() + 60
            while not all(w.record.applied_version for w in _watches(daemon).values()):
                assert time.monotonic() < deadline, "credentials not applied within 60 s"
                time.sleep(0.05)

            # 1. requests in steady state
            before_server = len(audit_requests(audit_log))
            before_client = _client_requests(daemon)
            time.sleep(args.seconds)
            server = audit_requests(audit_log)[before_server:]
            client = _client_requests(daemon) - before_client
            per_cred_hour = len(server) / args.credentials / args.seconds * 3600
            ops: dict[str, int] = {}
            for entry in server:
                op = entry["request"]["path"].split("/")[1] if entry["request"]["path"].startswith("secret/") \
                    else entry["request"]["path"]
                ops[op] = ops.get(op, 0) + 1
            print(f"watch_interval={args.watch_interval} credentials={args.credentials} "
                  f"steady_state={args.seconds:.0f}s")
            print(f"  server-side requests: {len(server)} {ops}; client-side counted: {client:.0f}")
            print(f"  per credential per hour: measured {per_cred_hour:.1f}, schedule {3600 / interval:.1f}"
                  f" metadata reads (+ token renewal: 1h TTL renewed every 40 min, shared)")

            # 2. KV write -> verified and applied on the host (credential 0)
            config_json = work / "config.json"
            latencies = []
            for user in users[1:]:
                time.sleep(random.uniform(0, interval))  # writers do not know the host's watch phase
                written = time.monotonic()
                root.secrets.kv.v2.create_or_update_secret(
                    path=f"regwarden/{creds[0]}", secret={"username": user, "password": passwords[user]},
                    mount_point="secret")
                while applied_user(config_json, key) != user:
                    assert time.monotonic() - written < 10 * interval + 30, "not applied in time"
                    time.sleep(0.01)
                latencies.append(time.monotonic() - written)
            print(f"  KV write -> verified+applied ({len(latencies)} writes): median "
                  f"{statistics.median(latencies):.2f}s, p95 {percentile(latencies, 0.95):.2f}s, "
                  f"min {min(latencies):.2f}s, max {max(latencies):.2f}s")
        finally:
            daemon.stop()


def _watches(daemon: Daemon) -> dict[str, Any]:
    component = next(c for c in daemon.components if c.name == "credentials")
    return component.watches  # type: ignore[attr-defined, no-any-return]


def _client_requests(daemon: Daemon) -> float:
    total = 0.0
    for metric in daemon.metrics.vault_requests.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                total += sample.value
    return total


if __name__ == "__main__":
    main()
