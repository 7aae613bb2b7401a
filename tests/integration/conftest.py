"""Fixtures handing real services to integration tests (machinery in `harness.py`).

Session-scoped where sharing is harmless (OpenBao dev server, dockerd + tiny image, the default
registry, tool paths); per test where state would leak between tests (Alertmanager, factories).
Every process is stopped and every namespace removed at teardown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    TINY_IMAGE,
    Alertmanager,
    DockerEngine,
    NetnsHost,
    OpenBaoCluster,
    OpenBaoDev,
    OpenBaoRaft,
    RegistryServer,
    RegistryTLS,
    binary,
    import_tiny_image,
    running,
)


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoDev]:
    """An OpenBao dev server (in memory, KV v2 at secret/), shared by the session."""
    with running(OpenBaoDev(tmp_path_factory.mktemp("openbao"))) as server:
        yield server


@pytest.fixture
def openbao_raft_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], OpenBaoRaft]]:
    """Make persistent (raft) OpenBao servers that survive `.stop()` / `.start()`."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(running(OpenBaoRaft(tmp_path_factory.mktemp("openbao-raft"))))


@pytest.fixture(scope="session")
def openbao_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoCluster]:
    """A 3-node OpenBao raft cluster (KV v2 at secret/), shared by the session.

    Tests that fault a node bring it back before they end (`restart`, `unseal`, `resume`) and leave
    the cluster healthy; the `healthy_cluster` fixture checks that around each of them.
    """
    with running(OpenBaoCluster(tmp_path_factory.mktemp("openbao-cluster"))) as cluster:
        yield cluster


@pytest.fixture
def healthy_cluster(openbao_cluster: OpenBaoCluster) -> Iterator[OpenBaoCluster]:
    """The session's cluster, every node back up and unsealed after the test whatever it did."""
    openbao_cluster.wait_healthy()
    yield openbao_cluster
    for index in range(len(openbao_cluster.processes)):
        if index in openbao_cluster.paused:
            openbao_cluster.resume(index)
        if not openbao_cluster.processes[index].running:
            openbao_cluster.restart(index)
        elif openbao_cluster.health(index) == 503:
            openbao_cluster.unseal(index)
    openbao_cluster.wait_healthy()


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    """A private Docker engine shared by the session."""
    with running(DockerEngine(tmp_path_factory.mktemp("dockerd"))) as engine:
        yield engine


@pytest.fixture
def dockerd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., DockerEngine]]:
    """Make private Docker engines with extra flags: `dockerd_factory(insecure_registry="1.2.3.4:5000")`."""
    with contextlib.ExitStack() as stack:
        def make(**extra_args: Any) -> DockerEngine:
            engine = DockerEngine(tmp_path_factory.mktemp("dockerd"), **extra_args)
            return stack.enter_context(running(engine))

        yield make


@pytest.fixture(scope="session")
def tiny_image(dockerd: DockerEngine) -> str:
    """"tiny:1" (static busybox) imported into the session's `dockerd`."""
    client = dockerd.client()
    try:
        return import_tiny_image(client, TINY_IMAGE)
    finally:
        client.close()


@pytest.fixture
def netns_factory() -> Iterator[Callable[[], NetnsHost]]:
    """Make network-namespace test hosts (own address, reachable from the host); removed after the test."""
    hosts: list[NetnsHost] = []

    def make() -> NetnsHost:
        hosts.append(NetnsHost.create())
        return hosts[-1]

    try:
        yield make
    finally:
        for host in hosts:
            host.delete()


@pytest.fixture
def registry_factory(
    tmp_path_factory: pytest.TempPathFactory,
    netns_factory: Callable[[], NetnsHost],  # set up first, so namespaces outlive their registries
) -> Iterator[Callable[..., RegistryServer]]:
    """Make running registries: `registry_factory(auth=True, notifications_url=None,
    notifications_token=None, log_format="json", tls=None, netns=None, rotatable_log=False)`."""
    with contextlib.ExitStack() as stack:
        def make(
            auth: bool = True,
            notifications_url: str | None = None,
            notifications_token: str | None = None,
            log_format: str = "json",
            tls: RegistryTLS | dict[str, Any] | None = None,
            netns: NetnsHost | None = None,
            rotatable_log: bool = False,
        ) -> RegistryServer:
            server = RegistryServer(
                tmp_path_factory.mktemp("registry"), auth=auth, notifications_url=notifications_url,
                notifications_token=notifications_token, log_format=log_format, tls=tls, netns=netns,
                rotatable_log=rotatable_log,
            )
            return stack.enter_context(running(server))

        yield make


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry on 127.0.0.1 with htpasswd auth (`.username` / `.password`), shared by the session."""
    with running(RegistryServer(tmp_path_factory.mktemp("registry"))) as server:
        yield server


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    """A fresh Alertmanager per test (no alerts left over from other tests)."""
    with running(Alertmanager(tmp_path / "alertmanager")) as server:
        yield server


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of `promtool`."""
    return binary("promtool")


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    """Path of `systemd-analyze`."""
    return binary("systemd-analyze")
