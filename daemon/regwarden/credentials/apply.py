"""Apply a verified credential version to every Docker target, all or nothing.

The targets of a credential are those of every registry whose `credential` names it: for a
username/password (or identity token) each `[docker].client_configs` file, for a client certificate the
registry's `certs.d/<host:port>/`. Each target is snapshotted before anything is written; when one
fails, every target already touched (the failed one included) is put back on `previous`, or, with no
previous version, exactly to what its snapshot saw. Nothing is half-applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from ..config import Config, CredentialConfig
from ..docker.certs import CertsDirTarget
from ..docker.client_config import ConfigJsonTarget, registry_key
from ..errors import CredentialError, DockerError
from .model import CredentialSecret

__all__ = ["ApplyResult", "Target", "apply_credential", "build_targets", "targets_hold", "targets_to_restore"]

log = structlog.get_logger(__name__)


class Target(Protocol):
    """A place Docker reads a credential from; snapshots are opaque to everyone but the target."""

    name: str

    def snapshot(self) -> Any: ...
    def apply(self, secret: CredentialSecret) -> None: ...
    def restore(self, snapshot: Any, previous: CredentialSecret | None) -> None: ...
    def holds(self, secret: CredentialSecret) -> bool: ...


@dataclass(frozen=True)
class ApplyResult:
    """A successful apply: which credential version went to which targets (by name, in order)."""

    credential: str
    version: int
    targets: tuple[str, ...]


def build_targets(cfg: Config, credential: CredentialConfig, kind: str) -> list[Target]:
    """The Docker targets of `credential` for a secret of `kind` ("password" or "certificate")."""
    if cfg.docker is None:
        raise CredentialError(f"credential {credential.name}: no [docker] table says where to apply it")
    docker = cfg.docker
    targets: list[Target] = []
    for registry in cfg.registries:
        if registry.credential != credential.name:
            continue
        if kind == "certificate":
            targets.append(CertsDirTarget(docker.certs_dir, registry.host_port, ca_cert=registry.ca_cert))
        else:
            key = registry_key(registry.url)
            timeout = docker.timeout.total_seconds()
            targets.extend(ConfigJsonTarget(path, key, timeout=timeout) for path in docker.client_configs)
    return targets


def targets_to_restore(count: int, failed: int) -> list[int]:
    """Indexes to roll back after target `failed` of `count` failed: every touched one, last first."""
    return list(range(min(failed, count - 1), -1, -1))


def apply_credential(cfg: Config, credential: CredentialConfig, secret: CredentialSecret, *,
                     previous: CredentialSecret | None) -> ApplyResult:
    """Write `secret` to every target of `credential`; on any failure restore all and raise."""
    bound = log.bind(credential=credential.name, version=secret.version)
    targets = build_targets(cfg, credential, secret.kind)
    try:
        snapshots = [t.snapshot() for t in targets]
    except DockerError as exc:
        raise CredentialError(f"credential {credential.name} v{secret.version}: cannot read the current "
                              f"state of the targets, nothing written: {exc}") from None
    for index, target in enumerate(targets):
        try:
            target.apply(secret)
        except DockerError as exc:
            bound.error("credential_apply_failed", target=target.name, error=str(exc))
            restored, failures = _roll_back(targets, snapshots, index, previous)
            to = f"v{previous.version}" if previous is not None else "their state before the apply"
            message = (f"credential {credential.name} v{secret.version}: apply failed at {target.name}: {exc};"
                       f" rolled back {len(restored)} target(s) to {to}")
            if failures:
                message += "; could not restore " + "; ".join(failures)
            bound.warning("credential_rolled_back", restored=restored, unrestored=len(failures))
            raise CredentialError(message) from None
    names = tuple(t.name for t in targets)
    bound.info("credential_applied", targets=list(names))
    return ApplyResult(credential.name, secret.version, names)


def targets_hold(cfg: Config, credential: CredentialConfig, secret: CredentialSecret) -> bool:
    """True if every target still holds `secret` (a cheap check after a restart); False if unsure."""
    try:
        targets = build_targets(cfg, credential, secret.kind)
    except CredentialError:
        return False
    return all(_holds(t, secret) for t in targets)


def _roll_back(targets: list[Target], snapshots: list[Any], failed: int,
               previous: CredentialSecret | None) -> tuple[list[str], list[str]]:
    restored: list[str] = []
    failures: list[str] = []
    for index in targets_to_restore(len(targets), failed):
        try:
            # a target whose write failed atomically may still hold `previous`: nothing to write then
            if previous is None or not _holds(targets[index], previous):
                targets[index].restore(snapshots[index], previous)
            restored.append(targets[index].name)
        except DockerError as exc:
            failures.append(f"{targets[index].name}: {exc}")
    return restored, failures



def _holds(target: Target, secret: CredentialSecret) -> bool:
    try:
        return target.holds(secret)
    except DockerError:
        return False
