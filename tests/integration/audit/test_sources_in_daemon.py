"""`regwarden run` with all three sources configured: engine events, registry log lines and registry
notifications end up in the hash-chained audit log, which verifies; /readyz names a source that is down."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.harness import (
    DockerEngine,
    RegistryServer,
    daemon_table,
    push_image,
    reap,
    regwarden_env,
    secret_file,
    start_daemon,
    stop_daemon,
    wait_for,
)
from tests.sources_support import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
TOKEN = "daemon-notify-token-5b1e"


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_daemon_writes_what_every_source_sees_to_the_audit_log(
    registry_factory: Callable[..., RegistryServer], dockerd_factory: Callable[..., DockerEngine],
    tmp_path: Path,
) -> None:
    """A volume created in the engine, and a push to the registry (log lines and the notification with
    its user) are audit records naming the registry alike (its configured name and its address), found
    by `audit query --registry` either way; the chain verifies; a stopped engine makes /readyz name
    docker-events."""
    from tests.integration.harness import import_tiny_image

    engine = dockerd_factory()
    client = engine.client()
    import_tiny_image(client)
    listen, notify = free_port(), free_port()
    registry = registry_factory(notifications_url=f"http://127.0.0.1:{notify}/v1/registry-events",
                                notifications_token=TOKEN)
    token_file = secret_file(tmp_path / "notify-token", TOKEN + "\n")
    audit_log = tmp_path / "audit.jsonl"
    config = tmp_path / "config.toml"
    config.write_text(daemon_table(tmp_path, listen, audit_log=audit_log) + f"""
[docker]
host = "{engine.host}"

[[registries]]
name = "local"
url = "{registry.url}"
probe_interval = "1h"

[sources.docker_events]
enabled = true

[[sources.registry_logs]]
path = "{registry.log_path}"
registry = "local"
poll_interval = "100ms"

[sources.registry_notifications]
listen = "127.0.0.1:{notify}"
token_file = "{token_file}"
""")
    env = regwarden_env()
    daemon = start_daemon(config, tmp_path / "daemon.log", env)
    try:
        base = f"http://127.0.0.1:{listen}"
        wait_for("the daemon to listen", lambda: requests.get(f"{base}/healthz", timeout=1).ok, 30)
        client.volumes.create("audited-volume")
        push_image(client, registry.host_port, "team/app", "7", auth=registry.auth_config)

        def found() -> bool:
            kinds = {(r["source"], r["kind"], (r.get("actor") or {}).get("user")) for r in records(audit_log)}
            return {("docker", "volume.create", None), ("docker", "image.push", None),
                    ("registry-notify", "image.push", registry.username)} <= kinds and any(
                        r["source"] == "registry-log" and r["kind"] == "image.push" for r in records(audit_log))

        wait_for("the three sources in the audit log", found, 60)
        status = requests.get(f"{base}/status", timeout=5).json()["components"]
        assert status["docker-events"]["state"] == "up"
        # the receiver counts an envelope once its events are on the bus: the record may come first
        wait_for("the envelope counted", lambda: requests.get(f"{base}/status", timeout=5).json()["components"][
            "registry-notifications"]["accepted"] >= 1, 5)

        engine.stop()
        wait_for("readyz to name the engine", lambda: "docker-events" in requests.get(f"{base}/readyz",
                                                                                       timeout=5).text, 30)
        stop_daemon(daemon)
    finally:
        reap(daemon)
        client.close()
    verify = subprocess.run([sys.executable, "-m", "regwarden", "audit", "verify", str(audit_log)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    pushes = [r for r in records(audit_log) if r["kind"] == "image.push"]
    assert {r["source"] for r in pushes} == {"docker", "registry-log", "registry-notify"}
    assert {(r["target"]["registry"], r["target"]["address"]) for r in pushes} == {("local", registry.host_port)}
    for wanted in ("local", "127.0.0.1:*"):
        query = subprocess.run([sys.executable, "-m", "regwarden", "audit", "query", "--json", "--kind", "image.push",
                                "--registry", wanted, str(audit_log)], env=env, capture_output=True, text=True,
                               timeout=60)
        assert query.returncode == 0, query.stderr
        assert len(query.stdout.splitlines()) == len(pushes), (wanted, query.stdout)
    assert TOKEN not in audit_log.read_text()
    assert TOKEN not in (tmp_path / "daemon.log").read_text()
