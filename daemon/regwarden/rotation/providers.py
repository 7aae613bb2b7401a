"""Credential providers: what creates and revokes a credential at its source.

Found through the entry-point group `regwarden.providers` (built-ins are registered the same way).
A provider works with non-secret references (`ref`: a username, a certificate serial, an id the
user's command returns) so that the rotation journal never holds a secret.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

import structlog

from ..config import CredentialConfig
from ..credentials.model import CredentialSecret
from ..errors import ProviderError, VaultError
from ..redact import register, scrub_text

__all__ = ["CommandProvider", "HtpasswdProvider", "Issued", "Provider", "VaultPkiProvider", "load_provider"]

log = structlog.get_logger(__name__)
GROUP = "regwarden.providers"


@dataclass(frozen=True, repr=False)
class Issued:
    """A freshly created credential: `data` is the KV payload to publish (secret), `ref` its handle."""

    data: dict[str, str]
    ref: str
    expires_at: datetime | None = None

    def __repr__(self) -> str:
        return f"Issued(ref={self.ref!r})"


class Provider(Protocol):
    """Creates and revokes one credential. `revoke` must be idempotent (revoking twice is fine)."""

    def check(self) -> None: ...

    def ref_of(self, secret: CredentialSecret) -> str | None: ...

    def plan(self, current: CredentialSecret | None) -> str | None:
        """The ref `create` will produce, when it can be known beforehand (for crash recovery)."""

    def create(self, current: CredentialSecret | None) -> Issued: ...

    def revoke(self, ref: str) -> None: ...


@cache
def _registered() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_provider(credential: CredentialConfig, vault: Any) -> Provider:
    """The provider named by `credential.provider`, built for that credential."""
    ep = _registered().get(credential.provider)
    if ep is None:
        raise ProviderError(f"credential {credential.name}: no provider {credential.provider!r} is installed"
                            f" (known: {', '.join(sorted(_registered())) or 'none'})")
    try:
        cls = ep.load()
    except Exception as exc:
        raise ProviderError(f"provider {credential.provider!r} failed to load: {type(exc).__name__}") from None
    provider: Provider = cls(credential, vault)
    return provider


# --------------------------------------------------------------------------- htpasswd


def htpasswd_lines_with(lines: list[str], user: str, entry: str | None) -> list[str]:
    """The htpasswd lines with `user`'s line replaced by `entry` (or removed when None); others kept."""
    out = [line for line in lines if line.split(":", 1)[0] != user]
    if entry is not None:
        out.append(entry)
    return out


def next_slot(usernames: list[str], current: str | None) -> str:
    """The username to create: the slot that is not in use (the first one when none is)."""
    return usernames[1] if current == usernames[0] else usernames[0]


def write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """Temp file in the same directory, fsync, rename, fsync the directory; keeps the owner."""
    try:
        st = path.stat()
        owner: tuple[int, int] | None = (st.st_uid, st.st_gid)
        mode = st.st_mode & 0o777
    except FileNotFoundError:
        owner = None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if owner is not None and owner != (os.geteuid(), os.getegid()):
            try:
                os.chown(tmp, *owner)
            except PermissionError:
                raise PermissionError(
                    f"{path} belongs to uid {owner[0]} gid {owner[1]}; keeping that owner needs CAP_CHOWN, "
                    f"which the shipped unit does not grant: add CapabilityBoundingSet=CAP_CHOWN and "
                    f"SystemCallFilter=@chown in a drop-in, or make the file root's") from None
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class HtpasswdProvider:
    """A self-hosted distribution registry's htpasswd file with two alternating users.

    Each rotation writes a fresh bcrypt entry for the slot not in use; after the overlap the old
    slot's entry is removed, so at most the two configured users ever exist.
    """

    def __init__(self, credential: CredentialConfig, vault: Any = None) -> None:
        assert credential.htpasswd is not None
        self._cfg = credential.htpasswd
        self._name = credential.name

    def check(self) -> None:
        if not self._cfg.file.parent.is_dir():
            raise ProviderError(f"credential {self._name}: directory {self._cfg.file.parent} does not exist")
        try:
            import bcrypt  # noqa: F401
        except ImportError:
            raise ProviderError("the htpasswd provider needs bcrypt: pip install 'regwarden[crypto]'") from None

    def ref_of(self, secret: CredentialSecret) -> str | None:
        return secret.username

    def plan(self, current: CredentialSecret | None) -> str | None:
        return next_slot(self._cfg.usernames, current.username if current else None)

    def create(self, current: CredentialSecret | None) -> Issued:
        import bcrypt

        user = next_slot(self._cfg.usernames, current.username if current else None)
        password = secrets.token_urlsafe(32)
        register(password)
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(self._cfg.bcrypt_cost)).decode()
        self._rewrite(user, f"{user}:{hashed}")
        return Issued({"username": user, "password": password}, ref=user)

    def revoke(self, ref: str) -> None:
        if ref not in self._cfg.usernames:
            raise ProviderError(f"credential {self._name}: refusing to remove {ref!r}, not one of its usernames")
        self._rewrite(ref, None)

    def _rewrite(self, user: str, entry: str | None) -> None:
        try:
            lines = self._cfg.file.read_text(encoding="utf-8").splitlines() if self._cfg.file.exists() else []
            kept = [line for line in htpasswd_lines_with(lines, user, entry) if line.strip()]
            write_atomically(self._cfg.file, "".join(f"{line}\n" for line in kept), 0o640)
        except OSError as exc:
            raise ProviderError(
                f"credential {self._name}: cannot rewrite {self._cfg.file}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- vault-pki


def vault_serial(certificate_pem: str) -> str:
    """A certificate's serial in Vault's notation: colon-separated lower-case hex bytes."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    raw = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8 or 1, "big")
    return ":".join(f"{b:02x}" for b in raw)


class VaultPkiProvider:
    """X.509 client certificates from a Vault PKI role; the old serial is revoked after the overlap."""

    def __init__(self, credential: CredentialConfig, vault: Any) -> None:
        assert credential.pki is not None
        self._cfg = credential.pki
        self._name = credential.name
        self._vault = vault

    def check(self) -> None:
        if self._vault is None:
            raise ProviderError(f"credential {self._name}: vault-pki needs a [vault] table")

    def ref_of(self, secret: CredentialSecret) -> str | None:
        return vault_serial(secret.certificate) if secret.certificate else None

    def plan(self, current: CredentialSecret | None) -> str | None:
        return None  # Vault picks the serial

    def create(self, current: CredentialSecret | None) -> Issued:
        try:
            answer = self._vault.pki_issue(self._cfg.mount, self._cfg.role, self._cfg.common_name,
                                           int(self._cfg.ttl.total_seconds()))
        except VaultError as exc:
            raise ProviderError(f"credential {self._name}: PKI issue failed: {exc}") from None
        chain = answer.get("ca_chain") or [answer.get("issuing_ca", "")]
        data = {"certificate": answer["certificate"], "private_key": answer["private_key"],
                "ca_chain": "\n".join(c for c in chain if c)}
        register(data["private_key"])
        expires = datetime.fromtimestamp(int(answer["expiration"]), UTC) if answer.get("expiration") else None
        return Issued(data, ref=str(answer["serial_number"]), expires_at=expires)

    def revoke(self, ref: str) -> None:
        try:
            self._vault.pki_revoke(self._cfg.mount, ref)
        except VaultError as exc:
            raise ProviderError(f"credential {self._name}: PKI revoke of {ref} failed: {exc}") from None


# --------------------------------------------------------------------------- command


def command_request(action: str, credential: str, *, ref: str | None = None,
                    current: CredentialSecret | None = None) -> dict[str, Any]:
    """The JSON a `command` provider receives on stdin (documented in the README)."""
    request: dict[str, Any] = {"version": 1, "action": action, "credential": credential}
    if ref is not None:
        request["ref"] = ref
    if current is not None:
        request["current"] = {"version": current.version, "username": current.username}
    return request


def parse_command_answer(raw: bytes, credential: str) -> Issued:
    """Validate a `create` answer: `{"username","password"}` or `{"certificate","private_key"}`, + "ref"."""
    try:
        answer = json.loads(raw)
    except ValueError:
        raise ProviderError(f"credential {credential}: command printed no valid JSON object") from None
    if not isinstance(answer, Mapping):
        raise ProviderError(f"credential {credential}: command answer is not a JSON object")
    try:
        secret = CredentialSecret.from_kv(credential, 0, {k: v for k, v in answer.items() if k != "ref"})
    except Exception as exc:
        raise ProviderError(f"credential {credential}: command answer: {exc}") from None
    data = {k: str(v) for k, v in answer.items() if k in ("username", "password", "certificate", "private_key",
                                                           "ca_chain") and v}
    ref = answer.get("ref") or secret.username
    if not isinstance(ref, str) or not ref:
        raise ProviderError(f"credential {credential}: command answer needs a \"ref\" (string) for revocation")
    return Issued(data, ref=ref)


class CommandProvider:
    """Any other registry (Harbor robots, GitLab deploy tokens, Docker Hub tokens): a user executable
    called with JSON on stdin, answering JSON on stdout, within a timeout."""

    def __init__(self, credential: CredentialConfig, vault: Any = None) -> None:
        assert credential.command is not None
        self._cfg = credential.command
        self._name = credential.name

    def check(self) -> None:
        if not os.access(self._cfg.path, os.X_OK):
            raise ProviderError(f"credential {self._name}: {self._cfg.path} is not an executable file")

    def ref_of(self, secret: CredentialSecret) -> str | None:
        return secret.metadata.get("regwarden_ref") or secret.username

    def plan(self, current: CredentialSecret | None) -> str | None:
        return None

    def create(self, current: CredentialSecret | None) -> Issued:
        out = self._run(command_request("create", self._name, current=current))
        return parse_command_answer(out, self._name)

    def revoke(self, ref: str) -> None:
        self._run(command_request("revoke", self._name, ref=ref))

    def _run(self, request: dict[str, Any]) -> bytes:
        timeout = self._cfg.timeout.total_seconds()
        try:
            done = subprocess.run([str(self._cfg.path), *self._cfg.args], input=json.dumps(request).encode(),
                                  capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ProviderError(f"credential {self._name}: command {request['action']} timed out after"
                                f" {timeout:g}s") from None
        except OSError as exc:
            raise ProviderError(f"credential {self._name}: cannot run {self._cfg.path}: {exc.strerror}") from None
        if done.returncode != 0:
            tail = scrub_text(done.stderr.decode(errors="replace").strip()[-300:])
            raise ProviderError(f"credential {self._name}: command {request['action']} exited {done.returncode}"
                                + (f": {tail}" if tail else ""))
        return done.stdout
