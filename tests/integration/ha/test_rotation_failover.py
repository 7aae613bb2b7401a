"""Rotation through Vault failover: five `regwarden run` hosts share a rotated credential on the 3-node
cluster; the active node is killed while the rotating host is held at one journalled step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from regwarden.rotation.journal import PAUSE_HOOK_ENV
from tests.integration.harness import (
    DockerEngine,
    OpenBaoCluster,
    RegistryServer,
    pull_image,
    push_image,
    regwarden_env,
    secret_file,
    wait_for,
)
from tests.integration.rotation.test_fleet import Instance, fleet_host

pytestmark = pytest.mark.integration

NAME = "ha-cred"
HOSTS = 5
# "locking" is journalled right before the lock's check-and-set write: pausing there and killing the
# leader puts the failover inside the lock CAS
KILL_POINTS = ["locking", "generated", "verified", "publishing", "published", "overlap", "revoking", "unlocking"]
# the kill-point table of bench/RESULTS.md: one JSON line per kill point when this names a file
# the overlap must outlast the election plus a host's back-off on every node (retry_max = 10s here),
# not only 2 x watch_interval: with 4s, a leader killed at "overlap" cost pulls on hosts still backing off
OVERLAP = "12s"
RESULTS_ENV = "REGWARDEN_HA_RESULTS"


@dataclass
class Fleet:
    cluster: OpenBaoCluster
    hosts: list[Instance]
    pause_dir: Path
    pulls: list[tuple[str, bool, str]] = field(default_factory=list)
    lock_overlaps: int = 0  # samples in which two hosts had an open rotation at once
    stop: threading.Event = field(default_factory=threading.Event)

    def kv(self) -> tuple[int, dict[str, Any]]:
        kv = self.cluster.client().secrets.kv.v2
        meta = kv.read_secret_metadata(path=f"regwarden-fleet/{NAME}", mount_point="secret")["data"]
        data = kv.read_secret_version(path=f"regwarden-fleet/{NAME}", mount_point="secret",
                                      raise_on_deleted_version=True)["data"]["data"]
        return int(meta["current_version"]), data

    def lock(self) -> dict[str, Any]:
        return dict(self.cluster.client().secrets.kv.v2.read_secret_version(
            path=f"regwarden-fleet/locks/{NAME}", mount_point="secret",
            raise_on_deleted_version=True)["data"]["data"])

    def lock_free(self) -> bool:
        lock = self.lock()
        return lock.get("holder") == "" or float(lock.get("expires", 0)) <= time.time()

    def converged(self) -> bool:
        _, data = self.kv()
        return all(h.auth() == {"username": data["username"], "password": data["password"]} for h in self.hosts)


@pytest.fixture(scope="module")
def ha_fleet(openbao_cluster: OpenBaoCluster, dockerd: DockerEngine, tiny_image: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Five hosts on the cluster (every node address listed, in a different order per host), pulling
    through the real engine with the credential each one applied, twice a second."""
    root = tmp_path_factory.mktemp("ha-fleet")
    (root / "registry").mkdir()
    registry = RegistryServer(root / "registry")
    registry.start()
    push_image(dockerd.client(), registry.host_port, "fleet/tiny", "1", auth=registry.auth_config)
    token = secret_file(root / "vault-token", openbao_cluster.token)
    pause_dir = root / "pause"
    pause_dir.mkdir()
    hosts = []
    for index in range(HOSTS):
        nodes = openbao_cluster.addresses[index % 3:] + openbao_cluster.addresses[:index % 3]
        host = fleet_host(root / f"host-{index}", index, vault=nodes, token=token, dockerd=dockerd,
                          registry=registry, name=NAME, rotate_every="1h", watch_interval="1s", overlap=OVERLAP)
        host.start(env={PAUSE_HOOK_ENV: str(pause_dir)})
        hosts.append(host)
    fleet = Fleet(openbao_cluster, hosts, pause_dir)
    wait_for("every host applied the first version", lambda: fleet.converged() and all(
        h.open_rotations() == 0 for h in hosts), 90)
    client = dockerd.client()
    reference = f"{registry.host_port}/fleet/tiny:1"

    def pull_loop(host: Instance) -> None:
        while not fleet.stop.is_set():
            try:
                pull_image(client, reference, host.auth())
                fleet.pulls.append((host.workdir.name, True, ""))
            except Exception as exc:
                fleet.pulls.append((host.workdir.name, False, f"{type(exc).__name__}: {exc}"[:200]))
            fleet.stop.wait(0.5)

    def lock_watch() -> None:
        while not fleet.stop.is_set():
            if sum(h.open_rotations() for h in hosts) > 1:
                fleet.lock_overlaps += 1
            fleet.stop.wait(0.2)

    threads = [threading.Thread(target=pull_loop, args=(h,), daemon=True) for h in hosts]
    threads.append(threading.Thread(target=lock_watch, daemon=True))
    for thread in threads:
        thread.start()
    try:
        yield fleet
    finally:
        fleet.stop.set()
        for thread in threads:
            thread.join(30)
        for host in hosts:
            host.stop()
        registry.stop()


@pytest.mark.parametrize("step", KILL_POINTS)
def test_killing_the_active_node_at_a_rotation_step_leaves_one_rotation_and_a_converged_fleet(
        ha_fleet: Fleet, step: str) -> None:
    """Leader SIGKILLed while the rotating host is held at `step`: at most one new version (exactly one once
    published), never two lock holders, every host converged, no failed pull, the journal closed, the
    lock released (also when the lock's own write met the election: `locking`)."""
    cluster = ha_fleet.cluster
    cluster.wait_healthy()
    before, _ = ha_fleet.kv()
    pulls_before = len(ha_fleet.pulls)
    rotator = ha_fleet.hosts[before % HOSTS]
    flag = ha_fleet.pause_dir / step
    flag.touch()
    began = time.monotonic()
    trigger = threading.Thread(target=rotator.rotate_now, daemon=True)
    trigger.start()
    wait_for(f"the rotation reached {step}", (ha_fleet.pause_dir / f"{step}.reached").exists, 60)
    leader = cluster.active()
    cluster.kill(leader)
    flag.unlink()
    (ha_fleet.pause_dir / f"{step}.reached").unlink()
    new_leader = cluster.wait_active(exclude=[leader])
    trigger.join(120)  # `regwarden rotate` returns when the rotation is done or rolled back
    assert not trigger.is_alive()
    wait_for("the rotation is finished or rolled back on every host",
             lambda: all(h.open_rotations() == 0 for h in ha_fleet.hosts), 90)
    wait_for("every host holds Vault's current version", ha_fleet.converged, 60)
    converged_in = time.monotonic() - began
    cluster.restart(leader)
    version, _ = ha_fleet.kv()
    lock_began = time.monotonic()
    wait_for("the lock is free", ha_fleet.lock_free, 90)  # (expired, were it left to its lease: 72 s)
    lock = ha_fleet.lock()
    lock_outcome = "released" if lock.get("holder") == "" else "expired"
    failed = [p for p in ha_fleet.pulls[pulls_before:] if not p[1]]
    outcome = {"step": step, "rotations": version - before, "lock_overlaps": ha_fleet.lock_overlaps,
               "failed_pulls": len(failed), "pulls": len(ha_fleet.pulls) - pulls_before,
               "converged_s": round(converged_in, 1),
               "lock": lock_outcome, "lock_free_after_s": round(time.monotonic() - lock_began, 1),
               "old_leader": leader, "new_leader": new_leader}
    if os.environ.get(RESULTS_ENV):
        with Path(os.environ[RESULTS_ENV]).open("a") as out:
            out.write(json.dumps(outcome) + "\n")
    assert not failed, failed[:3]
    assert ha_fleet.lock_overlaps == 0
    published = KILL_POINTS.index(step) >= KILL_POINTS.index("published")
    assert version - before in ((1,) if published else (0, 1)), outcome
    assert lock_outcome == "released", outcome
    assert new_leader != leader



# how long each fault lasts; the request rate is compared over WINDOW before the fault and from recovery on
FAULT_SECONDS = {"sealed": 60.0, "partitioned": 30.0}
WINDOW = 20.0


def _fleet_requests(fleet: Fleet) -> float:
    return sum(host.vault_requests() for host in fleet.hosts)


def _vault_view(host: Instance) -> tuple[bool, str, dict[str, str]]:
    """(up, the node in use, {failing node: its last error}) as the host's /status reports them."""
    vault = host.status()["components"]["credentials"]["vault"]
    return bool(vault["up"]), str(vault["node"]), {
        str(n["address"]): str(n["last_error"]) for n in vault["nodes"] if n["failing_since"]}


@pytest.mark.parametrize("fault", ["sealed", "partitioned"])
def test_a_sealed_or_partitioned_node_costs_no_pull_and_the_fleet_does_not_stampede_on_recovery(
        ha_fleet: Fleet, fault: str) -> None:
    """The node most hosts use is sealed for 60 s (or SIGSTOPped for 30 s: a partition, its port accepts and
    nothing answers) while a host rotates: one new version, never two hosts rotating, no failed pull, every
    host converged and reporting Vault up, each host that used the node reporting it failing with its error
    (in /status and `regwarden status`); from the node's return on, the fleet sends Vault at most twice its
    steady request rate, and every host reports the node healthy again (its health check)."""
    cluster, hosts = ha_fleet.cluster, ha_fleet.hosts
    cluster.wait_healthy()
    wait_for("no rotation open", lambda: all(h.open_rotations() == 0 for h in hosts), 90)
    start, began = _fleet_requests(ha_fleet), time.monotonic()
    time.sleep(WINDOW)
    steady = (_fleet_requests(ha_fleet) - start) / (time.monotonic() - began)
    in_use = {h.workdir.name: _vault_view(h)[1] for h in hosts}
    active = cluster.active()
    counts = {i: sum(1 for node in in_use.values() if node == a) for i, a in enumerate(cluster.addresses)}
    target = max(counts, key=lambda i: (counts[i], i == active))  # at least 2 of 5 hosts use it
    users = [h for h in hosts if in_use[h.workdir.name] == cluster.addresses[target]]
    before, _ = ha_fleet.kv()
    pulls_before = len(ha_fleet.pulls)
    fault_began = time.monotonic()
    if fault == "sealed":
        cluster.seal(target)
    else:
        cluster.pause(target)
    try:
        if target == active:
            cluster.wait_active(exclude=[target])
        rotated = hosts[before % HOSTS].rotate_now()
        assert rotated.returncode == 0, rotated.stdout + rotated.stderr
        wait_for("every host holds Vault's current version", ha_fleet.converged, 60)
        converged_in = time.monotonic() - fault_began
        views = {h.workdir.name: _vault_view(h) for h in hosts}
        texts = {h.workdir.name: _status_text(h) for h in users}
        time.sleep(max(0.0, FAULT_SECONDS[fault] - (time.monotonic() - fault_began)))
        version, _ = ha_fleet.kv()
    finally:
        if fault == "sealed":
            cluster.unseal(target)
        else:
            cluster.resume(target)
    start, began = _fleet_requests(ha_fleet), time.monotonic()
    time.sleep(WINDOW)
    recovery = (_fleet_requests(ha_fleet) - start) / (time.monotonic() - began)
    cluster.wait_healthy()
    # the hosts health-check the node once its back-off (retry_max 10 s) is over: reported healthy again
    wait_for("every host reports every node healthy", lambda: all(not _vault_view(h)[2] for h in hosts), 30)
    healthy_again = time.monotonic() - began
    failed = [p for p in ha_fleet.pulls[pulls_before:] if not p[1]]
    outcome = {"fault": fault, "node": target, "was_active": target == active, "users": len(users),
               "rotations": version - before, "failed_pulls": len(failed),
               "pulls": len(ha_fleet.pulls) - pulls_before, "converged_s": round(converged_in, 1),
               "steady_rps": round(steady, 2), "recovery_rps": round(recovery, 2),
               "recovery_vs_steady": round(recovery / steady, 2), "healthy_again_s": round(healthy_again, 1),
               "reports": {name: {"up": up, "node": node, "failing": failing}
                           for name, (up, node, failing) in views.items()}}
    if os.environ.get(RESULTS_ENV):
        with Path(os.environ[RESULTS_ENV]).open("a") as out:
            out.write(json.dumps(outcome) + "\n")
    assert not failed, failed[:3]
    assert ha_fleet.lock_overlaps == 0
    assert version - before == 1, outcome
    assert len(users) >= 2 and all(up for up, _, _ in views.values()), outcome
    expected = "HTTP 5" if fault == "sealed" else "timed out"
    for host in users:
        _, node, failing = views[host.workdir.name]
        assert node != cluster.addresses[target] and expected in failing.get(cluster.addresses[target], ""), outcome
        assert f"node {cluster.addresses[target]}: " in texts[host.workdir.name], texts[host.workdir.name]
    assert recovery <= 2 * steady, outcome


def _status_text(host: Instance) -> str:
    """What `regwarden status` prints on the host."""
    result = subprocess.run([sys.executable, "-m", "regwarden", "status", "-c", str(host.config)],
                            capture_output=True, text=True, timeout=30, env=regwarden_env())
    return result.stdout
