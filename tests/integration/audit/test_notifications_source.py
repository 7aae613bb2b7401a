"""The notifications receiver with a real registry: pushes and pulls through dockerd arrive with
their actor, while bad requests are refused (401/413/400) without disturbing anything."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from regwarden.config import RegistryNotificationsSource
from regwarden.sources.notifications import PATH, NotificationReceiver
from tests.integration.harness import DockerEngine, RegistryServer, pull_image, push_image, secret_file
from tests.sources_support import free_port, make_context

pytestmark = pytest.mark.integration

TOKEN = "notify-token-7f3a9c"


def test_registry_push_and_pull_arrive_with_their_actor_despite_bad_requests(
    registry_factory: Callable[..., RegistryServer], dockerd: DockerEngine, tiny_image: str, tmp_path: Path,
) -> None:
    """401 (no or wrong token), 413 (2 MiB) and 400 (not JSON) are answered and counted, and the
    registry's push and pull notifications for tiny:1 still reach the bus naming the htpasswd user."""
    token_file = secret_file(tmp_path / "notify-token", TOKEN)
    port = free_port()
    url = f"http://127.0.0.1:{port}{PATH}"
    with make_context(tmp_path / "state") as collected:
        receiver = NotificationReceiver(RegistryNotificationsSource(listen=f"127.0.0.1:{port}", token_file=token_file))
        receiver.start(collected.ctx)
        try:
            registry = registry_factory(notifications_url=url, notifications_token=TOKEN)

            assert requests.post(url, data=b"{}", timeout=5).status_code == 401
            assert requests.post(url, data=b"{}", timeout=5,
                                 headers={"Authorization": "Bearer not-the-token"}).status_code == 401
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                             f"Content-Length: {2 * 1024 * 1024}\r\n\r\n".encode() + b"{" * 65536)
                assert sock.recv(4096).startswith(b"HTTP/1.1 413")
            malformed = requests.post(url, data=b"{not json", timeout=5, headers={"Authorization": f"Bearer {TOKEN}"})
            assert malformed.status_code == 400 and "JSON" in malformed.text

            client = dockerd.client()
            try:
                reference = push_image(client, registry.host_port, "team/app", "1", auth=registry.auth_config,
                                       source=tiny_image)
                client.images.remove(reference)
                pull_image(client, reference, auth=registry.auth_config)
            finally:
                client.close()

            def arrived(kind: str) -> bool:
                return any(e.actor.user == registry.username and e.target.repository == "team/app"
                           for e in collected.of("registry-notify", kind))

            collected.wait("push notification", lambda: arrived("image.push"), timeout=30)
            collected.wait("pull notification", lambda: arrived("image.pull"), timeout=30)
            push = next(e for e in collected.of("registry-notify", "image.push") if e.target.tag == "1")
            # no [[registries]] entry for it: the record names the registry by its address
            assert (push.target.registry, push.target.address) == (registry.host_port,) * 2 and push.request_id
            assert receiver.health().ready
        finally:
            receiver.stop()
        rejected = {reason: collected.rejected("registry-notify", reason)
                    for reason in ("unauthorized", "too_large", "malformed")}
        assert rejected == {"unauthorized": 2, "too_large": 1, "malformed": 1}
        ids = [e.id for e in collected.of("registry-notify")]
        assert len(ids) == len(set(ids))
        assert not any(TOKEN in str(e.record()) for e in collected.events)


def test_tls_receiver_answers_while_a_client_stalls_in_the_handshake(tmp_path: Path) -> None:
    """With tls_cert_file/tls_key_file the receiver speaks HTTPS; a client that connects and never
    starts the TLS handshake does not keep others from being answered."""
    from tests.integration.harness import make_certificates
    from tests.unit.sources.test_notifications import envelope

    certs = make_certificates(tmp_path / "certs", "127.0.0.1")
    token_file = secret_file(tmp_path / "notify-token", TOKEN)
    port = free_port()
    cfg = RegistryNotificationsSource(listen=f"127.0.0.1:{port}", token_file=token_file,
                                      tls_cert_file=certs.server_cert, tls_key_file=certs.server_key)
    with make_context(tmp_path / "state") as collected:
        receiver = NotificationReceiver(cfg)
        receiver.start(collected.ctx)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5):  # silent: no ClientHello
                response = requests.post(f"https://127.0.0.1:{port}{PATH}", data=envelope("t1"), timeout=5,
                                         verify=str(certs.ca), headers={"Authorization": f"Bearer {TOKEN}"})
                assert response.status_code == 200
            with pytest.raises(requests.exceptions.ConnectionError):
                requests.post(f"http://127.0.0.1:{port}{PATH}", data=b"{}", timeout=5)  # plain HTTP: no
            collected.wait("t1", lambda: any(e.id == "t1" for e in collected.events))
        finally:
            receiver.stop()
