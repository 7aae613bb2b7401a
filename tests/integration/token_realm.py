"""A token realm as distribution's `auth.token` expects: Basic auth in, a JWT (ES256, x5c) out.

Over TLS (`tls` given) or plain HTTP; anonymous requests get a token granting `anonymous_actions` on the
requested repository scope (none by default, as a private registry's token service does).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import ssl
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

__all__ = ["ISSUER", "SERVICE", "TokenRealm"]

SERVICE = "regwarden-probe-test"
ISSUER = "regwarden-probe-test-issuer"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenRealm:
    """A token server as registries expect: Basic auth in, a JWT (ES256, x5c) for the service out."""

    def __init__(self, workdir: Path, tls: Any | None, username: str, password: str, *,
                 anonymous_actions: Sequence[str] = ()) -> None:
        self.anonymous_actions = list(anonymous_actions)
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
                scope = parse_qs(urlsplit(self.path).query).get("scope", [""])[0]
                access = realm.access(scope) if not given else realm.access(scope, granted=None)
                body = json.dumps({"token": realm.token(realm.username if given else "", access)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.certificate, tls.key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def access(self, scope: str, granted: Sequence[str] | None = ()) -> list[dict[str, Any]]:
        """The access claim for `scope` ("repository:NAME:ACTIONS"): `granted` actions (None: all asked for),
        anonymous ones by default."""
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if not kind or not name:
            return []
        wanted = actions.split(",")
        allowed = wanted if granted is None else [a for a in wanted if a in (granted or self.anonymous_actions)]
        return [{"type": kind, "name": name, "actions": allowed}] if allowed else []

    def token(self, subject: str, access: list[dict[str, Any]] | None = None) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256",
                  "x5c": [base64.b64encode(self.signer.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
                  "jti": secrets.token_hex(8), "access": access or []}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def __enter__(self) -> TokenRealm:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


