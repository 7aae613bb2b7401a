"""`regwarden probe` against real registries, and probing an mTLS registry with a client certificate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from regwarden.credentials.model import CredentialSecret
from regwarden.probe.prober import ProbeTarget, probe
from tests.integration.harness import RegistryServer, RegistryTLS
from tests.integration.probe.conftest import Pki

pytestmark = pytest.mark.integration


def regwarden() -> list[str]:
    exe = shutil.which("regwarden", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "regwarden.cli"]


def test_probe_command_prints_a_table_and_json(tmp_path: Path,
                                               registry_factory: Callable[..., RegistryServer]) -> None:
    """`regwarden probe` prints one row per registry with verdict, phase and reason, exits 1 when one is
    not up, and `--json REGISTRY` gives that registry's fields."""
    open_registry, stopped = registry_factory(auth=False), registry_factory(auth=True)
    stopped.stop()
    config = tmp_path / "config.toml"
    config.write_text(f"""
[daemon]
state_dir = "{tmp_path / 'state'}"

[[registries]]
name = "open"
url = "{open_registry.url}"
expect_auth = true

[[registries]]
name = "stopped"
url = "{stopped.url}"
""")
    table = subprocess.run([*regwarden(), "probe", "-c", str(config)], capture_output=True, text=True)
    assert table.returncode == 1, table.stderr
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:]}
    assert rows["open"][1:3] == ["anonymous", "-"]
    assert rows["stopped"][1:5] == ["down", "connect", "connection", "refused"]
    as_json = subprocess.run([*regwarden(), "probe", "-c", str(config), "--json", "stopped"], capture_output=True,
                             text=True)
    [row] = json.loads(as_json.stdout)
    assert (row["registry"], row["verdict"], row["failed_phase"], row["reason"]) == (
        "stopped", "down", "connect", "connection refused")
    unknown = subprocess.run([*regwarden(), "probe", "-c", str(config), "nope"], capture_output=True, text=True)
    assert (unknown.returncode, unknown.stderr.startswith("unknown registry: nope")) == (2, True)


def test_mtls_registry_accepts_the_client_certificate(tmp_path: Path, pki_factory: Callable[[], Pki],
                                                      registry_factory: Callable[..., RegistryServer]) -> None:
    """A registry requiring client certificates is up with the credential's certificate (auth ok) and
    refuses a probe without one."""
    pki = pki_factory()
    server = pki.server_tls("127.0.0.1")
    reg = registry_factory(auth=False, tls=RegistryTLS(server.certificate, server.key, clientcas=[pki.ca_path]))
    pki.client.secrets.pki.create_or_update_role(
        "client", extra_params={"allow_any_name": True, "client_flag": True, "server_flag": False,
                                "enforce_hostnames": False}, mount_point=pki.mount)
    issued = pki.client.secrets.pki.generate_certificate("client", "regwarden-probe", mount_point=pki.mount)["data"]
    credential = CredentialSecret("mtls", 1, certificate=issued["certificate"], private_key=issued["private_key"],
                                  ca_chain=issued["issuing_ca"])
    target = ProbeTarget("reg", reg.url, 5, str(pki.ca_path))
    with_cert = probe(target, credential)
    assert (with_cert.failed_phase, with_cert.auth_scheme, with_cert.auth_ok) == (None, "certificate", True)
    without = probe(target)
    # with TLS 1.3 the server's refusal arrives after the handshake, on the first read
    assert without.failed_phase in ("tls", "http")
    assert "BAD_CERTIFICATE" in without.reason or "CERTIFICATE_REQUIRED" in without.reason
