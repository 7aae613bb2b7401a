"""The demo's generated config is valid for whatever part of the sandbox could start."""

from __future__ import annotations

from pathlib import Path

import pytest

from regwarden.config import load_config
from regwarden.demo.sandbox import DEMO_CREDENTIAL, Sandbox


@pytest.mark.parametrize(("vault", "registry", "docker"), [
    (True, True, True), (False, True, True), (True, True, False), (False, False, False)])
def test_config_loads_with_any_part_missing(tmp_path: Path, vault: bool, registry: bool, docker: bool) -> None:
    """With or without OpenBao, the registry or dockerd, the config passes the schema and names only what runs."""
    sandbox = Sandbox(root=tmp_path, notify_port=9478,
                      vault_address="http://127.0.0.1:8200" if vault else None,
                      registry_url="http://127.0.0.1:5000" if registry else None,
                      docker_host=f"unix://{tmp_path}/docker.sock" if docker else None)
    (tmp_path / "registry").mkdir()
    cfg = load_config(sandbox.write_config())
    assert (cfg.vault is not None) == vault
    assert [c.name for c in cfg.credentials] == ([DEMO_CREDENTIAL] if vault and registry else [])
    assert len(cfg.registries) == int(registry) and len(cfg.sources.registry_logs) == int(registry)
    assert (cfg.sources.docker_events is not None) == docker
    assert cfg.docker is not None and cfg.docker.host.startswith(f"unix://{tmp_path}")  # never the host's engine
    assert [(s.type, s.min_severity) for s in cfg.sinks] == [("log", "info")]
