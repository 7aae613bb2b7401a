"""The Vault client against a real 3-node OpenBao cluster: it fails over when a node dies, is sealed or hangs."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from regwarden.config import VaultConfig
from regwarden.errors import VaultError
from regwarden.metrics import Metrics
from regwarden.vault import VaultClient
from tests.integration.harness import OpenBaoCluster, secret_file, wait_for

pytestmark = pytest.mark.integration


def node_failures(metrics: Metrics, address: str) -> float:
    return metrics.registry.get_sample_value("regwarden_vault_node_failures_total", {"node": address}) or 0.0


def make_client(cluster: OpenBaoCluster, tmp_path: Path, metrics: Metrics, order: list[int]) -> VaultClient:
    token = secret_file(tmp_path / "token", cluster.token)
    return VaultClient(VaultConfig.model_validate({
        "address": [cluster.addresses[i] for i in order], "timeout": "2s", "retry_max": "5s",
        "auth": {"method": "token", "token_file": str(token)}}), metrics)


def test_a_watch_keeps_reading_while_the_active_node_is_killed(healthy_cluster: OpenBaoCluster,
                                                               tmp_path: Path) -> None:
    """Polling KV metadata through the leader first: killing the leader costs no failed poll and
    writes after the election land on the new leader."""
    metrics = Metrics()
    leader = healthy_cluster.active()
    client = make_client(healthy_cluster, tmp_path, metrics, [leader, *(i for i in range(3) if i != leader)])
    client.write("secret", "failover/watch", {"v": "1"}, cas=None)
    failures: list[str] = []
    reads = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                client.read_metadata("secret", "failover/watch")
                reads += 1
            except VaultError as exc:
                failures.append(str(exc))
            stop.wait(0.2)

    poller = threading.Thread(target=watch, daemon=True)
    poller.start()
    wait_for("some reads through the leader", lambda: reads > 3, 10)
    healthy_cluster.kill(leader)
    new = healthy_cluster.wait_active(exclude=[leader])
    wait_for("writes on the new leader", lambda: _writes(client), 30)
    before = reads
    wait_for("the watch goes on", lambda: reads > before + 5, 20)
    stop.set()
    poller.join(5)
    assert failures == []
    assert node_failures(metrics, healthy_cluster.addresses[leader]) >= 1
    assert client.node != healthy_cluster.addresses[leader]
    assert new != leader
    client.close()


def _writes(client: VaultClient) -> bool:
    client.write("secret", "failover/watch", {"v": "2"}, cas=None)
    return True


def test_a_sealed_node_is_skipped(healthy_cluster: OpenBaoCluster, tmp_path: Path) -> None:
    """With the first listed node sealed, requests are answered by the next node and the sealed one is counted."""
    standby = next(i for i in range(3) if i != healthy_cluster.active())
    metrics = Metrics()
    client = make_client(healthy_cluster, tmp_path, metrics, [standby, *(i for i in range(3) if i != standby)])
    client.write("secret", "failover/sealed", {"v": "1"}, cas=None)
    healthy_cluster.seal(standby)
    assert client.write("secret", "failover/sealed", {"v": "2"}, cas=None) >= 2
    client.read_metadata("secret", "failover/sealed")
    assert node_failures(metrics, healthy_cluster.addresses[standby]) == 1  # then skipped, in back-off
    assert client.up is True
    client.close()


def test_a_hanging_node_costs_one_timeout_then_is_skipped(healthy_cluster: OpenBaoCluster, tmp_path: Path) -> None:
    """A SIGSTOPped node (partitioned: accepts, never answers) times out once; later requests skip it."""
    standby = next(i for i in range(3) if i != healthy_cluster.active())
    metrics = Metrics()
    client = make_client(healthy_cluster, tmp_path, metrics, [standby, *(i for i in range(3) if i != standby)])
    client.write("secret", "failover/paused", {"v": "1"}, cas=None)
    healthy_cluster.pause(standby)
    for _ in range(3):
        client.read_metadata("secret", "failover/paused")
    assert node_failures(metrics, healthy_cluster.addresses[standby]) == 1
    assert client.node != healthy_cluster.addresses[standby]
    client.close()


def test_reads_through_a_standby_see_the_clients_own_writes(healthy_cluster: OpenBaoCluster, tmp_path: Path) -> None:
    """OpenBao 2.x standbys serve reads from their own lagging replica (read straight after a write through
    another standby, 200 of 200 reads were stale on this rig). With the storage index sent back, every read
    through a standby sees the version the client wrote just before, and so does another client's read
    after it has seen that version once."""
    standbys = [i for i in range(3) if i != healthy_cluster.active()]
    order = [standbys[0], *(i for i in range(3) if i != standbys[0])]
    writer = make_client(healthy_cluster, tmp_path, Metrics(), order)
    stale = []
    for _ in range(50):
        version = writer.write("secret", "failover/consistent", {"v": "x"}, cas=None)
        seen = writer.read_metadata("secret", "failover/consistent").current_version
        if seen != version:
            stale.append((version, seen))
    assert stale == []
    assert writer.node == healthy_cluster.addresses[standbys[0]]  # every answer came from the standby
    assert writer.storage_index.value is not None
    writer.close()
