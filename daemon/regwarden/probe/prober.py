"""Probing one registry endpoint over plain sockets, each phase timed on its own.

DNS (`getaddrinfo`), TCP connect, the TLS handshake (`ssl`: version, cipher, verified chain, hostname;
the earliest `notAfter` of the verified chain), then a minimal HTTP/1.1 client on the same connection:
`GET /v2/` without credentials and, with a credential, the challenge flow — Basic on the same
connection, or Bearer through the token realm (whose chain expiry is recorded too). One deadline,
`probe_timeout`, bounds the whole probe. Sockets instead of an HTTP library give exact phase
boundaries and keep the CPU cost per probe low (see bench/bench_probe.py).

Nothing raises out of `probe`: every failure becomes the result's `failed_phase` and `reason`. Reasons
never contain a credential or a response body.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from .. import __version__
from ..config import RegistryConfig
from ..credentials.model import CredentialSecret
from .model import Challenge, Phase, ProbeResult, classify_v2, parse_challenges

__all__ = ["ProbeTarget", "probe"]

_USER_AGENT = f"regwarden/{__version__}"
_MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024
_REGISTRY_PHASES: tuple[Phase, Phase, Phase] = ("dns", "connect", "tls")
_AUTH_PHASES: tuple[Phase, Phase, Phase] = ("auth", "auth", "auth")


@dataclass(frozen=True)
class ProbeTarget:
    """What to probe: a registry's base URL, the probe deadline and the CA bundle to trust."""

    name: str
    url: str
    timeout: float = 5.0
    ca_cert: str | None = None

    @classmethod
    def from_config(cls, reg: RegistryConfig) -> ProbeTarget:
        return cls(reg.name, reg.url, reg.probe_timeout.total_seconds(),
                   str(reg.ca_cert) if reg.ca_cert is not None else None)


def probe(target: ProbeTarget, credential: CredentialSecret | None = None) -> ProbeResult:
    """Probe `target` once; with `credential`, also check that the registry accepts it."""
    return _Probe(target, credential).run()


# --------------------------------------------------------------------------- the probe


class _PhaseFailed(Exception):
    def __init__(self, phase: Phase, reason: str) -> None:
        super().__init__(reason)
        self.phase = phase
        self.reason = reason


class _HttpError(ValueError):
    """The peer's answer is not HTTP/1.x as we can read it."""


class _Probe:
    def __init__(self, target: ProbeTarget, credential: CredentialSecret | None) -> None:
        self.target = target
        self.credential = credential
        self.deadline = 0.0
        self.phases: dict[str, float] = {}
        self.address: str | None = None
        self.http_status: int | None = None
        self.tls_version: str | None = None
        self.tls_cipher: str | None = None
        self.cert_expiry: float | None = None
        self.realm_cert_expiry: float | None = None
        self.anonymous: bool | None = None
        self.auth_ok: bool | None = None
        self.auth_scheme: str | None = None

    def run(self) -> ProbeResult:
        at = datetime.now(UTC)
        self.deadline = time.monotonic() + self.target.timeout
        failed: Phase | None = None
        reason = ""
        conn: _Http | None = None
        try:
            parts = urlsplit(self.target.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise _PhaseFailed("dns", f"not an http(s) URL: {self.target.url}")
            conn = self._open(parts.hostname, _port(parts.scheme, parts.port), parts.scheme == "https",
                              _REGISTRY_PHASES)
            conn = self._check_v2(conn)
        except _PhaseFailed as exc:
            failed, reason = exc.phase, exc.reason
        finally:
            if conn is not None:
                conn.close()
        return ProbeResult(
            registry=self.target.name, url=self.target.url, at=at, phases=self.phases, failed_phase=failed,
            reason=reason, address=self.address, http_status=self.http_status, tls_version=self.tls_version,
            tls_cipher=self.tls_cipher, cert_expiry=self.cert_expiry, realm_cert_expiry=self.realm_cert_expiry,
            anonymous=self.anonymous, auth_ok=self.auth_ok, auth_scheme=self.auth_scheme)

    # ------------------------------------------------------------------ phases

    @contextmanager
    def _phase(self, phase: Phase, prefix: str = "") -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except _PhaseFailed:
            raise
        except (OSError, ValueError) as exc:
            raise _PhaseFailed(phase, prefix + _reason(exc, self.target.timeout, phase)) from None
        finally:
            self.phases[phase] = self.phases.get(phase, 0.0) + time.perf_counter() - start

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left

    def _open(self, host: str, port: int, https: bool, names: tuple[Phase, Phase, Phase], *,
              prefix: str = "", realm: bool = False) -> _Http:
        """Resolve, connect and (https) handshake, timing each step as `names`; `realm` marks the token
        realm's connection, whose chain expiry is kept apart from the registry's."""
        with self._phase(names[0], prefix):
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            self._remaining()
        with self._phase(names[1], prefix):
            sock = self._connect(infos, record=not realm)
        if https:
            with self._phase(names[2], prefix):
                try:
                    sock.settimeout(self._remaining())
                    sock = self._context().wrap_socket(sock, server_hostname=host)
                except BaseException:
                    sock.close()
                    raise
                expiry = _chain_expiry(sock)
                if realm:
                    self.realm_cert_expiry = _earliest(self.realm_cert_expiry, expiry)
                else:
                    self.tls_version, self.tls_cipher = sock.version(), (sock.cipher() or ("",))[0]
                    self.cert_expiry = expiry
        host_header = host if ":" not in host else f"[{host}]"
        if port != (443 if https else 80):
            host_header = f"{host_header}:{port}"
        return _Http(sock, host_header, self._remaining)

    def _connect(self, infos: Sequence[tuple[object, ...]], record: bool) -> socket.socket:
        last: OSError = OSError("no address")
        for family, kind, proto, _, addr in infos:
            sock = socket.socket(family, kind, proto)  # type: ignore[arg-type]
            try:
                sock.settimeout(self._remaining())
                sock.connect(addr)  # type: ignore[arg-type]
            except OSError as exc:
                sock.close()
                last = exc
                if isinstance(exc, TimeoutError):
                    break
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if record:
                self.address = str(addr[0])  # type: ignore[index]
            return sock
        raise last

    def _context(self) -> ssl.SSLContext:
        cred = self.credential
        if cred is not None and cred.kind == "certificate":
            return _client_cert_context(self.target.ca_cert, cred)
        return _server_context(self.target.ca_cert)

    def _check_v2(self, conn: _Http) -> _Http:
        with self._phase("http"):
            resp = conn.request("GET", "/v2/")
        self.http_status = resp.status
        answer = classify_v2(resp.status, resp.headers)
        if not answer.up:
            raise _PhaseFailed("http", answer.reason)
        cred = self.credential
        if cred is not None and cred.kind == "certificate":
            # the handshake presented the client certificate; a 200 means the registry accepted it
            self.auth_scheme, self.auth_ok = "certificate", resp.status == 200
            if not self.auth_ok:
                raise _PhaseFailed("auth", "registry answered 401 to the client certificate")
            return conn
        self.anonymous = answer.anonymous
        if answer.anonymous:
            return conn  # an open registry accepts any credential: nothing to test
        challenges = parse_challenges(resp.headers.get("www-authenticate", ""))
        basic = _first(challenges, "basic")
        bearer = _first(challenges, "bearer")
        if cred is None or cred.password is None:
            if bearer is not None:  # no credential: still check the realm answers and its chain
                with self._phase("auth"):
                    self._token(bearer, None)
            return conn
        with self._phase("auth"):
            if bearer is not None:
                self.auth_scheme = "bearer"
                token = self._token(bearer, cred)
                header = f"Bearer {token}"
            elif basic is not None:
                self.auth_scheme = "basic"
                header = "Basic " + _basic(cred)
            else:
                raise _PhaseFailed("auth", "no Basic or Bearer challenge in WWW-Authenticate")
            if not resp.keep_alive:
                conn.close()
                parts = urlsplit(self.target.url)
                conn = self._open(str(parts.hostname), _port(parts.scheme, parts.port), parts.scheme == "https",
                                  _AUTH_PHASES)
            again = conn.request("GET", "/v2/", [("Authorization", header)])
            if again.status != 200:
                self.auth_ok = False
                raise _PhaseFailed("auth", f"registry refused the credential (HTTP {again.status})")
            self.auth_ok = True
        return conn

    def _token(self, challenge: Challenge, cred: CredentialSecret | None) -> str:
        """Fetch a token from the Bearer challenge's realm (anonymously without `cred`)."""
        realm = challenge.params.get("realm", "")
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _PhaseFailed("auth", f"Bearer challenge has no usable realm ({realm!r})")
        query = {k: challenge.params[k] for k in ("service", "scope") if challenge.params.get(k)}
        conn = self._open(parts.hostname, _port(parts.scheme, parts.port), parts.scheme == "https",
                          _AUTH_PHASES, prefix="token realm: ", realm=True)
        try:
            path = parts.path or "/"
            if cred is not None and cred.is_identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": cred.password or "",
                        "client_id": "regwarden", **query}
                resp = conn.request("POST", path, [("Content-Type", "application/x-www-form-urlencoded")],
                                    urlencode(form).encode())
            else:
                target = f"{path}?{urlencode(query)}" if query else path
                headers = [("Authorization", "Basic " + _basic(cred))] if cred is not None else []
                resp = conn.request("GET", target, headers)
        finally:
            conn.close()
        if cred is None:
            return ""
        if resp.status != 200:
            self.auth_ok = False
            raise _PhaseFailed("auth", f"token realm refused the credential (HTTP {resp.status})")
        try:
            body = json.loads(resp.body)
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise _PhaseFailed("auth", "token realm answered 200 without a token")
        return token


# --------------------------------------------------------------------------- a minimal HTTP/1.1 client


@dataclass(frozen=True)
class _Response:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    keep_alive: bool


class _Http:
    """One connection; requests are sent one at a time and each response is read completely."""

    def __init__(self, sock: socket.socket, host: str, remaining: Callable[[], float]) -> None:
        self.sock = sock
        self.host = host
        self._remaining = remaining
        self._buf = b""

    def close(self) -> None:
        self.sock.close()

    def _timeout(self) -> None:
        self.sock.settimeout(self._remaining())

    def request(self, method: str, path: str, headers: Sequence[tuple[str, str]] = (),
                body: bytes = b"") -> _Response:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"User-Agent: {_USER_AGENT}",
                 "Accept: application/json"]
        lines += [f"{name}: {value}" for name, value in headers]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        self._timeout()
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        head = self._read_until(b"\r\n\r\n", _MAX_HEAD)
        status, headers_in, version = _parse_head(head)
        connection = headers_in.get("connection", "").lower()
        keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            data = b""
        elif "chunked" in headers_in.get("transfer-encoding", "").lower():
            data = self._read_chunked()
        elif "content-length" in headers_in:
            try:
                length = int(headers_in["content-length"])
            except ValueError:
                raise _HttpError("bad Content-Length") from None
            if length > _MAX_BODY:
                raise _HttpError(f"response body of {length} bytes is over the limit")
            data = self._read_exact(length)
        else:
            data, keep_alive = self._read_to_close(), False
        return _Response(status, headers_in, data, keep_alive)

    def _recv(self) -> bytes:
        self._timeout()
        return self.sock.recv(65536)

    def _read_until(self, marker: bytes, limit: int) -> bytes:
        while True:
            index = self._buf.find(marker)
            if index >= 0:
                out, self._buf = self._buf[:index], self._buf[index + len(marker):]
                return out
            if len(self._buf) > limit:
                raise _HttpError("response header too large")
            chunk = self._recv()
            if not chunk:
                raise _HttpError("connection closed before a complete response" if self._buf
                                 else "connection closed without a response")
            self._buf += chunk

    def _read_exact(self, length: int) -> bytes:
        while len(self._buf) < length:
            chunk = self._recv()
            if not chunk:
                raise _HttpError("connection closed in the middle of the body")
            self._buf += chunk
        out, self._buf = self._buf[:length], self._buf[length:]
        return out

    def _read_chunked(self) -> bytes:
        out = b""
        while True:
            size_line = self._read_until(b"\r\n", 1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise _HttpError("bad chunk size") from None
            if size == 0:
                while self._read_until(b"\r\n", _MAX_HEAD):  # trailers end with an empty line
                    pass
                return out
            if len(out) + size > _MAX_BODY:
                raise _HttpError("chunked response body is over the limit")
            out += self._read_exact(size)
            self._read_until(b"\r\n", 2)

    def _read_to_close(self) -> bytes:
        while len(self._buf) <= _MAX_BODY:
            chunk = self._recv()
            if not chunk:
                out, self._buf = self._buf, b""
                return out
            self._buf += chunk
        raise _HttpError("response body is over the limit")


def _parse_head(head: bytes) -> tuple[int, dict[str, str], str]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise _HttpError(f"not an HTTP response ({lines[0][:40]!r})")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(parts[1]), headers, parts[0]


# --------------------------------------------------------------------------- TLS


_context_lock = threading.Lock()
_server_contexts: dict[str | None, ssl.SSLContext] = {}
_client_contexts: dict[tuple[str | None, str, bytes], ssl.SSLContext] = {}


def _server_context(ca_cert: str | None) -> ssl.SSLContext:
    """A verifying client context (system roots plus `ca_cert`), built once: loading roots is costly."""
    with _context_lock:
        ctx = _server_contexts.get(ca_cert)
        if ctx is None:
            ctx = _new_context(ca_cert)
            _server_contexts[ca_cert] = ctx
        return ctx


def _new_context(ca_cert: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_cert is not None:
        ctx.load_verify_locations(cafile=ca_cert)
    return ctx


def _client_cert_context(ca_cert: str | None, cred: CredentialSecret) -> ssl.SSLContext:
    """A context presenting the credential's client certificate (one per certificate and key: a value
    read from certs.d has no version).

    `ssl` loads keys only from files: the PEMs go to an anonymous in-memory file (memfd), never to disk;
    where memfd is missing, to a private temporary file removed at once.
    """
    pem = f"{cred.certificate}\n{cred.ca_chain or ''}\n{cred.private_key}\n".encode("ascii")
    key = (ca_cert, cred.name, hashlib.sha256(pem).digest())
    with _context_lock:
        ctx = _client_contexts.get(key)
        if ctx is not None:
            return ctx
        ctx = _new_context(ca_cert)
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("regwarden-probe-cert", os.MFD_CLOEXEC)
            try:
                os.write(fd, pem)
                ctx.load_cert_chain(f"/proc/self/fd/{fd}")
            finally:
                os.close(fd)
        else:
            fd, path = tempfile.mkstemp(prefix="regwarden-probe-", suffix=".pem")  # mode 0600
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(pem)
                ctx.load_cert_chain(path)
            finally:
                Path(path).unlink(missing_ok=True)
        for stale in [k for k in _client_contexts if k[:2] == key[:2]]:
            del _client_contexts[stale]
        _client_contexts[key] = ctx
        return ctx


_expiry_cache: dict[tuple[int, bytes], tuple[float | None, float]] = {}
_EXPIRY_CACHE_SIZE = 4096
_EXPIRY_CACHE_TTL = 3600.0


def _chain_expiry(sock: ssl.SSLSocket) -> float | None:
    """Earliest `notAfter` (Unix time) of the verified chain.

    Cached for an hour by (trust context, leaf certificate): the same leaf verified against the same
    trust store gives the same chain, and decoding the chain on every probe would cost more CPU than
    everything else a probe does after the handshake. A changed leaf is seen at once.
    """
    leaf = sock.getpeercert(binary_form=True)
    if leaf is None:
        return None
    key, now = (id(sock.context), leaf), time.monotonic()
    cached = _expiry_cache.get(key)
    if cached is not None and cached[1] > now:
        return cached[0]
    expiry = _decode_chain_expiry(sock)
    with _context_lock:
        if len(_expiry_cache) >= _EXPIRY_CACHE_SIZE:
            _expiry_cache.clear()
        _expiry_cache[key] = (expiry, now + _EXPIRY_CACHE_TTL)
    return expiry


def _decode_chain_expiry(sock: ssl.SSLSocket) -> float | None:
    """`get_verified_chain` is public from Python 3.13 and present (on the `_sslobj`) since 3.10; without
    it, the leaf's expiry."""
    times: list[float] = []
    get_chain = getattr(getattr(sock, "_sslobj", None), "get_verified_chain", None)
    if get_chain is not None:
        try:
            times = [ssl.cert_time_to_seconds(cert.get_info()["notAfter"]) for cert in get_chain()]
        except (ValueError, KeyError, ssl.SSLError):
            times = []
    if not times:
        leaf = sock.getpeercert()
        not_after = leaf.get("notAfter") if leaf else None
        if isinstance(not_after, str):
            times = [ssl.cert_time_to_seconds(not_after)]
    return min(times) if times else None


# --------------------------------------------------------------------------- small helpers


def _reason(exc: BaseException, timeout: float, phase: Phase) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, TimeoutError):
        return f"timed out (probe_timeout {timeout:g}s)"
    if isinstance(exc, socket.gaierror):
        return f"name resolution failed: {exc.strerror}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, ssl.SSLError):
        what = "TLS handshake failed" if phase == "tls" else "TLS error"  # e.g. an alert after a TLS 1.3 handshake
        return f"{what}: {exc.reason or exc.__class__.__name__}"
    if isinstance(exc, OSError):
        return exc.strerror or exc.__class__.__name__
    return str(exc)


def _port(scheme: str, port: int | None) -> int:
    return port or (443 if scheme == "https" else 80)


def _first(challenges: list[Challenge], scheme: str) -> Challenge | None:
    return next((c for c in challenges if c.scheme == scheme), None)


def _basic(cred: CredentialSecret | None) -> str:
    assert cred is not None
    return base64.b64encode(f"{cred.username or ''}:{cred.password or ''}".encode()).decode("ascii")


def _earliest(a: float | None, b: float | None) -> float | None:
    known = [t for t in (a, b) if t is not None]
    return min(known) if known else None
