"""Docker client config.json: key naming, entry form, merge rules, helpers, atomic writes."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from regwarden.credentials.model import CredentialSecret
from regwarden.docker.client_config import (
    DOCKER_HUB_KEY,
    ConfigJsonTarget,
    auth_entry,
    entry_holds,
    helper_for,
    merge_auth,
    read_config,
    registry_key,
    shadowing_keys,
    write_config,
)
from regwarden.errors import DockerError

SECRET = CredentialSecret("ci", 4, username="ci-a", password="pw-0123456789")
TOKEN = CredentialSecret("hub", 2, username="<token>", password="identity-token-abcdef")


@pytest.mark.parametrize(("url", "key"), [
    ("https://registry.example.internal:5000", "registry.example.internal:5000"),
    ("https://registry.example.internal", "registry.example.internal"),
    ("http://127.0.0.1:5000/", "127.0.0.1:5000"),
    ("https://Registry.Example.Internal:443", "registry.example.internal:443"),
    ("https://index.docker.io", DOCKER_HUB_KEY),
    ("https://registry-1.docker.io", DOCKER_HUB_KEY),
    ("docker.io", DOCKER_HUB_KEY),
    ("https://[fd00::1]:5000", "[fd00::1]:5000"),
])
def test_registry_key(url: str, key: str) -> None:
    """The auths key is Docker's: hub's v1 URL, otherwise host[:port] as written."""
    assert registry_key(url) == key


@pytest.mark.parametrize(("secret", "entry"), [
    (SECRET, {"auth": base64.b64encode(b"ci-a:pw-0123456789").decode()}),
    (TOKEN, {"identitytoken": "identity-token-abcdef"}),
])
def test_auth_entry(secret: CredentialSecret, entry: dict[str, str]) -> None:
    """Passwords become base64 user:pass in `auth`; identity tokens go to `identitytoken` as Docker stores them."""
    assert auth_entry(secret) == entry


@pytest.mark.parametrize(("entry", "holds"), [
    ({"auth": base64.b64encode(b"ci-a:pw-0123456789").decode()}, True),
    ({"auth": base64.b64encode(b"ci-a:old").decode()}, False),
    ({"auth": base64.b64encode(b"ci-a:pw-0123456789").decode(), "identitytoken": "x"}, False),
    ({"auth": "not base64!"}, False),
    ({}, False),
    (None, False),
])
def test_entry_holds(entry: Any, holds: bool) -> None:
    """An entry holds the credential only if Docker would send exactly it."""
    assert entry_holds(entry, SECRET) is holds


def test_merge_keeps_every_other_key_and_order() -> None:
    """Merging replaces one entry in place and leaves other entries, unknown keys and key order alone."""
    doc = {"psFormat": "table", "auths": {"a:1": {"auth": "eA=="}, "reg:5000": {"auth": "old", "email": "x"},
                                           "z:9": {}}, "x-unknown": {"nested": [1, 2]}, "credHelpers": {}}
    merged = merge_auth(doc, "reg:5000", {"auth": "new"})
    assert list(merged) == list(doc)
    assert list(merged["auths"]) == ["a:1", "reg:5000", "z:9"]
    assert merged["auths"]["reg:5000"] == {"auth": "new"}
    assert merged["x-unknown"] == {"nested": [1, 2]} and merged["psFormat"] == "table"
    assert doc["auths"]["reg:5000"] == {"auth": "old", "email": "x"}  # input untouched


def test_merge_none_removes_only_that_entry() -> None:
    """Merging None removes the entry and nothing else."""
    assert merge_auth({"auths": {"a": {}, "b": {"auth": "x"}}}, "b", None) == {"auths": {"a": {}}}


@pytest.mark.parametrize(("auths", "shadows"), [
    ({"reg:5000": {"auth": "x"}}, ["reg:5000"]),
    ({"https://reg:5000": {"auth": "x"}, "reg:5000": {}}, ["https://reg:5000"]),
    ({"reg:5000": {"identitytoken": "t"}, "other:1": {"auth": "y"}}, ["reg:5000"]),
    ({"reg:5000": {}}, []),
    ({"reg": {"auth": "x"}}, []),
])
def test_shadowing_keys(auths: dict[str, Any], shadows: list[str]) -> None:
    """Entries carrying credentials for the same hostname shadow a helper; empty `{}` entries do not."""
    assert shadowing_keys({"auths": auths}, "reg:5000") == shadows


@pytest.mark.parametrize(("doc", "helper"), [
    ({}, None),
    ({"credsStore": "pass"}, "pass"),
    ({"credsStore": "pass", "credHelpers": {"reg:5000": "ecr-login"}}, "ecr-login"),
    ({"credsStore": "pass", "credHelpers": {"other:1": "gcr"}}, "pass"),
    ({"credsStore": ""}, None),
])
def test_helper_for(doc: dict[str, Any], helper: str | None) -> None:
    """credHelpers[key] wins over credsStore, as in Docker."""
    assert helper_for(doc, "reg:5000") == helper


def test_helper_name_with_a_path_is_refused() -> None:
    """A helper name that could escape `docker-credential-<name>` is refused."""
    with pytest.raises(DockerError, match="invalid credential helper"):
        helper_for({"credsStore": "../../bin/sh"}, "reg:5000")


def test_write_is_0600_keeps_owner_and_leaves_no_temp_file(tmp_path: Path) -> None:
    """The rewritten file is 0600, keeps its owner and group, and no temp file is left behind."""
    path = tmp_path / "config.json"
    path.write_text('{"auths": {}}')
    os.chmod(path, 0o644)
    os.chown(path, 1234, 2345)
    write_config(path, {"auths": {"r:1": {"auth": "eA=="}}})
    st = path.stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o600, 1234, 2345)
    assert json.loads(path.read_text()) == {"auths": {"r:1": {"auth": "eA=="}}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_invalid_json_is_refused_and_left_alone(tmp_path: Path) -> None:
    """A config.json that is not JSON is never overwritten."""
    path = tmp_path / "config.json"
    path.write_text("{not json")
    target = ConfigJsonTarget(path, "r:1", timeout=5)
    with pytest.raises(DockerError, match="not valid JSON"):
        target.apply(SECRET)
    assert path.read_text() == "{not json"


def test_apply_creates_a_missing_file_and_holds(tmp_path: Path) -> None:
    """Applying to a missing config.json creates it (dir 0700) holding the credential."""
    path = tmp_path / "home" / ".docker" / "config.json"
    target = ConfigJsonTarget(path, "r:1", timeout=5)
    target.apply(SECRET)
    assert read_config(path) == {"auths": {"r:1": auth_entry(SECRET)}}
    assert target.holds(SECRET) and not target.holds(TOKEN)
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_restore_without_previous_puts_back_the_snapshot(tmp_path: Path) -> None:
    """With no previous version, restore puts back exactly the entry that was there (or none)."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {"r:1": {"auth": "b2xkOm9sZA=="}, "keep:2": {}}}))
    target = ConfigJsonTarget(path, "r:1", timeout=5)
    snapshot = target.snapshot()
    target.apply(SECRET)
    target.restore(snapshot, None)
    assert read_config(path) == {"auths": {"r:1": {"auth": "b2xkOm9sZA=="}, "keep:2": {}}}


def test_symlinked_config_stays_a_symlink(tmp_path: Path) -> None:
    """A config.json symlink is kept; the file it points to gets the new content."""
    real = tmp_path / "dotfiles" / "docker.json"
    real.parent.mkdir()
    real.write_text('{"auths": {}}')
    link = tmp_path / "config.json"
    link.symlink_to(real)
    ConfigJsonTarget(link, "r:1", timeout=5).apply(SECRET)
    assert link.is_symlink() and read_config(real) == {"auths": {"r:1": auth_entry(SECRET)}}
