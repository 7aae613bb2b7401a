"""The harness's fixtures start real services that do what the other integration tests rely on."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker.errors
import pytest
import requests

from tests.integration.harness import (
    Alertmanager,
    DockerEngine,
    ImageTransferError,
    NetnsHost,
    OpenBaoDev,
    OpenBaoRaft,
    RegistryServer,
    free_port,
    import_tiny_image,
    make_certificates,
    pull_image,
    push_image,
    require,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_require_fails_a_missing_component_when_ci_is_true(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    """With CI=true a missing component fails the test (naming it) instead of skipping it."""
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="'frobnicator'"):
        require("'frobnicator'", False)


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_require_skips_a_missing_component_outside_ci(monkeypatch: pytest.MonkeyPatch, ci: str | None) -> None:
    """Without CI=true a missing component skips the test, naming it; a present one does neither."""
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    require("'frobnicator'", True)
    with pytest.raises(pytest.skip.Exception, match="'frobnicator'"):
        require("'frobnicator'", False)


def test_openbao_dev_server_stores_and_returns_kv_v2_secrets(openbao: OpenBaoDev) -> None:
    """A secret written to KV v2 at secret/ reads back with its version."""
    kv = openbao.client().secrets.kv.v2
    kv.create_or_update_secret(path="harness/kv", secret={"username": "u", "password": "p"}, mount_point="secret")
    read = kv.read_secret_version(path="harness/kv", mount_point="secret", raise_on_deleted_version=True)
    assert read["data"]["data"] == {"username": "u", "password": "p"}
    assert read["data"]["metadata"]["version"] >= 1


def test_openbao_raft_server_keeps_data_across_restart(
    openbao_raft_factory: Callable[[], OpenBaoRaft],
) -> None:
    """A raft server stopped and started again is unsealed and still has the secret written before."""
    server = openbao_raft_factory()
    server.client().secrets.kv.v2.create_or_update_secret(path="keep", secret={"v": "1"}, mount_point="secret")
    server.stop()
    server.start()
    read = server.client().secrets.kv.v2.read_secret_version(
        path="keep", mount_point="secret", raise_on_deleted_version=True)
    assert read["data"]["data"] == {"v": "1"}


def test_dockerd_runs_the_tiny_image_without_network(dockerd: DockerEngine, tiny_image: str) -> None:
    """The private engine answers /_ping and runs `busybox true` from tiny:1 with network none."""
    client = dockerd.client()
    try:
        assert client.ping()
        output = client.containers.run(tiny_image, ["busybox", "echo", "hello"], network_mode="none",
                                       remove=True)
        assert output.strip() == b"hello"
        client.containers.run(tiny_image, ["busybox", "true"], network_mode="none", remove=True)
        with pytest.raises(docker.errors.ContainerError):
            client.containers.run(tiny_image, ["busybox", "false"], network_mode="none", remove=True)
    finally:
        client.close()


def test_dockerd_factory_passes_extra_flags(dockerd_factory: Callable[..., DockerEngine]) -> None:
    """Keyword arguments become dockerd flags (repeated for lists)."""
    engine = dockerd_factory(debug=True, insecure_registry=["198.18.0.2:5000", "198.18.0.6:5000"])
    client = engine.client()
    try:
        info = client.info()
    finally:
        client.close()
    assert info["Debug"] is True
    assert {"198.18.0.2:5000", "198.18.0.6:5000"} <= set(info["RegistryConfig"]["IndexConfigs"])


def test_dockerd_restart_keeps_images(dockerd_factory: Callable[..., DockerEngine]) -> None:
    """A factory engine restarted with `.restart()` answers again and keeps its images."""
    engine = dockerd_factory()
    client = engine.client()
    import_tiny_image(client, "tiny:restart")
    client.close()
    engine.restart()
    client = engine.client()
    try:
        assert client.images.get("tiny:restart")
    finally:
        client.close()


def test_registry_push_and_pull_need_the_right_password(
    dockerd: DockerEngine, tiny_image: str, registry: RegistryServer,
) -> None:
    """Push and pull through the htpasswd registry succeed with the right password, fail with a wrong one."""
    client = dockerd.client()
    wrong = {"username": registry.username, "password": "wrong-" + registry.password}
    try:
        with pytest.raises(ImageTransferError, match="unauthorized"):
            push_image(client, registry.host_port, "harness/denied", "1", auth=wrong, source=tiny_image)
        ref = push_image(client, registry.host_port, "harness/tiny", "1", auth=registry.auth_config,
                         source=tiny_image)
        client.images.remove(ref)
        with pytest.raises(ImageTransferError, match="unauthorized"):
            pull_image(client, ref, auth=wrong)
        pull_image(client, ref, auth=registry.auth_config)
        assert client.images.get(ref)
    finally:
        client.close()
    assert "harness/tiny" in registry.log_path.read_text()


def test_registry_accepts_users_added_while_running(registry_factory: Callable[..., RegistryServer]) -> None:
    """A user added with add_user() can log in to a running registry; a stranger gets 401."""
    server = registry_factory(log_format="text")
    server.add_user("late", "late-password")
    assert requests.get(f"{server.url}/v2/", auth=("late", "late-password"), timeout=5).status_code == 200
    assert requests.get(f"{server.url}/v2/", auth=("late", "nope"), timeout=5).status_code == 401


def test_alertmanager_is_ready_and_accepts_alerts(alertmanager: Alertmanager) -> None:
    """Alertmanager answers /-/ready and lists an alert posted to API v2."""
    assert requests.get(f"{alertmanager.url}/-/ready", timeout=5).status_code == 200
    posted = requests.post(f"{alertmanager.url}/api/v2/alerts", json=[{"labels": {"alertname": "HarnessTest"}}],
                           timeout=5)
    assert posted.status_code == 200
    alerts = requests.get(f"{alertmanager.url}/api/v2/alerts", timeout=5).json()
    assert [a["labels"]["alertname"] for a in alerts] == ["HarnessTest"]


def test_registry_in_a_network_namespace_is_reachable_from_the_host(
    netns_factory: Callable[[], NetnsHost], registry_factory: Callable[..., RegistryServer],
) -> None:
    """A registry started inside a test namespace answers on the namespace's own address."""
    host = netns_factory()
    server = registry_factory(netns=host)
    assert server.host_port.startswith(host.ns_addr + ":")
    assert requests.get(f"{server.url}/v2/", timeout=5).status_code == 401
    assert host.run(["ip", "-4", "addr", "show"]).stdout.count(host.ns_addr) == 1


def test_tls_registry_in_a_namespace_requires_a_client_certificate(
    tmp_path: Path, netns_factory: Callable[[], NetnsHost], registry_factory: Callable[..., RegistryServer],
) -> None:
    """A TLS registry with clientcas completes the handshake only for a client certificate from that CA."""
    host = netns_factory()
    certs = make_certificates(tmp_path / "pki", host.ns_addr)
    server = registry_factory(auth=False, tls=certs.registry_tls(client_certs=True), netns=host)
    assert server.url.startswith("https://")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{server.url}/v2/", verify=str(certs.ca), timeout=5)
    answer = requests.get(f"{server.url}/v2/", verify=str(certs.ca), cert=(str(certs.client_cert),
                          str(certs.client_key)), timeout=5)
    assert answer.status_code == 200


@pytest.fixture
def notification_inbox() -> Iterator[tuple[str, queue.Queue[tuple[dict[str, str], dict[str, object]]]]]:
    """A local HTTP endpoint collecting (headers, envelope) of every POST."""
    inbox: queue.Queue[tuple[dict[str, str], dict[str, object]]] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            inbox.put((dict(self.headers), json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1/registry-events", inbox
    finally:
        server.shutdown()
        server.server_close()


def test_registry_notifies_pushes_with_the_bearer_token(
    dockerd: DockerEngine, tiny_image: str, registry_factory: Callable[..., RegistryServer],
    notification_inbox: tuple[str, queue.Queue[tuple[dict[str, str], dict[str, object]]]],
) -> None:
    """A push is announced to the notifications endpoint with the configured Authorization header."""
    url, inbox = notification_inbox
    server = registry_factory(notifications_url=url, notifications_token="t0ken")
    client = dockerd.client()
    try:
        push_image(client, server.host_port, "harness/notified", "1", auth=server.auth_config, source=tiny_image)
    finally:
        client.close()
    headers, envelope = inbox.get(timeout=30)
    assert headers["Authorization"] == "Bearer t0ken"
    assert isinstance(envelope["events"], list)
    assert {event["actor"]["name"] for event in envelope["events"]} == {server.username}


def test_tool_fixtures_point_at_executables(promtool: str, systemd_analyze: str) -> None:
    """promtool and systemd-analyze are there and run."""
    assert subprocess.run([promtool, "--version"], capture_output=True, check=True).returncode == 0
    assert subprocess.run([systemd_analyze, "--version"], capture_output=True, check=True).returncode == 0
