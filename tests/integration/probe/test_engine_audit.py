"""The engine audit against real dockerd instances started with --insecure-registry, --registry-mirror and
TCP sockets (plain, TLS, TLS with client certificates), and config.json files written by the real CLI."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from regwarden.docker.engine_audit import AuditReport, EngineAudit, engine_registry_config
from tests.integration.harness import DockerEngine, RegistryServer, free_port, make_certificates
from tests.integration.probe.conftest import ProbeHost

pytestmark = pytest.mark.integration


def docker_tables(engine: DockerEngine, allowed: list[str]) -> dict[str, object]:
    return {"docker": {"host": engine.host, "insecure_registries_allowed": allowed, "timeout": "3s"}}


def test_insecure_registry_and_mirrors_are_reported(
        dockerd_factory: Callable[..., DockerEngine], registry_factory: Callable[..., RegistryServer],
        probe_host: Callable[[dict[str, object]], ProbeHost]) -> None:
    """An insecure registry outside the allowed list, a plain-HTTP mirror and an unreachable mirror are
    findings (and Signals); an allowed insecure CIDR and the loopback default are not."""
    mirror = registry_factory(auth=False)
    dead_mirror = f"https://127.0.0.1:{free_port()}"
    engine = dockerd_factory(insecure_registry=["198.18.0.2:5000", "10.9.0.0/16"],
                             registry_mirror=[mirror.url, dead_mirror])
    host = probe_host(docker_tables(engine, ["10.9.0.0/16"]))
    audit = EngineAudit()
    audit.start(host.ctx)
    try:
        report = audit.run_audit()
    finally:
        audit.stop()
    assert report is not None
    assert sorted((f.kind, f.subject) for f in report.findings) == [
        ("insecure_registry", "198.18.0.2:5000"),
        ("mirror_plain_http", mirror.url),
        ("mirror_unreachable", dead_mirror),
    ]
    assert "connection refused" in next(f.detail for f in report.findings if f.kind == "mirror_unreachable")
    insecure = host.collected.signals("DockerInsecureRegistry")
    assert [(s.labels["registry"], s.firing) for s in insecure] == [("198.18.0.2:5000", True)]
    assert [s.labels["mirror"] for s in host.collected.signals("DockerMirrorPlainHTTP")] == [mirror.url]
    assert [s.labels["mirror"] for s in host.collected.signals("DockerMirrorUnreachable")] == [dead_mirror]
    assert host.ctx.metrics.registry.get_sample_value(
        "regwarden_engine_audit_findings", {"kind": "insecure_registry"}) == 1


def test_config_change_is_an_event_with_a_diff(dockerd_factory: Callable[..., DockerEngine],
                                               probe_host: Callable[[dict[str, object]], ProbeHost]) -> None:
    """When the engine's registry config differs from the one last seen (digest in the state store), an
    engine.registry_config_changed Event carries the diff, and findings that went away are resolved."""
    before = dockerd_factory(insecure_registry=["198.18.0.2:5000"])
    after = dockerd_factory(insecure_registry=["198.18.0.6:5000"])  # the same host after a config change
    engine = {"now": before}
    host = probe_host(docker_tables(before, []))
    audit = EngineAudit(info_function=lambda: engine_registry_config(engine["now"].host, 3))
    audit.start(host.ctx)
    try:
        audit.run_audit()
        audit.run_audit()
        assert host.collected.events("engine.registry_config_changed") == []  # first sight and no change
        engine["now"] = after
        audit.run_audit()
    finally:
        audit.stop()
    [changed] = host.collected.events("engine.registry_config_changed")
    assert changed.detail["diff"] == {
        "insecure_registries": {"added": ["198.18.0.6:5000"], "removed": ["198.18.0.2:5000"]}}
    assert changed.detail["previous_digest"] != changed.detail["digest"]
    signals = [(s.labels["registry"], s.firing) for s in host.collected.signals("DockerInsecureRegistry")]
    assert signals == [("198.18.0.2:5000", True), ("198.18.0.6:5000", True), ("198.18.0.2:5000", False)]


def audit_once(host: ProbeHost, **kwargs: object) -> AuditReport:
    audit = EngineAudit(**kwargs)  # type: ignore[arg-type]
    audit.start(host.ctx)
    try:
        report = audit.run_audit()
    finally:
        audit.stop()
    assert report is not None, audit.status()
    return report


def test_daemon_tcp_socket_without_tls_or_without_client_certificates(
        tmp_path: Path, dockerd_factory: Callable[..., DockerEngine],
        probe_host: Callable[[dict[str, object]], ProbeHost]) -> None:
    """Real dockerd listening on TCP: plain HTTP and TLS without --tlsverify answer the API to anyone and
    are critical findings; TLS with --tlsverify refuses a client without a certificate and is not. The
    plain one is found through the engine's own sockets (/proc), the TLS ones through daemon.json."""
    certs = make_certificates(tmp_path / "certs", "127.0.0.1")
    tls = {"tlscert": str(certs.server_cert), "tlskey": str(certs.server_key), "tlscacert": str(certs.ca)}
    plain_port, tls_port, verified_port = free_port(), free_port(), free_port()
    plain = dockerd_factory(host=[f"tcp://127.0.0.1:{plain_port}"])
    dockerd_factory(host=[f"tcp://127.0.0.1:{tls_port}"], tls=True, tlsverify=False, **tls)
    dockerd_factory(host=[f"tcp://127.0.0.1:{verified_port}"], tlsverify=True, **tls)

    found = audit_once(probe_host(docker_tables(plain, [])))
    assert [(f.kind, f.subject, f.severity) for f in found.findings] == [
        ("daemon_tcp_plain", f"tcp://127.0.0.1:{plain_port}", "critical")]

    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text(json.dumps({"hosts": ["unix:///var/run/docker.sock", f"tcp://127.0.0.1:{tls_port}",
                                                 f"tcp://127.0.0.1:{verified_port}"]}))
    tables = docker_tables(plain, [])
    tables["docker"]["daemon_json"] = str(daemon_json)  # type: ignore[index]
    host = probe_host(tables)
    report = audit_once(host)
    assert sorted((f.kind, f.subject) for f in report.findings) == [
        ("daemon_tcp_no_client_auth", f"tcp://127.0.0.1:{tls_port}"),
        ("daemon_tcp_plain", f"tcp://127.0.0.1:{plain_port}")]
    [signal] = host.collected.signals("DockerDaemonTCPNoClientAuth")
    assert (signal.labels["endpoint"], signal.severity, signal.firing) == (
        f"tcp://127.0.0.1:{tls_port}", "critical", True)
    assert host.ctx.metrics.registry.get_sample_value(
        "regwarden_engine_audit_findings", {"kind": "daemon_tcp_plain"}) == 1
    # the same findings from `regwarden posture` (a config with only [docker]): engine rows, exit status 1
    config = tmp_path / "config.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path / "cli-state"}"\n'
                      f'[docker]\nhost = "{plain.host}"\ndaemon_json = "{daemon_json}"\ntimeout = "3s"\n')
    run = subprocess.run([sys.executable, "-m", "regwarden", "posture", "--json", "-c", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    rows = json.loads(run.stdout)["checks"]
    assert sorted((r["registry"], r["check"], r["severity"], r["alertname"]) for r in rows) == [
        ("engine", "daemon_tcp_no_client_auth", "critical", "DockerDaemonTCPNoClientAuth"),
        ("engine", "daemon_tcp_plain", "critical", "DockerDaemonTCPPlain")]
    # the verified endpoint is up: it answers a client that presents a certificate of its CA
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    connection = http.client.HTTPSConnection("127.0.0.1", verified_port, context=context, timeout=5)
    connection.request("GET", "/_ping")
    assert connection.getresponse().status == 200
    connection.close()


def test_static_credential_of_a_managed_registry_in_another_config(
        tmp_path: Path, dockerd: DockerEngine, registry_factory: Callable[..., RegistryServer],
        probe_host: Callable[[dict[str, object]], ProbeHost]) -> None:
    """`docker login` (the real CLI) by a user leaves a static copy of a registry's credential that
    regwarden manages: a finding naming the file, never the secret; `docker logout` resolves it. The
    config regwarden keeps, and copies for registries it does not manage, are not findings."""
    managed, unmanaged = registry_factory(), registry_factory()
    home = tmp_path / "home"
    alice = home / "alice" / ".docker"
    kept = tmp_path / "kept" / "config.json"
    kept.parent.mkdir()
    kept.write_text(json.dumps({"auths": {managed.host_port: {"auth": "a2VwdDpieS1yZWd3YXJkZW4="}}}))

    def docker_cli(*args: str, stdin: str = "") -> None:
        subprocess.run(["/usr/bin/docker", "--config", str(alice), *args], input=stdin, text=True, check=True,
                       capture_output=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=60)

    for registry in (managed, unmanaged):
        docker_cli("login", "-u", registry.username, "--password-stdin", registry.host_port, stdin=registry.password)
    tables: dict[str, object] = {
        "vault": {"address": "http://127.0.0.1:8200", "auth": {"method": "token", "token_env": "X"}},
        "docker": {"host": dockerd.host, "timeout": "3s", "client_configs": [str(kept)],
                   "static_credential_scan": [str(home / "*" / ".docker" / "config.json"), str(kept)]},
        "registries": [{"name": "managed", "url": managed.url, "credential": "ci"},
                       {"name": "unmanaged", "url": unmanaged.url}],
        "credentials": [{"name": "ci", "vault_path": "secret/regwarden/ci"}],
    }
    host = probe_host(tables)
    audit = EngineAudit()
    audit.start(host.ctx)
    try:
        first = audit.run_audit()
        docker_cli("logout", managed.host_port)
        second = audit.run_audit()
    finally:
        audit.stop()
    assert first is not None and second is not None
    location = f"{alice / 'config.json'} auths[{managed.host_port}]"
    assert [(f.kind, f.subject) for f in first.findings] == [("static_credential", location)]
    assert "registry managed," in first.findings[0].detail
    assert second.findings == []
    signals = host.collected.signals("DockerStaticCredential")
    assert [(s.labels["location"], s.firing) for s in signals] == [(location, True), (location, False)]
    assert managed.password not in repr(signals) + json.dumps(audit.status(), default=str)
