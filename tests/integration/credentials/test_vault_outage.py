"""Vault down for a minute: the host keeps its last good credential, says so, and recovers by itself."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.credentials.conftest import CredentialsHost, approle_login_files
from tests.integration.harness import OpenBaoRaft, wait_for

pytestmark = pytest.mark.integration

OUTAGE = 60.0


def test_vault_outage_keeps_credentials_and_recovers(
        credentials_host: Callable[..., CredentialsHost], openbao_raft_factory: Callable[[], OpenBaoRaft],
        tmp_path: Any) -> None:
    """With AppRole tokens of 5 s TTL (10 s max): renewals, re-login after max TTL, and after a 60 s
    outage the last good credential stays in config.json, Vault is reported down (metric, /status,
    readiness), and the daemon recovers without help."""
    bao = openbao_raft_factory()
    bao.start()
    root = bao.client()
    auth = approle_login_files(root, tmp_path, token_ttl="5s", token_max_ttl="10s")
    host = credentials_host(vault_address=bao.address, vault=root, auth=auth, watch_interval="1s",
                            retry_max="5s")
    user = "ci-" + host.name
    host.put(user, secrets.token_urlsafe(16))
    host.start()
    host.wait_applied(user)
    good = host.config_json.read_bytes()

    # token upkeep: renewals at 2/3 of 5 s, then a new login once the 10 s max TTL caps renewal
    wait_for("two logins and a renewal", lambda: (host.metric(
        'regwarden_vault_requests_total{operation="login",outcome="success"}') or 0) >= 2 and (host.metric(
        'regwarden_vault_requests_total{operation="renew",outcome="success"}') or 0) >= 1, 30)
    wait_for("ready", lambda: host.http("/readyz").status_code == 200, 15)

    bao.stop()
    down_at = time.monotonic()
    wait_for("vault reported down", lambda: host.metric("regwarden_vault_up") == 0, 10)
    wait_for("credential stale", lambda: (host.metric(
        f'regwarden_credential_stale_since_timestamp_seconds{{credential="{host.name}"}}') or 0) > 0, 10)
    status = host.status()
    assert status["vault"]["up"] is False
    assert status["credentials"][host.name]["stale_since"] is not None
    assert host.http("/readyz").status_code == 503
    assert "credentials" in host.http("/readyz").text
    wait_for("VaultUnreachable firing", lambda: any(s.firing for s in host.signals("VaultUnreachable")), 45)
    time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
    assert host.config_json.read_bytes() == good  # the last good credential was kept throughout

    logins_before = host.metric('regwarden_vault_requests_total{operation="login",outcome="success"}') or 0
    bao.start()
    # retries back off up to vault.retry_max (5 s here); recovery must come without any help
    wait_for("vault reported up", lambda: host.metric("regwarden_vault_up") == 1, 30)
    wait_for("stale cleared", lambda: host.status()["credentials"][host.name]["stale_since"] is None, 15)
    wait_for("ready again", lambda: host.http("/readyz").status_code == 200, 15)
    assert (host.metric('regwarden_vault_requests_total{operation="login",outcome="success"}') or 0) > logins_before
    wait_for("VaultUnreachable resolved", lambda: host.signals("VaultUnreachable")[-1].firing is False, 15)
    assert host.config_json.read_bytes() == good
