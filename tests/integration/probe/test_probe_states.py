"""Real registries in each state get the right verdict, failed phase and reason from the prober."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from regwarden.credentials.model import CredentialSecret
from regwarden.probe.model import Assessment, ProbeResult, assess
from regwarden.probe.prober import ProbeTarget, probe
from tests.integration.harness import NetnsHost, RegistryServer, require
from tests.integration.probe.conftest import Pki

pytestmark = pytest.mark.integration

FOURTEEN_DAYS = 14 * 86400.0


def run(url: str, *, expect_auth: bool = True, credential: CredentialSecret | None = None,
        ca_cert: Path | None = None, timeout: float = 3.0) -> tuple[ProbeResult, Assessment]:
    result = probe(ProbeTarget("reg", url, timeout, str(ca_cert) if ca_cert else None), credential)
    return result, assess(result, expect_auth=expect_auth, tls_warning_seconds=FOURTEEN_DAYS, now=time.time())


def login(registry: RegistryServer, password: str | None = None) -> CredentialSecret:
    return CredentialSecret("ci", 1, username=registry.username, password=password or registry.password)


def test_tls_registry_with_auth_is_up(registry_factory: Callable[..., RegistryServer],
                                     pki_factory: Callable[[], Pki]) -> None:
    """A TLS registry with auth, a valid chain and a working credential is up, every phase timed."""
    pki = pki_factory()
    reg = registry_factory(auth=True, tls=pki.server_tls("127.0.0.1"))
    result, verdict = run(reg.url, credential=login(reg), ca_cert=pki.ca_path)
    assert (verdict.verdict, result.failed_phase, result.reason) == ("up", None, "")
    assert (result.http_status, result.anonymous, result.auth_ok, result.auth_scheme) == (401, False, True, "basic")
    assert set(result.phases) == {"dns", "connect", "tls", "http", "auth"}
    assert result.tls_version in ("TLSv1.2", "TLSv1.3")
    assert verdict.tls_days_left is not None and 29 < verdict.tls_days_left <= 30


def test_wrong_password_fails_the_auth_phase(registry_factory: Callable[..., RegistryServer]) -> None:
    """A credential the registry refuses fails phase auth with the status it got."""
    reg = registry_factory(auth=True)
    result, verdict = run(reg.url, credential=login(reg, "not-the-password"))
    assert (verdict.verdict, result.failed_phase) == ("auth-failed", "auth")
    assert result.reason == "registry refused the credential (HTTP 401)"
    assert "not-the-password" not in repr(result)


def test_registry_without_auth_is_anonymous_access(registry_factory: Callable[..., RegistryServer]) -> None:
    """A registry answering /v2/ 200 without credentials, where auth is expected, is anonymous access."""
    reg = registry_factory(auth=False)
    result, verdict = run(reg.url, expect_auth=True)
    assert (verdict.verdict, result.failed_phase, result.http_status, result.anonymous) == (
        "anonymous", None, 200, True)
    assert "anonymous_access" in verdict.findings


def test_certificate_expiring_in_two_days(registry_factory: Callable[..., RegistryServer],
                                          pki_factory: Callable[[], Pki]) -> None:
    """A registry whose certificate (OpenBao PKI, ttl 48h) expires in 2 days is tls-expiring, not down."""
    pki = pki_factory()
    reg = registry_factory(auth=True, tls=pki.server_tls("127.0.0.1", ttl="48h"))
    result, verdict = run(reg.url, credential=login(reg), ca_cert=pki.ca_path)
    assert (verdict.verdict, result.failed_phase) == ("tls-expiring", None)
    assert verdict.tls_days_left is not None and 1.9 < verdict.tls_days_left <= 2.0
    assert result.cert_expiry is not None


def test_wrong_ca_fails_the_tls_phase(registry_factory: Callable[..., RegistryServer],
                                      pki_factory: Callable[[], Pki]) -> None:
    """A registry certificate from a CA we do not trust fails phase tls: certificate verify failed."""
    ours, theirs = pki_factory(), pki_factory()
    reg = registry_factory(auth=True, tls=theirs.server_tls("127.0.0.1"))
    result, verdict = run(reg.url, credential=login(reg), ca_cert=ours.ca_path)
    assert (verdict.verdict, result.failed_phase) == ("down", "tls")
    assert result.reason == "certificate verify failed: unable to get local issuer certificate"


def test_certificate_for_another_address_fails_hostname_check(
        registry_factory: Callable[..., RegistryServer], pki_factory: Callable[[], Pki]) -> None:
    """A certificate valid for another address fails phase tls on the hostname check."""
    pki = pki_factory()
    reg = registry_factory(auth=True, tls=pki.server_tls("127.0.0.2"))
    result, _ = run(reg.url, ca_cert=pki.ca_path)
    assert result.failed_phase == "tls"
    assert result.reason.startswith("certificate verify failed: IP address mismatch")


def test_plain_http_registry(registry_factory: Callable[..., RegistryServer]) -> None:
    """A working registry reached over plain HTTP is plain-http, with the credential accepted."""
    reg = registry_factory(auth=True)
    result, verdict = run(reg.url, credential=login(reg))
    assert (verdict.verdict, result.failed_phase, result.auth_ok, result.tls_version) == (
        "plain-http", None, True, None)
    assert "tls" not in result.phases


def test_https_url_to_a_plain_http_registry_fails_tls(registry_factory: Callable[..., RegistryServer]) -> None:
    """https:// to a registry that speaks plain HTTP fails the TLS handshake."""
    reg = registry_factory(auth=True)
    result, _ = run(reg.url.replace("http://", "https://"))
    assert result.failed_phase == "tls"
    assert result.reason.startswith("TLS handshake failed")


def test_stopped_registry_is_connection_refused(registry_factory: Callable[..., RegistryServer]) -> None:
    """A stopped registry fails phase connect: connection refused."""
    reg = registry_factory(auth=True)
    reg.stop()
    result, verdict = run(reg.url)
    assert (verdict.verdict, result.failed_phase, result.reason) == ("down", "connect", "connection refused")


def test_host_dropping_packets_times_out(netns_factory: Callable[[], NetnsHost]) -> None:
    """A host that drops every packet (nftables in its namespace) fails phase connect by timeout."""
    require("nft (nftables)", shutil.which("nft") is not None)
    host = netns_factory()
    host.run(["nft", "add", "table", "inet", "rwdrop"])
    host.run(["nft", "add", "chain", "inet", "rwdrop", "input",
              "{ type filter hook input priority 0; policy drop; }"])
    result, verdict = run(f"http://{host.ns_addr}:5000", timeout=1.0)
    assert (verdict.verdict, result.failed_phase) == ("down", "connect")
    assert result.reason == "timed out (probe_timeout 1s)"


def test_unresolvable_name_fails_dns() -> None:
    """A name that does not resolve fails phase dns."""
    result, _ = run("https://registry.does-not-exist.invalid:5000")
    assert result.failed_phase == "dns"
    assert result.reason.startswith("name resolution failed")
