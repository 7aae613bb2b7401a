"""Configuration: the only module that reads the config file.

The TOML file is parsed with `tomllib`, validated into frozen pydantic models, and every problem is
reported as `FILE:LINE: key.path: what is wrong`. `load_config` checks the schema and the references
between tables; `check_host` checks the host (referenced files exist, secret files are private).
Secrets are never inline: they come from `*_file` paths or `*_env` environment variables.
"""

from __future__ import annotations

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
    "PkiProvider",
    "RegistryConfig",
    "RegistryLogSource",
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
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- [daemon]


class DaemonConfig(_Model):
    state_dir: Path = Path("/var/lib/regwarden")
    audit_log: Path = Path("/var/log/regwarden/audit.jsonl")
    listen: ListenAddress = "127.0.0.1:9477"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    host: str = ""
    shutdown_timeout: Duration = timedelta(seconds=8)
    bus_capacity: int = Field(default=10_000, ge=100)

    @property
    def hostname(self) -> str:
        return self.host or socket.gethostname()

    @field_validator("shutdown_timeout")
    @classmethod
    def _under_ten_seconds(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(seconds=9):
            raise ValueError("must be between 0s and 9s: systemd expects a stop within 10s")
        return value


# --------------------------------------------------------------------------- [vault]


class TokenAuth(_Model):
    method: Literal["token"]
    token_file: Path | None = None
    token_env: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        _exactly_one_secret(self.token_file, self.token_env, "token")
        return self


class AppRoleAuth(_Model):
    method: Literal["approle"]
    role_id_file: Path
    secret_id_file: Path | None = None
    secret_id_env: str | None = None
    mount: str = "approle"

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        _exactly_one_secret(self.secret_id_file, self.secret_id_env, "secret_id")
        return self


class CertAuth(_Model):
    method: Literal["cert"]
    cert_file: Path
    key_file: Path
    role: str | None = None
    mount: str = "cert"


class VaultConfig(_Model):
    address: HttpUrl
    ca_cert: Path | None = None
    namespace: str | None = None
    auth: Annotated[TokenAuth | AppRoleAuth | CertAuth, Field(discriminator="method")]
    timeout: Duration = timedelta(seconds=10)
    # while Vault is unreachable, retries back off exponentially (with jitter) from 1s up to this
    retry_max: Duration = timedelta(minutes=5)
    # the KV v2 mount and path prefix for rotation locks (one entry per credential)
    lock_path: str = "secret/regwarden/locks"

    @field_validator("retry_max")
    @classmethod
    def _retry_max_range(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(hours=1):
            raise ValueError("must be between 1s and 1h")
        return value


# --------------------------------------------------------------------------- [docker]


class DockerConfig(_Model):
    host: DockerHost = "unix:///var/run/docker.sock"
    client_configs: list[Path] = Field(default_factory=list)
    certs_dir: Path = Path("/etc/docker/certs.d")
    timeout: Duration = timedelta(seconds=10)
    engine_audit_interval: Duration = timedelta(minutes=5)
    insecure_registries_allowed: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- [[registries]]


class RegistryConfig(_Model):
    name: Name
    url: HttpUrl
    credential: str | None = None
    expect_auth: bool = False
    probe_interval: Duration = timedelta(seconds=30)
    probe_timeout: Duration = timedelta(seconds=5)
    ca_cert: Path | None = None
    failures_before_alert: int = Field(default=3, ge=1)

    @property
    def host_port(self) -> str:
        """`host:port` as Docker names the registry in config.json and certs.d."""
        parts = urlsplit(self.url)
        host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else str(parts.hostname)
        return f"{host}:{parts.port}" if parts.port else host


# --------------------------------------------------------------------------- [[credentials]]


class HtpasswdProvider(_Model):
    file: Path
    usernames: Annotated[list[str], Field(min_length=2, max_length=2)]
    bcrypt_cost: int = Field(default=10, ge=4, le=15)

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
    role: str
    common_name: str
    ttl: Duration = timedelta(hours=24)
    renew_at: float = Field(default=0.66, gt=0.1, lt=0.95)


class CommandProvider(_Model):
    path: Path
    args: list[str] = Field(default_factory=list)
    timeout: Duration = timedelta(seconds=60)


class CredentialConfig(_Model):
    name: Name
    provider: Literal["vault-kv", "htpasswd", "vault-pki", "command"] = "vault-kv"
    vault_path: str
    watch_interval: Duration = timedelta(seconds=15)
    rotate_every: Duration | None = None
    rotate_cron: str | None = None
    max_age: Duration | None = None
    overlap: Duration = timedelta(minutes=2)
    htpasswd: HtpasswdProvider | None = None
    pki: PkiProvider | None = None
    command: CommandProvider | None = None

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


class RegistryLogSource(_Model):
    path: Path
    registry: str
    poll_interval: Duration = timedelta(milliseconds=250)


class RegistryNotificationsSource(_Model):
    listen: ListenAddress = "127.0.0.1:9478"
    token_file: Path | None = None
    token_env: str | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)

    @model_validator(mode="after")
    def _token_and_tls(self) -> Self:
        _exactly_one_secret(self.token_file, self.token_env, "token")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self


class SourcesConfig(_Model):
    docker_events: DockerEventsSource | None = None
    registry_logs: list[RegistryLogSource] = Field(default_factory=list)
    registry_notifications: RegistryNotificationsSource | None = None


# --------------------------------------------------------------------------- [audit] [detectors] [alerts]


class AuditConfig(_Model):
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=4096)
    fsync_interval: Duration = timedelta(milliseconds=100)
    hmac_key_vault_path: str | None = None


class DetectorsConfig(_Model):
    auth_failure_burst: int = Field(default=10, ge=1)
    auth_failure_window: Duration = timedelta(minutes=1)
    push_actors: list[str] = Field(default_factory=list)
    protected_tags: list[str] = Field(default_factory=list)
    pull_registries: list[str] = Field(default_factory=list)
    # event-style alerts (push actor, protected tag, unlisted pull, audit gap) resolve this long after
    # their last occurrence
    event_alert_hold: Duration = timedelta(hours=1)
    credential_expiry_warning: Duration = timedelta(days=7)
    tls_expiry_warning: Duration = timedelta(days=14)


class AlertsConfig(_Model):
    group_wait: Duration = timedelta(seconds=10)
    group_interval: Duration = timedelta(minutes=5)
    repeat_interval: Duration = timedelta(hours=4)
    retry_max: Duration = timedelta(minutes=5)
    # labels whose values split alerts into notification groups (alertname is always one of them)
    group_by: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = Field(
        default_factory=lambda: ["alertname"])
    send_timeout: Duration = timedelta(seconds=10)

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


# --------------------------------------------------------------------------- [[sinks]]


class SinkConfig(BaseModel):
    """Common sink options; the sink plugin validates the rest (`options`) with its own model."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: Name
    type: Name
    min_severity: Severity = "info"
    matchers: dict[str, str] = Field(default_factory=dict)
    pacing: Duration | None = None

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
    vault: VaultConfig | None = None
    docker: DockerConfig | None = None
    registries: list[RegistryConfig] = Field(default_factory=list)
    credentials: list[CredentialConfig] = Field(default_factory=list)
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    detectors: DetectorsConfig = Field(default_factory=DetectorsConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    sinks: list[SinkConfig] = Field(default_factory=list)

    def registry(self, name: str) -> RegistryConfig:
        return next(r for r in self.registries if r.name == name)

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
    for index, name in enumerate(cfg.detectors.pull_registries):
        if name not in registries:
            yield ("detectors", "pull_registries", index), f"undefined registry {name!r}"
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
PLAIN_FIELDS = frozenset({"role_id_file", "ca_cert", "cert_file", "tls_cert_file"})


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
