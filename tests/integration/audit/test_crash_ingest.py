"""`regwarden run` killed (SIGKILL) while it ingests loses nothing: a registry log source's cursor is stored
only once the lines before it are in the audit log on disk, so the restarted daemon reads again what the
dead one had not written; a notification envelope is answered 200 only once its records are on disk, since
the registry never sends it again after that."""

from __future__ import annotations

import json
import signal
import threading
import uuid
from pathlib import Path

import pytest
import requests

from regwarden.audit.chain import chain_files, verify
from tests.integration.harness import daemon_table, reap, secret_file, start_daemon, stop_daemon, wait_for
from tests.sources_support import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "tests" / "unit" / "audit" / "samples" / "distribution-2.8-json.log"
ENVELOPES = REPO / "tests" / "unit" / "audit" / "samples" / "notifications-envelopes.jsonl"
TOKEN = "crash-test-notify-token"
LINES = 150_000


def write_log(path: Path) -> set[str]:
    """Real distribution 2.8 lines: JSON records with a fresh request id and access lines with a fresh
    tag, alternating; returns every line's identity (request id or tag)."""
    sample = SAMPLE.read_bytes().splitlines()
    record = next(line for line in sample if b'"http.request.id":"' in line and b'"msg":"response completed"' in line)
    start = record.index(b'"http.request.id":"') + 19
    identities: set[str] = set()
    with path.open("wb") as f:
        for i in range(LINES):
            if i % 2:
                ident = str(uuid.UUID(int=i))
                f.write(record[:start] + ident.encode() + record[start + 36:] + b"\n")
            else:
                ident = f"t{i}"
                f.write(f'10.0.0.9 - - [27/Nov/2026:07:09:50 +0000] "GET /v2/team/app/manifests/{ident} HTTP/1.1" '
                        f'200 527 "" "docker/20.10.24"\n'.encode())
            identities.add(ident)
    return identities


def identities(audit_log: Path) -> list[str]:
    found = []
    for path in sorted(audit_log.parent.glob(audit_log.name + "*")):
        for line in path.read_bytes().splitlines():
            if not line.endswith(b"}"):
                continue
            record = json.loads(line)
            if record.get("source") != "registry-log":
                continue
            if record.get("request_id"):
                found.append(record["request_id"])
            elif "/manifests/t" in (record.get("detail") or {}).get("uri", ""):
                found.append(record["detail"]["uri"].rsplit("/", 1)[1])
    return found


def log_done(listen: int, log: Path) -> bool:
    status = requests.get(f"http://127.0.0.1:{listen}/status", timeout=2).json()
    source = next(c for name, c in status["components"].items() if name.startswith("registry-log:"))
    return bool(source["cursor"]["offset"] == log.stat().st_size)


def test_a_killed_daemon_loses_no_registry_log_line(tmp_path: Path) -> None:
    log = tmp_path / "registry.log"
    expected = write_log(log)
    audit_log = tmp_path / "audit" / "audit.jsonl"
    listen = free_port()
    config = tmp_path / "config.toml"
    config.write_text(daemon_table(tmp_path, listen, audit_log=audit_log) + f"""
[[registries]]
name = "local"
url = "http://127.0.0.1:{free_port()}"
probe_interval = "1h"

[[sources.registry_logs]]
path = "{log}"
registry = "local"
poll_interval = "100ms"
""")
    daemon = start_daemon(config, tmp_path / "daemon.log")
    try:
        wait_for("the daemon to write records", lambda: audit_log.exists() and audit_log.stat().st_size > 2_000_000,
                 60)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        written_before = len(identities(audit_log))
        assert 0 < written_before < LINES, "the daemon must die in the middle of the log"

        daemon = start_daemon(config, tmp_path / "daemon.log")
        wait_for("the log read to its end", lambda: log_done(listen, log), 120)
        wait_for("every line in the audit log", lambda: set(identities(audit_log)) >= expected, 60)
        wait_for("the daemon to listen", lambda: requests.get(f"http://127.0.0.1:{listen}/healthz", timeout=1).ok, 30)
        stop_daemon(daemon)
    finally:
        reap(daemon)
    found = identities(audit_log)
    assert set(found) == expected
    # at least once: what the dead daemon had written but not yet acknowledged (at most the last
    # fsync interval of lines) is read again; nothing more
    assert len(found) - LINES < LINES // 4
    result = verify(chain_files(audit_log))
    assert result.ok, result.broken


def notification_ids(audit_log: Path) -> set[str]:
    ids = set()
    for line in audit_log.read_bytes().splitlines() if audit_log.exists() else []:
        if line.endswith(b"}"):
            record = json.loads(line)
            if record.get("source") == "registry-notify":
                ids.add(record["id"])
    return ids


def test_a_killed_daemon_loses_no_acknowledged_notification(tmp_path: Path) -> None:
    """Envelopes posted one after another, as a registry does, to a daemon whose audit writer fsyncs only
    every 30 s; SIGKILL at some point: every event of every envelope answered 200 is in the audit log."""
    template = json.loads(ENVELOPES.read_text().splitlines()[0])["body"]
    audit_log = tmp_path / "audit.jsonl"
    token_file = secret_file(tmp_path / "notify-token", TOKEN)
    listen, notify = free_port(), free_port()
    config = tmp_path / "config.toml"
    config.write_text(daemon_table(tmp_path, listen, audit_log=audit_log) + f"""
[audit]
fsync_interval = "30s"

[sources.registry_notifications]
listen = "127.0.0.1:{notify}"
token_file = "{token_file}"
""")
    daemon = start_daemon(config, tmp_path / "daemon.log")
    acknowledged: list[str] = []
    stop = threading.Event()

    def sender() -> None:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {TOKEN}",
                   "Content-Type": "application/vnd.docker.distribution.events.v1+json"}
        while not stop.is_set():
            event_id = str(uuid.uuid4())
            envelope = {"events": [{**template["events"][0], "id": event_id}]}
            try:
                answer = session.post(f"http://127.0.0.1:{notify}/v1/registry-events", json=envelope,
                                      headers=headers, timeout=10)
            except requests.RequestException:
                continue  # not listening yet, or killed
            if answer.status_code == 200:
                acknowledged.append(event_id)

    thread = threading.Thread(target=sender, daemon=True)
    try:
        wait_for("the daemon to listen", lambda: requests.get(f"http://127.0.0.1:{listen}/healthz", timeout=1).ok, 30)
        thread.start()
        wait_for("200 envelopes acknowledged", lambda: len(acknowledged) >= 200, 60)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
    finally:
        stop.set()
        thread.join(15)
        reap(daemon)
    missing = set(acknowledged) - notification_ids(audit_log)
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged notifications are not in the audit log"

