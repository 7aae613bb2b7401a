"""`regwarden run` checks what a real registry reports as pushed (notifications): cosign signatures
made in cosign's format are found and verified, unsigned and tampered pushes to a protected repository
alert, and the scanner hook turns a Trivy report into alerts, once per digest across restarts."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cosign_support import CosignKey, payload_for, push_signature, signature_manifest
from tests.integration.harness import (
    DockerEngine,
    OpenBaoDev,
    RegistryServer,
    daemon_table,
    free_port,
    push_image,
    reap,
    secret_file,
    start_daemon,
    stop_daemon,
)

pytestmark = pytest.mark.integration

TOKEN = "notify-token-for-image-checks"
FAKE_TRIVY = Path(__file__).resolve().parents[2] / "fake_trivy.py"


def wait_for(what: str, ready: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := ready()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return found


def records(audit: Path, kind: str) -> list[dict[str, Any]]:
    if not audit.exists():
        return []
    return [r for r in (json.loads(line) for line in audit.read_text().splitlines() if line.endswith("}"))
            if r["kind"] == kind]


def firing(log: Path, alertname: str, digest: str) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        if '"alert_firing"' not in line:
            continue
        entry = json.loads(line)
        if entry.get("alertname") == alertname and digest in json.dumps(entry):
            out.append(entry)
    return out


@dataclass
class Rig:
    workdir: Path
    registry: RegistryServer
    engine: DockerEngine
    audit: Path
    log: Path
    config: Path
    key: CosignKey
    process: Any

    def push(self, repository: str, tag: str = "1", auth: dict[str, str] | None = None) -> str:
        """Push tiny:1 as REPOSITORY:TAG through the engine; returns the manifest digest."""
        client = self.engine.client()
        try:
            push_image(client, self.registry.host_port, repository, tag, auth=auth)
        finally:
            client.close()
        return wait_for(f"the push of {repository}", lambda: next(
            (r["target"]["digest"] for r in records(self.audit, "image.push")
             if r["source"] == "registry-notify" and r["target"].get("repository") == repository), None))

    def verdict(self, kind: str, repository: str) -> dict[str, Any]:
        record: dict[str, Any] = wait_for(f"{kind} of {repository}", lambda: next(
            (r for r in records(self.audit, kind) if r["target"]["repository"] == repository), None))
        return record


def credential_tables(tmp_path: Path, openbao: OpenBaoDev, registry: RegistryServer) -> str:
    """[vault], [docker] and [[credentials]] for a credential "pusher" kept in OpenBao (the registry's user)."""
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path="regwarden/pusher", secret={"username": registry.username, "password": registry.password})
    token_file = secret_file(tmp_path / "vault-token", openbao.token)
    client_config = tmp_path / "docker" / "config.json"
    client_config.parent.mkdir()
    return f"""
[vault]
address = "{openbao.address}"
auth = {{ method = "token", token_file = "{token_file}" }}

[docker]
host = "unix:///nonexistent/docker.sock"
client_configs = ["{client_config}"]

[[credentials]]
name = "pusher"
vault_path = "secret/regwarden/pusher"
watch_interval = "1s"
"""


@pytest.fixture
def rig(request: pytest.FixtureRequest, tmp_path: Path, registry_factory: Callable[..., RegistryServer],
        dockerd: DockerEngine, tiny_image: str) -> Iterator[Callable[[], Any]]:
    """Start (again) a daemon on a registry whose notifications reach it; parametrized with "auth" the
    registry wants a login, and the daemon reads it with a credential from OpenBao."""
    auth = getattr(request, "param", {}).get("auth", False)
    notify = free_port()
    registry = registry_factory(auth=auth, notifications_url=f"http://127.0.0.1:{notify}/v1/registry-events",
                                notifications_token=TOKEN)
    credentials = credential_tables(tmp_path, request.getfixturevalue("openbao"), registry) if auth else ""
    key = CosignKey.generate()
    (tmp_path / "cosign.pub").write_bytes(key.public_pem)
    (tmp_path / "runs").mkdir()
    token_file = secret_file(tmp_path / "notify-token", TOKEN + "\n")
    audit = tmp_path / "audit.jsonl"
    config = tmp_path / "config.toml"
    config.write_text(daemon_table(tmp_path, free_port(), audit_log=audit) + f"""
{credentials}
[[registries]]
name = "local"
url = "{registry.url}"
probe_interval = "1h"
{'credential = "pusher"' if auth else ''}

[sources.registry_notifications]
listen = "127.0.0.1:{notify}"
token_file = "{token_file}"

[image_checks]
signature_wait = "3s"
[[image_checks.signatures]]
repositories = ["prod/*"]
public_key_file = "{tmp_path / 'cosign.pub'}"

[image_checks.scanner]
command = ["{sys.executable}", "{FAKE_TRIVY}", "{tmp_path / 'runs'}", "{{repository}}", "{{digest}}"]
repositories = ["vuln/*", "clean/*", "hang/*", "fail/*", "garbage/*", "stopped/*"]
timeout = "20s"
concurrency = 2
attempts = 1
severity_threshold = "HIGH"

[alerts]
group_wait = "1s"

[[sinks]]
name = "log"
type = "log"
""")
    daemons: list[Any] = []

    def start() -> Rig:
        daemons.append(start_daemon(config, tmp_path / "daemon.log"))
        wait_for("the daemon", lambda: audit.exists() and b"daemon_started" in (tmp_path / "daemon.log").read_bytes())
        return Rig(tmp_path, registry, dockerd, audit, tmp_path / "daemon.log", config, key, daemons[-1])

    try:
        yield start
        for daemon in daemons:
            if daemon.poll() is None:
                stop_daemon(daemon)
    finally:
        for daemon in daemons:
            reap(daemon)


def test_a_signed_push_passes(rig: Callable[[], Rig]) -> None:
    """A push signed in cosign's format with the configured key is recorded as verified and raises nothing."""
    r = rig()
    digest = r.push("prod/app")
    push_signature(r.registry.url, "prod/app", digest, r.key)
    record = r.verdict("image.signature", "prod/app")
    assert (record["outcome"], record["detail"]["verdict"], record["target"]["digest"]) == \
        ("success", "verified", digest)
    time.sleep(2)  # group_wait: an alert would have been sent by now
    assert not firing(r.log, "ImageUnsigned", digest) and not firing(r.log, "ImageSignatureInvalid", digest)


@pytest.mark.parametrize("rig", [{"auth": True}], indirect=True)
def test_a_registry_that_wants_a_login_is_read_with_the_configured_credential(rig: Callable[[], Rig]) -> None:
    """With a registry that refuses anonymous reads, the signature is found and verified with the
    registry's credential from Vault."""
    r = rig()
    login = r.registry.auth_config
    digest = r.push("prod/private", auth=login)
    push_signature(r.registry.url, "prod/private", digest, r.key, auth=(login["username"], login["password"]))
    record = r.verdict("image.signature", "prod/private")
    assert (record["detail"]["verdict"], record["detail"]["reason"][:20]) == ("verified", "signature verified (")
    assert r.registry.password not in r.log.read_text() + r.audit.read_text()


def test_an_unsigned_push_to_a_protected_repository_alerts(rig: Callable[[], Rig]) -> None:
    """No signature within signature_wait: an image.signature failure record and one ImageUnsigned alert."""
    r = rig()
    digest = r.push("prod/unsigned")
    record = r.verdict("image.signature", "prod/unsigned")
    assert (record["outcome"], record["detail"]["verdict"]) == ("failure", "unsigned")
    wait_for("ImageUnsigned", lambda: firing(r.log, "ImageUnsigned", digest))


def test_a_tampered_signature_alerts(rig: Callable[[], Rig]) -> None:
    """A signature whose payload was changed after signing does not verify: ImageSignatureInvalid."""
    r = rig()
    digest = r.push("prod/tampered")
    signed = payload_for(f"{r.registry.host_port}/prod/tampered", digest)
    tampered = signed.replace(b'"optional":null', b'"optional":{"x":"y"}')
    push_signature(r.registry.url, "prod/tampered", digest, r.key, payload=tampered,
                   signature=r.key.sign(signed))
    record = r.verdict("image.signature", "prod/tampered")
    assert (record["outcome"], record["detail"]["verdict"]) == ("failure", "invalid")
    wait_for("ImageSignatureInvalid", lambda: firing(r.log, "ImageSignatureInvalid", digest))


def test_a_signature_manifest_that_is_not_one_is_an_error_not_a_crash(rig: Callable[[], Rig]) -> None:
    """A .sig manifest whose layer is not a simple-signing payload is an invalid signature, counted, and the
    daemon goes on checking the next push."""
    r = rig()
    digest = r.push("prod/bogus")
    payload = payload_for(f"{r.registry.host_port}/prod/bogus", digest)
    bogus = signature_manifest(payload, r.key.sign(payload)).replace(
        b"application/vnd.dev.cosign.simplesigning.v1+json", b"application/vnd.oci.image.layer.v1.tar")
    push_signature(r.registry.url, "prod/bogus", digest, r.key, payload=payload, manifest=bogus)
    record = r.verdict("image.signature", "prod/bogus")
    assert record["detail"]["verdict"] == "invalid" and "mediaType" in record["detail"]["reason"]
    r.push("prod/after-bogus")
    assert r.verdict("image.signature", "prod/after-bogus")["detail"]["verdict"] == "unsigned"


def test_a_critical_finding_is_one_alert_and_survives_a_restart_scanned_once(rig: Callable[[], Rig]) -> None:
    """A report with a CRITICAL finding becomes one image.scan record and one ImageVulnerable alert; after a
    restart the digest is not scanned again."""
    r = rig()
    digest = r.push("vuln/app")
    record = r.verdict("image.scan", "vuln/app")
    assert (record["detail"]["verdict"], record["detail"]["findings"][0]["id"]) == ("vulnerable", "CVE-2024-0001")
    wait_for("ImageVulnerable", lambda: firing(r.log, "ImageVulnerable", digest))
    time.sleep(2)
    assert len(firing(r.log, "ImageVulnerable", digest)) == 1
    stop_daemon(r.process)
    r = rig()
    r.push("clean/after-restart")
    assert r.verdict("image.scan", "clean/after-restart")["detail"]["verdict"] == "clean"
    runs = (r.workdir / "runs" / "runs").read_text().splitlines()
    assert runs.count(f"vuln/app@{digest}") == 1
    assert len([x for x in records(r.audit, "image.scan") if x["target"]["repository"] == "vuln/app"]) == 1


def test_a_scan_interrupted_by_a_stop_runs_again_after_the_start(rig: Callable[[], Rig]) -> None:
    """A stop in the middle of a scan kills it and keeps it queued: after the start it runs again and
    gives one image.scan record and one alert."""
    r = rig()
    digest = r.push("stopped/app")
    runs = r.workdir / "runs" / "runs"
    wait_for("the first scan to start", lambda: runs.exists() and f"stopped/app@{digest}" in runs.read_text())
    stop_daemon(r.process)
    assert records(r.audit, "image.scan") == []
    r = rig()
    record = r.verdict("image.scan", "stopped/app")
    assert record["detail"]["verdict"] == "vulnerable"
    wait_for("ImageVulnerable", lambda: firing(r.log, "ImageVulnerable", digest))
    time.sleep(2)
    assert len(firing(r.log, "ImageVulnerable", digest)) == 1
    assert len(records(r.audit, "image.scan")) == 1


@pytest.mark.parametrize(("repository", "reason"), [("hang/app", "did not finish within 20s"),
                                                    ("fail/app", "exited with status 3: FATAL"),
                                                    ("garbage/app", "not JSON")])
def test_a_bad_scanner_is_a_clear_failure(rig: Callable[[], Rig], repository: str, reason: str) -> None:
    """A scanner that hangs, exits non-zero or prints garbage: an image.scan failure naming why, an
    ImageScanFailed alert, and the next push is still scanned."""
    r = rig()
    digest = r.push(repository)
    record = r.verdict("image.scan", repository)
    assert record["detail"]["verdict"] == "failed" and reason in record["detail"]["reason"]
    wait_for("ImageScanFailed", lambda: firing(r.log, "ImageScanFailed", digest))
    r.push("clean/next")
    assert r.verdict("image.scan", "clean/next")["detail"]["verdict"] == "clean"
