"""Default logins in a fleet: three hosts checking one registry (real distribution with htpasswd and a
default pair, real OpenBao) try them once per interval between them, not once each; with Vault out of
reach a host does not try them alone."""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from regwarden.config import Config, parse_config
from regwarden.metrics import Metrics
from regwarden.posture.component import PostureComponent
from regwarden.posture.fleet import FleetLogins
from regwarden.posture.report import Report
from regwarden.vault.client import VaultClient
from tests.integration.harness import OpenBaoDev, RegistryServer, free_port, secret_file
from tests.sources_support import Collected, make_context

pytestmark = pytest.mark.integration

HOSTS = ("h1", "h2", "h3")


def _config(tmp: Path, host: str, registry: RegistryServer, vault_address: str, token: Path,
            lock_path: str) -> Config:
    return parse_config({
        "daemon": {"state_dir": str(tmp / host), "host": host},
        "vault": {"address": vault_address, "auth": {"method": "token", "token_file": str(token)},
                  "lock_path": lock_path, "timeout": "2s", "retry_max": "2s"},
        "registries": [{"name": "basic", "url": registry.url, "expect_auth": True,
                        "check_default_credentials": True}],
        "posture": {"interval": "1h", "timeout": "3s", "skip": ["exposure"]},
    })


class _Host:
    def __init__(self, collected: Collected, cfg: Config) -> None:
        self.collected = collected
        collected.ctx.config = cfg
        self.posture = PostureComponent()
        self.posture.start(collected.ctx)

    def run(self) -> Report:
        report = self.posture.run_registry("basic")
        assert report is not None
        return report

    def attempts(self) -> float:
        return self.collected.ctx.metrics.registry.get_sample_value(
            "regwarden_posture_default_login_attempts_total", {"registry": "basic"}) or 0.0


def _default_login(report: Report) -> tuple[bool | None, str]:
    outcome = next((o for o in report.outcomes if o.check == "default_credentials"), None)
    return (None, "") if outcome is None else (outcome.firing, outcome.detail)


@pytest.fixture
def fleet(tmp_path: Path, openbao: OpenBaoDev, registry_factory: Callable[..., RegistryServer],
          ) -> Iterator[tuple[list[_Host], FleetLogins, RegistryServer, Callable[..., Config]]]:
    registry = registry_factory(auth=True)
    registry.add_user("admin", "admin")
    token = secret_file(tmp_path / "vault-token", openbao.token)
    lock_path = f"secret/regwarden-test/locks-{secrets.token_hex(4)}"

    def config(host: str, vault_address: str = openbao.address) -> Config:
        return _config(tmp_path, host, registry, vault_address, token, lock_path)

    with contextlib.ExitStack() as stack:
        hosts = [_Host(stack.enter_context(make_context(tmp_path / h, host=h)), config(h)) for h in HOSTS]
        cfg = config("auditor")
        assert cfg.vault is not None
        yield hosts, FleetLogins(VaultClient(cfg.vault, Metrics()), lock_path, "auditor"), registry, config
        for host in hosts:
            host.posture.stop()


def test_three_hosts_try_the_default_logins_once_between_them(
        fleet: tuple[list[_Host], FleetLogins, RegistryServer, Callable[..., Config]]) -> None:
    """Run at the same moment, one host claims the registry and tries; the others find its claim and
    wait, then take its result as theirs (the finding on every host, no login of theirs). When the
    fleet's last run is older than the interval, the next host to look tries again, alone."""
    hosts, record, registry, _ = fleet
    reports: dict[str, Report] = {}
    start = threading.Barrier(len(hosts))

    def run(host: _Host) -> None:
        start.wait()
        reports[host.collected.ctx.host] = host.run()

    threads = [threading.Thread(target=run, args=(h,)) for h in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [h.attempts() for h in hosts].count(0.0) == 2  # one host tried, the others did not
    tried = next(h for h in hosts if h.attempts())
    assert _default_login(reports[tried.collected.ctx.host])[0] is True
    assert tried.attempts() == 1  # admin/admin is the first pair of the list

    again = [h.run() for h in hosts]  # the others adopt the result of the one that tried
    found = (True, "user 'admin' logs in with its well-known default password")
    assert [_default_login(r) for r in again] == [found] * 3
    assert sum(h.attempts() for h in hosts) == 1 and all(not r.errors for r in again)
    mount, path = record.location(registry.host_port)
    entry: dict[str, Any] = record._read(registry.host_port)[1]
    assert (entry["state"], entry["host"], entry["user"], entry["attempts"]) == (
        "done", tried.collected.ctx.host, "admin", 1)
    assert "admin:admin" not in str(entry) and path.endswith(registry.host_port.replace(":", "_"))

    # the fleet's last run an interval ago: the next host to be due tries, the one after adopts
    registry.add_user("admin", secrets.token_urlsafe(12))  # fixed meanwhile
    version, _ = record._read(registry.host_port)
    record._vault.write(mount, path, {**entry, "at": time.time() - 7200}, cas=version)
    for host in hosts:
        host.collected.ctx.state.set_cursor("posture:default-logins:basic", None)
    before = [h.attempts() for h in hosts]
    first, second = hosts[1].run(), hosts[2].run()
    assert [h.attempts() - b for h, b in zip(hosts, before, strict=True)] == [0, 5, 0]  # five pairs, all refused
    assert _default_login(first) == _default_login(second) == (False, "5 well-known default logins refused")


def test_with_vault_out_of_reach_a_host_does_not_try_them_alone(
        fleet: tuple[list[_Host], FleetLogins, RegistryServer, Callable[..., Config]]) -> None:
    """Vault not answering: no default login is tried, the report says why (an error of the run, counted),
    and the other checks run as usual."""
    hosts, _, _, config = fleet
    host = hosts[0]
    host.collected.ctx.config = config("h1", vault_address=f"http://127.0.0.1:{free_port()}")
    report = host.run()
    assert host.attempts() == 0
    assert _default_login(report)[0] is None  # unknown: never tried, nothing remembered
    assert [e for e in report.errors if e.startswith("default_credentials:")] == [
        e for e in report.errors if "Vault is unreadable" in e] != []
    assert host.collected.ctx.metrics.registry.get_sample_value(
        "regwarden_posture_check_errors_total", {"registry": "basic", "check": "default_credentials"}) == 1
    assert any(o.check == "basic_auth_plain_http" and o.firing for o in report.outcomes)


def test_claims_that_were_never_finished_and_mangled_entries_do_not_block_the_fleet(
        fleet: tuple[list[_Host], FleetLogins, RegistryServer, Callable[..., Config]]) -> None:
    """A host that claimed and died: its claim blocks the others for CLAIM_SECONDS, then is taken over;
    the same host, restarted, takes its own claim back at once; an entry that is not what regwarden
    writes, or whose times lie in the future, reads as free; a result is not written over a claim
    another host took meanwhile."""
    from regwarden.posture.fleet import CLAIM_SECONDS

    _, record, _, _ = fleet
    address, now = "reg.claims.test:5000", time.time()
    first = FleetLogins(record._vault, "secret/regwarden-test/claims", "h1")
    other = FleetLogins(record._vault, "secret/regwarden-test/claims", "h2")
    assert first.decide(address, 3600, now).action == "try"  # h1 claims, then dies
    waiting = other.decide(address, 3600, now + 60)
    assert (waiting.action, waiting.by) == ("wait", "h1")
    assert first.decide(address, 3600, now + 60).action == "try"  # h1 restarted: its own claim
    taken = other.decide(address, 3600, now + CLAIM_SECONDS + 61)
    assert taken.action == "try"  # h1's second claim expired too
    assert not first.finish(address, 2, None)  # h1's result would overwrite h2's claim: refused
    mount, path = other.location(address)
    version, _ = other._read(address)
    other._vault.write(mount, path, {"state": "done", "at": "yesterday", "user": ["x"]}, cas=version)
    assert other.decide(address, 3600, now).action == "try"  # garbage: free
    for future in ({"state": "done", "host": "h9", "at": now + 86400, "attempts": 5},  # would stand for ever
                   {"state": "claimed", "host": "h9", "at": now, "expires": now + 86400}):
        version, _ = other._read(address)
        other._vault.write(mount, path, future, cas=version)
        assert other.decide(address, 3600, now).action == "try", future
