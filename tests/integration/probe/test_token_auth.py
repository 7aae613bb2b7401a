"""Bearer token auth against a real registry (distribution's `auth.token`) and a local token realm."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from regwarden.credentials.model import CredentialSecret
from regwarden.probe.model import assess
from regwarden.probe.prober import ProbeTarget, probe
from tests.integration.harness import RegistryServer, running
from tests.integration.probe.conftest import Pki
from tests.integration.token_realm import ISSUER, SERVICE, TokenRealm

pytestmark = pytest.mark.integration

@pytest.fixture
def token_registry(tmp_path: Path, pki_factory: Callable[[], Pki]) -> Iterator[tuple[RegistryServer, TokenRealm, Pki]]:
    """A TLS registry (cert valid 30 days) using token auth, and its token realm (cert valid 10 days)."""
    pki = pki_factory()
    with TokenRealm(tmp_path, pki.server_tls("127.0.0.1", ttl="240h"), "ci-bearer", "bearer-pass-1") as realm:
        (tmp_path / "registry").mkdir()
        registry = RegistryServer(tmp_path / "registry", auth=False, tls=pki.server_tls("127.0.0.1"))
        config = json.loads(registry.config_path.read_text())
        config["auth"] = {"token": {"realm": realm.url, "service": SERVICE, "issuer": ISSUER,
                                    "rootcertbundle": str(realm.bundle)}}
        registry.config_path.write_text(json.dumps(config))
        with running(registry):
            yield registry, realm, pki


def test_bearer_flow_through_the_token_realm(token_registry: tuple[RegistryServer, TokenRealm, Pki]) -> None:
    """With a Bearer challenge the credential is exchanged at the realm for a token the registry accepts,
    and the realm's chain expiry (10 days) counts in the verdict beside the registry's (30 days)."""
    registry, realm, pki = token_registry
    credential = CredentialSecret("ci", 1, username=realm.username, password=realm.password)
    result = probe(ProbeTarget("reg", registry.url, 5, str(pki.ca_path)), credential)
    assert (result.failed_phase, result.auth_scheme, result.auth_ok, result.anonymous) == (None, "bearer", True, False)
    assessment = assess(result, expect_auth=True, tls_warning_seconds=14 * 86400, now=time.time())
    assert assessment.verdict == "tls-expiring"
    assert assessment.tls_days_left is not None and 9.9 < assessment.tls_days_left <= 10
    assert result.cert_expiry is not None and result.cert_expiry - time.time() > 29 * 86400


def test_bearer_realm_refusing_the_credential(token_registry: tuple[RegistryServer, TokenRealm, Pki]) -> None:
    """A credential the token realm refuses fails phase auth, naming the realm."""
    registry, realm, pki = token_registry
    credential = CredentialSecret("ci", 1, username=realm.username, password="wrong-bearer-pass")
    result = probe(ProbeTarget("reg", registry.url, 5, str(pki.ca_path)), credential)
    assert (result.failed_phase, result.reason) == ("auth", "token realm refused the credential (HTTP 401)")
