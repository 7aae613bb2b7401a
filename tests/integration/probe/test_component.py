"""The probe component against a real registry: Events, damped Signals, adaptive interval, status."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from regwarden.credentials.model import CredentialSecret
from regwarden.probe.component import FAILED_ALERT, ProbeComponent
from tests.integration.harness import RegistryServer
from tests.integration.probe.conftest import ProbeHost

pytestmark = pytest.mark.integration


def registry_tables(reg: RegistryServer, **options: object) -> dict[str, object]:
    return {"registries": [{"name": "reg", "url": reg.url, "probe_interval": "40s", **options}]}


def test_failures_are_events_and_a_damped_signal(registry_factory: Callable[..., RegistryServer],
                                                   probe_host: Callable[[dict[str, object]], ProbeHost]) -> None:
    """A stopped registry gives one probe.failed Event with phase and reason, and RegistryProbeFailed
    fires only after failures_before_alert consecutive failures; one success resolves it."""
    reg = registry_factory(auth=True)
    host = probe_host(registry_tables(reg, failures_before_alert=3))
    component = ProbeComponent()
    component.start(host.ctx)
    try:
        reg.stop()
        for _ in range(2):
            component.run_probe("reg")
        failed = host.collected.events("probe.failed")
        assert [(e.detail["phase"], e.detail["reason"], e.target.registry) for e in failed] == [
            ("connect", "connection refused", "reg")]
        assert [s.firing for s in host.collected.signals(FAILED_ALERT)] == [False]  # first result states it
        component.run_probe("reg")
        fired = host.collected.signals(FAILED_ALERT)[-1]
        assert (fired.firing, fired.annotations["phase"], fired.annotations["reason"]) == (
            True, "connect", "connection refused")
        reg.start()
        component.run_probe("reg")
        assert [s.firing for s in host.collected.signals(FAILED_ALERT)] == [False, True, False]
        assert len(host.collected.events("probe.recovered")) == 1
    finally:
        component.stop()


def test_interval_shortens_while_failing(registry_factory: Callable[..., RegistryServer],
                                         probe_host: Callable[[dict[str, object]], ProbeHost]) -> None:
    """While probes fail the job runs every interval/4 (40s -> 10s), and at the base interval again after."""
    reg = registry_factory(auth=True)
    host = probe_host(registry_tables(reg))
    component = ProbeComponent()
    component.start(host.ctx)
    try:
        reg.stop()
        component.run_probe("reg")
        assert host.ctx.scheduler.get_job("probe:reg").trigger.interval.total_seconds() == 10
        reg.start()
        component.run_probe("reg")
        assert host.ctx.scheduler.get_job("probe:reg").trigger.interval.total_seconds() == 40
        sample = host.ctx.metrics.registry.get_sample_value
        assert sample("regwarden_probe_interval_seconds", {"registry": "reg"}) == 40
    finally:
        component.stop()


def test_anonymous_access_signal_and_metrics(registry_factory: Callable[..., RegistryServer],
                                             probe_host: Callable[[dict[str, object]], ProbeHost]) -> None:
    """An open registry with expect_auth fires RegistryAnonymousAccess and sets the anonymous-access gauge."""
    reg = registry_factory(auth=False)
    host = probe_host(registry_tables(reg, expect_auth=True))
    component = ProbeComponent()
    component.start(host.ctx)
    try:
        component.run_probe("reg")
        assert [s.firing for s in host.collected.signals("RegistryAnonymousAccess")] == [True]
        sample = host.ctx.metrics.registry.get_sample_value
        assert sample("regwarden_probe_anonymous_access", {"registry": "reg"}) == 1
        assert sample("regwarden_probe_success", {"registry": "reg"}) == 1
        assert sample("regwarden_probe_http_status_code", {"registry": "reg"}) == 200
        assert component.status()["reg"]["verdict"] == "anonymous"
    finally:
        component.stop()


def test_credential_from_docker_client_config(registry_factory: Callable[..., RegistryServer], tmp_path: Path,
                                              probe_host: Callable[[dict[str, object]], ProbeHost]) -> None:
    """Without a lookup, the component tests the credential kept in the Docker client config."""
    reg = registry_factory(auth=True)
    docker_config = tmp_path / "config.json"
    secret = CredentialSecret("ci", 1, username=reg.username, password=reg.password)
    docker_config.write_text(json.dumps({"auths": {reg.host_port: {
        "auth": base64.b64encode(f"{secret.username}:{secret.password}".encode()).decode()}}}))
    host = probe_host({
        **registry_tables(reg, credential="ci", expect_auth=True),
        "vault": {"address": "http://127.0.0.1:1", "auth": {"method": "token", "token_env": "UNUSED"}},
        "docker": {"client_configs": [str(docker_config)], "host": "unix:///nonexistent.sock"},
        "credentials": [{"name": "ci", "vault_path": "secret/ci"}],
    })
    component = ProbeComponent()
    component.start(host.ctx)
    try:
        component.run_probe("reg")
        status = component.status()["reg"]
        assert (status["auth_check"], status["verdict"]) == ("ok", "plain-http")
        assert host.ctx.metrics.registry.get_sample_value("regwarden_probe_auth_success", {"registry": "reg"}) == 1
    finally:
        component.stop()


def test_credential_lookup_hook_is_used(registry_factory: Callable[..., RegistryServer],
                                        probe_host: Callable[[dict[str, object]], ProbeHost]) -> None:
    """A credential lookup given to the component is asked by credential name; a refused one fails auth."""
    reg = registry_factory(auth=True)
    asked: list[str] = []

    def lookup(name: str) -> CredentialSecret:
        asked.append(name)
        return CredentialSecret(name, 2, username=reg.username, password="stale-password-1")

    host = probe_host({
        **registry_tables(reg, credential="ci"),
        "vault": {"address": "http://127.0.0.1:1", "auth": {"method": "token", "token_env": "UNUSED"}},
        "docker": {"host": "unix:///nonexistent.sock"},
        "credentials": [{"name": "ci", "vault_path": "secret/ci"}],
    })
    component = ProbeComponent(credential_lookup=lookup)
    component.start(host.ctx)
    try:
        component.run_probe("reg")
        assert asked == ["ci"]
        failed = host.collected.events("probe.failed")
        assert [(e.detail["phase"], e.detail["reason"]) for e in failed] == [
            ("auth", "registry refused the credential (HTTP 401)")]
        assert "stale-password-1" not in json.dumps([e.record() for e in failed])
    finally:
        component.stop()
