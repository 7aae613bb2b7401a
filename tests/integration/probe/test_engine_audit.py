"""The engine audit against real dockerd instances started with --insecure-registry and --registry-mirror."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from regwarden.docker.engine_audit import EngineAudit, engine_registry_config
from tests.integration.harness import DockerEngine, RegistryServer, free_port
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
