"""Endpoints that answer nonsense: each scan says what went wrong and where, and never raises."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from regwarden.posture.httpscan import USER_AGENT, scan_auth
from regwarden.posture.tlsscan import scan_tls
from tests.http_stub import Answer, Start, stub_servers


@pytest.fixture
def server() -> Iterator[Start]:
    with stub_servers() as start:
        yield start


def test_v2_answering_500_is_an_error_not_a_verdict(server: Any) -> None:
    url, _ = server(lambda path: (500, {}, b"oops"))
    scan = scan_auth(url, repository="r/p", timeout=2)
    assert scan.error == "/v2/ answered HTTP 500 without credentials"
    assert scan.open is None


def test_realm_answering_garbage_is_counted_and_refused(server: Any) -> None:
    realm, _ = server(lambda path: (200, {"Content-Type": "application/json"}, b"{not json"))

    def registry(path: str) -> Answer:
        return 401, {"WWW-Authenticate": f'Bearer realm="{realm}/token",service="s"'}, b""

    url, seen = server(registry)
    scan = scan_auth(url, repository="r/p", timeout=2, default_pairs=[("admin", "admin")])
    assert scan.error is None
    assert (scan.anonymous_pull, scan.anonymous_push, scan.catalog_open, scan.default_user) == (False, False, False,
                                                                                                   None)
    assert scan.errors and all(e == "token: the realm answered 200 with a body that is not JSON" for e in scan.errors)
    assert {request["User-Agent"] for request in seen} == {USER_AGENT}


def test_catalog_answering_oddly_is_unknown(server: Any) -> None:
    def registry(path: str) -> Answer:
        if path.startswith("/v2/_catalog"):
            return 502, {}, b""
        return (401, {"WWW-Authenticate": 'Basic realm="r"'}, b"") if path == "/v2/" else (401, {}, b"")

    url, _ = server(registry)
    scan = scan_auth(url, repository="r/p", timeout=2)
    assert scan.catalog_open is None
    assert scan.errors == ("catalog_anonymous: /v2/_catalog answered HTTP 502",)


def test_nothing_listening() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert scan_auth(f"http://127.0.0.1:{port}", repository="r/p", timeout=1).error == \
        "auth scan failed: ConnectionError"
    assert scan_tls("127.0.0.1", port, ca_cert=None, timeout=1).error is not None


def test_tls_scan_of_a_plain_http_port(server: Any) -> None:
    url, _ = server(lambda path: (400, {}, b""))
    port = int(url.rsplit(":", 1)[1])
    scan = scan_tls("127.0.0.1", port, ca_cert=None, timeout=2)
    assert scan.error is not None and scan.error.startswith("TLS handshake failed")
