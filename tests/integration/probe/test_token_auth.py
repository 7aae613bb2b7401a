"""Bearer token auth against a real registry (distribution's `auth.token`) and a local token realm."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from regwarden.credentials.model import CredentialSecret
from regwarden.probe.model import assess
from regwarden.probe.prober import ProbeTarget, probe
from tests.integration.harness import RegistryServer, running
from tests.integration.probe.conftest import Pki

pytestmark = pytest.mark.integration

SERVICE = "regwarden-probe-test"
ISSUER = "regwarden-probe-test-issuer"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenRealm:
    """A token server as registries expect: Basic auth in, a JWT (ES256, x5c) for the service out."""

    def __init__(self, workdir: Path, tls: Any, username: str, password: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "regwarden test token signer")])
        now = dt.datetime.now(dt.UTC)
        self.signer = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                       .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                       .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
                       .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                       .sign(self.key, hashes.SHA256()))
        self.bundle = workdir / "token-signer.pem"
        self.bundle.write_bytes(self.signer.public_bytes(serialization.Encoding.PEM))
        self.username, self.password = username, password
        realm = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                given = self.headers.get("Authorization", "")
                expected = "Basic " + base64.b64encode(f"{realm.username}:{realm.password}".encode()).decode()
                if given and given != expected:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"token": realm.token(realm.username if given else "")}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.certificate, tls.key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def token(self, subject: str) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256",
                  "x5c": [base64.b64encode(self.signer.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
                  "jti": secrets.token_hex(8), "access": []}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def __enter__(self) -> TokenRealm:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


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
