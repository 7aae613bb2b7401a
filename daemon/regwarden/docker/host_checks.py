"""CIS Docker Benchmark items about registries and their credentials that `docker info` does not show.

- **The daemon's TCP socket** (CIS 2.6): every TCP endpoint the engine may listen on — `[docker].host`
  when it is `tcp://`, the `hosts` of `daemon.json`, the TCP listeners of the process holding the engine's
  unix socket (when /proc lets us see its fds) and any listener on 2375/2376 — is asked `GET /_ping`, first
  in plain HTTP, then over TLS without a client certificate. An endpoint that answers the Docker API either
  way gives root on the host to whoever reaches it. Only an actual Docker answer (the `Api-Version` header)
  is a finding; whatever else listens there is not.
- **Content trust** (CIS 4.5): `DOCKER_CONTENT_TRUST` as services and logins get it: systemd's
  `DefaultEnvironment=` (`/etc/systemd/system.conf`, `system.conf.d/*.conf`) and `/etc/environment`. A
  finding only where `[docker].content_trust_required` asks for it.
- **Static credentials**: a Docker client config.json that regwarden does not keep (`[docker].static_credential_scan`,
  globs) holding an `auths` credential for a registry whose credential regwarden manages — a copy that never
  rotates and outlives every revocation. Only the location is reported, never the value.

The parsers are pure; `daemon_tcp_endpoints`, `probe_docker_api` and the file readers are the edge.
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import ipaddress
import json
import os
import shlex
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from ..posture.sockets import holder, read_or_empty, tcp_listeners
from .client_config import shadowing_keys

__all__ = [
    "DOCKER_TCP_PORTS",
    "ApiExposure",
    "ContentTrust",
    "StaticCredential",
    "content_trust",
    "daemon_json_hosts",
    "daemon_tcp_endpoints",
    "parse_default_environment",
    "parse_environment_file",
    "probe_docker_api",
    "static_credentials",
    "truthy",
]

DOCKER_TCP_PORTS = (2375, 2376)
ApiExposure = Literal["plain", "tls_no_client_auth", "protected", "not_docker", "unreachable"]


# --------------------------------------------------------------------------- the daemon's TCP socket


def tcp_endpoint(url: str) -> tuple[str, int] | None:
    """`tcp://HOST:PORT` (dockerd's -H syntax: empty host = every address, no port = 2375) → (host, port)."""
    if not url.startswith("tcp://"):
        return None
    parts = urlsplit(url)
    try:
        port = parts.port or DOCKER_TCP_PORTS[0]
    except ValueError:
        return None
    return (parts.hostname or "0.0.0.0"), port


def daemon_json_hosts(doc: object) -> list[str]:
    """The `tcp://` entries of daemon.json's `hosts` (a list of strings); anything else is ignored."""
    hosts = doc.get("hosts") if isinstance(doc, Mapping) else None
    if not isinstance(hosts, list):
        return []
    return [h for h in hosts if isinstance(h, str) and h.startswith("tcp://")]


def _unix_socket_inode(proc: Path, path: str) -> int | None:
    """The inode of the listening unix socket bound to `path` (/proc/net/unix: last field is the path)."""
    for line in read_or_empty(proc / "net" / "unix").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[-1] == path:
            with contextlib.suppress(ValueError):
                return int(fields[6])
    return None


def _socket_inodes(pid_dir: Path) -> set[int]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.scandir(pid_dir / "fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(fd.path)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def daemon_tcp_endpoints(engine_host: str, daemon_json: Mapping[str, object] | None, *,
                         proc: Path = Path("/proc")) -> list[tuple[str, int]]:
    """Every TCP (address, port) where the engine may answer, as bound (0.0.0.0 and :: included)."""
    found: set[tuple[str, int]] = set()
    for url in [engine_host, *daemon_json_hosts(daemon_json or {})]:
        endpoint = tcp_endpoint(url)
        if endpoint is not None:
            found.add(endpoint)
    listeners = tcp_listeners(proc)
    found |= {(entry.address, entry.port) for entry in listeners if entry.port in DOCKER_TCP_PORTS}
    if engine_host.startswith("unix://"):
        inode = _unix_socket_inode(proc, engine_host.removeprefix("unix://"))
        owner = holder(proc, {inode}) if inode is not None else None
        if owner is not None:
            held = _socket_inodes(owner)
            found |= {(entry.address, entry.port) for entry in listeners if entry.inode in held}
    return sorted(found)


def connect_address(address: str) -> str:
    """Where to connect to reach a listener bound to `address` (the unspecified address: loopback)."""
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(address.strip("[]"))
        if ip.is_unspecified:
            return "::1" if ip.version == 6 else "127.0.0.1"
    return address.strip("[]")


def _ping(conn: http.client.HTTPConnection) -> tuple[bool, bytes]:
    """`GET /_ping`: whether a Docker engine answered (200 with the `Api-Version` header), and the body's start."""
    conn.request("GET", "/_ping", headers={"User-Agent": "regwarden-engine-audit"})
    response = conn.getresponse()
    body = response.read(256)
    return response.status == 200 and response.getheader("Api-Version") is not None, body


def probe_docker_api(address: str, port: int, timeout: float) -> ApiExposure:
    """How the Docker API at `address:port` answers a client with no credentials at all."""
    host = connect_address(address)
    plain_http = False  # something answered plain HTTP (not Go's "HTTP request to an HTTPS server")
    try:
        with contextlib.closing(http.client.HTTPConnection(host, port, timeout=timeout)) as plain:
            docker_answered, body = _ping(plain)
            if docker_answered:
                return "plain"
            plain_http = b"HTTPS server" not in body
    except ConnectionRefusedError:
        return "unreachable"
    except (OSError, http.client.HTTPException):
        pass  # not plain HTTP: a TLS listener closes or answers garbage
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we ask whether it answers us, not who it is
    try:
        with contextlib.closing(http.client.HTTPSConnection(host, port, timeout=timeout, context=context)) as tls:
            return "tls_no_client_auth" if _ping(tls)[0] else "not_docker"
    except (ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError):
        # a TLS listener that wants a client certificate (TLS 1.2: in the handshake; 1.3: at the read)
        return "not_docker" if plain_http else "protected"
    except ConnectionRefusedError:
        return "unreachable"
    except (OSError, http.client.HTTPException):
        return "not_docker"


# --------------------------------------------------------------------------- content trust


def truthy(value: str) -> bool:
    """The Docker CLI's reading of DOCKER_CONTENT_TRUST (Go's strconv.ParseBool true values)."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


def parse_environment_file(text: str) -> dict[str, str]:
    """pam_env's /etc/environment: `KEY=VALUE` lines, `#` comments, optional quotes around the value."""
    out = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if key:
            out[key] = value
    return out


def parse_default_environment(text: str) -> dict[str, str]:
    """`DefaultEnvironment=` of a systemd system.conf (section [Manager]): space-separated, quoted
    assignments; a later line adds to (and overrides) earlier ones, an empty one resets them."""
    out: dict[str, str] = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section != "Manager" or not line.startswith("DefaultEnvironment="):
            continue
        value = line.partition("=")[2]
        if not value.strip():
            out.clear()
            continue
        try:
            words = shlex.split(value)
        except ValueError:
            continue  # unbalanced quotes: systemd ignores the line too
        for word in words:
            key, sep, val = word.partition("=")
            if sep and key:
                out[key] = val
    return out


@dataclass(frozen=True)
class ContentTrust:
    enabled: bool
    where: str  # the file that decided it, or what was looked at


def content_trust(root: Path = Path("/")) -> ContentTrust:
    """Whether services (systemd's default environment) and logins (/etc/environment) get
    `DOCKER_CONTENT_TRUST` set true. systemd's setting decides for services; files are read in the order
    systemd reads them (system.conf, then system.conf.d/*.conf sorted)."""
    systemd_files = [root / "etc/systemd/system.conf",
                     *sorted((root / "etc/systemd/system.conf.d").glob("*.conf"))]
    decided: tuple[str, str] | None = None
    for path in systemd_files:
        value = parse_default_environment(read_or_empty(path)).get("DOCKER_CONTENT_TRUST")
        if value is not None:
            decided = (value, str(path))
    if decided is None:
        env_file = root / "etc/environment"
        value = parse_environment_file(read_or_empty(env_file)).get("DOCKER_CONTENT_TRUST")
        if value is not None:
            decided = (value, str(env_file))
    if decided is None:
        return ContentTrust(False, "DOCKER_CONTENT_TRUST is set neither in systemd's DefaultEnvironment nor in "
                                   "/etc/environment")
    value, where = decided
    if truthy(value):
        return ContentTrust(True, where)
    return ContentTrust(False, f"{where} sets DOCKER_CONTENT_TRUST={value}" if len(value) <= 16
                        else f"{where} sets DOCKER_CONTENT_TRUST to a value that is not true")


# --------------------------------------------------------------------------- static credentials


@dataclass(frozen=True)
class StaticCredential:
    path: str
    key: str  # the auths key as written in the file

    @property
    def location(self) -> str:
        return f"{self.path} auths[{self.key}]"


def static_credentials(doc: object, path: str, managed: Iterable[str]) -> list[StaticCredential]:
    """`auths` entries of one config.json that carry a credential for a managed registry key, matched as
    Docker matches them (`client_config.shadowing_keys`: by host name, an empty `{}` entry carries nothing)."""
    auths = doc.get("auths") if isinstance(doc, Mapping) else None
    if not isinstance(auths, Mapping):
        return []
    matched = {found for key in managed for found in shadowing_keys(doc, key)}  # type: ignore[arg-type]
    return [StaticCredential(path, key) for key in auths if key in matched]


def scan_static_credentials(patterns: Sequence[str], exclude: Iterable[Path],
                            managed: Iterable[str]) -> tuple[list[StaticCredential], list[str]]:
    """Static credentials for `managed` keys in the files `patterns` match, except `exclude` (the configs
    regwarden keeps); and the files that could not be read or parsed, with why."""
    skip = {os.path.realpath(p) for p in exclude}
    keys = list(managed)
    found: list[StaticCredential] = []
    problems: list[str] = []
    paths = sorted({match for pattern in patterns for match in glob.glob(pattern)})
    for path in paths:
        if os.path.realpath(path) in skip:
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                doc = json.load(handle)
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or type(exc).__name__}")
            continue
        except (ValueError, UnicodeDecodeError):
            problems.append(f"{path}: not valid JSON")
            continue
        found.extend(static_credentials(doc, path, keys))
    return found, problems
