"""Docker client `config.json` files as credential targets.

Pure core: naming the `auths` key the way Docker does, building the entry, merging it into the document
(every other key, entry and key order untouched), finding shadowing entries. Edges: reading and writing
the file atomically (temp file in the same directory, fsync, rename, fsync directory; 0600; owner and
group kept), and the `docker-credential-<name>` helper protocol when `credsStore`/`credHelpers` says so.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from ..credentials.model import CredentialSecret
from ..errors import DockerError
from ..redact import scrub_text

__all__ = [
    "DOCKER_HUB_KEY",
    "AuthSnapshot",
    "ConfigJsonTarget",
    "CredentialHelper",
    "auth_entry",
    "entry_holds",
    "helper_for",
    "merge_auth",
    "read_config",
    "registry_key",
    "remove_auths",
    "shadowing_keys",
    "write_config",
]

log = structlog.get_logger(__name__)

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
_CREDENTIAL_FIELDS = ("auth", "identitytoken", "username", "password", "registrytoken")
_HELPER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NOT_FOUND = "credentials not found"

Doc = dict[str, Any]

# --------------------------------------------------------------------------- pure core


def registry_key(url: str) -> str:
    """The `auths` key Docker uses for a registry URL.

    Docker Hub is `https://index.docker.io/v1/`; any other registry is `host` or `host:port` exactly as
    the image reference names it (Docker's ConvertToHostname: scheme and path dropped, port kept only
    when written).
    """
    parts = urlsplit(url if "://" in url else f"//{url}")
    host = parts.hostname or ""
    if host in _HUB_HOSTS:
        return DOCKER_HUB_KEY
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port else host


def hostname_of_key(key: str) -> str:
    """docker-py/Docker CLI `ConvertToHostname`: `https://h:5000/v1/` -> `h:5000`."""
    return key.replace("http://", "").replace("https://", "").split("/", 1)[0]


def auth_entry(secret: CredentialSecret) -> dict[str, str]:
    """The `auths` entry for a password credential; an identity token is stored as Docker does."""
    if secret.username is None or secret.password is None:
        raise DockerError(f"credential {secret.name} v{secret.version} is not a username/password credential")
    if secret.is_identity_token:
        return {"identitytoken": secret.password}
    raw = f"{secret.username}:{secret.password}".encode()
    return {"auth": base64.b64encode(raw).decode("ascii")}


def entry_holds(entry: object, secret: CredentialSecret) -> bool:
    """True if an `auths` entry carries exactly this credential."""
    if not isinstance(entry, Mapping):
        return False
    if secret.is_identity_token:
        return entry.get("identitytoken") == secret.password
    if "identitytoken" in entry:
        return False  # docker-py prefers an identity token over `auth`
    try:
        decoded = base64.b64decode(str(entry.get("auth", "")), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return False
    return decoded == f"{secret.username}:{secret.password}"


def merge_auth(doc: Mapping[str, Any], key: str, entry: Mapping[str, Any] | None) -> Doc:
    """A copy of `doc` with `auths[key]` set to `entry` (None: removed); all else untouched.

    An existing entry is replaced in place (key order kept); a new one is appended.
    """
    out = dict(doc)
    auths = dict(out.get("auths") or {})
    if entry is None:
        auths.pop(key, None)
    else:
        auths[key] = dict(entry)
    out["auths"] = auths
    return out


def shadowing_keys(doc: Mapping[str, Any], key: str) -> list[str]:
    """`auths` keys holding credentials that Docker would use for `key` instead of a helper's.

    Docker matches `auths` keys by hostname (`https://h:5000` shadows `h:5000`); an empty entry `{}`
    (what `docker login` leaves next to a credential store) carries nothing and does not shadow.
    """
    auths = doc.get("auths") or {}
    wanted = hostname_of_key(key)
    return [
        k for k, v in auths.items()
        if (k == key or hostname_of_key(k) == wanted)
        and isinstance(v, Mapping) and any(v.get(f) for f in _CREDENTIAL_FIELDS)
    ]


def remove_auths(doc: Mapping[str, Any], keys: list[str]) -> Doc:
    out = dict(doc)
    out["auths"] = {k: v for k, v in (doc.get("auths") or {}).items() if k not in keys}
    return out


def helper_for(doc: Mapping[str, Any], key: str) -> str | None:
    """The credential helper Docker would use for `key`: `credHelpers[key]`, else `credsStore`."""
    helpers = doc.get("credHelpers") or {}
    name = helpers.get(key) if isinstance(helpers, Mapping) else None
    if not name and key == DOCKER_HUB_KEY and isinstance(helpers, Mapping):
        name = helpers.get("docker.io") or helpers.get("index.docker.io")
    name = name or doc.get("credsStore") or None
    if name is None:
        return None
    if not isinstance(name, str) or not _HELPER_NAME.match(name):
        raise DockerError(f"invalid credential helper name {name!r} for {key}")
    return name


# --------------------------------------------------------------------------- the file


_path_locks: dict[str, threading.Lock] = {}
_path_locks_guard = threading.Lock()


def path_lock(path: Path) -> threading.Lock:
    """One lock per config file, so concurrent applies of two credentials never lose an update."""
    with _path_locks_guard:
        return _path_locks.setdefault(str(path.absolute()), threading.Lock())


def read_config(path: Path) -> Doc:
    """The parsed document; `{}` if the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise DockerError(f"cannot read Docker client config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DockerError(f"Docker client config {path} is not UTF-8") from None
    if not text.strip():
        return {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DockerError(f"Docker client config {path} is not valid JSON (line {exc.lineno}); "
                          f"not touching it") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("auths", {}), dict):
        raise DockerError(f"Docker client config {path}: expected an object with an 'auths' object")
    return doc


def write_config(path: Path, doc: Mapping[str, Any]) -> None:
    """Write atomically: temp file in the same directory, 0600, owner kept, fsync, rename, fsync dir.

    A config.json that is a symlink stays one: the file it points to is replaced.
    """
    path = Path(os.path.realpath(path))
    directory = path.parent
    try:
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
        try:
            st = path.stat()
            owner = (st.st_uid, st.st_gid)
        except FileNotFoundError:
            dst = directory.stat()
            owner = (dst.st_uid, dst.st_gid)
        data = (json.dumps(doc, indent="\t", ensure_ascii=False) + "\n").encode()
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)
                if (os.geteuid() == 0) and owner != (os.geteuid(), os.getegid()):
                    try:
                        os.fchown(handle.fileno(), *owner)
                    except PermissionError:
                        raise DockerError(
                            f"cannot write Docker client config {path}: it belongs to uid {owner[0]}, and "
                            f"keeping that owner needs CAP_CHOWN, which the shipped unit does not grant: "
                            f"add CapabilityBoundingSet=CAP_CHOWN and SystemCallFilter=@chown in a drop-in"
                        ) from None
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise DockerError(f"cannot write Docker client config {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- credential helpers


class CredentialHelper:
    """`docker-credential-<name>` through the credential-helper protocol (store/get/erase)."""

    def __init__(self, name: str, *, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        binary = shutil.which(f"docker-credential-{name}")
        if binary is None:
            raise DockerError(f"credential helper docker-credential-{name} not found on PATH")
        self.binary = binary

    def store(self, server: str, username: str, secret: str) -> None:
        payload = json.dumps({"ServerURL": server, "Username": username, "Secret": secret})
        self._run("store", payload)

    def get(self, server: str) -> tuple[str, str] | None:
        """(username, secret), or None when the helper has nothing for `server`."""
        out = self._run("get", server, missing_ok=True)
        if out is None:
            return None
        try:
            data = json.loads(out)
            return str(data["Username"]), str(data["Secret"])
        except (ValueError, KeyError, TypeError):
            raise DockerError(f"credential helper {self.name}: 'get' answered something other than "
                              f"{{Username, Secret}}") from None

    def erase(self, server: str) -> None:
        self._run("erase", server, missing_ok=True)

    def _run(self, action: str, stdin: str, *, missing_ok: bool = False) -> str | None:
        try:
            done = subprocess.run([self.binary, action], input=stdin.encode(), capture_output=True,
                                  timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise DockerError(f"credential helper {self.name} '{action}' took longer than {self.timeout:g}s") from None
        except OSError as exc:
            raise DockerError(f"cannot run credential helper {self.name}: {exc.strerror}") from None
        out = done.stdout.decode(errors="replace")
        if done.returncode == 0:
            return out
        message = scrub_text((out.strip() or done.stderr.decode(errors="replace").strip())[:300])
        if missing_ok and _NOT_FOUND in message.lower():
            return None
        raise DockerError(f"credential helper {self.name} '{action}' failed (exit {done.returncode}): {message}")


# --------------------------------------------------------------------------- the target


@dataclass(frozen=True)
class AuthSnapshot:
    """What one config.json held for one registry before an apply (secret values: never printed)."""

    helper: str | None
    entry: Mapping[str, Any] | None  # file mode: the `auths[key]` entry (None: absent)
    stored: tuple[str, str] | None  # helper mode: what the helper returned for `get`
    shadows: Mapping[str, Any]  # helper mode: shadowing `auths` entries the apply removes

    def __repr__(self) -> str:
        return f"AuthSnapshot(helper={self.helper!r}, has_entry={self.entry is not None}, " \
               f"has_stored={self.stored is not None}, shadows={sorted(self.shadows)})"


class ConfigJsonTarget:
    """One registry's credential in one Docker client config.json (directly or via its helper)."""

    def __init__(self, path: Path, key: str, *, timeout: float) -> None:
        self.path = path
        self.key = key
        self.timeout = timeout
        self.name = f"{path} [auths {key}]"

    def snapshot(self) -> AuthSnapshot:
        with path_lock(self.path):
            doc = read_config(self.path)
            helper = helper_for(doc, self.key)
            if helper is None:
                return AuthSnapshot(None, (doc.get("auths") or {}).get(self.key), None, {})
            stored = CredentialHelper(helper, timeout=self.timeout).get(self.key)
            auths = doc.get("auths") or {}
            return AuthSnapshot(helper, None, stored, {k: auths[k] for k in shadowing_keys(doc, self.key)})

    def apply(self, secret: CredentialSecret) -> None:
        entry = auth_entry(secret)  # validates the kind before anything is touched
        with path_lock(self.path):
            doc = read_config(self.path)
            helper = helper_for(doc, self.key)
            if helper is None:
                write_config(self.path, merge_auth(doc, self.key, entry))
                return
            assert secret.username is not None and secret.password is not None
            CredentialHelper(helper, timeout=self.timeout).store(self.key, secret.username, secret.password)
            shadows = shadowing_keys(doc, self.key)
            if shadows:
                write_config(self.path, remove_auths(doc, shadows))
                log.info("docker_config_shadow_removed", path=str(self.path), registry=self.key, keys=shadows)

    def restore(self, snapshot: AuthSnapshot, previous: CredentialSecret | None) -> None:
        """Back to `previous` when known; else exactly what the snapshot saw (entry, helper value, shadows)."""
        if previous is not None:
            self.apply(previous)
            return
        with path_lock(self.path):
            doc = read_config(self.path)
            if snapshot.helper is None:
                write_config(self.path, merge_auth(doc, self.key, snapshot.entry))
                return
            helper = CredentialHelper(snapshot.helper, timeout=self.timeout)
            if snapshot.stored is None:
                helper.erase(self.key)
            else:
                helper.store(self.key, *snapshot.stored)
            if snapshot.shadows:
                auths = dict(doc.get("auths") or {})
                auths.update(snapshot.shadows)
                write_config(self.path, {**doc, "auths": auths})

    def holds(self, secret: CredentialSecret) -> bool:
        with path_lock(self.path):
            doc = read_config(self.path)
            helper = helper_for(doc, self.key)
            if helper is None:
                return entry_holds((doc.get("auths") or {}).get(self.key), secret)
            if shadowing_keys(doc, self.key):
                return False
            stored = CredentialHelper(helper, timeout=self.timeout).get(self.key)
            return stored == (secret.username, secret.password)
