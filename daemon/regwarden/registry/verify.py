"""Verify a credential version against its registry before it is applied.

Passwords and tokens: `GET /v2/` with the credential, following a `WWW-Authenticate: Bearer` challenge
to the token realm the way the Docker engine does (basic auth on the realm for a username/password,
the OAuth2 `refresh_token` POST for an identity token, username `<token>`). Client certificates: a real
TLS handshake with the new pair, then `GET /v2/` over that connection.

`CredentialError` means the registry rejected the credential; `RegistryError(phase, status)` means it
could not be reached or answered something that says nothing about the credential. No message, log
line or exception here ever contains the password, token or private key.
"""

from __future__ import annotations

import http.client
import os
import shutil
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import structlog

from ..config import RegistryConfig
from ..credentials.model import CredentialSecret
from ..docker.certs import client_certificate_pem, client_key_pem
from ..errors import CredentialError, RegistryError
from ..redact import scrub_text

__all__ = ["Challenge", "parse_challenge", "verify_credential"]

log = structlog.get_logger(__name__)

# the client id the Docker engine sends in the OAuth2 refresh_token grant
DOCKER_CLIENT_ID = "docker"
_REJECTED = frozenset({401, 403})
# what a TLS-terminating proxy answers for a missing or bad client certificate (nginx: 400, 495, 496)
_CERT_REJECTED_HTTP = frozenset({400, 403, 495, 496})
# alerts a server sends when it refuses the client certificate (OpenSSL reason names)
_CERT_ALERTS = ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_EXPIRED",
                "CERTIFICATE_REVOKED", "CERTIFICATE_UNKNOWN", "UNSUPPORTED_CERTIFICATE", "ACCESS_DENIED",
                "DECRYPT_ERROR", "HANDSHAKE_FAILURE")


@dataclass(frozen=True)
class Challenge:
    """One parsed `WWW-Authenticate` header: scheme (lower case) and its parameters."""

    scheme: str
    params: Mapping[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """Parse `Bearer realm="...",service="...",scope="..."` (or `Basic realm=...`); None if empty.

    Quoted values may contain commas (scopes such as `repository:a:pull,push`).
    """
    text = header.strip()
    if not text:
        return None
    scheme, _, rest = text.partition(" ")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            i += 1
            value = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(rest[i])
                i += 1
            i += 1
            params[key] = "".join(value)
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            params[key] = rest[i:end].strip()
            i = end
    return Challenge(scheme.lower(), params)


def verify_credential(registry: RegistryConfig, secret: CredentialSecret, *, timeout: float) -> None:
    """Prove that `secret` is accepted by `registry`; raise CredentialError or RegistryError if not."""
    bound = log.bind(registry=registry.name, credential=secret.name, version=secret.version)
    if secret.kind == "certificate":
        _verify_client_certificate(registry, secret, timeout)
        bound.info("credential_verified", method="client-certificate")
    else:
        method = _verify_password(registry, secret, timeout)
        bound.info("credential_verified", method=method)


# --------------------------------------------------------------------------- passwords and tokens


def _verify_password(registry: RegistryConfig, secret: CredentialSecret, timeout: float) -> str:
    """Returns how the registry accepted the credential (basic, bearer, bearer-oauth)."""
    assert secret.username is not None and secret.password is not None
    ping = f"{registry.url}/v2/"
    basic = None if secret.is_identity_token else (secret.username, secret.password)
    with requests.Session() as session:
        session.verify = str(registry.ca_cert) if registry.ca_cert else True
        first = _send(session, "GET", ping, timeout, phase="ping", auth=basic)
        if first.status_code == 200:
            return "basic" if basic else "anonymous"
        if first.status_code not in _REJECTED:
            raise _unexpected(registry, "ping", first)
        challenge = parse_challenge(first.headers.get("WWW-Authenticate", ""))
        if challenge is None or challenge.scheme != "bearer":
            # Basic (or no) challenge although we sent the credential: it was rejected.
            if basic is None and challenge is not None and challenge.scheme == "basic":
                raise CredentialError(f"registry {registry.name} wants basic auth; an identity token "
                                      f"(username <token>) needs a token server")
            raise _rejected(registry, secret, first.status_code, "on /v2/")
        token, method = _fetch_token(session, registry, secret, challenge, timeout)
        second = _send(session, "GET", ping, timeout, phase="ping",
                       headers={"Authorization": f"Bearer {token}"})
        if second.status_code == 200:
            return method
        if second.status_code in _REJECTED:
            raise _rejected(registry, secret, second.status_code, "with the bearer token it issued")
        raise _unexpected(registry, "ping", second)


def _fetch_token(session: requests.Session, registry: RegistryConfig, secret: CredentialSecret,
                 challenge: Challenge, timeout: float) -> tuple[str, str]:
    assert secret.username is not None and secret.password is not None
    realm = challenge.params.get("realm", "")
    if urlsplit(realm).scheme not in ("http", "https"):
        raise RegistryError(f"registry {registry.name}: bearer challenge has no usable realm", phase="token")
    service, scope = challenge.params.get("service"), challenge.params.get("scope")
    if secret.is_identity_token:
        form = {"grant_type": "refresh_token", "refresh_token": secret.password,
                "client_id": DOCKER_CLIENT_ID}
        if service:
            form["service"] = service
        if scope:
            form["scope"] = scope
        answer = _send(session, "POST", realm, timeout, phase="token", data=form)
        method, rejected = "bearer-oauth", _REJECTED | {400}  # OAuth2 invalid_grant is a 400
    else:
        query = {"account": secret.username}
        if service:
            query["service"] = service
        if scope:
            query["scope"] = scope
        answer = _send(session, "GET", realm, timeout, phase="token", params=query,
                       auth=(secret.username, secret.password))
        method, rejected = "bearer", _REJECTED
    if answer.status_code in rejected:
        raise _rejected(registry, secret, answer.status_code, "at the token realm")
    if answer.status_code != 200:
        raise _unexpected(registry, "token", answer)
    try:
        body: Any = answer.json()
    except ValueError:
        raise RegistryError(f"registry {registry.name}: token realm answered non-JSON",
                            phase="token", status=200) from None
    token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise RegistryError(f"registry {registry.name}: token realm answered without a token",
                            phase="token", status=200)
    return token, method


def _send(session: requests.Session, method: str, url: str, timeout: float, *, phase: str,
          **kwargs: Any) -> requests.Response:
    try:
        return session.request(method, url, timeout=timeout, allow_redirects=True, **kwargs)
    except requests.exceptions.SSLError as exc:
        raise RegistryError(f"TLS to {_origin(url)} failed: {_reason(exc)}", phase="tls") from None
    except requests.exceptions.Timeout:
        raise RegistryError(f"{_origin(url)} did not answer within {timeout:g}s", phase=phase) from None
    except requests.exceptions.RequestException as exc:
        raise RegistryError(f"cannot reach {_origin(url)}: {_reason(exc)}", phase="connect") from None


def _rejected(registry: RegistryConfig, secret: CredentialSecret, status: int, where: str) -> CredentialError:
    return CredentialError(f"registry {registry.name} rejected credential {secret.name} v{secret.version}"
                           f" {where} (HTTP {status})")


def _unexpected(registry: RegistryConfig, phase: str, answer: requests.Response) -> RegistryError:
    return RegistryError(f"registry {registry.name}: unexpected HTTP {answer.status_code} from "
                         f"{_origin(answer.url)} during {phase}", phase=phase, status=answer.status_code)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"


def _reason(exc: BaseException) -> str:
    """The innermost exception's message, scrubbed, without URLs that could carry a query string."""
    inner: BaseException = exc
    while inner.__context__ is not None and inner.__context__ is not inner:
        inner = inner.__context__
    return scrub_text(str(inner) or type(inner).__name__)[:300]


# --------------------------------------------------------------------------- client certificates


def _verify_client_certificate(registry: RegistryConfig, secret: CredentialSecret, timeout: float) -> None:
    parts = urlsplit(registry.url)
    if parts.scheme != "https" or parts.hostname is None:
        raise CredentialError(f"registry {registry.name}: client certificates need an https:// URL")
    host, port = parts.hostname, parts.port or 443
    with _key_files(secret) as (cert_file, key_file):
        context = ssl.create_default_context(cafile=str(registry.ca_cert) if registry.ca_cert else None)
        try:
            context.load_cert_chain(str(cert_file), str(key_file))
        except ssl.SSLError as exc:
            raise CredentialError(f"credential {secret.name} v{secret.version}: certificate and private key "
                                  f"do not form a usable pair ({exc.reason or 'unreadable'})") from None
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        connected = False
        try:
            conn.connect()
            connected = True
            # TLS 1.3: the server judges the client certificate after the client's handshake is done;
            # its verdict arrives with the first read, so a request/response is part of the check.
            conn.request("GET", "/v2/", headers={"User-Agent": "regwarden-verify"})
            answer = conn.getresponse()
            status = answer.status
            answer.read(4096)
        except ssl.SSLCertVerificationError as exc:
            raise RegistryError(f"registry {registry.name}: server certificate not trusted "
                                f"({exc.verify_message})", phase="tls") from None
        except ssl.SSLError as exc:
            reason = exc.reason or ""
            # TLS 1.3: a server that drops us right after reading our certificate (no alert) shows
            # up as EOF on the first read after the client-side handshake completed.
            dropped = connected and isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError)
            if dropped or any(alert in reason for alert in _CERT_ALERTS):
                raise CredentialError(f"registry {registry.name} refused client certificate of credential "
                                      f"{secret.name} v{secret.version} ({reason})") from None
            raise RegistryError(f"registry {registry.name}: TLS failed ({reason or exc})", phase="tls") from None
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as exc:
            # A server closing right after our certificate (TLS 1.3) without a readable alert.
            raise CredentialError(f"registry {registry.name} closed the connection after the client "
                                  f"certificate of {secret.name} v{secret.version} ({type(exc).__name__})") from None
        except TimeoutError:
            raise RegistryError(f"registry {registry.name} did not answer within {timeout:g}s",
                                phase="connect") from None
        except OSError as exc:
            raise RegistryError(f"cannot reach registry {registry.name}: {exc.strerror or exc}",
                                phase="connect") from None
        finally:
            conn.close()
    if status in (200, 401):  # 401: HTTP auth on top of mTLS; the certificate itself was accepted
        return
    if status in _CERT_REJECTED_HTTP:
        raise CredentialError(f"registry {registry.name} refused client certificate of credential "
                              f"{secret.name} v{secret.version} (HTTP {status})")
    raise RegistryError(f"registry {registry.name}: unexpected HTTP {status} on /v2/", phase="ping", status=status)


@contextmanager
def _key_files(secret: CredentialSecret) -> Iterator[tuple[Path, Path]]:
    """The pair as files in a private (0700) temp dir, each 0600; removed on exit."""
    assert secret.certificate is not None and secret.private_key is not None
    directory = Path(tempfile.mkdtemp(prefix="regwarden-verify-"))
    try:
        cert_file, key_file = directory / "client.cert", directory / "client.key"
        for path, text in ((cert_file, client_certificate_pem(secret)), (key_file, client_key_pem(secret))):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
        yield cert_file, key_file
    finally:
        shutil.rmtree(directory, ignore_errors=True)
