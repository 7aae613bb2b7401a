"""TLS scan of one endpoint: chain trust, host name, self-signed leaf, legacy protocols, weak ciphers.

A handful of handshakes, each a fresh connection with its own deadline:
1. verified (system store or ca_cert; host name checked separately, so both findings can show);
2. unverified, only when 1 failed, to read the leaf anyway;
3. TLS 1.0 and TLS 1.1 alone, with every cipher the local OpenSSL has (`@SECLEVEL=0`);
4. TLS 1.2 with only weak ciphers offered, repeated without the one the server chose, until it refuses.
Nothing is sent after a handshake. A protocol or cipher class the local OpenSSL cannot offer at all is
reported as untested, never as refused.
"""

from __future__ import annotations

import socket
import ssl
import time
import warnings
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from .checks import TlsScan, WeakCipher, classify_cipher, hostname_matches

__all__ = ["WEAK_CIPHER_CLASSES", "scan_tls"]

# OpenSSL cipher-string classes that are weak; each probed separately so one the local build lacks is skipped
WEAK_CIPHER_CLASSES = ("aNULL", "eNULL", "EXPORT", "RC4", "DES", "3DES", "MD5", "kRSA")
_LEGACY = (("TLSv1", ssl.TLSVersion.TLSv1), ("TLSv1.1", ssl.TLSVersion.TLSv1_1))
_MAX_CIPHER_ROUNDS = 24


def scan_tls(host: str, port: int, *, ca_cert: str | None, timeout: float) -> TlsScan:
    """Scan `host:port`; `timeout` bounds each handshake."""
    try:
        trusted, verify_error, der = _verified(host, port, ca_cert, timeout)
        if der is None:
            der = _unverified_leaf(host, port, timeout)
    except OSError as exc:
        return TlsScan(error=_describe(exc))
    leaf = x509.load_der_x509_certificate(der) if der else None
    names: tuple[str, ...] = ()
    matches = self_signed = None
    not_after = None
    if leaf is not None:
        dns, ips = _subject_alt_names(leaf)
        names = (*dns, *ips)
        matches = hostname_matches(host, dns, ips)
        self_signed = _self_signed(leaf)
        not_after = leaf.not_valid_after_utc.timestamp()
    legacy, untested = _legacy_protocols(host, port, timeout)
    weak, untested_ciphers = _weak_ciphers(host, port, timeout)
    return TlsScan(trusted=trusted, verify_error=verify_error, leaf_self_signed=self_signed,
                   hostname_matches=matches, names=names, not_after=not_after, legacy_protocols=legacy,
                   untested_protocols=untested, weak_ciphers=weak, untested_ciphers=untested_ciphers)


# --------------------------------------------------------------------------- handshakes


def _handshake(host: str, port: int, ctx: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
    sock = socket.create_connection((host.strip("[]"), port), timeout=timeout)
    try:
        sni = None if _is_ip(host) else host
        return ctx.wrap_socket(sock, server_hostname=sni)
    except BaseException:
        sock.close()
        raise


def _verified(host: str, port: int, ca_cert: str | None,
              timeout: float) -> tuple[bool, str | None, bytes | None]:
    ctx = ssl.create_default_context(cafile=ca_cert)
    ctx.check_hostname = False  # judged separately: a mismatch must not hide an untrusted chain
    try:
        with _handshake(host, port, ctx, timeout) as tls:
            return True, None, tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as exc:
        return False, str(exc.verify_message or exc.reason or "verification failed"), None


def _unverified_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _unverified_leaf(host: str, port: int, timeout: float) -> bytes | None:
    with _handshake(host, port, _unverified_context(), timeout) as tls:
        return tls.getpeercert(binary_form=True)


def _legacy_protocols(host: str, port: int, timeout: float) -> tuple[tuple[str, ...], tuple[str, ...]]:
    accepted, untested = [], []
    for name, version in _LEGACY:
        ctx = _unverified_context()
        try:
            with warnings.catch_warnings():  # deprecated is what is being looked for
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ctx.maximum_version = version
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        except (ValueError, ssl.SSLError):
            untested.append(name)
            continue
        try:
            with _handshake(host, port, ctx, timeout) as tls:
                if tls.version() == name:
                    accepted.append(name)
        except ssl.SSLError as exc:
            if "NO_PROTOCOLS_AVAILABLE" in str(exc) or "no protocols available" in str(exc):
                untested.append(name)
        except OSError:
            pass  # refused (reset, closed): not accepted
    return tuple(accepted), tuple(untested)


def _weak_ciphers(host: str, port: int, timeout: float) -> tuple[tuple[WeakCipher, ...], tuple[str, ...]]:
    available, untested = [], []
    for cls in WEAK_CIPHER_CLASSES:
        try:
            _unverified_context().set_ciphers(f"{cls}:@SECLEVEL=0")
            available.append(cls)
        except ssl.SSLError:
            untested.append(cls)
    if not available:
        return (), tuple(untested)
    offer = ":".join(available)
    found: list[WeakCipher] = []
    excluded: list[str] = []
    deadline = time.monotonic() + timeout * 4
    for _ in range(_MAX_CIPHER_ROUNDS):
        ctx = _unverified_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.set_ciphers(":".join([offer, *(f"!{name}" for name in excluded), "@SECLEVEL=0"]))
        except ssl.SSLError:
            break  # every weak cipher of this build was tried
        described: dict[str, Any] = {c["name"]: dict(c) for c in ctx.get_ciphers()}
        try:
            with _handshake(host, port, ctx, timeout) as tls:
                chosen, negotiated = tls.cipher(), tls.version()
        except OSError:
            break  # the server accepts none of the rest
        if chosen is None or chosen[0] in excluded:
            break
        name, protocol = chosen[0], negotiated or chosen[1]
        excluded.append(name)
        info: dict[str, Any] = described.get(name, {})
        verdict = classify_cipher(name, str(info.get("kea", "")), str(info.get("auth", "")),
                                  str(info.get("symmetric", "")), info.get("digest"))
        if verdict is not None:
            found.append(WeakCipher(name, protocol, verdict[0], verdict[1]))
        if time.monotonic() > deadline:
            break
    return tuple(found), tuple(untested)


# --------------------------------------------------------------------------- the leaf certificate


def _subject_alt_names(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return san.get_values_for_type(x509.DNSName), [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def _self_signed(cert: x509.Certificate) -> bool:
    """The leaf is its own issuer: same name and its own key verifies its signature."""
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def _describe(exc: OSError) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "TLS scan timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    return f"TLS scan could not connect: {exc.strerror or type(exc).__name__}"
