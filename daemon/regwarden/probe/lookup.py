"""Where the probe gets a credential's current value.

The component takes any `CredentialLookup` (`name -> CredentialSecret | None`). In the daemon the
first answer comes from the credentials component: the version it verified and applied, held in
memory. Until a version is applied (the first seconds after a start or reload), and in `regwarden
probe`, the answer is what Docker itself would present to the registry (`docker_lookup`):

- for a credential whose provider issues certificates (`vault-pki`): the client pair in
  `[docker].certs_dir/<host:port>/` (`*.cert` with its `*.key`; `client.cert` first);
- for any other: in each of `[docker].client_configs`, what the credential helper Docker would ask
  (`credHelpers[host:port]`, else `credsStore`) answers, or, with no helper named, the file's `auths`
  entry. As for Docker, a helper that has nothing (or fails) means no credential, whatever `auths`
  holds. Found nowhere: a client pair in certs.d (a KV credential may hold a certificate).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from ..config import Config, RegistryConfig
from ..credentials.model import IDENTITY_TOKEN_USER, CredentialSecret
from ..docker.client_config import CredentialHelper, helper_for, read_config, registry_key
from ..errors import DockerError

__all__ = ["CredentialLookup", "auth_entry", "docker_lookup", "first_of", "no_credentials"]

CredentialLookup = Callable[[str], CredentialSecret | None]
log = structlog.get_logger(__name__)

HELPER_TIMEOUT = 5.0
_helper_failures: dict[tuple[str, str], str] = {}  # (config file, registry) -> last helper error logged


def no_credentials(name: str) -> CredentialSecret | None:
    """A lookup that knows no credential: every probe is anonymous."""
    return None


def first_of(*lookups: CredentialLookup) -> CredentialLookup:
    """The first answer of `lookups`, asked in order."""

    def lookup(name: str) -> CredentialSecret | None:
        for each in lookups:
            secret = each(name)
            if secret is not None:
                return secret
        return None

    return lookup


def docker_lookup(cfg: Config, *, helper_timeout: float = HELPER_TIMEOUT) -> CredentialLookup:
    """A lookup answering what Docker would present to the registries that use the credential."""
    files = list(cfg.docker.client_configs) if cfg.docker is not None else []
    certs_dir = cfg.docker.certs_dir if cfg.docker is not None else None
    issues_certificates = {c.name for c in cfg.credentials if c.provider == "vault-pki"}
    registries: dict[str, list[RegistryConfig]] = {}
    for reg in cfg.registries:
        if reg.credential is not None:
            registries.setdefault(reg.credential, []).append(reg)

    def lookup(name: str) -> CredentialSecret | None:
        for reg in registries.get(name, []):
            if name not in issues_certificates:
                for path in files:
                    secret = _config_secret(name, path, reg, helper_timeout)
                    if secret is not None:
                        return secret
            secret = _certs_dir_secret(name, certs_dir / reg.host_port) if certs_dir is not None else None
            if secret is not None:
                return secret
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


def _config_secret(name: str, path: Path, reg: RegistryConfig, helper_timeout: float) -> CredentialSecret | None:
    try:
        doc = read_config(path)
    except DockerError as exc:
        log.warning("docker_config_unreadable", path=str(path), error=str(exc))
        return None
    key = registry_key(reg.url)
    try:
        helper = helper_for(doc, key)
        if helper is not None:  # Docker asks the helper only: nothing there means no credential
            stored = CredentialHelper(helper, timeout=helper_timeout).get(key)
            _helper_failures.pop((str(path), reg.name), None)
            if stored is None or not stored[0] or not stored[1]:
                return None
            return CredentialSecret(name, 0, username=stored[0], password=stored[1])
    except DockerError as exc:
        if _helper_failures.get((str(path), reg.name)) != str(exc):  # logged once, not every probe
            _helper_failures[(str(path), reg.name)] = str(exc)
            log.warning("probe_credential_helper_failed", registry=reg.name, path=str(path), error=str(exc))
        return None
    auths = doc.get("auths")
    entry = auth_entry(auths, reg.host_port) if isinstance(auths, Mapping) else None
    return _auths_secret(name, entry) if entry is not None else None


def _auths_secret(name: str, entry: Mapping[str, Any]) -> CredentialSecret | None:
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


def _certs_dir_secret(name: str, directory: Path) -> CredentialSecret | None:
    """The client pair Docker would load from `directory` (`client.cert` first, as regwarden names it)."""
    try:
        real = Path(os.path.realpath(directory))  # once: a swap while reading cannot mix two versions
        names = sorted(p.name for p in real.iterdir())
    except OSError:
        return None
    certs = sorted((n for n in names if n.endswith(".cert") and f"{n[:-5]}.key" in names),
                   key=lambda n: (n != "client.cert", n))
    if not certs:
        return None
    try:
        certificate = (real / certs[0]).read_text(encoding="utf-8")
        private_key = (real / f"{certs[0][:-5]}.key").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("probe_client_certificate_unreadable", path=str(real), error=type(exc).__name__)
        return None
    return CredentialSecret(name, 0, certificate=certificate, private_key=private_key)
