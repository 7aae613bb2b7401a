"""Password credentials verified against a real registry and applied to config.json for a real engine."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.auth
import pytest

from regwarden.config import Config, parse_config
from regwarden.credentials.apply import apply_credential, targets_hold
from regwarden.credentials.model import CredentialSecret
from regwarden.docker.client_config import auth_entry, read_config
from regwarden.errors import CredentialError
from regwarden.probe.lookup import docker_lookup
from regwarden.probe.prober import ProbeTarget, probe
from regwarden.registry.verify import verify_credential
from tests.fakes.credential_helper import install_helper
from tests.integration.harness import (
    DockerEngine,
    ImageTransferError,
    RegistryServer,
    pull_image,
    push_image,
)

pytestmark = pytest.mark.integration


def make_config(tmp_path: Path, registry: RegistryServer, configs: list[Path]) -> Config:
    return parse_config({
        "daemon": {"state_dir": str(tmp_path / "state")},
        "vault": {"address": "http://127.0.0.1:8200", "auth": {"method": "token", "token_env": "RW_UNUSED"}},
        "docker": {"client_configs": [str(p) for p in configs], "certs_dir": str(tmp_path / "certs.d")},
        "registries": [{"name": "internal", "url": registry.url, "credential": "ci", "expect_auth": True}],
        "credentials": [{"name": "ci", "vault_path": "secret/regwarden/ci"}],
    })


def new_user(registry: RegistryServer, version: int) -> CredentialSecret:
    user, password = f"ci-{secrets.token_hex(3)}", secrets.token_urlsafe(18)
    registry.add_user(user, password)
    return CredentialSecret("ci", version, username=user, password=password)


def auth_from(config_path: Path, host_port: str) -> dict[str, Any]:
    """What the Docker SDK itself resolves from that config.json (helpers included)."""
    resolved = docker.auth.load_config(str(config_path)).resolve_authconfig(host_port)
    assert resolved, f"no credential for {host_port} in {config_path}"
    return {"username": resolved.get("username") or resolved.get("Username"),
            "password": resolved.get("password") or resolved.get("Password")}


@pytest.fixture
def image(registry: RegistryServer, dockerd: DockerEngine, tiny_image: str) -> Iterator[str]:
    """A fresh repository holding the tiny image; the local tag is removed so a pull must fetch it."""
    client = dockerd.client()
    reference = push_image(client, registry.host_port, f"rwtest/apply-{secrets.token_hex(3)}",
                           auth=registry.auth_config)
    client.images.remove(reference)
    try:
        yield reference
    finally:
        client.close()


def test_applied_credential_pulls_through_the_engine(
        tmp_path: Path, registry: RegistryServer, dockerd: DockerEngine, image: str) -> None:
    """A verified new credential applied to config.json lets the engine pull with what the SDK reads back."""
    path = tmp_path / "docker" / "config.json"
    cfg = make_config(tmp_path, registry, [path])
    secret = new_user(registry, 1)
    verify_credential(cfg.registry("internal"), secret, timeout=10)
    result = apply_credential(cfg, cfg.credential("ci"), secret, previous=None)
    assert result.targets == (f"{path} [auths {registry.host_port}]",)
    client = dockerd.client()
    try:
        pull_image(client, image, auth=auth_from(path, registry.host_port))
    finally:
        client.close()


def test_wrong_password_fails_verify_like_the_engine(
        tmp_path: Path, registry: RegistryServer, dockerd: DockerEngine, image: str) -> None:
    """A wrong password is a CredentialError (no secret in it), and the engine refuses it too."""
    wrong = CredentialSecret("ci", 2, username=registry.username, password="wrong-" + secrets.token_hex(8))
    cfg = make_config(tmp_path, registry, [tmp_path / "config.json"])
    with pytest.raises(CredentialError) as caught:
        verify_credential(cfg.registry("internal"), wrong, timeout=10)
    assert wrong.password is not None and wrong.password not in str(caught.value)
    client = dockerd.client()
    try:
        with pytest.raises(ImageTransferError):
            pull_image(client, image, auth={"username": registry.username, "password": wrong.password})
    finally:
        client.close()


def test_helper_gets_the_credential_and_other_config_is_kept(
        tmp_path: Path, registry: RegistryServer, dockerd: DockerEngine, image: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With credsStore set the helper receives `store`; other registries, helpers and unknown keys stay."""
    helper = install_helper(tmp_path, monkeypatch)
    stale = base64.b64encode(b"old:old-password").decode()
    original = {
        "auths": {"other.example:5000": {"auth": base64.b64encode(b"u:p").decode()},
                  registry.host_port: {"auth": stale}, f"https://{registry.host_port}": {"auth": stale},
                  "empty.example": {}},
        "credsStore": "rwtest",
        "credHelpers": {"gcr.io": "gcloud"},
        "psFormat": "table {{.ID}}",
        "x-vendor-extension": {"nested": [1, 2, {"k": "v"}]},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(original, indent=2))
    cfg = make_config(tmp_path, registry, [path])
    secret = new_user(registry, 3)
    apply_credential(cfg, cfg.credential("ci"), secret, previous=None)

    assert "store" in helper.calls()
    assert helper.stored() == {registry.host_port: {"Username": secret.username, "Secret": secret.password}}
    after = read_config(path)
    expected = dict(original)
    expected["auths"] = {"other.example:5000": original["auths"]["other.example:5000"],  # type: ignore[index]
                         "empty.example": {}}
    assert after == expected and list(after) == list(original)
    assert targets_hold(cfg, cfg.credential("ci"), secret)
    client = dockerd.client()
    try:
        pull_image(client, image, auth=auth_from(path, registry.host_port))
    finally:
        client.close()

    # the probe presents what Docker would: the helper's value, which the registry accepts
    seen = docker_lookup(cfg)("ci")
    assert seen is not None and (seen.username, seen.password) == (secret.username, secret.password)
    result = probe(ProbeTarget.from_config(cfg.registries[0]), seen)
    assert result.ok and result.auth_ok, result.reason


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory that becomes read-only (for root too) through a read-only bind mount on itself."""
    directory = tmp_path / "ro"
    directory.mkdir()
    yield directory
    subprocess.run(["umount", str(directory)], capture_output=True, check=False)


def test_failure_on_the_second_config_leaves_both_on_the_last_good_version(
        tmp_path: Path, registry: RegistryServer, dockerd: DockerEngine, image: str, read_only_dir: Path) -> None:
    """When the second config.json cannot be written, both end on the previous version and pulls still work."""
    first, second = tmp_path / "first" / "config.json", read_only_dir / "config.json"
    cfg = make_config(tmp_path, registry, [first, second])
    good = new_user(registry, 1)
    apply_credential(cfg, cfg.credential("ci"), good, previous=None)
    for argv in (["mount", "--bind", str(read_only_dir), str(read_only_dir)],
                 ["mount", "-o", "remount,bind,ro", str(read_only_dir)]):
        subprocess.run(argv, check=True, capture_output=True)

    newer = new_user(registry, 2)
    with pytest.raises(CredentialError) as caught:
        apply_credential(cfg, cfg.credential("ci"), newer, previous=good)
    message = str(caught.value)
    assert str(second) in message and "Read-only file system" in message
    assert "rolled back 2 target(s) to v1" in message
    for path in (first, second):
        assert read_config(path)["auths"][registry.host_port] == auth_entry(good)
    client = dockerd.client()
    try:
        pull_image(client, image, auth=auth_from(first, registry.host_port))
    finally:
        client.close()
