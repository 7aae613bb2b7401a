"""The HA rig itself: three real `bao server` processes in one raft cluster, and the faults it injects."""

from __future__ import annotations

import pytest
import requests

from tests.integration.harness import OpenBaoCluster, wait_for

pytestmark = pytest.mark.integration


def _write_and_read_back(cluster: OpenBaoCluster, via: int, path: str) -> int:
    client = cluster.client(via)
    return int(client.secrets.kv.v2.create_or_update_secret(
        path=path, secret={"v": str(via)}, mount_point="secret")["data"]["version"])


def test_cluster_has_one_active_node_and_two_standbys(healthy_cluster: OpenBaoCluster) -> None:
    """After start every node is unsealed: one answers sys/health as active (200), the others as standby (429)."""
    states = sorted(healthy_cluster.health(i) for i in range(3))
    assert states == [200, 429, 429]
    assert healthy_cluster.health(healthy_cluster.active()) == 200


def _version_on(cluster: OpenBaoCluster, index: int, path: str) -> int:
    meta = cluster.client(index).secrets.kv.v2.read_secret_metadata(path=path, mount_point="secret")["data"]
    return int(meta["current_version"])


def test_a_write_sent_to_a_standby_is_forwarded_to_the_leader(healthy_cluster: OpenBaoCluster) -> None:
    """KV writes through a standby node land in the shared store and reach every node.

    OpenBao 2.x standbys serve reads from their own raft replica (eventually consistent), so the
    other nodes are polled until the write has been applied there.
    """
    standby = next(i for i in range(3) if i != healthy_cluster.active())
    healthy_cluster.client(standby).secrets.kv.v2.create_or_update_secret(
        path="rig/forwarded", secret={"v": "1"}, mount_point="secret")
    version = _version_on(healthy_cluster, healthy_cluster.active(), "rig/forwarded")
    for index in range(3):
        wait_for(f"node {index} applied the write",
                 lambda i=index: _version_on(healthy_cluster, i, "rig/forwarded") == version, 10)


def test_killing_the_active_node_elects_another_that_keeps_the_data(healthy_cluster: OpenBaoCluster) -> None:
    """SIGKILL of the leader: a standby becomes active with the data; the killed node rejoins as standby."""
    before = _write_and_read_back(healthy_cluster, healthy_cluster.active(), "rig/kill")
    old = healthy_cluster.active()
    healthy_cluster.kill(old)
    new = healthy_cluster.wait_active(exclude=[old])
    assert new != old
    assert _write_and_read_back(healthy_cluster, new, "rig/kill") == before + 1
    healthy_cluster.restart(old)
    wait_for("the old leader rejoined as standby", lambda: healthy_cluster.health(old) == 429, 60)


def test_a_sealed_node_answers_503_and_serves_nothing(healthy_cluster: OpenBaoCluster) -> None:
    """A sealed standby answers 503 to reads; unsealed again it serves the data."""
    standby = next(i for i in range(3) if i != healthy_cluster.active())
    healthy_cluster.seal(standby)
    answer = requests.get(f"{healthy_cluster.addresses[standby]}/v1/secret/metadata/rig/forwarded",
                          headers={"X-Vault-Token": healthy_cluster.token}, timeout=5)
    assert answer.status_code == 503
    healthy_cluster.unseal(standby)
    wait_for("unsealed standby", lambda: healthy_cluster.health(standby) == 429, 60)


def test_a_paused_leader_answers_nothing_and_loses_leadership(healthy_cluster: OpenBaoCluster) -> None:
    """SIGSTOP of the leader: its port accepts but never answers, the others elect a new leader."""
    old = healthy_cluster.active()
    healthy_cluster.pause(old)
    with pytest.raises(requests.Timeout):
        requests.get(f"{healthy_cluster.addresses[old]}/v1/sys/health", timeout=1)
    new = healthy_cluster.wait_active(exclude=[old])
    assert new != old
    healthy_cluster.resume(old)
    wait_for("the resumed node stepped down to standby", lambda: healthy_cluster.health(old) == 429, 60)
