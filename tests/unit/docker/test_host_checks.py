"""The host checks of the engine audit: daemon.json hosts, the Docker API probe against listeners that are
not Docker, content trust as systemd and pam_env read it, static credentials in other config.json files."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from regwarden.docker.engine_audit import static_credential_findings, tcp_findings
from regwarden.docker.host_checks import (
    StaticCredential,
    content_trust,
    daemon_json_hosts,
    daemon_tcp_endpoints,
    parse_default_environment,
    parse_environment_file,
    probe_docker_api,
    scan_static_credentials,
    static_credentials,
    tcp_endpoint,
)


@pytest.mark.parametrize(("url", "endpoint"), [
    ("tcp://127.0.0.1:2376", ("127.0.0.1", 2376)),
    ("tcp://0.0.0.0", ("0.0.0.0", 2375)),
    ("tcp://:2375", ("0.0.0.0", 2375)),
    ("tcp://[::]:2376", ("::", 2376)),
    ("tcp://host:notaport", None),
    ("unix:///var/run/docker.sock", None),
    ("fd://", None),
])
def test_tcp_endpoint_reads_dockerd_host_syntax(url: str, endpoint: tuple[str, int] | None) -> None:
    assert tcp_endpoint(url) == endpoint


@pytest.mark.parametrize(("doc", "hosts"), [
    ({"hosts": ["unix:///var/run/docker.sock", "tcp://0.0.0.0:2375"]}, ["tcp://0.0.0.0:2375"]),
    ({"hosts": "tcp://0.0.0.0:2375"}, []),  # not a list: dockerd refuses it too
    ({"hosts": [1, None, "tcp://a:1"]}, ["tcp://a:1"]),
    (["tcp://a:1"], []),
    ({}, []),
])
def test_daemon_json_hosts_takes_only_tcp_strings(doc: object, hosts: list[str]) -> None:
    assert daemon_json_hosts(doc) == hosts


def test_endpoints_come_from_the_config_daemon_json_and_docker_ports(tmp_path: Path) -> None:
    """A prepared /proc: a listener on 2376 is a candidate; one on another port only when the engine holds it."""
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    (proc / "net" / "tcp").write_text(
        header
        + "   0: 0100007F:0948 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1\n"
        + "   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1\n")
    (proc / "net" / "tcp6").write_text(header)
    assert daemon_tcp_endpoints("tcp://10.0.0.1:2375", {"hosts": ["tcp://:2377"]}, proc=proc) == [
        ("0.0.0.0", 2377), ("10.0.0.1", 2375), ("127.0.0.1", 2376)]


@pytest.fixture
def http_server() -> Iterator[int]:
    """An HTTP server that answers /_ping with 200 "OK" but is not Docker (no Api-Version header)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_listener_that_is_not_docker_is_not_a_finding(http_server: int) -> None:
    assert probe_docker_api("127.0.0.1", http_server, 2) == "not_docker"


def test_a_listener_that_answers_garbage_or_nothing_is_not_a_finding() -> None:
    """A server that writes bytes that are neither HTTP nor TLS, and one that never answers."""
    garbage = socket.create_server(("127.0.0.1", 0))
    silent = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        garbage.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = garbage.accept()
            except TimeoutError:
                continue
            conn.sendall(b"\x00\x01garbage\r\n\r\n")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert probe_docker_api("127.0.0.1", garbage.getsockname()[1], 1) in ("not_docker", "protected")
        assert probe_docker_api("127.0.0.1", silent.getsockname()[1], 0.3) == "not_docker"
    finally:
        stop.set()
        thread.join()
        garbage.close()
        silent.close()
    assert tcp_findings({("127.0.0.1", 1): "not_docker", ("127.0.0.1", 2): "protected",
                         ("127.0.0.1", 3): "unreachable"}) == []


def test_findings_name_the_endpoint_as_bound() -> None:
    findings = tcp_findings({("::", 2375): "plain", ("0.0.0.0", 2376): "tls_no_client_auth"})
    assert [(f.kind, f.subject, f.severity) for f in findings] == [
        ("daemon_tcp_no_client_auth", "tcp://0.0.0.0:2376", "critical"),
        ("daemon_tcp_plain", "tcp://[::]:2375", "critical")]


def test_environment_file_parsing() -> None:
    text = '# comment\nPATH="/usr/bin"\nexport DOCKER_CONTENT_TRUST=1\nBROKEN\n =x\nQ=\'a b\'\n'
    assert parse_environment_file(text) == {"PATH": "/usr/bin", "DOCKER_CONTENT_TRUST": "1", "Q": "a b"}


def test_default_environment_parsing() -> None:
    text = ("[Manager]\nDefaultEnvironment=A=1 \"B=two words\"\nDefaultEnvironment=C=3\n"
            "DefaultEnvironment=\"unbalanced\n[Other]\nDefaultEnvironment=D=4\n")
    assert parse_default_environment(text) == {"A": "1", "B": "two words", "C": "3"}
    assert parse_default_environment("[Manager]\nDefaultEnvironment=A=1\nDefaultEnvironment=\n") == {}


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_content_trust_as_services_get_it(tmp_path: Path) -> None:
    """Nothing set: off. /etc/environment alone: on. A systemd drop-in decides over /etc/environment, the
    later drop-in over the earlier one, and a false value is reported with where it was set."""
    assert not content_trust(tmp_path).enabled
    write(tmp_path / "etc/environment", "DOCKER_CONTENT_TRUST=1\n")
    assert content_trust(tmp_path).enabled
    write(tmp_path / "etc/systemd/system.conf", "[Manager]\nDefaultEnvironment=DOCKER_CONTENT_TRUST=true\n")
    write(tmp_path / "etc/systemd/system.conf.d/90-off.conf", "[Manager]\nDefaultEnvironment=DOCKER_CONTENT_TRUST=0\n")
    trust = content_trust(tmp_path)
    assert not trust.enabled and trust.where.endswith("90-off.conf sets DOCKER_CONTENT_TRUST=0")
    write(tmp_path / "etc/systemd/system.conf.d/95-on.conf", "[Manager]\nDefaultEnvironment=DOCKER_CONTENT_TRUST=1\n")
    assert content_trust(tmp_path).enabled


def test_static_credentials_match_by_host_name() -> None:
    doc = {"auths": {"reg.test:5000": {"auth": "eDp5"}, "https://reg.test:5000/v1/": {"identitytoken": "t"},
                     "reg.test:5001": {"auth": "eDp5"}, "other.test": {"auth": "eDp5"},
                     "helper.test:5000": {}, "odd.test:5000": "not an object"}}
    found = static_credentials(doc, "/home/a/.docker/config.json",
                               ["reg.test:5000", "helper.test:5000", "odd.test:5000"])
    assert [c.key for c in found] == ["reg.test:5000", "https://reg.test:5000/v1/"]
    assert static_credentials({"auths": ["x"]}, "p", ["x"]) == []
    assert static_credentials("garbage", "p", ["x"]) == []
    [finding] = static_credential_findings(found[1:], {"reg.test:5000": "internal"})
    assert finding.subject == "/home/a/.docker/config.json auths[https://reg.test:5000/v1/]"
    assert "registry internal," in finding.detail


def test_scan_skips_kept_configs_and_reports_unreadable_ones(tmp_path: Path) -> None:
    secret = "c2VjcmV0OmhvdW5k"
    write(tmp_path / "home/a/.docker/config.json", json.dumps({"auths": {"reg.test": {"auth": secret}}}))
    write(tmp_path / "home/b/.docker/config.json", "{not json")
    write(tmp_path / "home/c/.docker/config.json", json.dumps({"auths": {"reg.test": {"auth": secret}}}))
    (tmp_path / "home/d/.docker/config.json").mkdir(parents=True)  # unreadable as a file, even for root
    found, problems = scan_static_credentials([str(tmp_path / "home/*/.docker/config.json")],
                                              [tmp_path / "home/c/.docker/config.json"], ["reg.test"])
    assert found == [StaticCredential(str(tmp_path / "home/a/.docker/config.json"), "reg.test")]
    assert problems[0] == f"{tmp_path / 'home/b/.docker/config.json'}: not valid JSON"
    assert problems[1] == f"{tmp_path / 'home/d/.docker/config.json'}: Is a directory"
    assert secret not in repr(found) + repr(problems)
