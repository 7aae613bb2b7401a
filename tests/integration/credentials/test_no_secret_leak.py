"""No secret regwarden handles ever appears in what it prints, records or serves."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.credentials.conftest import CredentialsHost
from tests.integration.harness import wait_for

pytestmark = pytest.mark.integration


def test_canary_secrets_absent_from_logs_audit_metrics_and_status(
        credentials_host: Callable[..., CredentialsHost], tmp_path: Path) -> None:
    """`regwarden run` applies a canary password and rejects a second one; neither, nor the Vault
    token, appears in any log line, audit record, /metrics, /status or /readyz output."""
    host = credentials_host(watch_interval="1s")
    user = "canary-" + host.name
    canary = "canary-good-" + secrets.token_urlsafe(12)
    rejected = "canary-bad-" + secrets.token_urlsafe(12)
    host.put(user, canary)
    config = host.write_config()
    stderr = tmp_path / "regwarden.stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "regwarden"), "run", "-c", str(config)],
                                stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "NOTIFY_SOCKET": ""})
    try:
        def applied() -> bool:
            assert proc.poll() is None, stderr.read_text()[-2000:]
            return host.applied_auth() == (user, canary)

        wait_for("canary applied", applied, 30)
        host.put(user, rejected, register=False)
        audit = Path(str(config.parent / "audit.jsonl"))
        wait_for("verify_failed audited", lambda: "credential.verify_failed" in audit.read_text(), 30)
        served = [host.http(path).text for path in ("/metrics", "/status", "/readyz")]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0

    token = (tmp_path / "vault-token").read_text().strip()
    forbidden = {
        "good password": canary,
        "rejected password": rejected,
        "config.json auth": base64.b64encode(f"{user}:{canary}".encode()).decode(),
        "vault token": token,
    }
    outputs = {"log": stderr.read_text(), "audit": audit.read_text(), "/metrics": served[0],
               "/status": served[1], "/readyz": served[2]}
    assert "credential_applied" in outputs["log"] and '"credential.applied"' in outputs["audit"]
    assert forbidden["config.json auth"] in host.config_json.read_text()  # the search itself works
    leaks = [f"{what} in {where}" for what, value in forbidden.items() for where, text in outputs.items()
             if value in text]
    assert leaks == []
