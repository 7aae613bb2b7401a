"""Bearer-token registries: distribution in token-auth mode, a local token realm, the real engine.

The realm answers the two flows the Docker engine uses: `GET` with basic auth (username/password) and
the OAuth2 `POST grant_type=refresh_token` (identity tokens). It signs ES256 JWTs with a certificate in
the registry's `rootcertbundle`. This checks that what regwarden verifies and what it writes to
config.json (`{"identitytoken": ...}`) is what the engine itself accepts.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import docker.auth
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from regwarden.config import Config, parse_config
from regwarden.credentials.apply import apply_credential
from regwarden.credentials.model import CredentialSecret
from regwarden.docker.client_config import read_config
from regwarden.errors import CredentialError, RegistryError
from regwarden.images.component import check_signature
from regwarden.images.signature import load_public_key
from regwarden.registry.client import RegistryReader
from regwarden.registry.verify import verify_credential
from tests.cosign_support import CosignKey, push_signature
from tests.integration.harness import (
    DockerEngine,
    ImageTransferError,
    RegistryServer,
    pull_image,
    push_image,
    running,
)

pytestmark = pytest.mark.integration

SERVICE, ISSUER = "rwtest-registry", "rwtest-token-issuer"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenRealm:
    """Issues registry JWTs for one user (basic auth) and one identity token (refresh_token grant)."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    username: str
    password: str
    refresh_token: str
    url: str = ""
    grants: list[str] = field(default_factory=list)

    def jwt(self, subject: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            for item in scope.split(" "):
                kind, _, rest = item.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind and name:
                    access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256",
                  "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def make_realm(tmp_path: Path) -> TokenRealm:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rwtest token signer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=2)).sign(key, hashes.SHA256()))
    (tmp_path / "token-signer.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return TokenRealm(key, cert, "ci-token-user", secrets.token_urlsafe(16), "idt-" + secrets.token_urlsafe(24))


@pytest.fixture
def realm(tmp_path: Path) -> Iterator[TokenRealm]:
    """The token realm on 127.0.0.1 (plain HTTP, as the engine accepts for a loopback registry)."""
    token_realm = make_realm(tmp_path)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            good = "Basic " + base64.b64encode(f"{token_realm.username}:{token_realm.password}".encode()).decode()
            if self.headers.get("Authorization") != good:
                self._json(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                return
            token_realm.grants.append("basic")
            token = token_realm.jwt(token_realm.username, query.get("scope", []))
            self._json(200, {"token": token, "access_token": token, "expires_in": 300})

        def do_POST(self) -> None:
            form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode())
            if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != [token_realm.refresh_token]:
                self._json(400, {"error": "invalid_grant"})
                return
            token_realm.grants.append("refresh_token")
            token = token_realm.jwt("identity", form.get("scope", []))
            self._json(200, {"access_token": token, "refresh_token": token_realm.refresh_token, "expires_in": 300})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    token_realm.url = f"http://127.0.0.1:{server.server_address[1]}/token"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield token_realm
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def token_registry(tmp_path: Path, realm: TokenRealm) -> Iterator[RegistryServer]:
    """distribution with `auth.token` pointing at the realm (the harness builds the rest of its config)."""
    (tmp_path / "registry").mkdir()
    server = RegistryServer(tmp_path / "registry", auth=False)
    config = json.loads(server.config_path.read_text())
    config["auth"] = {"token": {"realm": realm.url, "service": SERVICE, "issuer": ISSUER,
                                "rootcertbundle": str(tmp_path / "token-signer.pem")}}
    server.config_path.write_text(json.dumps(config, indent=2))
    with running(server):
        yield server


def make_config(tmp_path: Path, registry: RegistryServer) -> Config:
    return parse_config({
        "daemon": {"state_dir": str(tmp_path / "state")},
        "vault": {"address": "http://127.0.0.1:8200", "auth": {"method": "token", "token_env": "RW_UNUSED"}},
        "docker": {"client_configs": [str(tmp_path / "config.json")], "certs_dir": str(tmp_path / "certs.d")},
        "registries": [{"name": "tokens", "url": registry.url, "credential": "ci"}],
        "credentials": [{"name": "ci", "vault_path": "secret/regwarden/ci"}],
    })


def engine_auth(config_path: Path, host_port: str) -> dict[str, str]:
    """The auth the Docker SDK resolves from config.json, in the shape the engine API takes."""
    resolved = docker.auth.load_config(str(config_path)).resolve_authconfig(host_port)
    assert resolved
    if "IdentityToken" in resolved:
        return {"identitytoken": resolved["IdentityToken"]}
    return {"username": resolved["username"], "password": resolved["password"]}


def test_identity_token_verifies_and_pulls_through_the_engine(
        tmp_path: Path, realm: TokenRealm, token_registry: RegistryServer, dockerd: DockerEngine,
        tiny_image: str) -> None:
    """An identity token verified by the refresh_token grant and written to config.json pulls via the engine."""
    cfg = make_config(tmp_path, token_registry)
    client = dockerd.client()
    try:
        reference = push_image(client, token_registry.host_port, "rwtest/token",
                               auth={"username": realm.username, "password": realm.password})
        client.images.remove(reference)
        secret = CredentialSecret("ci", 1, username="<token>", password=realm.refresh_token)
        verify_credential(cfg.registry("tokens"), secret, timeout=10)
        apply_credential(cfg, cfg.credential("ci"), secret, previous=None)
        assert read_config(tmp_path / "config.json")["auths"] == {
            token_registry.host_port: {"identitytoken": realm.refresh_token}}
        realm.grants.clear()
        pull_image(client, reference, auth=engine_auth(tmp_path / "config.json", token_registry.host_port))
        assert "refresh_token" in realm.grants  # the engine used the OAuth2 grant, as verify did
    finally:
        client.close()


def test_password_through_the_token_realm_verifies_and_a_wrong_one_does_not(
        tmp_path: Path, realm: TokenRealm, token_registry: RegistryServer, dockerd: DockerEngine,
        tiny_image: str) -> None:
    """Basic auth at the realm verifies a good password; a wrong password and a wrong token are rejected."""
    registry = make_config(tmp_path, token_registry).registry("tokens")
    verify_credential(registry, CredentialSecret("ci", 1, username=realm.username, password=realm.password),
                      timeout=10)
    for bad in (CredentialSecret("ci", 2, username=realm.username, password="wrong-password-0"),
                CredentialSecret("ci", 3, username="<token>", password="idt-wrong-token-0")):
        with pytest.raises(CredentialError):
            verify_credential(registry, bad, timeout=10)
    client = dockerd.client()
    try:
        reference = push_image(client, token_registry.host_port, "rwtest/token-neg",
                               auth={"username": realm.username, "password": realm.password})
        client.images.remove(reference)
        with pytest.raises(ImageTransferError):  # the engine refuses the wrong token as verify did
            pull_image(client, reference, auth={"identitytoken": "idt-wrong-token-0"})
    finally:
        client.close()


def test_image_checks_read_a_signature_through_the_token_realm(
        tmp_path: Path, realm: TokenRealm, token_registry: RegistryServer, dockerd: DockerEngine,
        tiny_image: str) -> None:
    """The image check (`check_signature`, what the daemon runs for a push) gets its Bearer token from the
    realm with the registry's credential, a password or an identity token, finds a cosign signature pushed
    with a token and verifies it; without a credential the registry's 401 is an error, never "unsigned"."""
    cfg = make_config(tmp_path, token_registry)
    repository = "rwtest/signed"
    client = dockerd.client()
    try:
        push_image(client, token_registry.host_port, repository, "1",
                   auth={"username": realm.username, "password": realm.password})
    finally:
        client.close()
    registry = cfg.registry("tokens")
    password = CredentialSecret("ci", 1, username=realm.username, password=realm.password)
    reader = RegistryReader(registry, password, timeout=10)
    manifest = reader.manifest(repository, "1")
    assert manifest is not None and reader.referrers(repository, "sha256:" + "0" * 64) is None  # no API: 404
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    key = CosignKey.generate()
    bearer = {"Authorization": f"Bearer {realm.jwt(realm.username, [f'repository:{repository}:pull,push'])}"}
    push_signature(token_registry.url, repository, digest, key, headers=bearer)
    public = load_public_key(key.public_pem, "test key")
    identity = CredentialSecret("ci", 2, username="<token>", password=realm.refresh_token)
    for secret in (password, identity):
        realm.grants.clear()
        verdict = check_signature(RegistryReader(registry, secret, timeout=10), repository, digest, public)
        assert (verdict.verdict, verdict.reason) == ("verified", f"signature verified ({repository}:"
                                                                 f"{digest.replace(':', '-')}.sig)")
        assert realm.grants  # a token was asked for
    with pytest.raises(RegistryError) as anonymous:
        check_signature(RegistryReader(registry, None, timeout=10), repository, digest, public)
    assert anonymous.value.status == 401 and realm.password not in str(anonymous.value)
