"""The posture checklist: named checks, what each scan found, and the verdict of every check (pure).

The scans (`tlsscan`, `httpscan`, `sockets`) gather facts about one registry endpoint into the frozen
`TlsScan`, `AuthScan` and `Exposure` records; `evaluate` turns them into one `Outcome` per check: firing,
clear, or unknown (the scan could not tell, e.g. the endpoint was down), with a severity, the reason
and the fix. `CHECKS` is the catalogue the CLI, the metrics, the alerts and the runbook share.

Three checks are shown here but alerted by the prober, so that one condition is one alert:
`plain_http` (RegistryPlainHTTP), `anonymous_access` (RegistryAnonymousAccess: /v2/ open) and
`tls_expiring` (RegistryTLSCertExpiring).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "CHECKS",
    "EXPOSURES",
    "AuthScan",
    "Check",
    "Exposure",
    "ExposureClass",
    "Outcome",
    "TlsScan",
    "WeakCipher",
    "address_class",
    "classify_cipher",
    "evaluate",
    "hostname_matches",
]

Severity = Literal["info", "warning", "critical"]
ExposureClass = Literal["loopback", "private", "public"]
EXPOSURES: tuple[ExposureClass, ...] = ("loopback", "private", "public")


@dataclass(frozen=True)
class Check:
    name: str
    alertname: str
    severity: Severity
    title: str
    fix: str
    alerted_by: Literal["posture", "probes"] = "posture"


_ALERTS = {  # check -> alertname
    "tls_legacy_protocol": "RegistryTLSLegacyProtocol",
    "tls_weak_cipher": "RegistryTLSWeakCipher",
    "tls_untrusted_chain": "RegistryTLSUntrusted",
    "tls_hostname_mismatch": "RegistryTLSHostnameMismatch",
    "tls_self_signed": "RegistryTLSSelfSigned",
    "tls_expiring": "RegistryTLSCertExpiring",
    "plain_http": "RegistryPlainHTTP",
    "basic_auth_plain_http": "RegistryBasicAuthPlainHTTP",
    "token_realm_insecure": "RegistryTokenRealmInsecure",
    "anonymous_access": "RegistryAnonymousAccess",
    "anonymous_pull": "RegistryAnonymousPull",
    "anonymous_push": "RegistryAnonymousPush",
    "catalog_anonymous": "RegistryCatalogExposed",
    "default_credentials": "RegistryDefaultCredentials",
    "exposure": "RegistryExposed",
}

CHECKS: dict[str, Check] = {c.name: c for c in (
    Check("tls_legacy_protocol", _ALERTS["tls_legacy_protocol"], "warning", "accepts TLS below 1.2",
          "allow TLS 1.2 and 1.3 only (distribution: http.tls.minimumtls: tls1.2; nginx: ssl_protocols"
          " TLSv1.2 TLSv1.3)"),
    Check("tls_weak_cipher", _ALERTS["tls_weak_cipher"], "warning", "offers weak TLS ciphers",
          "offer only ECDHE/DHE key exchange with AEAD ciphers (e.g. Mozilla's intermediate profile)"),
    Check("tls_untrusted_chain", _ALERTS["tls_untrusted_chain"], "critical", "certificate chain not trusted",
          "serve the full chain of a CA the clients trust, or set ca_cert (and certs.d/<host:port>/ca.crt"
          " for Docker) to the private CA"),
    Check("tls_hostname_mismatch", _ALERTS["tls_hostname_mismatch"], "critical", "certificate does not name the host",
          "issue the certificate with the registry's host name (or IP address) in its subjectAltName"),
    Check("tls_self_signed", _ALERTS["tls_self_signed"], "warning", "self-signed leaf certificate",
          "issue the serving certificate from a CA (internal PKI, Vault PKI, ACME) instead of"
          " self-signing it"),
    Check("tls_expiring", _ALERTS["tls_expiring"], "warning", "certificate chain close to expiry",
          "renew the certificate", alerted_by="probes"),
    Check("plain_http", _ALERTS["plain_http"], "warning", "reached over plain HTTP",
          "serve the registry over HTTPS and change the url to https://", alerted_by="probes"),
    Check("basic_auth_plain_http", _ALERTS["basic_auth_plain_http"], "critical",
          "Basic auth over plain HTTP: passwords in clear",
          "serve the registry over HTTPS (or TLS in front)"),
    Check("token_realm_insecure", _ALERTS["token_realm_insecure"], "critical",
          "token realm over plain HTTP: passwords in clear",
          "serve the token service over HTTPS and set auth.token.realm to its https:// URL"),
    Check("anonymous_access", _ALERTS["anonymous_access"], "warning", "/v2/ answers without credentials",
          "enable authentication (auth.htpasswd or auth.token)", alerted_by="probes"),
    Check("anonymous_pull", _ALERTS["anonymous_pull"], "warning", "anonymous pull allowed on a private registry",
          "stop granting pull to anonymous token requests (token service ACL)"),
    Check("anonymous_push", _ALERTS["anonymous_push"], "critical", "anonymous push allowed",
          "enable authentication and grant push only to named users"),
    Check("catalog_anonymous", _ALERTS["catalog_anonymous"], "warning", "/v2/_catalog listable anonymously",
          "require authentication for the catalog (token ACL on registry:catalog:*, or auth for the"
          " registry)"),
    Check("default_credentials", _ALERTS["default_credentials"], "critical", "a well-known default login works",
          "change that account's password (or remove the account) now"),
    Check("exposure", _ALERTS["exposure"], "critical", "reachable beyond its expected exposure",
          "bind the registry to the expected address (http.addr), or firewall it; or correct"
          " expected_exposure"),
)}


# --------------------------------------------------------------------------- scan records


@dataclass(frozen=True)
class WeakCipher:
    name: str  # OpenSSL's name, e.g. "AES256-GCM-SHA384"
    protocol: str  # the protocol it was negotiated with, e.g. "TLSv1.2"
    weakness: str  # e.g. "no forward secrecy (RSA key exchange)"
    severity: Severity


@dataclass(frozen=True)
class TlsScan:
    """What the TLS handshakes found. `error` set: nothing could be learnt (the endpoint did not answer)."""

    error: str | None = None
    trusted: bool | None = None  # the chain verifies against the system store or ca_cert (host name aside)
    verify_error: str | None = None  # OpenSSL's reason when it does not
    leaf_self_signed: bool | None = None
    hostname_matches: bool | None = None
    names: tuple[str, ...] = ()  # the leaf's subjectAltName entries
    not_after: float | None = None  # the leaf's expiry (Unix time)
    legacy_protocols: tuple[str, ...] = ()  # accepted below TLS 1.2
    untested_protocols: tuple[str, ...] = ()  # the local OpenSSL cannot offer them
    weak_ciphers: tuple[WeakCipher, ...] = ()
    untested_ciphers: tuple[str, ...] = ()  # weakness classes the local OpenSSL cannot offer


@dataclass(frozen=True)
class AuthScan:
    """What unauthenticated (and default-credential) requests to the endpoint found."""

    error: str | None = None
    https: bool = True
    v2_status: int | None = None
    open: bool | None = None  # /v2/ answered 200 without credentials
    schemes: tuple[str, ...] = ()  # WWW-Authenticate schemes, lower case
    realm: str | None = None  # the Bearer token realm
    registry_host: str = ""
    anonymous_pull: bool | None = None
    anonymous_push: bool | None = None
    catalog_open: bool | None = None
    default_checked: bool = False  # default credentials were tried (this run or remembered from an earlier one)
    default_user: str | None = None  # the user whose well-known default password was accepted
    default_attempts: int = 0
    errors: tuple[str, ...] = ()  # checks that failed on bad answers: "check: reason"


@dataclass(frozen=True)
class Exposure:
    checked: bool = False
    actual: ExposureClass | None = None
    expected: ExposureClass | None = None
    listen: tuple[str, ...] = ()  # listening addresses seen for the port, e.g. "0.0.0.0:5000"
    process: str | None = None  # "registry (pid 123)" when the socket is local
    detail: str = ""


@dataclass(frozen=True)
class Outcome:
    check: str
    firing: bool | None  # None: this run could not tell
    severity: Severity
    detail: str = ""
    alertname: str = field(init=False)
    fix: str = field(init=False)

    def __post_init__(self) -> None:
        check = CHECKS[self.check]
        object.__setattr__(self, "alertname", check.alertname)
        object.__setattr__(self, "fix", check.fix)


# --------------------------------------------------------------------------- the verdicts


def evaluate(*, tls: TlsScan | None, auth: AuthScan | None, exposure: Exposure | None, private: bool,
             tls_warning_seconds: float, now: float) -> list[Outcome]:
    """Every check's outcome for one registry, in `CHECKS` order. `tls` is None for a plain-HTTP endpoint;
    `private`: the config says the registry needs credentials (expect_auth or a credential)."""
    out: dict[str, Outcome] = {}
    out.update(_tls_outcomes(tls, auth, tls_warning_seconds, now))
    out.update(_auth_outcomes(auth, private))
    out["exposure"] = _exposure_outcome(exposure)
    return [out[name] for name in CHECKS if name in out]


def _tls_outcomes(tls: TlsScan | None, auth: AuthScan | None, warning: float,
                  now: float) -> dict[str, Outcome]:
    names = ("tls_legacy_protocol", "tls_weak_cipher", "tls_untrusted_chain", "tls_hostname_mismatch",
             "tls_self_signed", "tls_expiring")
    if tls is None:  # plain HTTP: no TLS to judge; plain_http says the rest
        plain = auth is not None and not auth.https
        out = {name: Outcome(name, None, CHECKS[name].severity, "no TLS" if plain else "") for name in names}
        out["plain_http"] = Outcome("plain_http", True if plain else None, "warning",
                                    "the url is http://" if plain else "")
        return out
    out = {"plain_http": Outcome("plain_http", False, "warning")}
    if tls.error is not None:
        return out | {name: Outcome(name, None, CHECKS[name].severity, tls.error) for name in names}
    if tls.legacy_protocols:
        out["tls_legacy_protocol"] = Outcome("tls_legacy_protocol", True, "warning",
                                             "accepts " + ", ".join(tls.legacy_protocols))
    else:
        untested = f" ({', '.join(tls.untested_protocols)} not testable here)" if tls.untested_protocols else ""
        out["tls_legacy_protocol"] = Outcome("tls_legacy_protocol", False, "warning",
                                             "refuses TLS 1.0 and 1.1" + untested)
    if tls.weak_ciphers:
        worst: Severity = "critical" if any(c.severity == "critical" for c in tls.weak_ciphers) else "warning"
        out["tls_weak_cipher"] = Outcome("tls_weak_cipher", True, worst, "accepts " + _cipher_summary(tls.weak_ciphers))
    else:
        out["tls_weak_cipher"] = Outcome("tls_weak_cipher", False, "warning")
    out["tls_untrusted_chain"] = Outcome(
        "tls_untrusted_chain", None if tls.trusted is None else not tls.trusted, "critical",
        "" if tls.trusted is not False else f"chain does not verify: {tls.verify_error or 'unknown reason'}")
    names_text = ", ".join(tls.names) or "no subjectAltName"
    out["tls_hostname_mismatch"] = Outcome(
        "tls_hostname_mismatch", None if tls.hostname_matches is None else not tls.hostname_matches, "critical",
        f"certificate names {names_text}" if tls.hostname_matches is False else "")
    out["tls_self_signed"] = Outcome("tls_self_signed", tls.leaf_self_signed, "warning",
                                     "the leaf certificate is its own issuer" if tls.leaf_self_signed else "")
    if tls.not_after is None:
        out["tls_expiring"] = Outcome("tls_expiring", None, "warning")
    else:
        days = (tls.not_after - now) / 86400
        expiring = tls.not_after - now < warning
        out["tls_expiring"] = Outcome("tls_expiring", expiring, "critical" if days < 3 else "warning",
                                      f"leaf expires in {days:.1f} days")
    return out


def _cipher_summary(ciphers: Sequence[WeakCipher], per_weakness: int = 3) -> str:
    """`weakness: NAME, NAME (+N more)` per weakness, the worst first."""
    groups: dict[str, list[WeakCipher]] = {}
    for cipher in sorted(ciphers, key=lambda c: c.severity != "critical"):
        groups.setdefault(cipher.weakness, []).append(cipher)
    parts = []
    for weakness, members in groups.items():
        names = ", ".join(f"{c.name} ({c.protocol})" for c in members[:per_weakness])
        more = f" (+{len(members) - per_weakness} more)" if len(members) > per_weakness else ""
        parts.append(f"{weakness}: {names}{more}")
    return "; ".join(parts)


def _auth_outcomes(auth: AuthScan | None, private: bool) -> dict[str, Outcome]:
    names = ("basic_auth_plain_http", "token_realm_insecure", "anonymous_access", "anonymous_pull",
             "anonymous_push", "catalog_anonymous", "default_credentials")
    if auth is None or auth.error is not None:
        reason = "" if auth is None else str(auth.error)
        return {name: Outcome(name, None, CHECKS[name].severity, reason) for name in names}
    out: dict[str, Outcome] = {}
    basic = "basic" in auth.schemes
    out["basic_auth_plain_http"] = Outcome(
        "basic_auth_plain_http", basic and not auth.https, "critical",
        "/v2/ asks for Basic credentials over http://" if basic and not auth.https else "")
    insecure_realm = auth.realm is not None and not auth.realm.lower().startswith("https://")
    if insecure_realm:
        from urllib.parse import urlsplit

        realm_host = (urlsplit(str(auth.realm)).hostname or "?").lower()
        same = realm_host == (urlsplit(f"//{auth.registry_host}").hostname or "").lower()
        where = "the registry's own host" if same else f"another host ({realm_host})"
        detail = f"token realm {auth.realm} is plain HTTP on {where}"
    else:
        detail = ""
    out["token_realm_insecure"] = Outcome("token_realm_insecure", None if auth.open is None and not auth.schemes
                                          else insecure_realm, "critical", detail)
    out["anonymous_access"] = Outcome("anonymous_access", None if auth.open is None else (private and auth.open),
                                      "warning", "/v2/ answered 200 without credentials" if auth.open else "")
    # an open /v2/ is anonymous_access already: anonymous_pull is the token service granting pull to anyone
    pull = None if auth.anonymous_pull is None else (private and auth.anonymous_pull and not auth.open)
    out["anonymous_pull"] = Outcome("anonymous_pull", pull, "warning",
                                    "an anonymous token request was granted pull" if pull else "")
    out["anonymous_push"] = Outcome("anonymous_push", auth.anonymous_push, "critical",
                                    "a blob upload was accepted without credentials (and cancelled)"
                                    if auth.anonymous_push else "")
    out["catalog_anonymous"] = Outcome("catalog_anonymous", None if auth.catalog_open is None else
                                       (private and auth.catalog_open), "warning",
                                       "/v2/_catalog answered 200 without credentials" if auth.catalog_open else "")
    if auth.default_checked:
        found = auth.default_user is not None
        out["default_credentials"] = Outcome(
            "default_credentials", found, "critical",
            f"user {auth.default_user!r} logs in with its well-known default password" if found
            else f"{auth.default_attempts} well-known default logins refused")
    return out


def _exposure_outcome(exposure: Exposure | None) -> Outcome:
    if exposure is None or not exposure.checked or exposure.actual is None or exposure.expected is None:
        return Outcome("exposure", None, "critical", "" if exposure is None else exposure.detail)
    beyond = EXPOSURES.index(exposure.actual) > EXPOSURES.index(exposure.expected)
    severity: Severity = "critical" if exposure.actual == "public" else "warning"
    where = ", ".join(exposure.listen) or "its address"
    owner = f" by {exposure.process}" if exposure.process else ""
    detail = (f"listens on {where}{owner}: {exposure.actual}, expected {exposure.expected}" if beyond
              else f"{exposure.actual} ({where}), expected {exposure.expected}")
    return Outcome("exposure", beyond, severity, detail)


# --------------------------------------------------------------------------- helpers the scans share


def address_class(address: str) -> ExposureClass:
    """loopback (127/8, ::1), private (RFC 1918, ULA, link-local, CGNAT) or public."""
    ip = ipaddress.ip_address(address.strip("[]"))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_private or ip.is_link_local or ip in ipaddress.ip_network("100.64.0.0/10"):
        return "private"
    return "public"


# OpenSSL's description of a cipher (ssl.SSLContext.get_ciphers()) -> (weakness, severity) or None if strong
def classify_cipher(name: str, kea: str, auth: str, symmetric: str, digest: str | None) -> tuple[str, Severity] | None:
    sym = symmetric.lower()
    if auth in ("auth-null",) or (kea == "kx-any" and auth == "auth-null") or "ADH" in name or "AECDH" in name:
        return "anonymous key exchange (no server authentication)", "critical"
    if sym in ("", "null") or "NULL" in name:
        return "no encryption (NULL cipher)", "critical"
    if "rc4" in sym or "RC4" in name:
        return "RC4 stream cipher", "critical"
    if sym.startswith("des") or "DES" in name:
        return "DES/3DES (64-bit block, Sweet32)", "critical"
    if "EXP" in name:
        return "export-grade", "critical"
    if digest is not None and digest.lower() == "md5":
        return "MD5 MAC", "critical"
    if kea == "kx-rsa":
        return "no forward secrecy (RSA key exchange)", "warning"
    return None


def hostname_matches(host: str, dns_names: Sequence[str], ip_addresses: Sequence[str]) -> bool:
    """RFC 6125 / RFC 9110 matching as browsers and Go do it: subjectAltName only (no CN fallback), a
    wildcard only as the whole left-most label, IP addresses only against IP entries."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        return any(_same_ip(ip, entry) for entry in ip_addresses)
    for name in dns_names:
        pattern = name.rstrip(".").lower()
        if pattern == host:
            return True
        if pattern.startswith("*.") and "*" not in pattern[2:]:
            head, _, rest = host.partition(".")
            if head and rest and rest == pattern[2:] and "." in rest:
                return True
    return False


def _same_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, entry: str) -> bool:
    try:
        return ipaddress.ip_address(entry) == ip
    except ValueError:
        return False
