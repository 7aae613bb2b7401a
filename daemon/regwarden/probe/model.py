"""The pure core of probing: what a probe found, what it means, and when to probe next.

Nothing here touches the network or the clock; the prober fills a `ProbeResult`, `assess` turns it into
a verdict and findings, `FlapDamper` decides when the endpoint-down alert fires and resolves, and
`next_interval` picks the next probe delay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = [
    "DAMPER_CHANGES",
    "DOWN_PHASES",
    "PHASES",
    "Assessment",
    "Challenge",
    "FlapDamper",
    "Phase",
    "ProbeResult",
    "V2Answer",
    "assess",
    "classify_v2",
    "next_interval",
    "parse_challenges",
]

Phase = Literal["dns", "connect", "tls", "http", "auth"]
PHASES: tuple[Phase, ...] = ("dns", "connect", "tls", "http", "auth")
# a failure in one of these means the endpoint is down; a failure in "auth" means our credential is refused
DOWN_PHASES: frozenset[str] = frozenset({"dns", "connect", "tls", "http"})
DISTRIBUTION_HEADER = "docker-distribution-api-version"
DISTRIBUTION_VALUE = "registry/2.0"

Verdict = Literal["up", "down", "auth-failed", "anonymous", "tls-expiring", "plain-http"]


@dataclass(frozen=True)
class ProbeResult:
    """Everything one probe of one registry found. Times are Unix seconds; durations seconds."""

    registry: str
    url: str
    at: datetime
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds, for every phase attempted
    failed_phase: Phase | None = None
    reason: str = ""
    address: str | None = None  # the IP address connected to
    http_status: int | None = None  # status of the unauthenticated GET /v2/
    tls_version: str | None = None
    tls_cipher: str | None = None
    cert_expiry: float | None = None  # earliest notAfter in the registry's verified chain
    realm_cert_expiry: float | None = None  # earliest notAfter in the token realm's chain
    anonymous: bool | None = None  # GET /v2/ answered 200 without credentials
    auth_ok: bool | None = None  # the credential was accepted (None: not tested)
    auth_scheme: str | None = None  # "basic" | "bearer" | "certificate"

    @property
    def ok(self) -> bool:
        return self.failed_phase is None

    @property
    def plain_http(self) -> bool:
        return self.url.startswith("http://")

    @property
    def duration(self) -> float:
        return sum(self.phases.values())

    @property
    def earliest_expiry(self) -> float | None:
        known = [t for t in (self.cert_expiry, self.realm_cert_expiry) if t is not None]
        return min(known) if known else None


@dataclass(frozen=True)
class Assessment:
    verdict: Verdict
    findings: frozenset[str]  # "anonymous_access", "plain_http", "tls_expiring"
    tls_days_left: float | None


def assess(result: ProbeResult, *, expect_auth: bool, tls_warning_seconds: float, now: float) -> Assessment:
    """The verdict of a probe: the worst thing it found, in the order down > auth-failed > anonymous >
    tls-expiring > plain-http > up, and every finding that calls for an alert."""
    expiry = result.earliest_expiry
    days_left = None if expiry is None else (expiry - now) / 86400
    findings: set[str] = set()
    if expect_auth and result.anonymous:
        findings.add("anonymous_access")
    if result.plain_http:
        findings.add("plain_http")
    if expiry is not None and expiry - now < tls_warning_seconds:
        findings.add("tls_expiring")
    verdict: Verdict
    if result.failed_phase in DOWN_PHASES:
        verdict = "down"
    elif result.failed_phase == "auth":
        verdict = "auth-failed"
    elif "anonymous_access" in findings:
        verdict = "anonymous"
    elif "tls_expiring" in findings:
        verdict = "tls-expiring"
    elif "plain_http" in findings:
        verdict = "plain-http"
    else:
        verdict = "up"
    return Assessment(verdict, frozenset(findings), days_left)


# --------------------------------------------------------------------------- GET /v2/


@dataclass(frozen=True)
class V2Answer:
    up: bool
    anonymous: bool
    reason: str = ""


def classify_v2(status: int, headers: dict[str, str]) -> V2Answer:
    """What an unauthenticated `GET /v2/` says: 200 is a registry open to anyone; 401 with
    `Docker-Distribution-API-Version: registry/2.0` is a registry asking for credentials; anything else
    is not a working registry endpoint. `headers` has lower-case names."""
    if status == 200:
        return V2Answer(up=True, anonymous=True)
    if status == 401:
        if headers.get(DISTRIBUTION_HEADER, "").strip().lower() == DISTRIBUTION_VALUE:
            return V2Answer(up=True, anonymous=False)
        return V2Answer(False, False, "HTTP 401 without Docker-Distribution-API-Version: registry/2.0")
    return V2Answer(False, False, f"HTTP {status} from /v2/")


# --------------------------------------------------------------------------- WWW-Authenticate


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "basic", "bearer", ...
    params: dict[str, str]  # lower-case names


_TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SCHEME = re.compile(rf"\s*({_TCHAR})(?=\s|$|,)")
_PARAM = re.compile(rf"\s*({_TCHAR})\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|({_TCHAR}))\s*")
_TOKEN68 = re.compile(r"\s*([A-Za-z0-9\-._~+/]+=*)\s*(?=,|$)")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a `WWW-Authenticate` value (RFC 7235) into its challenges, in order.

    Quoted values may contain commas and escaped quotes (`scope="repository:a/b:pull,push"`); a
    malformed tail ends the parse and what was parsed so far is returned.
    """
    challenges: list[Challenge] = []
    pos, text = 0, header
    while pos < len(text):
        while pos < len(text) and text[pos] in ", \t":
            pos += 1
        scheme = _SCHEME.match(text, pos)
        if scheme is None:
            break
        pos = scheme.end()
        params: dict[str, str] = {}
        while True:
            param = _PARAM.match(text, pos)
            if param is None:
                token68 = _TOKEN68.match(text, pos) if not params else None
                if token68 is not None:
                    params[""] = token68.group(1)
                    pos = token68.end()
                break
            name, quoted, bare = param.group(1).lower(), param.group(2), param.group(3)
            params[name] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
            pos = param.end()
            if pos >= len(text) or text[pos] != ",":
                break
            pos += 1  # another param of this challenge follows, unless it is a new scheme
            if _PARAM.match(text, pos) is None:
                break
        challenges.append(Challenge(scheme.group(1).lower(), params))
    return challenges


# --------------------------------------------------------------------------- alerting rhythm

DamperChange = Literal["fire", "resolve"]
DAMPER_CHANGES: tuple[DamperChange, ...] = ("fire", "resolve")


@dataclass(frozen=True)
class FlapDamper:
    """Consecutive-failure damping: the alert fires after `threshold` failures in a row and one success
    resolves it. Immutable; `observe` returns the next state and the change, if any."""

    threshold: int
    failures: int = 0
    firing: bool = False

    def observe(self, ok: bool) -> tuple[FlapDamper, DamperChange | None]:
        if ok:
            return FlapDamper(self.threshold), ("resolve" if self.firing else None)
        failures = self.failures + 1
        if not self.firing and failures >= self.threshold:
            return FlapDamper(self.threshold, failures, True), "fire"
        return FlapDamper(self.threshold, failures, self.firing), None


def next_interval(base: float, failing: bool, *, divisor: float = 4.0, floor: float = 5.0) -> float:
    """Seconds to the next probe: `base` while healthy; `base / divisor` while failing, not below `floor`
    (and never slower than `base`), so an outage is confirmed and its end seen sooner."""
    if not failing:
        return base
    return min(base, max(floor, base / divisor))
