"""A credential version written to Vault reaches the host only after the registry accepted it."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.credentials.conftest import CredentialsHost
from tests.integration.harness import pull_image, wait_for

pytestmark = pytest.mark.integration


def pull_with_applied(host: CredentialsHost, dockerd: Any, reference: str) -> None:
    """Pull through the real engine with the username/password read back from config.json."""
    applied = host.applied_auth()
    assert applied is not None
    client = dockerd.client()
    try:
        pull_image(client, reference, auth={"username": applied[0], "password": applied[1]})
    finally:
        client.close()


def test_new_version_reaches_config_json_within_watch_interval(
        credentials_host: Callable[..., CredentialsHost], dockerd: Any, pushed_image: str) -> None:
    """A new KV version is verified and in config.json within watch_interval + 2 s, and pulls work with it."""
    host = credentials_host(watch_interval="2s")
    host.put("ci-a-" + host.name, secrets.token_urlsafe(16))
    host.start()
    host.wait_applied("ci-a-" + host.name)
    time.sleep(0.5)  # let the daemon settle into its watch rhythm after the first apply

    user_b = "ci-b-" + host.name
    written = time.monotonic()
    version = host.put(user_b, secrets.token_urlsafe(16))
    seen = host.wait_applied(user_b, timeout=15)

    assert seen - written <= 2.0 + 2.0, f"took {seen - written:.2f}s (spec: watch_interval + 2 s)"
    pull_with_applied(host, dockerd, pushed_image)
    # config.json is written before the journal records the apply
    wait_for("the apply recorded", lambda: host.status()["credentials"][host.name]["applied_version"] == version, 5)


def test_rejected_password_never_reaches_config_json(
        credentials_host: Callable[..., CredentialsHost], dockerd: Any, pushed_image: str) -> None:
    """A version the registry rejects is not applied, pulls keep working, and the failure is audited."""
    host = credentials_host(watch_interval="1s")
    good_user = "ci-good-" + host.name
    host.put(good_user, secrets.token_urlsafe(16))
    host.start()
    host.wait_applied(good_user)
    before = host.config_json.read_bytes()

    bad = host.put(good_user, "wrong-" + secrets.token_urlsafe(8), register=False)
    wait_for("credential.verify_failed event", lambda: bool(host.events("credential.verify_failed")), 15)
    time.sleep(1.5)  # another watch round or two: the bad version must still not be applied

    assert host.config_json.read_bytes() == before
    pull_with_applied(host, dockerd, pushed_image)
    event = host.events("credential.verify_failed")[0]
    assert (event.detail["credential"], event.detail["version"], event.target.registry) == (host.name, bad,
                                                                                           "internal")
    assert any(s.firing for s in host.signals("CredentialVerifyFailed"))
    status = host.status()["credentials"][host.name]
    assert (status["failed_version"], status["retry"], status["applied_version"]) == (bad, "slow", bad - 1)
    assert len(host.events("credential.verify_failed")) == 1  # rejected: retried on the slow timer only


def test_restart_rechecks_targets_without_reapplying(
        credentials_host: Callable[..., CredentialsHost]) -> None:
    """After a restart the applied version is not applied again while config.json still holds it, and is
    put back when config.json lost it."""
    host = credentials_host(watch_interval="1s")
    user = "ci-r-" + host.name
    host.put(user, secrets.token_urlsafe(16))
    host.start()
    host.wait_applied(user)
    host.stop()
    applied = len(host.events("credential.applied"))  # events of every daemon run are kept in `host`

    host.start()  # same state_dir: the journal says v1 is applied and config.json holds it
    wait_for("targets checked", lambda: host.status()["credentials"][host.name]["checked_at"] is not None, 10)
    time.sleep(1.5)  # a few more watch rounds
    assert len(host.events("credential.applied")) == applied
    host.stop()

    host.config_json.write_text('{"auths": {}}')  # someone logged out while regwarden was down
    host.start()
    host.wait_applied(user, timeout=10)
    # the credential.applied record follows the write to config.json through the bus and the audit log
    wait_for("the apply audited", lambda: len(host.events("credential.applied")) >= applied + 1, 5)
    time.sleep(1.5)  # a few more watch rounds: still one apply
    assert len(host.events("credential.applied")) == applied + 1


def test_unreachable_registry_is_retried_at_the_normal_rhythm(
        credentials_host: Callable[..., CredentialsHost], registry_factory: Callable[..., Any]) -> None:
    """A version that could not be verified because the registry was down is applied as soon as the
    registry answers again (not held back like a rejected one), and is not reported as rejected."""
    own_registry = registry_factory()
    host = credentials_host(registry=own_registry, watch_interval="2s")  # a slow retry: 20 s
    first, second = "ci-1-" + host.name, "ci-2-" + host.name
    host.put(first, secrets.token_urlsafe(16))
    host.start()
    host.wait_applied(first)

    own_registry.add_user(second, password := secrets.token_urlsafe(16))
    own_registry.stop()
    version = host.put(second, password, register=False)
    wait_for("verify attempt failed", lambda: host.status()["credentials"][host.name]["failed_version"] == version,
             15)
    assert host.status()["credentials"][host.name]["retry"] == "normal"
    own_registry.start()
    host.wait_applied(second, timeout=15)  # sooner than the slow timer (20 s) could
    assert host.events("credential.verify_failed") == []
