"""Rotation against a real OpenBao and a real distribution registry (htpasswd and command providers)."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from regwarden.config import Config, CredentialConfig, parse_config
from regwarden.metrics import Metrics
from regwarden.registry.verify import verify_credential
from regwarden.rotation.journal import Journal
from regwarden.rotation.lock import LockState, RotationLock
from regwarden.rotation.machine import Rotator
from regwarden.rotation.providers import load_provider
from regwarden.state import StateStore
from regwarden.vault.client import VaultClient
from tests.integration.harness import OpenBaoDev, RegistryServer, secret_file

pytestmark = pytest.mark.integration


def _config(tmp: Path, bao: OpenBaoDev, registry: RegistryServer, cred: dict[str, Any]) -> Config:
    token = secret_file(tmp / "vault-token", bao.token)
    return parse_config({
        "daemon": {"state_dir": str(tmp / "state"), "audit_log": str(tmp / "audit.jsonl")},
        "vault": {"address": bao.address, "auth": {"method": "token", "token_file": str(token)},
                  "lock_path": "secret/regwarden-test/locks"},
        "docker": {"client_configs": [str(tmp / "docker" / "config.json")]},
        "registries": [{"name": "reg", "url": registry.url, "credential": cred["name"]}],
        "credentials": [{"watch_interval": "1s", "overlap": "3s", **cred}],
    })


def _basic_ok(registry: RegistryServer, username: str, password: str) -> bool:
    return requests.get(f"{registry.url}/v2/", auth=(username, password), timeout=5).status_code == 200


def _verify(registry_cfg: Any, secret: Any) -> None:
    verify_credential(registry_cfg, secret, timeout=5)


class Setup:
    """One host's view: its own state store and holder id, sharing OpenBao and the registry."""

    def __init__(self, cfg: Config, holder: str, state_dir: Path) -> None:
        self.cfg = cfg
        self.cred: CredentialConfig = cfg.credentials[0]
        assert cfg.vault is not None
        self.vault = VaultClient(cfg.vault, Metrics())
        self.stop = threading.Event()
        self.state = StateStore(state_dir)
        self.rotator = Rotator(
            self.cred, cfg.registries, self.vault, load_provider(self.cred, self.vault), Journal(self.state),
            RotationLock(self.vault, cfg.vault.lock_path, self.cred.name, holder, holder), _verify,
            stop=self.stop, verify_patience=5.0)

    def current(self) -> tuple[int, dict[str, Any]]:
        meta = self.vault.read_metadata(self.cred.mount, self.cred.path)
        return meta.current_version, self.vault.read_version(self.cred.mount, self.cred.path, meta.current_version)


@pytest.fixture
def htpasswd_setup(tmp_path: Path, openbao: OpenBaoDev, registry_factory: Callable[..., RegistryServer],
                   request: pytest.FixtureRequest) -> Iterator[Callable[[str], Setup]]:
    registry = registry_factory(auth=True)
    name = f"ci-{request.node.name[-20:].strip('_[]')}".replace("_", "-")
    cfg = _config(tmp_path, openbao, registry, {
        "name": name, "provider": "htpasswd", "vault_path": f"secret/regwarden-test/{name}",
        "rotate_every": "1h", "htpasswd": {"file": str(registry.htpasswd_path), "usernames": ["ci-a", "ci-b"]}})
    setups: list[Setup] = []

    def make(holder: str) -> Setup:
        setup = Setup(cfg, holder, tmp_path / f"state-{holder}")
        setup.registry = registry  # type: ignore[attr-defined]
        setups.append(setup)
        return setup

    yield make
    for setup in setups:
        setup.stop.set()
        setup.state.close()


def _slot_users(path: Path) -> set[str]:
    return {line.split(":", 1)[0] for line in path.read_text().splitlines() if line.startswith("ci-")}


def test_htpasswd_rotation_alternates_slots_and_revokes_the_old(htpasswd_setup: Callable[[str], Setup]) -> None:
    """First rotation publishes ci-a; the next publishes ci-b and, after the overlap, removes ci-a."""
    host = htpasswd_setup("host-1")
    registry: RegistryServer = host.registry  # type: ignore[attr-defined]
    mode = stat.S_IMODE(os.stat(registry.htpasswd_path).st_mode)
    first = host.rotator.rotate()
    assert first.rotated and first.entry is not None and first.entry.step == "done"
    version, data = host.current()
    assert (version, data["username"]) == (1, "ci-a")
    assert _basic_ok(registry, "ci-a", data["password"])
    assert host.rotator.rotate().reason == "not due"

    second = host.rotator.rotate(force=True)
    assert second.rotated
    version, new = host.current()
    assert (version, new["username"]) == (2, "ci-b")
    assert _basic_ok(registry, "ci-b", new["password"])
    assert not _basic_ok(registry, "ci-a", data["password"]), "old slot must be revoked after the overlap"
    assert _slot_users(registry.htpasswd_path) == {"ci-b"}
    assert registry.username in registry.htpasswd_path.read_text(), "other htpasswd users are kept"
    meta = host.vault.read_metadata(host.cred.mount, host.cred.path).custom_metadata
    assert meta["rotated_by"] == "host-1" and meta["regwarden_ref"] == "ci-b"
    assert stat.S_IMODE(os.stat(registry.htpasswd_path).st_mode) == mode, "the file's mode is kept"


def test_ten_hosts_racing_rotate_exactly_once(htpasswd_setup: Callable[[str], Setup]) -> None:
    """Ten instances that find the same rotation due at once: exactly one publishes a new version."""
    hosts = [htpasswd_setup(f"host-{i}") for i in range(10)]
    barrier = threading.Barrier(len(hosts))
    outcomes: list[Any] = [None] * len(hosts)

    def run(i: int) -> None:
        barrier.wait()
        outcomes[i] = hosts[i].rotator.rotate()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(hosts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sum(1 for o in outcomes if o.rotated) == 1, [o.reason for o in outcomes]
    version, data = hosts[0].current()
    assert version == 1 and data["username"] == "ci-a"
    assert {o.reason for o in outcomes if not o.rotated} <= {
        "lock held by another host", "rotated by another host meanwhile", "not due"}


def test_verify_failure_rolls_back_and_publishes_nothing(
        htpasswd_setup: Callable[[str], Setup], registry_factory: Callable[..., RegistryServer],
        tmp_path: Path, openbao: OpenBaoDev) -> None:
    """A new credential the registry refuses is removed again and never reaches Vault."""
    host = htpasswd_setup("host-1")
    assert host.rotator.rotate().rotated
    other = registry_factory(auth=True)  # verifies against a registry that does not read our htpasswd file
    cfg = host.cfg.model_copy(update={"registries": [host.cfg.registries[0].model_copy(update={"url": other.url})]})
    bad = Setup(cfg, "host-2", tmp_path / "state-bad")
    try:
        outcome = bad.rotator.rotate(force=True)
        assert not outcome.rotated and outcome.entry is not None and outcome.entry.step == "rolled_back"
        assert "verify against reg failed" in (outcome.entry.error or "")
        assert host.current()[0] == 1
        registry: RegistryServer = host.registry  # type: ignore[attr-defined]
        assert _slot_users(registry.htpasswd_path) == {"ci-a"}, "the unverified slot entry is removed"
        _, lock = bad.rotator._lock.read()
        assert lock is not None and not lock.holder, "the lock is released"
    finally:
        bad.state.close()


COMMAND = r"""#!/bin/sh
# A command provider for a distribution registry: create adds a bcrypt htpasswd user, revoke removes it.
set -eu
request=$(cat)
echo "$request" >> "{log}"
action=$(printf '%s' "$request" | python3 -c 'import json,sys; print(json.load(sys.stdin)["action"])')
case "{mode}" in fail) echo "registry API said no" >&2; exit 3;; hang) sleep 30;; esac
if [ "$action" = create ]; then
  user="robot-$(date +%s%N)"
  pass=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
  htpasswd -B -b "{htpasswd}" "$user" "$pass" 2>/dev/null
  printf '{{"username": "%s", "password": "%s", "ref": "%s"}}' "$user" "$pass" "$user"
else
  ref=$(printf '%s' "$request" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ref"])')
  htpasswd -D "{htpasswd}" "$ref" 2>/dev/null
  echo '{{"ok": true}}'
fi
"""


@pytest.fixture
def command_setup(tmp_path: Path, openbao: OpenBaoDev,
                  registry_factory: Callable[..., RegistryServer]) -> Iterator[Callable[[str], Setup]]:
    registry = registry_factory(auth=True)
    made: list[Setup] = []

    def make(mode: str) -> Setup:
        script = tmp_path / f"provider-{mode}.sh"
        script.write_text(COMMAND.format(log=tmp_path / "requests.log", mode=mode, htpasswd=registry.htpasswd_path))
        script.chmod(0o700)
        cfg = _config(tmp_path, openbao, registry, {
            "name": f"cmd-{tmp_path.name[-12:]}".replace("_", "-"), "provider": "command",
            "vault_path": f"secret/regwarden-test/cmd-{tmp_path.name}", "rotate_every": "1h",
            "command": {"path": str(script), "timeout": "2s"}})
        setup = Setup(cfg, f"host-{mode}", tmp_path / f"state-{mode}")
        setup.registry = registry  # type: ignore[attr-defined]
        made.append(setup)
        return setup

    yield make
    for setup in made:
        setup.state.close()


def test_command_provider_speaks_the_documented_json(command_setup: Callable[[str], Setup], tmp_path: Path) -> None:
    """create and revoke get the documented JSON; the created robot account works and the old one is revoked."""
    host = command_setup("ok")
    assert host.rotator.rotate().rotated
    version, first = host.current()
    assert host.rotator.rotate(force=True).rotated
    _, second = host.current()
    registry: RegistryServer = host.registry  # type: ignore[attr-defined]
    assert _basic_ok(registry, second["username"], second["password"])
    assert not _basic_ok(registry, first["username"], first["password"])
    requests_seen = [json.loads(line) for line in (tmp_path / "requests.log").read_text().splitlines()]
    assert requests_seen[0] == {"version": 1, "action": "create", "credential": host.cred.name}
    assert requests_seen[1] == {"version": 1, "action": "create", "credential": host.cred.name,
                                "current": {"version": version, "username": first["username"]}}
    assert requests_seen[2] == {"version": 1, "action": "revoke", "credential": host.cred.name,
                                "ref": first["username"]}
    assert all("password" not in json.dumps(r) for r in requests_seen)


@pytest.mark.parametrize(("mode", "message"),
                         [("fail", "exited 3: registry API said no"), ("hang", "timed out after 2s")])
def test_failing_command_keeps_the_old_credential(command_setup: Callable[[str], Setup], mode: str,
                                                  message: str) -> None:
    """A failing or hanging provider command rolls back: Vault keeps the credential it had."""
    good = command_setup("ok")
    assert good.rotator.rotate().rotated
    before = good.current()
    bad = command_setup(mode)
    outcome = bad.rotator.rotate(force=True)
    assert not outcome.rotated and outcome.entry is not None and outcome.entry.step == "rolled_back"
    assert message in (outcome.entry.error or "")
    assert good.current() == before
    registry: RegistryServer = good.registry  # type: ignore[attr-defined]
    assert _basic_ok(registry, before[1]["username"], before[1]["password"])



class _AnswerLost:
    """A VaultClient whose lock writes are applied and then sent once more, as the client does when a
    node applied a write and died before answering: the second, real attempt meets a cas mismatch."""

    def __init__(self, vault: VaultClient) -> None:
        self._vault = vault

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vault, name)

    def write(self, mount: str, path: str, data: Any, *, cas: int | None) -> int:
        self._vault.write(mount, path, data, cas=cas)
        return self._vault.write(mount, path, data, cas=cas)


class _Racing:
    """A VaultClient that lets another host write just before each write of this one."""

    def __init__(self, vault: VaultClient, before: Callable[[], object]) -> None:
        self._vault, self._before = vault, before

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vault, name)

    def write(self, mount: str, path: str, data: Any, *, cas: int | None) -> int:
        self._before()
        return self._vault.write(mount, path, data, cas=cas)


def test_a_lock_write_whose_answer_was_lost_is_still_the_hosts_lock(htpasswd_setup: Callable[[str], Setup]) -> None:
    """Taking and freeing the lock through a write that landed but answered with a cas mismatch (its
    retry) gives the lease and frees it: the lock is not left to its lease. Another host's write that
    won the race is still a lost race."""
    setup = htpasswd_setup("h1")
    path = "secret/regwarden-test/locks"
    replaying = RotationLock(_AnswerLost(setup.vault), path, "answer-lost", "h1", "h1")
    lease = replaying.acquire("rot-1", 60)
    assert lease is not None
    version, state = replaying.read()
    assert (version, state is not None and state.holder, state is not None and state.rotation_id) == (
        lease.version, "h1", "rot-1")
    assert replaying.release(lease) is True
    assert replaying.read()[1] == LockState("", "h1", "", 0.0)

    other = RotationLock(setup.vault, path, "answer-lost", "h2", "h2")
    racing = RotationLock(_Racing(setup.vault, lambda: other.acquire("rot-2", 60)), path, "answer-lost", "h1", "h1")
    assert racing.acquire("rot-3", 60) is None  # h2 wrote between h1's read and h1's write
    assert racing.read()[1] is not None and racing.read()[1].holder == "h2"  # type: ignore[union-attr]
