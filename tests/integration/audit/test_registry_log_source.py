"""The registry log tailer against a real registry under load, with its log rotated by rename and by
copytruncate and the tailer itself restarted: every line the registry wrote is in the trail once."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from regwarden.audit.parse import parse_registry_line
from regwarden.events import Event
from regwarden.sources.registry_log import RegistryLogSource
from tests.integration.harness import DockerEngine, RegistryServer, push_image
from tests.sources_support import make_context

pytestmark = pytest.mark.integration

REQUESTS = 2400


def key(event: Event) -> str:
    """What identifies a log line's record, leaving out when regwarden happened to read it."""
    record = event.record()
    record.pop("observed")
    if event.kind == "registry.unparsed":
        record.pop("time")
    return json.dumps(record, sort_keys=True)


def settled_log(path: Path, access_lines: int, timeout: float = 30.0) -> list[bytes]:
    """The lines of `path` once it holds `access_lines` access lines and has stopped growing: the registry
    logs a request after it has answered it, so the last answers come before their lines."""
    deadline, size = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        data = path.read_bytes()
        if len(data) == size and data.count(b' HTTP/1.1" ') >= access_lines:
            return data.splitlines()
        size = len(data)
        time.sleep(0.3)
    raise AssertionError(f"{path} did not settle with {access_lines} access lines within {timeout:g}s")


def test_every_line_once_through_rotations_and_a_tailer_restart(
    registry_factory: Callable[..., RegistryServer], dockerd: DockerEngine, tiny_image: str, tmp_path: Path,
) -> None:
    """2,400 requests; the log is renamed, then copytruncated, and the tailer restarted in between:
    the trail holds each line the registry wrote exactly once."""
    registry = registry_factory(rotatable_log=True)
    client = dockerd.client()
    try:
        push_image(client, registry.host_port, "team/app", "1", auth=registry.auth_config, source=tiny_image)
    finally:
        client.close()
    manifest = f"{registry.url}/v2/team/app/manifests/1"
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    local = threading.local()

    def request(n: int) -> int:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        if n % 3 == 0:
            return session.get(f"{registry.url}/v2/", timeout=10).status_code  # 401: no credentials
        if n % 3 == 1:
            return session.get(f"{registry.url}/v2/", auth=(registry.username, registry.password),
                               timeout=10).status_code
        return session.get(manifest, auth=(registry.username, registry.password), headers=accept,
                           timeout=10).status_code

    with make_context(tmp_path / "state") as collected:
        def tailer() -> RegistryLogSource:
            source = RegistryLogSource(registry.log_path, "internal", poll_interval=0.05)
            source.start(collected.ctx)
            return source

        source = tailer()
        statuses: Counter[int] = Counter()
        with ThreadPoolExecutor(max_workers=6) as pool:
            for batch in range(6):
                statuses.update(pool.map(request, range(batch * 400, (batch + 1) * 400)))
                if batch == 1:
                    registry.rotate_log("rename")
                elif batch == 2:
                    source.stop()  # regwarden restarts while the registry keeps logging
                    collected.ctx.bus.flush(10.0)  # as the daemon does: cursors are stored by bus checkpoints
                elif batch == 3:
                    source = tailer()
                elif batch == 4:
                    registry.rotate_log("copytruncate")
        assert statuses == Counter({401: 800, 200: 1600})

        everything = registry.log_path.with_name(registry.log_path.name + ".all")
        written = settled_log(everything, access_lines=REQUESTS)
        truth = Counter(key(parse_registry_line(line, registry="internal", host="testhost")) for line in written)
        collected.wait("every line", lambda: len(collected.of("registry-log")) >= len(written), timeout=60)
        source.stop()
        assert source.status()["rotations"] >= 1

    seen = Counter(key(e) for e in collected.of("registry-log") if e.kind != "audit.gap")
    assert collected.of("registry-log", "audit.gap") == []
    assert seen - truth == Counter(), "lines in the trail the registry did not write (or twice)"
    assert truth - seen == Counter(), "lines the registry wrote that are missing from the trail"
    accesses = sum(n for k, n in seen.items() if '"format": "access"' in k)
    assert accesses >= REQUESTS
