"""Configuration: the only module that reads the config file.

The TOML file is parsed with `tomllib`, validated into frozen pydantic models, and every problem is
reported as `FILE:LINE: key.path: what is wrong`. `load_config` checks the schema and the references
between tables; `check_host` checks the host (referenced files exist, secret files are private).
Secrets are never inline: they come from `*_file` paths or `*_env` environment variables.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import stat
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from . import redact
from .errors import ConfigError, ConfigProblem
from .events import RegistryNames

__all__ = [
    "AlertsConfig",
    "AppRoleAuth",
    "CertAuth",
    "CommandProvider",
    "Config",
    "CredentialConfig",
    "DaemonConfig",
    "DetectorsConfig",
    "DockerConfig",
    "HtpasswdProvider",
    "ImageChecksConfig",
    "PkiProvider",
    "RegistryConfig",
    "RegistryLogSource",
    "ScannerConfig",
    "SignatureRule",
    "SinkConfig",
    "TokenAuth",
    "VaultConfig",
    "check_host",
    "format_duration",
    "load_config",
    "parse_duration",
    "read_secret",
]

# --------------------------------------------------------------------------- value types

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> timedelta:
    """Parse `"30s"`, `"5m"`, `"1h30m"`, `"7d"`, `"250ms"` (or a number of seconds) into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as \"30s\", \"5m\" or \"24h\"")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError("expected a duration such as \"30s\", \"5m\" or \"24h\"")
    text = value.strip().replace(" ", "")
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"invalid duration {value!r}: expected e.g. \"30s\", \"5m\", \"1h30m\", \"24h\", \"7d\"")
    return timedelta(seconds=total)


def format_duration(delta: timedelta) -> str:
    """The inverse of `parse_duration` for display: 90s -> "1m30s"."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return f"{int(delta.total_seconds() * 1000)}ms"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _check_host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT such as \"127.0.0.1:9477\", got {value!r}")
    return value


ListenAddress = Annotated[str, BeforeValidator(lambda v: _check_host_port(v) if isinstance(v, str) else v)]


def _check_url(value: object, schemes: tuple[str, ...] = ("http", "https")) -> object:
    if not isinstance(value, str):
        return value
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"invalid URL {value!r}: expected {' or '.join(s + '://HOST' for s in schemes)}")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid URL {value!r}: bad port") from exc
    return value.rstrip("/")


HttpUrl = Annotated[str, BeforeValidator(_check_url)]
DockerHost = Annotated[
    str, BeforeValidator(lambda v: _check_url(v, ("unix", "tcp", "ssh", "http", "https")) if isinstance(v, str)
                         and not v.startswith("unix://") else v)
]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
Severity = Literal["info", "warning", "critical"]
SEVERITY_ORDER: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}


class _Model(BaseModel):
    # a field's docstring is its description (docs/configuration.md is generated from them)
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


# --------------------------------------------------------------------------- [daemon]


class DaemonConfig(_Model):
    state_dir: Path = Path("/var/lib/regwarden")
    """Directory of the SQLite state (source cursors, credential journal, alert states, outbox) and the local API
    socket; must survive restarts."""
    audit_log: Path = Path("/var/log/regwarden/audit.jsonl")
    """The tamper-evident audit trail: one JSON object per line, hash-chained, mode 0600."""
    listen: ListenAddress = "127.0.0.1:9477"
    """HOST:PORT of the read-only HTTP listener (/metrics /healthz /readyz /status)."""
    log_format: Literal["auto", "json", "console", "journald"] = "auto"
    """auto: journald's native protocol when stderr is the journal stream systemd connected (JOURNAL_STREAM),
    console on a terminal, JSON otherwise; json, console or journald force one. journald entries carry
    PRIORITY (from the level), SYSLOG_IDENTIFIER=regwarden, REGWARDEN_EVENT and REGWARDEN_<KEY> for each
    bound key, so `journalctl -u regwarden -p warning` and `-o json` work."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level logged."""
    host: str = ""
    """Name used in audit records and alert labels; empty: the machine's hostname."""
    shutdown_timeout: Duration = timedelta(seconds=8)
    """How long SIGTERM may take at most (0s..9s). The shipped unit's TimeoutStopSec=15s leaves the rest for
    flushing the audit file and interpreter exit before systemd sends SIGKILL; keep it below your unit's."""
    bus_capacity: int = Field(default=10_000, ge=100)
    """Capacity of the in-memory event bus, in Events and Signals (a batch of log lines counts each line); a full
    bus slows the sources down, it never drops."""

    @property
    def hostname(self) -> str:
        return self.host or socket.gethostname()

    @field_validator("shutdown_timeout")
    @classmethod
    def _under_ten_seconds(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(seconds=9):
            raise ValueError("must be between 0s and 9s (below the unit's TimeoutStopSec=15s, with room to exit)")
        return value


# --------------------------------------------------------------------------- [vault]


class TokenAuth(_Model):
    method: Literal["token"]
    """Log in with a Vault token."""
    token_file: Path | None = None
    """File holding the token (mode 0600; re-read when the token is rejected)."""
    token_env: str | None = None
    """Environment variable holding the token (instead of token_file)."""

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        _exactly_one_secret(self.token_file, self.token_env, "token")
        return self


class AppRoleAuth(_Model):
    method: Literal["approle"]
    """Log in with AppRole."""
    role_id_file: Path
    """File holding the role ID."""
    secret_id_file: Path | None = None
    """File holding the secret ID (mode 0600; a replaced file is used at the next login)."""
    secret_id_env: str | None = None
    """Environment variable holding the secret ID (instead of secret_id_file)."""
    mount: str = "approle"
    """Path the AppRole auth method is mounted at."""

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        _exactly_one_secret(self.secret_id_file, self.secret_id_env, "secret_id")
        return self


class CertAuth(_Model):
    method: Literal["cert"]
    """Log in with a TLS client certificate (needs Vault's TLS listener)."""
    cert_file: Path
    """PEM client certificate."""
    key_file: Path
    """PEM private key of the certificate (mode 0600)."""
    role: str | None = None
    """Certificate role to log in as; default: any role the certificate matches."""
    mount: str = "cert"
    """Path the cert auth method is mounted at."""


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _distinct(values: list[str]) -> list[str]:
    if not values:
        raise ValueError("needs at least one address")
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise ValueError(f"address {seen[0]!r} is listed twice")
    return values


class VaultConfig(_Model):
    address: Annotated[list[HttpUrl], BeforeValidator(_one_or_many), AfterValidator(_distinct)]
    """Vault (or OpenBao) URL, or a list of the node URLs of an HA cluster. With several, requests go to
    the node that answered last and fail over to the next on a connection error, timeout, 5xx, sealed
    or standby-without-leader answer; a failed node is skipped with its own back-off (1s up to retry_max)."""
    ca_cert: Path | None = None
    """CA bundle that signed Vault's server certificate; TLS verification is always on."""
    namespace: str | None = None
    """Vault Enterprise / OpenBao namespace, if any."""
    auth: Annotated[TokenAuth | AppRoleAuth | CertAuth, Field(discriminator="method")]
    """How regwarden logs in: a table with method = "token", "approle" or "cert" (keys below)."""
    timeout: Duration = timedelta(seconds=10)
    """Timeout of one request to Vault."""
    # while Vault is unreachable, retries back off exponentially (with jitter) from 1s up to this
    retry_max: Duration = timedelta(minutes=5)
    """While Vault is unreachable, retries back off exponentially with jitter from 1s up to this (1s..1h)."""
    # the KV v2 mount and path prefix for rotation locks (one entry per credential)
    lock_path: str = "secret/regwarden/locks"
    """KV v2 path (mount first) under which rotation locks live, one entry per credential (and, under
    posture-logins/, the fleet's record of default-login runs: docs/posture.md)."""

    @field_validator("retry_max")
    @classmethod
    def _retry_max_range(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(hours=1):
            raise ValueError("must be between 1s and 1h")
        return value


# --------------------------------------------------------------------------- [docker]


class DockerConfig(_Model):
    host: DockerHost = "unix:///var/run/docker.sock"
    """The Docker engine's API socket or URL."""
    client_configs: list[Path] = Field(default_factory=list)
    """Docker client config.json files kept logged in (auths merged atomically, or the file's credential helper)."""
    certs_dir: Path = Path("/etc/docker/certs.d")
    """Where client certificates for mTLS registries go (certs_dir/HOST:PORT, swapped atomically)."""
    timeout: Duration = timedelta(seconds=10)
    """Timeout of calls to the engine and to credential helpers."""
    engine_audit_interval: Duration = timedelta(minutes=5)
    """How often the engine's registry config (docker info) is audited."""
    insecure_registries_allowed: list[str] = Field(default_factory=list)
    """Insecure registries (host:port, host or CIDR) expected in the engine's config; others raise
    DockerInsecureRegistry. Loopback is always expected."""
    daemon_json: Path = Path("/etc/docker/daemon.json")
    """The engine's daemon.json; its tcp:// `hosts` are among the endpoints checked for an API open without
    TLS or client certificates (DockerDaemonTCPPlain, DockerDaemonTCPNoClientAuth)."""
    content_trust_required: bool = False
    """Raise DockerContentTrustNotEnforced unless DOCKER_CONTENT_TRUST is on in systemd's DefaultEnvironment
    (or /etc/environment)."""
    static_credential_scan: list[str] = Field(
        default_factory=lambda: ["/root/.docker/config.json", "/home/*/.docker/config.json"])
    """Docker client configs (globs) searched for static credentials of registries regwarden manages
    (DockerStaticCredential); the client_configs regwarden keeps are skipped. Empty: not searched."""


# --------------------------------------------------------------------------- [[registries]]


class RegistryConfig(_Model):
    name: Name
    """Name of the registry in alerts, metrics and the audit trail."""
    url: HttpUrl
    """Base URL of the registry (http:// or https://, with the port if not the default)."""
    credential: str | None = None
    """The [[credentials]] entry used to log in; absent: the registry is used anonymously."""
    expect_auth: bool = False
    """Alert (RegistryAnonymousAccess) when /v2/ answers 200 without credentials."""
    probe_interval: Duration = timedelta(seconds=30)
    """How often the endpoint is probed; while probes fail, every probe_interval/4 (not below 5s)."""
    probe_timeout: Duration = timedelta(seconds=5)
    """Deadline of one whole probe, all phases together."""
    ca_cert: Path | None = None
    """CA bundle of a registry with a private CA (also written to certs.d for client-certificate credentials)."""
    failures_before_alert: int = Field(default=3, ge=1)
    """Consecutive failed probes before RegistryProbeFailed fires; one success resolves it."""
    expected_exposure: Literal["loopback", "private", "public"] | None = None
    """Widest reach the registry may have (posture check RegistryExposed): loopback, private (RFC 1918, ULA) or
    public. Absent: for a registry on this host, the class of the address in its url; elsewhere, not checked."""
    check_default_credentials: bool | None = None
    """Try the documented well-known default logins against this registry (posture check); absent: on for
    registries whose credential regwarden manages, off for the others."""

    @property
    def private(self) -> bool:
        """The config says the registry needs credentials (anonymous pull on it is a finding)."""
        return self.expect_auth or self.credential is not None

    @property
    def default_credentials_check(self) -> bool:
        return self.check_default_credentials if self.check_default_credentials is not None \
            else self.credential is not None

    @property
    def host_port(self) -> str:
        """`host:port` as Docker names the registry in config.json and certs.d."""
        parts = urlsplit(self.url)
        host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else str(parts.hostname)
        return f"{host}:{parts.port}" if parts.port else host


# --------------------------------------------------------------------------- [[credentials]]


class HtpasswdProvider(_Model):
    file: Path
    """The registry's htpasswd file (the registry re-reads it while running)."""
    usernames: Annotated[list[str], Field(min_length=2, max_length=2)]
    """Two usernames used alternately, so that the old credential stays valid during the overlap."""
    bcrypt_cost: int = Field(default=10, ge=4, le=15)
    """bcrypt cost of new entries (4..15)."""

    @field_validator("usernames")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if value[0] == value[1]:
            raise ValueError("the two usernames must differ")
        for name in value:
            if not name or ":" in name:
                raise ValueError(f"invalid htpasswd username {name!r}")
        return value


class PkiProvider(_Model):
    mount: str = "pki"
    """Path of the PKI secrets engine."""
    role: str
    """PKI role that issues the client certificates."""
    common_name: str
    """Common name of the issued certificates."""
    ttl: Duration = timedelta(hours=24)
    """Lifetime of an issued certificate."""
    renew_at: float = Field(default=0.66, gt=0.1, lt=0.95)
    """Fraction of the lifetime after which a new certificate is issued (0.1..0.95)."""


class CommandProvider(_Model):
    path: Path
    """Executable implementing create/revoke (JSON over stdin/stdout, see README)."""
    args: list[str] = Field(default_factory=list)
    """Arguments passed before the operation."""
    timeout: Duration = timedelta(seconds=60)
    """How long one call may take before it is killed and counts as failed."""


class CredentialConfig(_Model):
    name: Name
    """Name of the credential, referenced by [[registries]] credential."""
    provider: Literal["vault-kv", "htpasswd", "vault-pki", "command"] = "vault-kv"
    """Who produces it: vault-kv (someone else; consume only), htpasswd, vault-pki or command."""
    vault_path: str
    """KV v2 MOUNT/PATH where the credential lives (data: username/password or certificate/private_key/ca_chain)."""
    watch_interval: Duration = timedelta(seconds=15)
    """How often KV metadata (current_version) is read (jittered; at least 1s)."""
    rotate_every: Duration | None = None
    """Rotate this long after the last rotation (producing providers only)."""
    rotate_cron: str | None = None
    """Rotate on a 5-field cron schedule (UTC) instead of rotate_every."""
    max_age: Duration | None = None
    """Alert (CredentialTooOld) when the credential is older than this."""
    overlap: Duration = timedelta(minutes=2)
    """How long the old credential stays valid after a new one is published (> 2 x watch_interval)."""
    htpasswd: HtpasswdProvider | None = None
    """Options of the htpasswd provider."""
    pki: PkiProvider | None = None
    """Options of the vault-pki provider."""
    command: CommandProvider | None = None
    """Options of the command provider."""

    @field_validator("vault_path")
    @classmethod
    def _mount_and_path(cls, value: str) -> str:
        mount, _, path = value.strip("/").partition("/")
        if not mount or not path:
            raise ValueError(f"expected MOUNT/PATH with the KV v2 mount first, got {value!r}")
        return value.strip("/")

    @field_validator("rotate_cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != 5:
            raise ValueError(f"expected a 5-field cron expression such as \"0 3 * * *\", got {value!r}")
        return value

    @model_validator(mode="after")
    def _provider_consistency(self) -> Self:
        if self.rotate_every is not None and self.rotate_cron is not None:
            raise ValueError("set rotate_every or rotate_cron, not both")
        needed = {"htpasswd": "htpasswd", "vault-pki": "pki", "command": "command"}.get(self.provider)
        for table in ("htpasswd", "pki", "command"):
            if getattr(self, table) is not None and table != needed:
                raise ValueError(f"[{table}] given but provider is {self.provider!r}")
        if needed is not None and getattr(self, needed) is None:
            raise ValueError(f"provider {self.provider!r} needs its {needed} = {{...}} table")
        if self.provider == "vault-kv" and self.rotates:
            raise ValueError("provider 'vault-kv' only consumes; rotate_every/rotate_cron need a producing provider")
        if self.rotates and self.overlap <= 2 * self.watch_interval:
            raise ValueError("overlap must be longer than 2 x watch_interval so every host converges first")
        if self.watch_interval < timedelta(seconds=1):
            raise ValueError("watch_interval must be at least 1s")
        return self

    @property
    def rotates(self) -> bool:
        """Produced by regwarden: on a schedule, or (certificates) before they expire."""
        return self.rotate_every is not None or self.rotate_cron is not None or self.provider == "vault-pki"

    @property
    def mount(self) -> str:
        return self.vault_path.split("/", 1)[0]

    @property
    def path(self) -> str:
        return self.vault_path.split("/", 1)[1]


# --------------------------------------------------------------------------- [sources]


class DockerEventsSource(_Model):
    enabled: bool = True
    """Read the engine's events ([docker].host) into the audit trail."""


class RegistryLogSource(_Model):
    path: Path
    """The registry's log file (followed across rename and copytruncate rotation)."""
    registry: str
    """The [[registries]] entry this log belongs to."""
    poll_interval: Duration = timedelta(milliseconds=250)
    """How often the file is polled for new lines and rotation."""


class RegistryNotificationsSource(_Model):
    listen: ListenAddress = "127.0.0.1:9478"
    """HOST:PORT the receiver listens on; point the registry's notifications at http(s)://HOST:PORT/v1/registry-events."""
    token_file: Path | None = None
    """File holding the bearer token the registry sends (mode 0600)."""
    token_env: str | None = None
    """Environment variable holding the bearer token (instead of token_file)."""
    tls_cert_file: Path | None = None
    """TLS certificate for registries on other hosts (with tls_key_file)."""
    tls_key_file: Path | None = None
    """Private key of tls_cert_file (mode 0600)."""
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Larger bodies are refused with 413 without being read (at least 1024)."""

    @model_validator(mode="after")
    def _token_and_tls(self) -> Self:
        _exactly_one_secret(self.token_file, self.token_env, "token")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self


class SourcesConfig(_Model):
    docker_events: DockerEventsSource | None = None
    """Docker engine events."""
    registry_logs: list[RegistryLogSource] = Field(default_factory=list)
    """Registry log files, one table each."""
    registry_notifications: RegistryNotificationsSource | None = None
    """Receiver of registry notifications."""


# --------------------------------------------------------------------------- [audit] [detectors] [alerts]


class AuditConfig(_Model):
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=4096)
    """Rotate the audit log at this size to audit.jsonl.1 (older files shift; none is deleted)."""
    fsync_interval: Duration = timedelta(milliseconds=100)
    """At most this much of records is at risk before an fsync."""
    hmac_key_vault_path: str | None = None
    """KV v2 MOUNT/PATH of an HMAC key (key "hmac_key") for the chain; absent: plain SHA-256."""
    witness: bool = True
    """With a [vault] table: write the chain head to Vault (witness_path/<host>) so that
    `audit verify --witness` finds a trail rewritten on this host."""
    witness_path: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$")] = \
        "secret/regwarden/audit-heads"
    """KV v2 MOUNT/PREFIX under which each host's chain head is kept (key = the daemon's host name)."""
    witness_interval: Duration = timedelta(minutes=1)
    """Write the chain head this often (when it moved), and at each file rotation."""

    @field_validator("witness_interval")
    @classmethod
    def _witness_interval(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("witness_interval must be at least 1s")
        return value


class DetectorsConfig(_Model):
    auth_failure_burst: int = Field(default=10, ge=1)
    """Failed logins from one address within auth_failure_window that raise RegistryAuthFailureBurst."""
    auth_failure_window: Duration = timedelta(minutes=1)
    """Window of the auth-failure burst rule."""
    push_actors: list[str] = Field(default_factory=list)
    """Users allowed to push (globs); others raise UnexpectedPushActor. Empty: any."""
    protected_tags: list[str] = Field(default_factory=list)
    """repository:tag globs that must never move to another digest (ProtectedTagOverwritten)."""
    pull_registries: list[str] = Field(default_factory=list)
    """Registries the engine may pull from ([[registries]] names; docker.io for Docker Hub). Empty: any."""
    # event-style alerts (push actor, protected tag, unlisted pull, audit gap) resolve this long after
    # their last occurrence
    event_alert_hold: Duration = timedelta(hours=1)
    """Event-style alerts resolve this long after their last occurrence."""
    credential_expiry_warning: Duration = timedelta(days=7)
    """Warn this long before a credential (certificate) expires."""
    tls_expiry_warning: Duration = timedelta(days=14)
    """RegistryTLSCertExpiring fires when a registry's chain expires within this."""


class AlertsConfig(_Model):
    group_wait: Duration = timedelta(seconds=10)
    """Wait this long to group alerts before the first notification of a group."""
    group_interval: Duration = timedelta(minutes=5)
    """Wait this long before notifying about changes to a group already notified."""
    repeat_interval: Duration = timedelta(hours=4)
    """Notify again about an alert still firing after this long."""
    retry_max: Duration = timedelta(minutes=5)
    """Longest wait between delivery retries to a sink (never sooner than its Retry-After)."""
    # labels whose values split alerts into notification groups (alertname is always one of them)
    group_by: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = Field(
        default_factory=lambda: ["alertname"])
    """Labels that split alerts into notification groups; alertname is always one."""
    send_timeout: Duration = timedelta(seconds=10)
    """How long one delivery attempt may take before it counts as a retryable failure."""

    @field_validator("group_by")
    @classmethod
    def _with_alertname(cls, value: list[str]) -> list[str]:
        return sorted({"alertname", *value})

    @field_validator("send_timeout")
    @classmethod
    def _positive_timeout(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return value


# --------------------------------------------------------------------------- [image_checks]


class SignatureRule(_Model):
    repositories: Annotated[list[str], Field(min_length=1)]
    """Repository globs this rule covers (e.g. "prod/*"); the first rule that matches a pushed repository applies."""
    registry: str | None = None
    """The [[registries]] entry the rule is limited to; absent: every registry."""
    require_signature: bool = True
    """A push without a cosign signature is an alert (ImageUnsigned): the repositories are protected."""
    public_key_file: Path | None = None
    """PEM public key (ECDSA P-256, as `cosign generate-key-pair` writes cosign.pub) every signature must verify
    against; absent: only the presence of a signature is checked."""


class ScannerConfig(_Model):
    command: Annotated[list[str], Field(min_length=1)]
    """The scanner and its arguments; it must print a Trivy JSON report on stdout. "{image}"
    (REGISTRY/REPOSITORY@DIGEST), "{registry}", "{repository}" and "{digest}" in an argument are replaced."""
    repositories: list[str] = Field(default_factory=lambda: ["*"])
    """Repository globs whose pushes are scanned."""
    timeout: Duration = timedelta(minutes=5)
    """A scan running longer is killed (its whole process group) and counted as failed."""
    concurrency: int = Field(default=1, ge=1, le=16)
    """Scans that run at the same time; the others wait in the queue (kept in the state store)."""
    severity_threshold: Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"] = "CRITICAL"
    """Findings at or above this Trivy severity raise ImageVulnerable."""
    max_output_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """A scanner printing more than this is killed and the scan counted as failed."""
    attempts: int = Field(default=3, ge=1, le=10)
    """Tries of a failing scan (exit status, timeout, unreadable report) before it is reported as failed."""


class ImageChecksConfig(_Model):
    signatures: list[SignatureRule] = Field(default_factory=list)
    """Signature rules by repository pattern, one table each ([[image_checks.signatures]])."""
    signature_wait: Duration = timedelta(seconds=30)
    """How long after a push its signature may arrive (signing tools push the image first) before it is checked."""
    scanner: ScannerConfig | None = None
    """The vulnerability scanner run for each pushed manifest; absent: no scans."""
    registry_timeout: Duration = timedelta(seconds=10)
    """Deadline of each registry request the checks make."""


# --------------------------------------------------------------------------- [posture]


class PostureConfig(_Model):
    enabled: bool = True
    """Run the security posture checks of every [[registries]] entry (TLS, authentication, default logins,
    exposure) on their own schedule."""
    interval: Duration = timedelta(hours=1)
    """How often the posture of each registry is checked (default logins at most once per interval, also across
    restarts)."""
    timeout: Duration = timedelta(seconds=5)
    """Deadline of each connection and request the checks make."""
    repository: str = "regwarden/posture-check"
    """Repository named in the anonymous pull/push tests (a push test starts an upload and cancels it)."""
    default_credentials_max_attempts: int | None = Field(default=None, ge=1, le=20)
    """Most default logins tried per registry and run; must stay below [detectors].auth_failure_burst, so a
    registry's log never shows a burst from this host. Absent: 5, or auth_failure_burst - 1 if that is less."""
    skip: list[str] = Field(default_factory=list)
    """Checks not run or alerted, by name (e.g. "tls_self_signed"); see `regwarden posture --checks`."""

    @field_validator("skip")
    @classmethod
    def _known_checks(cls, value: list[str]) -> list[str]:
        from .posture.checks import CHECKS

        unknown = [name for name in value if name not in CHECKS]
        if unknown:
            raise ValueError(f"unknown posture checks {unknown} (known: {', '.join(CHECKS)})")
        return value


# --------------------------------------------------------------------------- [[sinks]]


class SinkConfig(BaseModel):
    """Common sink options; the sink plugin validates the rest (`options`) with its own model."""

    model_config = ConfigDict(frozen=True, extra="allow", use_attribute_docstrings=True)

    name: Name
    """Name of the sink in logs, metrics and `regwarden alerts test`."""
    type: Name
    """The sink plugin (entry point in group regwarden.sinks): log, slack, alertmanager, webhook, or a third-party
    one."""
    min_severity: Severity = "info"
    """Only alerts at least this severe go to this sink."""
    matchers: dict[str, str] = Field(default_factory=dict)
    """Labels that must match: exact values, or "=~REGEX", "!=VALUE", "!~REGEX"."""
    pacing: Duration | None = None
    """Minimum time between two messages to this sink; default: the plugin's own."""

    @field_validator("matchers")
    @classmethod
    def _valid_matchers(cls, value: dict[str, str]) -> dict[str, str]:
        """Label names as Prometheus spells them; values exact, or `=~`/`!~` + a valid regex, or `!=`."""
        for label, wanted in value.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", label):
                raise ValueError(f"invalid label name {label!r}")
            if wanted.startswith(("=~", "!~")):
                try:
                    re.compile(wanted[2:])
                except re.error as exc:
                    raise ValueError(f"{label}: invalid regular expression {wanted[2:]!r}: {exc}") from None
        return value

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


# --------------------------------------------------------------------------- the whole file


class Config(_Model):
    daemon: DaemonConfig
    """The daemon itself (the only required table)."""
    vault: VaultConfig | None = None
    """Vault or OpenBao, where credentials live; needed when [[credentials]] exist."""
    docker: DockerConfig | None = None
    """The Docker engine and the client configs regwarden keeps logged in."""
    registries: list[RegistryConfig] = Field(default_factory=list)
    """Registries: probed; each may name the credential used to log in."""
    credentials: list[CredentialConfig] = Field(default_factory=list)
    """Credentials: where each lives in Vault and, if regwarden produces it, how."""
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    """Audit sources."""
    audit: AuditConfig = Field(default_factory=AuditConfig)
    """The audit trail file."""
    detectors: DetectorsConfig = Field(default_factory=DetectorsConfig)
    """Detection rules over audit events and probe results."""
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    """Alert grouping, repetition and delivery retries."""
    image_checks: ImageChecksConfig = Field(default_factory=ImageChecksConfig)
    """Checks of pushed images (from registry notifications): cosign signatures and a vulnerability scanner."""
    posture: PostureConfig = Field(default_factory=PostureConfig)
    """Security posture checks of the registry endpoints."""
    sinks: list[SinkConfig] = Field(default_factory=list)
    """Where notifications go."""

    @property
    def default_login_attempts(self) -> int:
        """Default logins the posture check may try per registry and run."""
        wanted = self.posture.default_credentials_max_attempts
        return wanted if wanted is not None else max(0, min(5, self.detectors.auth_failure_burst - 1))

    def registry(self, name: str) -> RegistryConfig:
        return next(r for r in self.registries if r.name == name)

    @functools.cached_property
    def registry_names(self) -> RegistryNames:
        """The [[registries]] names by address (how audit records name a registry a source saw)."""
        return RegistryNames((r.name, r.host_port) for r in self.registries)

    def credential(self, name: str) -> CredentialConfig:
        return next(c for c in self.credentials if c.name == name)


def _exactly_one_secret(file: Path | None, env: str | None, what: str) -> None:
    if (file is None) == (env is None):
        raise ValueError(f"set exactly one of {what}_file or {what}_env")


# --------------------------------------------------------------------------- cross-references


def _reference_problems(cfg: Config) -> Iterator[tuple[tuple[str | int, ...], str]]:
    for table in ("registries", "credentials", "sinks"):
        seen: dict[str, int] = {}
        for index, item in enumerate(getattr(cfg, table)):
            if item.name in seen:
                yield (table, index, "name"), f"duplicate name {item.name!r} (first at {table}[{seen[item.name]}])"
            seen.setdefault(item.name, index)
    credentials = {c.name for c in cfg.credentials}
    registries = {r.name for r in cfg.registries}
    for index, reg in enumerate(cfg.registries):
        if reg.credential is not None and reg.credential not in credentials:
            yield ("registries", index, "credential"), f"undefined credential {reg.credential!r}"
    for index, src in enumerate(cfg.sources.registry_logs):
        if src.registry not in registries:
            yield ("sources", "registry_logs", index, "registry"), f"undefined registry {src.registry!r}"
    for index, rule in enumerate(cfg.image_checks.signatures):
        if rule.registry is not None and rule.registry not in registries:
            yield ("image_checks", "signatures", index, "registry"), f"undefined registry {rule.registry!r}"
    for index, name in enumerate(cfg.detectors.pull_registries):
        if name not in registries:
            yield ("detectors", "pull_registries", index), f"undefined registry {name!r}"
    attempts = cfg.posture.default_credentials_max_attempts
    if attempts is not None and attempts >= cfg.detectors.auth_failure_burst:
        yield (("posture", "default_credentials_max_attempts"),
               f"must stay below detectors.auth_failure_burst ({cfg.detectors.auth_failure_burst})")
    if cfg.credentials and cfg.vault is None:
        yield ("credentials",), "credentials need a [vault] table"
    used = {r.credential for r in cfg.registries}
    for index, cred in enumerate(cfg.credentials):
        if cred.name not in used:
            yield ("credentials", index, "name"), f"credential {cred.name!r} is not used by any [[registries]] entry"
    if cfg.credentials and cfg.docker is None:
        yield ("credentials",), "credentials need a [docker] table to say where to apply them"


# --------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem with its line."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(file, None, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem(file, None, "", "not valid UTF-8")]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None) or _line_from_message(str(exc))
        if line is None and "end of document" in str(exc):
            line = max(1, len(text.splitlines()))
        raise ConfigError([ConfigProblem(file, line, "", f"TOML syntax error: {exc}")]) from None
    return parse_config(data, file=file, text=text)


def parse_config(data: Mapping[str, Any], *, file: str = "<config>", text: str = "") -> Config:
    """Validate an already-parsed TOML document (see `load_config`)."""
    lines = _KeyLines(text)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        problems = [
            ConfigProblem(file, lines.find(err["loc"]), _dotted(err["loc"]), _message(err))
            for err in exc.errors(include_url=False)
        ]
        raise ConfigError(_sorted(problems)) from None
    problems = [
        ConfigProblem(file, lines.find(loc), _dotted(loc), msg) for loc, msg in _reference_problems(cfg)
    ]
    problems += _sink_problems(cfg, file, lines)
    if problems:
        raise ConfigError(_sorted(problems))
    return cfg


def _sink_problems(cfg: Config, file: str, lines: _KeyLines) -> list[ConfigProblem]:
    """Validate each sink's own options with its plugin's model (unknown types are reported too)."""
    from .sinks import plugin_config_problems  # the one module that loads plugins

    problems = []
    for index, sink in enumerate(cfg.sinks):
        for loc, msg in plugin_config_problems(sink):
            full = ("sinks", index, *loc)
            problems.append(ConfigProblem(file, lines.find(full), _dotted(full), msg))
    return problems


def _sorted(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    return sorted(problems, key=lambda p: (p.line or 0, p.key))


def _message(err: Mapping[str, Any]) -> str:
    kind, msg = err["type"], str(err["msg"])
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        return f"unknown method {err['input'].get('method')!r}; expected one of: {err['ctx']['expected_tags']}"
    if kind == "union_tag_not_found":
        return "missing 'method' (token, approle or cert)"
    if kind in ("string_pattern_mismatch",):
        return "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
    return msg.removeprefix("Value error, ")


def _dotted(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after[_under_ten_seconds(), function-before[parse_duration(), timedelta]]",):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _line_from_message(message: str) -> int | None:
    match = re.search(r"line (\d+)", message)
    return int(match.group(1)) if match else None


class _KeyLines:
    """Maps a key path like ('registries', 1, 'url') to its line in the TOML text.

    A small scanner of table headers and `key =` lines, good for configs as people write them: keys
    inside inline tables or multi-line arrays map to the line of their enclosing key.
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"']+(?:\s*\.\s*[A-Za-z0-9_\-\"']+)*)\s*=")

    def __init__(self, text: str) -> None:
        self.index: dict[tuple[str | int, ...], int] = {}
        counters: dict[tuple[str, ...], int] = {}
        table: tuple[str | int, ...] = ()
        depth = 0  # open brackets/braces of a multi-line value
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0] if '"' not in raw and "'" not in raw else raw
            if depth == 0 and (header := self._HEADER.match(line)):
                names = tuple(p.strip().strip("\"'") for p in header.group(2).split("."))
                if header.group(1) == "[[":
                    counters[names] = counters.get(names, -1) + 1
                    table = (*self._resolve(names[:-1], counters), names[-1], counters[names])
                else:
                    table = self._resolve(names, counters)
                for i in range(1, len(table) + 1):
                    self.index.setdefault(table[:i], number)
                continue
            if depth == 0 and (key := self._KEY.match(line)):
                names = tuple(p.strip().strip("\"'") for p in key.group(1).split("."))
                path = (*table, *names)
                for i in range(len(table) + 1, len(path) + 1):
                    self.index.setdefault(path[:i], number)
            depth = max(0, depth + self._balance(line))

    @staticmethod
    def _resolve(names: tuple[str, ...], counters: Mapping[tuple[str, ...], int]) -> tuple[str | int, ...]:
        out: list[str | int] = []
        for i, name in enumerate(names):
            out.append(name)
            if names[: i + 1] in counters:
                out.append(counters[names[: i + 1]])
        return tuple(out)

    @staticmethod
    def _balance(line: str) -> int:
        stripped = re.sub(r'"(?:\\.|[^"\\])*"|\'[^\']*\'', "", line).split("#", 1)[0]
        return stripped.count("[") + stripped.count("{") - stripped.count("]") - stripped.count("}")

    def find(self, loc: Iterable[str | int]) -> int | None:
        path = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or "(" in p)))
        while path:
            if path in self.index:
                return self.index[path]
            path = path[:-1]
        return None


# --------------------------------------------------------------------------- host checks and secrets

SECRET_FIELDS = frozenset(
    {"token_file", "secret_id_file", "key_file", "tls_key_file", "webhook_url_file", "secret_file",
     "bot_token_file", "password_file", "url_file", "basic_auth_password_file", "bearer_token_file"}
)
PLAIN_FIELDS = frozenset({"role_id_file", "ca_cert", "cert_file", "tls_cert_file", "public_key_file"})


def check_host(cfg: Config, file: str = "<config>", text: str | None = None) -> list[ConfigProblem]:
    """Problems with the host: referenced files missing, secret files readable by group or others."""
    if text is None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError:
            text = ""
    lines = _KeyLines(text)
    problems: list[ConfigProblem] = []

    def problem(loc: tuple[str | int, ...], message: str) -> None:
        problems.append(ConfigProblem(file, lines.find(loc), _dotted(loc), message))

    for loc, name, value in _walk_paths(cfg.model_dump(mode="python", exclude_none=True)):
        if name in SECRET_FIELDS or name in PLAIN_FIELDS:
            try:
                st = os.stat(value)
            except FileNotFoundError:
                problem(loc, f"file {value} does not exist")
                continue
            except OSError as exc:
                problem(loc, f"cannot read {value}: {exc.strerror}")
                continue
            if not stat.S_ISREG(st.st_mode):
                problem(loc, f"{value} is not a regular file")
            elif name in SECRET_FIELDS and st.st_mode & 0o077:
                problem(loc, f"secret file {value} is readable by group or others (mode {st.st_mode & 0o777:o});"
                             " chmod 600 it")
        elif name.endswith("_env") and isinstance(value, str) and value not in os.environ:
            problem(loc, f"environment variable {value} is not set")
    for index, cred in enumerate(cfg.credentials):
        if cred.command is not None and not os.access(cred.command.path, os.X_OK):
            problem(("credentials", index, "command", "path"), f"{cred.command.path} is not an executable file")
        if cred.htpasswd is not None and not cred.htpasswd.file.parent.is_dir():
            problem(("credentials", index, "htpasswd", "file"), f"directory {cred.htpasswd.file.parent} does not exist")
    scanner = cfg.image_checks.scanner
    if scanner is not None and not os.access(scanner.command[0], os.X_OK):
        problem(("image_checks", "scanner", "command"), f"{scanner.command[0]} is not an executable file")
    for index, src in enumerate(cfg.sources.registry_logs):
        if not src.path.parent.is_dir():
            problem(("sources", "registry_logs", index, "path"), f"directory {src.path.parent} does not exist")
    return _sorted(problems)


def _walk_paths(node: Any, loc: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, dict | list):
                yield from _walk_paths(value, (*loc, key))
            elif key.endswith(("_file", "_env")) or key in PLAIN_FIELDS:
                yield (*loc, key), key, value
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk_paths(value, (*loc, index))


def read_secret(file: Path | str | None = None, env: str | None = None) -> str:
    """Read a secret from a file (stripped of surrounding whitespace) or an environment variable.

    Raises ConfigError without the secret in the message.
    """
    if file is not None:
        try:
            secret = Path(file).read_text(encoding="utf-8").strip()
            redact.register(secret)
            return secret
        except OSError as exc:
            problem = ConfigProblem(str(file), None, "", f"cannot read secret file: {exc.strerror}")
            raise ConfigError([problem]) from None
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError([ConfigProblem(f"${env}", None, "", "environment variable is not set")])
        redact.register(value.strip())
        return value.strip()
    raise ConfigError([ConfigProblem("<secret>", None, "", "no secret source given")])
