"""Client certificates under `certs.d/<host:port>/`, swapped so no reader sees a half-written pair.

The Docker engine reads `certs.d/<host:port>/*.cert` with the matching `*.key` (and `*.crt` CAs) on every
pull and push. A directory updated file by file has instants with a key but no cert, or a cert and a
key from different versions, and every pull in that instant fails. So each version lives in its own,
complete, never-modified directory, and `certs.d/<host:port>` is a symlink that is replaced atomically:

    certs.d/.regwarden/<host:port>/v<kv-version>.<ns>/{client.cert, client.key, ca.crt, ...}
    certs.d/.regwarden/<host:port>/original/      a pre-existing real directory, kept as it was
    certs.d/<host:port> -> .regwarden/<host:port>/v<kv-version>.<ns>

A pre-existing real directory is migrated: its files other than client pairs are carried into every
version, and it is swapped for the symlink in one `renameat2(RENAME_EXCHANGE)`. The current and the
previous version directories are kept for rollback; older ones are pruned a minute after
they stopped being current.

Residual window, by construction of Docker's reader: the engine opens `client.cert` and `client.key`
by path, one after the other; a swap between those two opens (microseconds) gives it a mismatched
pair. Swaps are rare (once per certificate version), so the chance per pull is negligible.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog

from ..credentials.model import CredentialSecret
from ..errors import DockerError
from .client_config import path_lock

__all__ = [
    "CLIENT_CERT",
    "CLIENT_KEY",
    "SERVER_CA",
    "STORE_DIR",
    "CertsDirTarget",
    "CertsSnapshot",
    "carried_files",
    "client_certificate_pem",
    "client_key_pem",
    "prune_candidates",
    "version_dir_name",
]

log = structlog.get_logger(__name__)

CLIENT_CERT, CLIENT_KEY, SERVER_CA = "client.cert", "client.key", "ca.crt"
STORE_DIR = ".regwarden"
ORIGINAL = "original"
KEEP_VERSIONS = 2
PRUNE_GRACE_NS = 60 * 1_000_000_000
_VERSION_DIR = re.compile(r"^v(\d+)\.(\d+)$")
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)

# --------------------------------------------------------------------------- pure core


def client_certificate_pem(secret: CredentialSecret) -> str:
    """The leaf certificate followed by its issuing chain (without repeating the leaf), PEM."""
    if secret.certificate is None:
        raise DockerError(f"credential {secret.name} v{secret.version} is not a client certificate")
    leaf = [m.group(0) for m in _PEM_CERT.finditer(secret.certificate)] or [secret.certificate.strip()]
    chain = [m.group(0) for m in _PEM_CERT.finditer(secret.ca_chain or "")]
    blocks = leaf + [c for c in chain if c not in leaf]
    return "\n".join(blocks) + "\n"


def client_key_pem(secret: CredentialSecret) -> str:
    if secret.private_key is None:
        raise DockerError(f"credential {secret.name} v{secret.version} has no private key")
    return secret.private_key.strip() + "\n"


def version_dir_name(version: int, now_ns: int) -> str:
    return f"v{version}.{now_ns}"


def carried_files(names: Iterable[str], *, writes_ca: bool) -> list[str]:
    """Files of an existing certs.d directory that every new version keeps.

    Client pairs (`*.cert`, `*.key`) are not carried: Docker would offer them alongside ours. `ca.crt`
    is carried only when regwarden does not write its own.
    """
    managed = {CLIENT_CERT, CLIENT_KEY} | ({SERVER_CA} if writes_ca else set())
    return sorted(n for n in names if n not in managed and not n.endswith((".cert", ".key"))
                  and not n.startswith("."))


def prune_candidates(names: Iterable[str], *, keep: Iterable[str], now_ns: int,
                     count: int = KEEP_VERSIONS, grace_ns: int = PRUNE_GRACE_NS) -> list[str]:
    """Version directories to delete: all but the `count` newest and those in `keep`, and only once
    they stopped being current (their successor was made) more than `grace_ns` ago, so a reader that
    resolved the symlink just before a swap never has its directory removed under it."""
    versions = sorted((int(m.group(2)), n) for n in names if (m := _VERSION_DIR.match(n)))
    newest = {n for _, n in versions[-count:]} if count > 0 else set()
    protected = newest | set(keep)
    return [n for i, (_, n) in enumerate(versions)
            if n not in protected and i + 1 < len(versions) and now_ns - versions[i + 1][0] > grace_ns]


# --------------------------------------------------------------------------- the target


@dataclass(frozen=True)
class CertsSnapshot:
    """What `certs.d/<host:port>` was before an apply: nothing, a symlink (its text), or a real dir."""

    state: Literal["absent", "link", "dir"]
    link: str | None = None


class CertsDirTarget:
    """One registry's client certificate in `certs_dir/<host:port>/`."""

    def __init__(self, certs_dir: Path, host_port: str, *, ca_cert: Path | None = None) -> None:
        self.certs_dir = certs_dir
        self.host_port = host_port
        self.ca_cert = ca_cert
        self.path = certs_dir / host_port
        self.store = certs_dir / STORE_DIR / host_port
        self.name = f"{self.path}/"
        self._migrated: Path | None = None  # where a real directory went during this target's apply

    # -- public operations

    def snapshot(self) -> CertsSnapshot:
        if self.path.is_symlink():
            return CertsSnapshot("link", os.readlink(self.path))
        if self.path.exists():
            if not self.path.is_dir():
                raise DockerError(f"{self.path} exists and is not a directory")
            return CertsSnapshot("dir")
        return CertsSnapshot("absent")

    def apply(self, secret: CredentialSecret) -> None:
        cert, key = client_certificate_pem(secret), client_key_pem(secret)
        with path_lock(self.path):
            try:
                self._apply(secret.version, cert, key)
            except OSError as exc:
                raise DockerError(f"cannot write client certificate to {self.path}: "
                                  f"{exc.strerror or exc}") from None

    def restore(self, snapshot: CertsSnapshot, previous: CredentialSecret | None) -> None:
        """Back to `previous` (reusing its kept version directory), or to exactly the snapshot."""
        with path_lock(self.path):
            try:
                if previous is not None:
                    kept = self._version_holding(client_certificate_pem(previous), client_key_pem(previous))
                    if kept is not None:
                        self._point_to(kept)
                    else:
                        self._apply(previous.version, client_certificate_pem(previous), client_key_pem(previous))
                    return
                self._restore_snapshot(snapshot)
            except OSError as exc:
                raise DockerError(f"cannot restore {self.path}: {exc.strerror or exc}") from None

    def holds(self, secret: CredentialSecret) -> bool:
        if not self.path.is_symlink():
            return False
        try:
            current = self.path.resolve(strict=True)
        except OSError:
            return False
        return current.parent == self.store.resolve() and self._dir_holds(
            current, client_certificate_pem(secret), client_key_pem(secret))

    # -- internals

    def _apply(self, version: int, cert: str, key: str) -> None:
        self.store.mkdir(mode=0o700, parents=True, exist_ok=True)
        source = self.path if self.path.is_dir() else None
        vdir = self.store / version_dir_name(version, time.time_ns())
        vdir.mkdir(mode=0o700)
        try:
            if source is not None:
                names = [p.name for p in source.iterdir() if p.is_file()]
                for name in carried_files(names, writes_ca=self.ca_cert is not None):
                    shutil.copy2(source / name, vdir / name)
                    _fsync_file(vdir / name)
            _write(vdir / CLIENT_CERT, cert, 0o644)
            _write(vdir / CLIENT_KEY, key, 0o600)
            if self.ca_cert is not None:
                _write(vdir / SERVER_CA, self.ca_cert.read_text(encoding="utf-8"), 0o644)
            _fsync_dir(vdir)
            _fsync_dir(self.store)
            self._point_to(vdir)
        except BaseException:
            if not (self.path.is_symlink() and self.path.resolve() == vdir.resolve()):
                shutil.rmtree(vdir, ignore_errors=True)
            raise
        log.info("client_certificate_swapped", path=str(self.path), version_dir=vdir.name)
        self._prune()

    def _point_to(self, vdir: Path) -> None:
        """Make `certs.d/<host:port>` point at `vdir` in one atomic step."""
        tmp = self.certs_dir / f".{self.host_port}.regwarden-link"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(os.path.relpath(vdir, self.certs_dir), tmp)
        try:
            if self.path.is_dir() and not self.path.is_symlink():
                self._migrate(tmp)
            else:
                os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                if tmp.is_symlink():
                    tmp.unlink()
        _fsync_dir(self.certs_dir)

    def _migrate(self, link: Path) -> None:
        """Swap a real directory for `link` atomically; keep the directory as `original`."""
        target = self.store / ORIGINAL
        if target.exists():
            target = self.store / f"{ORIGINAL}.{time.time_ns()}"
        try:
            _exchange(link, self.path)  # now `link` names the old directory
            os.rename(link, target)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            log.warning("certs_dir_exchange_unsupported", path=str(self.path))
            os.rename(self.path, target)  # a short instant without the directory
            os.replace(link, self.path)
        self._migrated = target
        log.info("certs_dir_migrated", path=str(self.path), kept_as=str(target))

    def _restore_snapshot(self, snapshot: CertsSnapshot) -> None:
        if snapshot.state == "link" and snapshot.link is not None:
            tmp = self.certs_dir / f".{self.host_port}.regwarden-link"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.symlink(snapshot.link, tmp)
            os.replace(tmp, self.path)
        elif snapshot.state == "dir" and self._migrated is not None:
            if self.path.is_symlink():
                try:
                    _exchange(self._migrated, self.path)
                    os.unlink(self._migrated)
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise
                    os.unlink(self.path)
                    os.rename(self._migrated, self.path)
            self._migrated = None
        elif snapshot.state == "absent" and self.path.is_symlink():
            os.unlink(self.path)
        _fsync_dir(self.certs_dir)

    def _version_holding(self, cert: str, key: str) -> Path | None:
        if not self.store.is_dir():
            return None
        candidates = sorted((p for p in self.store.iterdir() if _VERSION_DIR.match(p.name)),
                            key=lambda p: int(p.name.rsplit(".", 1)[1]), reverse=True)
        return next((p for p in candidates if self._dir_holds(p, cert, key)), None)

    def _dir_holds(self, vdir: Path, cert: str, key: str) -> bool:
        try:
            if (vdir / CLIENT_CERT).read_text() != cert or (vdir / CLIENT_KEY).read_text() != key:
                return False
            if self.ca_cert is not None:
                return (vdir / SERVER_CA).read_text() == self.ca_cert.read_text()
            return True
        except OSError:
            return False

    def _prune(self) -> None:
        keep = {self.path.resolve().name} if self.path.is_symlink() else set()
        try:
            names = [p.name for p in self.store.iterdir()]
        except OSError:
            return
        for name in prune_candidates(names, keep=keep, now_ns=time.time_ns(), grace_ns=PRUNE_GRACE_NS):
            shutil.rmtree(self.store / name, ignore_errors=True)
            log.debug("client_certificate_version_pruned", path=str(self.path), version_dir=name)


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _exchange(a: Path, b: Path) -> None:
    """renameat2(RENAME_EXCHANGE): swap two paths atomically (Linux >= 3.15, glibc >= 2.28)."""
    func = getattr(_libc, "renameat2", None)
    if func is None:
        raise OSError(errno.ENOSYS, "renameat2 not available")
    if func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(b))
