"""What the probe presents: the applied version first, else what Docker would (certs.d, helper, auths)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from regwarden.config import Config, parse_config
from regwarden.credentials.model import CredentialSecret
from regwarden.probe.lookup import docker_lookup, first_of
from tests.fakes.credential_helper import install_helper

HOST = "reg.example:5000"


def config(tmp_path: Path, doc: dict[str, Any], provider: str = "vault-kv") -> Config:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    credential: dict[str, Any] = {"name": "ci", "vault_path": "secret/ci"}
    if provider == "vault-pki":
        credential.update(provider="vault-pki", rotate_every="24h",
                          pki={"mount": "pki", "role": "client", "common_name": "ci"})
    return parse_config({
        "daemon": {"state_dir": str(tmp_path)},
        "vault": {"address": "http://127.0.0.1:8200", "auth": {"method": "token", "token_env": "T"}},
        "docker": {"client_configs": [str(path)], "certs_dir": str(tmp_path / "certs.d")},
        "registries": [{"name": "r", "url": f"https://{HOST}", "credential": "ci"}],
        "credentials": [credential],
    })


def auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_finds_the_auths_entry_of_the_credentials_registry(tmp_path: Path) -> None:
    """The credential of a registry is the `auths` entry for its host:port."""
    lookup = docker_lookup(config(tmp_path, {"auths": {HOST: auth("ci-a", "s3cret-pass")}}))
    secret = lookup("ci")
    assert secret is not None and (secret.username, secret.password) == ("ci-a", "s3cret-pass")


def test_accepts_scheme_prefixed_keys(tmp_path: Path) -> None:
    """Entries written as https://host:port are found too."""
    lookup = docker_lookup(config(tmp_path, {"auths": {f"https://{HOST}": auth("u", "pw-123456")}}))
    assert lookup("ci") is not None


def test_identity_token_becomes_token_user(tmp_path: Path) -> None:
    """An identitytoken entry gives username <token> and the token as password."""
    lookup = docker_lookup(config(tmp_path, {"auths": {HOST: {"identitytoken": "refresh-abc"}}}))
    secret = lookup("ci")
    assert secret is not None and secret.is_identity_token and secret.password == "refresh-abc"


def test_missing_or_malformed_entries_give_none(tmp_path: Path) -> None:
    """No entry, an entry of another registry or a malformed auth string give no credential."""
    lookup = docker_lookup(config(tmp_path, {"auths": {"other:5000": auth("u", "pw-123456"),
                                                       HOST: {"auth": "!!notbase64"}}}))
    assert lookup("ci") is None
    assert lookup("unknown") is None


def test_the_helper_docker_would_ask_wins_over_a_stale_auths_entry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With credHelpers naming a helper for the registry, its `get` answer is the credential."""
    helper = install_helper(tmp_path, monkeypatch)
    helper.put(HOST, "ci-b", "from-the-helper")
    lookup = docker_lookup(config(tmp_path, {"auths": {HOST: auth("ci-a", "stale-pass")},
                                             "credHelpers": {HOST: helper.name}}))
    secret = lookup("ci")
    assert secret is not None and (secret.username, secret.password) == ("ci-b", "from-the-helper")
    assert helper.calls() == ["get"]


def test_a_helper_with_nothing_or_not_installed_means_no_credential(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As for Docker: a helper's "credentials not found", or a helper that cannot run, is no credential,
    whatever `auths` still holds (a stale entry from before the helper was set)."""
    helper = install_helper(tmp_path, monkeypatch)
    for store in (helper.name, "not-installed"):
        lookup = docker_lookup(config(tmp_path, {"auths": {HOST: auth("ci-a", "stale-pass")}, "credsStore": store}))
        assert lookup("ci") is None, store
    assert helper.calls() == ["get"]


def write_pair(directory: Path, stem: str, cert: str, key: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stem}.cert").write_text(cert)
    (directory / f"{stem}.key").write_text(key)


def test_a_client_certificate_in_certs_d_is_presented(tmp_path: Path) -> None:
    """certs.d/<host:port> (a symlink to a version directory, as regwarden writes it) gives the pair;
    `client.cert` comes before other pairs, and a cert without its key is not a pair."""
    version = tmp_path / "certs.d" / ".regwarden" / HOST / "v3.1"
    write_pair(version, "client", "CERT-3", "KEY-3")
    write_pair(version, "another", "CERT-X", "KEY-X")
    (version / "lonely.cert").write_text("CERT-L")
    (tmp_path / "certs.d" / HOST).symlink_to(version)
    secret = docker_lookup(config(tmp_path, {}, provider="vault-pki"))("ci")
    assert secret is not None and (secret.certificate, secret.private_key) == ("CERT-3", "KEY-3")


def test_a_certificate_credential_without_a_pair_is_not_replaced_by_a_password(tmp_path: Path) -> None:
    """A vault-pki credential with nothing in certs.d yet gives None, not the registry's auths entry."""
    lookup = docker_lookup(config(tmp_path, {"auths": {HOST: auth("ci-a", "file-pass")}}, provider="vault-pki"))
    assert lookup("ci") is None


def test_first_of_asks_in_order_until_one_answers() -> None:
    """The applied version answers first; the Docker-side lookup only when it has none."""
    applied = CredentialSecret("ci", 7, username="ci-a", password="applied-pass")
    asked: list[str] = []

    def docker_side(name: str) -> CredentialSecret | None:
        asked.append(name)
        return CredentialSecret(name, 0, username="ci-a", password="docker-pass")

    assert first_of(lambda n: applied if n == "ci" else None, docker_side)("ci") is applied
    assert asked == []
    fallback = first_of(lambda n: None, docker_side)("ci")
    assert fallback is not None and fallback.password == "docker-pass" and asked == ["ci"]


def test_a_password_credential_comes_from_the_config_before_certs_d(tmp_path: Path) -> None:
    """For a password credential the client config answers even when certs.d has a pair; with nothing
    in the config, a pair in certs.d (a KV credential may hold a certificate) is the answer."""
    write_pair(tmp_path / "certs.d" / HOST, "client", "CERT-1", "KEY-1")
    from_config = docker_lookup(config(tmp_path, {"auths": {HOST: auth("ci-a", "file-pass")}}))("ci")
    assert from_config is not None and from_config.password == "file-pass"
    from_certs = docker_lookup(config(tmp_path, {}))("ci")
    assert from_certs is not None and from_certs.certificate == "CERT-1"

