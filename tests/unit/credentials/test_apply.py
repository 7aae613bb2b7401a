"""apply_credential: every target of every registry using the credential, all or nothing."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from regwarden.config import Config, parse_config
from regwarden.credentials.apply import apply_credential, build_targets, targets_hold, targets_to_restore
from regwarden.credentials.model import CredentialSecret
from regwarden.docker.client_config import auth_entry, read_config
from regwarden.errors import CredentialError

V1 = CredentialSecret("ci", 1, username="ci-a", password="first-password-1")
V2 = CredentialSecret("ci", 2, username="ci-b", password="second-password-2")

# A credential helper that keeps its store in $RWTEST_STORE and fails `store` when $RWTEST_FAIL_STORE is set.
HELPER = """#!/usr/bin/env python3
import json, os, sys
path = os.environ["RWTEST_STORE"]
data = json.load(open(path)) if os.path.exists(path) else {}
action = sys.argv[1]
if action == "store":
    if os.environ.get("RWTEST_FAIL_STORE"):
        print("keychain locked"); sys.exit(1)
    item = json.load(sys.stdin); data[item["ServerURL"]] = [item["Username"], item["Secret"]]
elif action == "get":
    url = sys.stdin.read().strip()
    if url not in data:
        print("credentials not found in native keychain"); sys.exit(1)
    print(json.dumps({"ServerURL": url, "Username": data[url][0], "Secret": data[url][1]})); sys.exit(0)
elif action == "erase":
    data.pop(sys.stdin.read().strip(), None)
json.dump(data, open(path, "w"))
"""


@pytest.mark.parametrize(("count", "failed", "indexes"), [
    (3, 0, [0]),
    (3, 1, [1, 0]),
    (3, 2, [2, 1, 0]),
    (1, 0, [0]),
])
def test_targets_to_restore(count: int, failed: int, indexes: list[int]) -> None:
    """Every target touched so far, the failed one included, is rolled back, last first."""
    assert targets_to_restore(count, failed) == indexes


def make_config(tmp_path: Path, configs: list[Path], **registry: Any) -> Config:
    return parse_config({
        "daemon": {"state_dir": str(tmp_path / "state")},
        "vault": {"address": "http://127.0.0.1:8200", "auth": {"method": "token", "token_env": "X"}},
        "docker": {"client_configs": [str(p) for p in configs], "certs_dir": str(tmp_path / "certs.d")},
        "registries": [{"name": "internal", "url": "http://reg.test:5000", "credential": "ci", **registry},
                       {"name": "other", "url": "http://other.test:5000"}],
        "credentials": [{"name": "ci", "vault_path": "secret/regwarden/ci"}],
    })


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "docker-credential-rwfail"
    script.write_text(HELPER)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("RWTEST_STORE", str(tmp_path / "store.json"))
    return tmp_path / "store.json"


def test_apply_writes_every_config_and_only_registries_of_the_credential(tmp_path: Path) -> None:
    """Both config.json files get the entry of the credential's registry; others stay untouched."""
    a, b = tmp_path / "a" / "config.json", tmp_path / "b" / "config.json"
    b.parent.mkdir()
    b.write_text(json.dumps({"auths": {"other.test:5000": {"auth": "eDp5"}}, "detachKeys": "ctrl-x"}))
    cfg = make_config(tmp_path, [a, b])
    result = apply_credential(cfg, cfg.credential("ci"), V2, previous=None)
    assert result.version == 2 and len(result.targets) == 2
    assert read_config(a) == {"auths": {"reg.test:5000": auth_entry(V2)}}
    assert read_config(b) == {"auths": {"other.test:5000": {"auth": "eDp5"}, "reg.test:5000": auth_entry(V2)},
                              "detachKeys": "ctrl-x"}
    assert targets_hold(cfg, cfg.credential("ci"), V2) and not targets_hold(cfg, cfg.credential("ci"), V1)


def test_failure_on_second_target_rolls_both_back_to_previous(
        tmp_path: Path, helper: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the second target fails, the first is put back on the previous version and the error says so."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    cfg = make_config(tmp_path, [a, b])
    apply_credential(cfg, cfg.credential("ci"), V1, previous=None)
    b.write_text(json.dumps({"credsStore": "rwfail", "auths": {}}))
    apply_credential(cfg, cfg.credential("ci"), V1, previous=None)
    monkeypatch.setenv("RWTEST_FAIL_STORE", "1")
    with pytest.raises(CredentialError) as caught:
        apply_credential(cfg, cfg.credential("ci"), V2, previous=V1)
    message = str(caught.value)
    assert str(b) in message and "rolled back 2 target(s) to v1" in message
    assert "second-password-2" not in message
    assert read_config(a)["auths"]["reg.test:5000"] == auth_entry(V1)
    assert json.loads(helper.read_text()) == {"reg.test:5000": ["ci-a", "first-password-1"]}


def test_failure_without_previous_removes_what_was_added(
        tmp_path: Path, helper: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no previous version a failed apply leaves every target as it was before."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"auths": {"keep:1": {}}}))
    b.write_text(json.dumps({"credsStore": "rwfail"}))
    cfg = make_config(tmp_path, [a, b])
    monkeypatch.setenv("RWTEST_FAIL_STORE", "1")
    with pytest.raises(CredentialError, match="their state before the apply"):
        apply_credential(cfg, cfg.credential("ci"), V2, previous=None)
    assert read_config(a) == {"auths": {"keep:1": {}}}
    assert not helper.exists() or json.loads(helper.read_text()) == {}


def test_helper_receives_the_credential_and_no_shadowing_entry_remains(tmp_path: Path, helper: Path) -> None:
    """With credsStore set the helper gets `store`, and stale auths entries for that host are removed."""
    a = tmp_path / "config.json"
    a.write_text(json.dumps({"auths": {"reg.test:5000": {"auth": "b2xkOm9sZA=="},
                                       "http://reg.test:5000": {"auth": "b2xkOm9sZA=="}, "keep:1": {}},
                             "credsStore": "rwfail", "x-extra": True}))
    os.chmod(a, 0o600)
    cfg = make_config(tmp_path, [a])
    apply_credential(cfg, cfg.credential("ci"), V2, previous=None)
    assert json.loads(helper.read_text()) == {"reg.test:5000": ["ci-b", "second-password-2"]}
    assert read_config(a) == {"auths": {"keep:1": {}}, "credsStore": "rwfail", "x-extra": True}
    assert stat.S_IMODE(a.stat().st_mode) == 0o600
    assert targets_hold(cfg, cfg.credential("ci"), V2)


def test_certificate_credential_targets_certs_dir_only(tmp_path: Path) -> None:
    """A client-certificate credential goes to certs.d/<host:port>, not to config.json."""
    cfg = make_config(tmp_path, [tmp_path / "config.json"], url="https://reg.test:5443")
    names = [t.name for t in build_targets(cfg, cfg.credential("ci"), "certificate")]
    assert names == [f"{tmp_path / 'certs.d' / 'reg.test:5443'}/"]
