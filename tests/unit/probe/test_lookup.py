"""Reading a credential's current value from the Docker client configs regwarden keeps logged in."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from regwarden.config import Config, parse_config
from regwarden.probe.lookup import docker_config_lookup


def config(tmp_path: Path, auths: dict[str, object]) -> Config:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": auths, "credsStore": "x"}))
    return parse_config({
        "daemon": {"state_dir": str(tmp_path)},
        "vault": {"address": "http://127.0.0.1:8200", "auth": {"method": "token", "token_env": "T"}},
        "docker": {"client_configs": [str(path)]},
        "registries": [{"name": "r", "url": "https://reg.example:5000", "credential": "ci"}],
        "credentials": [{"name": "ci", "vault_path": "secret/ci"}],
    })


def auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_finds_the_auths_entry_of_the_credentials_registry(tmp_path: Path) -> None:
    """The credential of a registry is the `auths` entry for its host:port."""
    lookup = docker_config_lookup(config(tmp_path, {"reg.example:5000": auth("ci-a", "s3cret-pass")}))
    secret = lookup("ci")
    assert secret is not None and (secret.username, secret.password) == ("ci-a", "s3cret-pass")


def test_accepts_scheme_prefixed_keys(tmp_path: Path) -> None:
    """Entries written as https://host:port are found too."""
    lookup = docker_config_lookup(config(tmp_path, {"https://reg.example:5000": auth("u", "pw-123456")}))
    assert lookup("ci") is not None


def test_identity_token_becomes_token_user(tmp_path: Path) -> None:
    """An identitytoken entry gives username <token> and the token as password."""
    lookup = docker_config_lookup(config(tmp_path, {"reg.example:5000": {"identitytoken": "refresh-abc"}}))
    secret = lookup("ci")
    assert secret is not None and secret.is_identity_token and secret.password == "refresh-abc"


def test_missing_or_malformed_entries_give_none(tmp_path: Path) -> None:
    """No entry, an entry of another registry or a malformed auth string give no credential."""
    cfg = config(tmp_path, {"other:5000": auth("u", "pw-123456"), "reg.example:5000": {"auth": "!!notbase64"}})
    lookup = docker_config_lookup(cfg)
    assert lookup("ci") is None
    assert lookup("unknown") is None
