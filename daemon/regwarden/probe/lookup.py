"""Where the probe component gets a credential's current value.

The component takes any `CredentialLookup` (`name -> CredentialSecret | None`). The credentials
manager keeps the applied `CredentialSecret` and is the intended source; until it is wired in,
`docker_config_lookup` reads the credential from the Docker client configs regwarden keeps logged in
(`[docker].client_configs`, their `auths` entries), which hold the applied value.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from ..config import Config
from ..credentials.model import IDENTITY_TOKEN_USER, CredentialSecret

__all__ = ["CredentialLookup", "auth_entry", "docker_config_lookup", "no_credentials"]

CredentialLookup = Callable[[str], CredentialSecret | None]
log = structlog.get_logger(__name__)


def no_credentials(name: str) -> CredentialSecret | None:
    """A lookup that knows no credential: every probe is anonymous."""
    return None


def docker_config_lookup(cfg: Config) -> CredentialLookup:
    """A lookup reading `auths` of `[docker].client_configs` for the registries that use the credential."""
    files = list(cfg.docker.client_configs) if cfg.docker is not None else []
    hosts: dict[str, list[str]] = {}
    for reg in cfg.registries:
        if reg.credential is not None:
            hosts.setdefault(reg.credential, []).append(reg.host_port)

    def lookup(name: str) -> CredentialSecret | None:
        for path in files:
            auths = _read_auths(path)
            for host in hosts.get(name, []):
                entry = auth_entry(auths, host)
                if entry is not None:
                    return _secret(name, entry)
        return None

    return lookup


def auth_entry(auths: Mapping[str, Any], host_port: str) -> Mapping[str, Any] | None:
    """The `auths` entry for a registry, keyed as Docker writes it (`host:port`, with or without scheme)."""
    for key in (host_port, f"https://{host_port}", f"http://{host_port}", f"https://{host_port}/v1/",
                f"https://{host_port}/v2/"):
        entry = auths.get(key)
        if isinstance(entry, Mapping):
            return entry
    return None


def _read_auths(path: Path) -> Mapping[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("docker_config_unreadable", path=str(path), error=type(exc).__name__)
        return {}
    auths = data.get("auths") if isinstance(data, dict) else None
    return auths if isinstance(auths, dict) else {}


def _secret(name: str, entry: Mapping[str, Any]) -> CredentialSecret | None:
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        return CredentialSecret(name, 0, username=IDENTITY_TOKEN_USER, password=token)
    encoded = entry.get("auth")
    if not isinstance(encoded, str) or not encoded:
        return None
    try:
        username, sep, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not sep or not username or not password:
        return None
    return CredentialSecret(name, 0, username=username, password=password)
