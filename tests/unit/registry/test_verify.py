"""verify_credential against real local HTTP(S) servers that answer as registries and token realms do."""

from __future__ import annotations

import base64
import datetime
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from structlog.testing import capture_logs

from regwarden.config import RegistryConfig
from regwarden.credentials.model import CredentialSecret
from regwarden.errors import CredentialError, RegistryError
from regwarden.registry.verify import Challenge, parse_challenge, verify_credential

USER, PASSWORD = "ci-a", "s3cret-password-XYZ"
REFRESH = "refresh-token-0123456789"
ISSUED = "issued-bearer-token-abcdef"


# --------------------------------------------------------------------------- parse_challenge


@pytest.mark.parametrize(("header", "expected"), [
    ('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"',
     Challenge("bearer", {"realm": "https://auth.example/token", "service": "registry.example",
                          "scope": "repository:a/b:pull,push"})),
    ('Basic realm="regwarden-test"', Challenge("basic", {"realm": "regwarden-test"})),
    ('Bearer realm=https://auth.example/token, service=reg', Challenge("bearer", {
        "realm": "https://auth.example/token", "service": "reg"})),
    ('Bearer realm="a\\"b"', Challenge("bearer", {"realm": 'a"b'})),
    ("", None),
])
def test_parse_challenge(header: str, expected: Challenge | None) -> None:
    """WWW-Authenticate headers parse into scheme and parameters, quoted commas included."""
    assert parse_challenge(header) == expected


# --------------------------------------------------------------------------- a fake registry


@dataclass
class FakeRegistry:
    mode: str = "basic"  # basic | bearer | broken | nonsense-token
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


def _serve(fake: FakeRegistry) -> Iterator[FakeRegistry]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def _auth(self) -> str:
            return self.headers.get("Authorization", "")

        def _answer(self, status: int, body: bytes = b"{}", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            fake.requests.append({"method": "GET", "path": parts.path, "query": parse_qs(parts.query),
                                  "auth": self._auth()})
            good_basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if fake.mode == "broken":
                self._answer(503)
            elif parts.path == "/v2/" and fake.mode == "basic":
                if self._auth() == good_basic:
                    self._answer(200)
                else:
                    self._answer(401, headers={"WWW-Authenticate": 'Basic realm="fake"'})
            elif parts.path == "/v2/":
                if self._auth() == f"Bearer {ISSUED}":
                    self._answer(200)
                else:
                    self._answer(401, headers={"WWW-Authenticate":
                                 f'Bearer realm="{fake.url}/token",service="fake-registry",scope="registry:catalog:*"'})
            elif parts.path == "/token":
                if fake.mode == "nonsense-token":
                    self._answer(200, b"<html>hello</html>")
                elif self._auth() == good_basic:
                    self._answer(200, json.dumps({"token": ISSUED}).encode())
                else:
                    self._answer(401)
            else:
                self._answer(404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = parse_qs(self.rfile.read(length).decode())
            fake.requests.append({"method": "POST", "path": self.path, "form": form})
            if form.get("grant_type") == ["refresh_token"] and form.get("refresh_token") == [REFRESH]:
                self._answer(200, json.dumps({"access_token": ISSUED, "expires_in": 300}).encode())
            else:
                self._answer(400, b'{"error":"invalid_grant"}')

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    yield from _serve(FakeRegistry())


def _registry(url: str, **extra: Any) -> RegistryConfig:
    return RegistryConfig(name="internal", url=url, credential="ci", **extra)


def _password(user: str = USER, password: str = PASSWORD) -> CredentialSecret:
    return CredentialSecret("ci", 3, username=user, password=password)


def test_basic_registry_accepts_good_password(fake: FakeRegistry) -> None:
    """A registry with basic auth answering 200 to the credential verifies it."""
    verify_credential(_registry(fake.url), _password(), timeout=5)


def test_basic_registry_rejects_wrong_password(fake: FakeRegistry) -> None:
    """A basic-auth 401 to the credential is a CredentialError without the password in it."""
    with capture_logs() as logs, pytest.raises(CredentialError) as caught:
        verify_credential(_registry(fake.url), _password(password="wrong-password-123"), timeout=5)
    assert "HTTP 401" in str(caught.value)
    assert "wrong-password-123" not in str(caught.value) + repr(logs)


def test_bearer_challenge_is_followed_to_the_token_realm(fake: FakeRegistry) -> None:
    """A Bearer challenge leads to the realm with basic auth, service, scope and account, then /v2/ with the token."""
    fake.mode = "bearer"
    verify_credential(_registry(fake.url), _password(), timeout=5)
    token = next(r for r in fake.requests if r["path"] == "/token")
    assert token["query"] == {"service": ["fake-registry"], "scope": ["registry:catalog:*"], "account": [USER]}
    assert fake.requests[-1]["path"] == "/v2/" and fake.requests[-1]["auth"] == f"Bearer {ISSUED}"


def test_bearer_realm_rejecting_the_password_is_a_credential_error(fake: FakeRegistry) -> None:
    """The token realm answering 401 to the credential means the credential is rejected."""
    fake.mode = "bearer"
    with pytest.raises(CredentialError, match="at the token realm"):
        verify_credential(_registry(fake.url), _password(password="not-the-password"), timeout=5)


def test_identity_token_uses_the_oauth2_refresh_token_grant(fake: FakeRegistry) -> None:
    """An identity token (username <token>) is exchanged by POST grant_type=refresh_token, as Docker does."""
    fake.mode = "bearer"
    verify_credential(_registry(fake.url), _password("<token>", REFRESH), timeout=5)
    post = next(r for r in fake.requests if r["method"] == "POST")
    assert post["form"]["client_id"] == ["docker"]
    assert post["form"]["service"] == ["fake-registry"]
    assert all(r.get("auth", "") == "" or r["auth"].startswith("Bearer") for r in fake.requests)


def test_rejected_identity_token_is_a_credential_error(fake: FakeRegistry) -> None:
    """An OAuth2 invalid_grant (400) for the identity token is a CredentialError."""
    fake.mode = "bearer"
    with pytest.raises(CredentialError):
        verify_credential(_registry(fake.url), _password("<token>", "expired-refresh-token"), timeout=5)


def test_server_error_is_a_registry_error_with_phase_and_status(fake: FakeRegistry) -> None:
    """A 503 says nothing about the credential: RegistryError(phase=ping, status=503)."""
    fake.mode = "broken"
    with pytest.raises(RegistryError) as caught:
        verify_credential(_registry(fake.url), _password(), timeout=5)
    assert (caught.value.phase, caught.value.status) == ("ping", 503)


def test_token_realm_answering_nonsense_is_a_registry_error(fake: FakeRegistry) -> None:
    """A realm answering HTML instead of a token is a RegistryError in phase token."""
    fake.mode = "nonsense-token"
    with pytest.raises(RegistryError) as caught:
        verify_credential(_registry(fake.url), _password(), timeout=5)
    assert caught.value.phase == "token"


def test_unreachable_registry_is_a_registry_error() -> None:
    """Nothing listening is a RegistryError in phase connect."""
    with pytest.raises(RegistryError) as caught:
        verify_credential(_registry("http://127.0.0.1:9"), _password(), timeout=2)
    assert caught.value.phase == "connect"


# --------------------------------------------------------------------------- client certificates


@dataclass
class Pki:
    ca_pem: str
    ca_key: ec.EllipticCurvePrivateKey
    ca: x509.Certificate

    def issue(self, cn: str, *, server: bool = False, issuer: Pki | None = None) -> tuple[str, str]:
        signer = issuer or self
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                   .issuer_name(signer.ca.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=1))
                   .not_valid_after(now + datetime.timedelta(hours=1)))
        if server:
            import ipaddress
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            usage = ExtendedKeyUsageOID.SERVER_AUTH
        else:
            usage = ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        cert = builder.sign(signer.ca_key, hashes.SHA256())
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def make_pki(cn: str) -> Pki:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(key, hashes.SHA256()))
    return Pki(ca.public_bytes(serialization.Encoding.PEM).decode(), key, ca)


@pytest.fixture
def mtls(tmp_path: Path) -> Iterator[tuple[str, Path, Pki]]:
    """An HTTPS server on 127.0.0.1 requiring a client certificate from its client CA."""
    server_pki, client_pki = make_pki("server-ca"), make_pki("client-ca")
    cert, key = server_pki.issue("127.0.0.1", server=True)
    (tmp_path / "server.pem").write_text(cert)
    (tmp_path / "server.key").write_text(key)
    (tmp_path / "server-ca.pem").write_text(server_pki.ca_pem)
    (tmp_path / "client-ca.pem").write_text(client_pki.ca_pem)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    context.load_verify_locations(tmp_path / "client-ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", tmp_path / "server-ca.pem", client_pki
    finally:
        server.shutdown()
        server.server_close()


def _cert_secret(cert: str, key: str, chain: str | None = None) -> CredentialSecret:
    return CredentialSecret("pki", 7, certificate=cert, private_key=key, ca_chain=chain)


def test_client_certificate_from_the_trusted_ca_verifies(mtls: tuple[str, Path, Pki]) -> None:
    """A TLS handshake plus GET /v2/ with a pair from the server's client CA succeeds."""
    url, server_ca, client_pki = mtls
    cert, key = client_pki.issue("ci-client")
    verify_credential(_registry(url, ca_cert=server_ca), _cert_secret(cert, key, client_pki.ca_pem), timeout=5)


def test_client_certificate_from_another_ca_is_a_credential_error(mtls: tuple[str, Path, Pki]) -> None:
    """A pair the server does not trust is refused: CredentialError."""
    url, server_ca, _ = mtls
    cert, key = make_pki("rogue-ca").issue("ci-client")
    with pytest.raises(CredentialError, match=r"refused client certificate|closed the connection"):
        verify_credential(_registry(url, ca_cert=server_ca), _cert_secret(cert, key), timeout=5)


def test_mismatched_certificate_and_key_is_a_credential_error(mtls: tuple[str, Path, Pki]) -> None:
    """A certificate with another certificate's key never reaches the network: CredentialError."""
    url, server_ca, client_pki = mtls
    cert, _ = client_pki.issue("one")
    _, other_key = client_pki.issue("two")
    with capture_logs() as logs, pytest.raises(CredentialError, match="do not form a usable pair") as caught:
        verify_credential(_registry(url, ca_cert=server_ca), _cert_secret(cert, other_key), timeout=5)
    body = other_key.splitlines()[1]
    assert body not in str(caught.value) + repr(logs)


def test_untrusted_server_is_a_registry_error(mtls: tuple[str, Path, Pki]) -> None:
    """Without the registry's CA the server certificate fails verification: RegistryError(phase=tls)."""
    url, _, client_pki = mtls
    cert, key = client_pki.issue("ci-client")
    with pytest.raises(RegistryError) as caught:
        verify_credential(_registry(url), _cert_secret(cert, key), timeout=5)
    assert caught.value.phase == "tls"
