"""The notifications receiver: its checks as pure functions, and the real server on loopback."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from regwarden.bus import Checkpoint
from regwarden.config import RegistryNotificationsSource
from regwarden.sources import notifications
from regwarden.sources.notifications import PATH, NotificationReceiver, SeenIds, authorized, body_problem
from regwarden.state import StateStore
from tests.sources_support import Collected, free_port

TOKEN = "s3cret-token-for-tests"


@pytest.mark.parametrize(("header", "ok"), [
    (f"Bearer {TOKEN}", True),
    (f"Bearer {TOKEN} ", True),
    (f"Bearer {TOKEN}x", False),
    (f"bearer {TOKEN}", False),
    (TOKEN, False),
    ("", False),
    (None, False),
    ("Bearer é", False),
])
def test_authorized(header: str | None, ok: bool) -> None:
    """Only `Bearer <token>` exactly is accepted."""
    assert authorized(header, TOKEN) is ok


@pytest.mark.parametrize(("length", "expected"), [
    ("10", None),
    ("1048576", None),
    ("1048577", (413, "too_large")),
    (None, (411, "no_length")),
    ("abc", (400, "bad_length")),
    ("-1", (400, "bad_length")),
])
def test_body_problem(length: str | None, expected: tuple[int, str] | None) -> None:
    """The Content-Length alone decides 411/413/400 before any body byte is read."""
    assert body_problem(length, 1024 * 1024) == expected


def test_seen_ids_are_kept_for_the_retention_and_bounded(tmp_path: Path) -> None:
    """Ids older than the retention, or beyond the maximum count, are forgotten."""
    state = StateStore(tmp_path)
    seen = SeenIds(state, retention=100, maximum=3)
    seen.remember(["old"], now=1000)
    seen.remember(["a", "b", "c", "d"], now=1090)
    assert seen.unseen(["old", "a", "new"]) == {"new"}
    seen.prune(now=1150)
    assert "old" in seen.unseen(["old"])
    assert len(seen.unseen(["a", "b", "c", "d"])) == 1
    state.close()


# --------------------------------------------------------------------------- the server


def envelope(*ids: str, action: str = "push") -> bytes:
    return json.dumps({"events": [{
        "id": i, "timestamp": "2026-11-27T07:09:50.5Z", "action": action,
        "target": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "repository": "team/app",
                   "tag": "1", "digest": "sha256:" + "a" * 64,
                   "url": "http://127.0.0.1:5000/v2/team/app/manifests/sha256:" + "a" * 64},
        "request": {"id": "r-" + i, "addr": "127.0.0.1:4000", "host": "127.0.0.1:5000", "method": "PUT",
                    "useragent": "docker/20.10"},
        "actor": {"name": "alice"}, "source": {"addr": "reg:5000", "instanceID": "x"}} for i in ids]}).encode()


@contextlib.contextmanager
def receiver(collected: Collected, tmp_path: Path) -> Iterator[tuple[NotificationReceiver, str]]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    cfg = RegistryNotificationsSource(listen=f"127.0.0.1:{free_port()}", token_file=token_file)
    component = NotificationReceiver(cfg)
    component.start(collected.ctx)
    host, port = component.address
    try:
        yield component, f"http://{host}:{port}{PATH}"
    finally:
        component.stop()


def post(url: str, body: bytes, token: str | None = TOKEN) -> requests.Response:
    headers = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(url, data=body, headers=headers, timeout=5)


@pytest.fixture
def served(collected: Collected, tmp_path: Path) -> Iterator[tuple[NotificationReceiver, str]]:
    with receiver(collected, tmp_path) as found:
        yield found


def test_valid_envelope_is_accepted_and_published(collected: Collected,
                                                  served: tuple[NotificationReceiver, str]) -> None:
    """200, and each event reaches the bus with its actor and request id."""
    response = post(served[1], envelope("e1", "e2"))
    assert response.status_code == 200
    collected.wait("2 events", lambda: len(collected.of("registry-notify")) == 2)
    first = collected.of("registry-notify")[0]
    assert (first.kind, first.actor.user, first.request_id, first.id) == ("image.push", "alice", "r-e1", "e1")


def test_duplicate_event_ids_are_published_once(collected: Collected,
                                                served: tuple[NotificationReceiver, str]) -> None:
    """A redelivered envelope (the registry retries) is answered 200 but adds nothing."""
    assert post(served[1], envelope("d1")).status_code == 200
    assert post(served[1], envelope("d1", "d2")).status_code == 200
    collected.wait("d2", lambda: any(e.id == "d2" for e in collected.events))
    assert [e.id for e in collected.of("registry-notify")] == ["d1", "d2"]


def test_seen_ids_survive_a_restart(collected: Collected, tmp_path: Path) -> None:
    """A new receiver with the same state store still ignores ids it accepted before."""
    with receiver(collected, tmp_path) as (_, url):
        assert post(url, envelope("p1")).status_code == 200
    with receiver(collected, tmp_path) as (_, url):
        assert post(url, envelope("p1", "p2")).status_code == 200
    collected.wait("p2", lambda: any(e.id == "p2" for e in collected.events))
    assert [e.id for e in collected.of("registry-notify")] == ["p1", "p2"]


@pytest.mark.parametrize(("token", "reason"), [(None, "missing"), ("wrong-token", "wrong")])
def test_missing_or_wrong_token_is_refused(collected: Collected, served: tuple[NotificationReceiver, str],
                                           token: str | None, reason: str) -> None:
    """401 and nothing published; counted as unauthorized."""
    response = post(served[1], envelope("u1"), token=token)
    assert response.status_code == 401, reason
    assert collected.rejected("registry-notify", "unauthorized") == 1
    assert post(served[1], envelope("u2")).status_code == 200
    collected.wait("u2", lambda: bool(collected.of("registry-notify")))
    assert [e.id for e in collected.of("registry-notify")] == ["u2"]


def test_oversized_body_is_refused_without_reading_it(collected: Collected,
                                                      served: tuple[NotificationReceiver, str]) -> None:
    """A Content-Length over max_body_bytes gets 413 before the client has sent the body."""
    host, port = served[0].address
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                     f"Content-Length: {2 * 1024 * 1024}\r\n\r\n".encode())
        answer = sock.recv(4096)  # no body sent at all: the answer cannot depend on it
    assert answer.startswith(b"HTTP/1.1 413")
    assert collected.rejected("registry-notify", "too_large") == 1


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"events": {}}', b'{"events": [{"id": 1}]}'])
def test_malformed_envelope_is_refused_with_a_reason(collected: Collected,
                                                     served: tuple[NotificationReceiver, str], body: bytes) -> None:
    """400 with a short reason; the next good envelope is still accepted."""
    response = post(served[1], body)
    assert response.status_code == 400
    assert 0 < len(response.text) <= 201
    assert post(served[1], envelope("m1")).status_code == 200
    assert collected.rejected("registry-notify", "malformed") == 1


def test_slow_client_does_not_block_others(collected: Collected, served: tuple[NotificationReceiver, str]) -> None:
    """A connection that sends half a request and stalls does not stop other requests being answered."""
    host, port = served[0].address
    with socket.create_connection((host, port), timeout=5) as stalled:
        stalled.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Le".encode())
        assert post(served[1], envelope("s1")).status_code == 200


def test_wrong_path_and_method(served: tuple[NotificationReceiver, str]) -> None:
    """Other paths are 404, other methods 405."""
    base = served[1].removesuffix(PATH)
    assert requests.post(base + "/v1/other", data=b"{}", timeout=5,
                         headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
    assert requests.get(served[1], timeout=5).status_code == 405


def test_token_never_appears_in_status(served: tuple[NotificationReceiver, str]) -> None:
    """The component's status and health do not carry the token."""
    text = json.dumps(served[0].status()) + str(served[0].health())
    assert TOKEN not in text


def test_the_answer_waits_until_the_records_are_durable(collected: Collected, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """While the audit trail holds the envelope's checkpoint (not on disk yet) the answer is 503, the
    events are published once and not remembered as seen; once they are durable, the registry's retry
    of the same envelope gets 200 without publishing them again, and the ids are remembered."""
    monkeypatch.setattr(notifications, "DURABLE_TIMEOUT", 0.3)
    held: list[Checkpoint] = []
    collected.ctx.bus.set_keeper(held.append)
    seen = SeenIds(collected.ctx.state)
    with receiver(collected, tmp_path) as (component, url):
        first = post(url, envelope("e1", "e2"))
        assert (first.status_code, first.text) == (503, "audit log not written yet, retry later\n")
        assert collected.rejected("registry-notify", "not_durable") == 1
        collected.wait("the events published", lambda: len(collected.of("registry-notify")) == 2)
        assert seen.unseen(["e1", "e2"]) == {"e1", "e2"}  # a restart now would take them again
        for checkpoint in held:
            checkpoint.run()
        collected.ctx.bus.set_keeper(None)  # durable from now on as soon as dispatched
        assert post(url, envelope("e1", "e2")).status_code == 200
        assert [e.id for e in collected.of("registry-notify")] == ["e1", "e2"]
        assert seen.unseen(["e1", "e2"]) == set()
        assert component.status()["accepted"] == 2



def test_a_keep_alive_connection_after_stop_gets_503(collected: Collected, tmp_path: Path) -> None:
    """A stopped receiver (a reload) takes nothing more on connections still open: 503, closed, so the
    registry retries on a new connection, to the new receiver."""
    with receiver(collected, tmp_path) as (component, url):
        session = requests.Session()
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert session.post(url, data=envelope("a"), headers=headers, timeout=5).status_code == 200
        component.stop()
        late = session.post(url, data=envelope("after-stop"), headers=headers, timeout=5)
        assert (late.status_code, late.headers.get("Connection")) == (503, "close")
        assert component.status()["accepted"] == 1
