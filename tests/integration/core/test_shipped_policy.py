"""A regwarden host whose Vault token holds only the shipped policy (contrib/vault/regwarden-policy.hcl)
does its whole job, and `regwarden status` shows that job against the running daemon.

One daemon (`regwarden run`, a real process) runs for the module: a rotated htpasswd credential at
secret/regwarden/rotated/, a consume-only credential at secret/regwarden/, two registries with
notifications and a tailed log, the session's dockerd for engine events, and a log sink.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest

from regwarden.config import VaultConfig
from regwarden.metrics import Metrics
from regwarden.vault.client import VaultClient
from tests.integration.harness import (
    DockerEngine,
    OpenBaoDev,
    RegistryServer,
    daemon_table,
    free_port,
    running,
    secret_file,
    wait_for,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
POLICY = (REPO / "contrib" / "vault" / "regwarden-policy.hcl").read_text()
REGWARDEN = str(Path(sys.executable).parent / "regwarden")


@dataclass
class Host:
    workdir: Path
    bao: OpenBaoDev
    token: str
    config: Path
    rotated: RegistryServer
    consumed: RegistryServer
    process: subprocess.Popen[bytes]

    def auths(self) -> dict[str, tuple[str, str]]:
        """host:port -> (username, password) in the Docker client config regwarden manages."""
        try:
            doc = json.loads((self.workdir / "docker" / "config.json").read_text())
        except FileNotFoundError:
            return {}
        out = {}
        for key, entry in doc.get("auths", {}).items():
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            out[key] = (user, password)
        return out

    def kv_version(self, path: str) -> int:
        try:
            meta = self.bao.client().secrets.kv.v2.read_secret_metadata(path=path, mount_point="secret")
        except hvac.exceptions.InvalidPath:
            return 0
        return int(meta["data"]["current_version"])

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([REGWARDEN, *args, "-c", str(self.config)], capture_output=True, text=True,
                              timeout=30)


def _setup_vault(bao: OpenBaoDev) -> str:
    """The shipped policy, a PKI mount with the role it names, and a token holding only that policy."""
    root = bao.client()
    root.sys.create_or_update_policy("regwarden", POLICY)
    root.sys.enable_secrets_engine("pki", path="pki")
    root.secrets.pki.generate_root("internal", "regwarden test CA", mount_point="pki")
    root.secrets.pki.create_or_update_role("regwarden-client", {"allow_any_name": True, "client_flag": True,
                                                                 "server_flag": False, "max_ttl": "1h"},
                                           mount_point="pki")
    token: str = root.auth.token.create(policies=["regwarden"], no_default_policy=True, ttl="1h",
                                        renewable=True)["auth"]["client_token"]
    return token


def _write_config(workdir: Path, bao: OpenBaoDev, token_file: Path, dockerd: DockerEngine,
                  rotated: RegistryServer, consumed: RegistryServer, notify_port: int, notify_token: Path) -> Path:
    config = workdir / "regwarden.toml"
    config.write_text(daemon_table(workdir, free_port(), host="policy-host") + f"""
[vault]
address = "{bao.address}"
timeout = "3s"
auth = {{ method = "token", token_file = "{token_file}" }}

[docker]
host = "{dockerd.host}"
client_configs = ["{workdir / 'docker' / 'config.json'}"]
certs_dir = "{workdir / 'certs.d'}"

[[registries]]
name = "internal"
url = "{rotated.url}"
credential = "internal-ci"
expect_auth = true
probe_interval = "5s"

[[registries]]
name = "vendor"
url = "{consumed.url}"
credential = "vendor"
expect_auth = true
probe_interval = "5s"

[[credentials]]
name = "internal-ci"
provider = "htpasswd"
vault_path = "secret/regwarden/rotated/internal-ci"
watch_interval = "2s"
rotate_every = "10s"
overlap = "5s"
htpasswd = {{ file = "{rotated.htpasswd_path}", usernames = ["ci-a", "ci-b"], bcrypt_cost = 4 }}

[[credentials]]
name = "vendor"
vault_path = "secret/regwarden/vendor"
watch_interval = "2s"

[sources.docker_events]
enabled = true

[[sources.registry_logs]]
path = "{rotated.log_path}"
registry = "internal"

[sources.registry_notifications]
listen = "127.0.0.1:{notify_port}"
token_file = "{notify_token}"

[alerts]
group_wait = "1s"

[[sinks]]
name = "console"
type = "log"
min_severity = "info"
""")
    return config


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, dockerd: DockerEngine) -> Iterator[Host]:
    workdir = tmp_path_factory.mktemp("policy-host")
    notify_port = free_port()
    notify_token = secret_file(workdir / "notify-token", secrets.token_urlsafe(16))
    with running(OpenBaoDev(tmp_path_factory.mktemp("openbao-policy"))) as bao, \
            running(RegistryServer(tmp_path_factory.mktemp("reg-rotated"),
                                   notifications_url=f"http://127.0.0.1:{notify_port}/v1/registry-events",
                                   notifications_token=notify_token.read_text())) as rotated, \
            running(RegistryServer(tmp_path_factory.mktemp("reg-consumed"))) as consumed:
        token_file = secret_file(workdir / "vault-token", _setup_vault(bao))
        # someone else (a CI pipeline, a person) writes the consume-only credential
        bao.client().secrets.kv.v2.create_or_update_secret(
            path="regwarden/vendor", secret=consumed.auth_config, mount_point="secret")
        config = _write_config(workdir, bao, token_file, dockerd, rotated, consumed, notify_port, notify_token)
        with (workdir / "regwarden.log").open("wb") as log:
            process = subprocess.Popen([REGWARDEN, "run", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                       env={**os.environ, "NOTIFY_SOCKET": ""})
        try:
            yield Host(workdir, bao, token_file.read_text(), config, rotated, consumed, process)
        finally:
            process.terminate()
            process.wait(15)


def _log(host: Host) -> str:
    return (host.workdir / "regwarden.log").read_text()[-4000:]


def test_watch_apply_and_rotation_succeed_with_only_the_shipped_policy(host: Host) -> None:
    """Two htpasswd rotations are published and applied, the old slot revoked, and the consume-only
    credential is applied, with no permission error anywhere in the daemon's log."""
    def two_rotations_applied() -> bool:
        assert host.process.poll() is None, _log(host)
        applied = host.auths().get(host.rotated.host_port)
        return host.kv_version("regwarden/rotated/internal-ci") >= 2 and applied is not None \
            and applied[0] == "ci-b"

    wait_for("second rotation applied", two_rotations_applied, 60)
    wait_for("old slot revoked", lambda: "ci-a:" not in host.rotated.htpasswd_path.read_text(), 30)
    assert host.auths()[host.consumed.host_port] == (host.consumed.username, host.consumed.password)
    log = (host.workdir / "regwarden.log").read_text()  # all of it, from the start
    assert "permission denied" not in log.lower() and "HTTP 403" not in log


def test_the_policy_issues_and_revokes_client_certificates(host: Host, tmp_path: Path) -> None:
    """regwarden's Vault client, with the policy token, issues a certificate for the role and revokes it."""
    token_file = secret_file(tmp_path / "token", host.token)
    client = VaultClient(VaultConfig.model_validate(
        {"address": host.bao.address, "auth": {"method": "token", "token_file": str(token_file)}}), Metrics())
    issued = client.pki_issue("pki", "regwarden-client", "ci.regwarden.test", 600)
    client.pki_revoke("pki", str(issued["serial_number"]))
    revoked = host.bao.client().secrets.pki.read_certificate(issued["serial_number"], mount_point="pki")
    assert revoked["data"]["revocation_time"] > 0


def test_the_policy_lets_the_fleet_share_its_default_login_runs(host: Host, tmp_path: Path) -> None:
    """With the policy token a host claims a registry's default-login run, records its result, and another
    host takes that result (docs/posture.md, fleets)."""
    from regwarden.posture.fleet import FleetLogins
    from regwarden.posture.report import Remembered

    token_file = secret_file(tmp_path / "token", host.token)
    client = VaultClient(VaultConfig.model_validate(
        {"address": host.bao.address, "auth": {"method": "token", "token_file": str(token_file)}}), Metrics())
    mine = FleetLogins(client, "secret/regwarden/locks", "policy-host")
    decision = mine.decide("reg.policy.test:5000", 3600, 1000.0)
    assert decision.action == "try"
    assert mine.finish("reg.policy.test:5000", decision.version, Remembered(1000.0, None, 5))
    other = FleetLogins(client, "secret/regwarden/locks", "policy-host-2").decide("reg.policy.test:5000", 3600, 1100.0)
    assert (other.action, other.by, other.remembered) == ("adopt", "policy-host", Remembered(1000.0, None, 5))


@pytest.mark.parametrize(("what", "attempt"), [
    ("write a consume-only credential", lambda c: c.secrets.kv.v2.create_or_update_secret(
        path="regwarden/vendor", secret={"username": "x", "password": "y"}, mount_point="secret")),
    ("read outside secret/regwarden/", lambda c: c.secrets.kv.v2.read_secret_version(
        path="other-team/db", mount_point="secret", raise_on_deleted_version=True)),
    ("delete a rotated credential", lambda c: c.secrets.kv.v2.delete_metadata_and_all_versions(
        path="regwarden/rotated/internal-ci", mount_point="secret")),
    ("issue for another PKI role", lambda c: c.secrets.pki.generate_certificate(
        name="server", common_name="x", mount_point="pki")),
])
def test_the_policy_denies_what_the_daemon_never_needs(host: Host, what: str, attempt: Any) -> None:
    """The policy token is refused what regwarden never does."""
    client = hvac.Client(url=host.bao.address, token=host.token)
    with pytest.raises(hvac.exceptions.Forbidden):
        attempt(client)


def test_status_command_shows_the_running_daemon(host: Host) -> None:
    """`regwarden status` shows the credentials, endpoints, sources, sinks and alert tables of the running
    daemon, and `--json` the same facts as JSON."""
    def ready() -> bool:
        result = host.cli("status", "--json")
        components = json.loads(result.stdout)["components"] if result.returncode == 0 else {}
        credentials = components.get("credentials", {}).get("credentials", {})
        return all(c.get("applied_version") for c in credentials.values()) and len(credentials) == 2 and \
            all(p.get("verdict") not in (None, "pending") for p in components.get("probes", {}).values()) and \
            bool(components.get("alerting", {}).get("active_alerts")) and \
            all(s.get("outbox_depth") == 0 for s in components["alerting"].get("sinks", {}).values())

    wait_for("daemon busy", ready, 60)
    text = host.cli("status").stdout
    document = json.loads(host.cli("status", "--json").stdout)
    sections = {block.split("\n", 1)[0]: block for block in text.split("\n\n")}
    for title in ("CREDENTIALS", "ENDPOINTS", "SOURCES", "SINKS", "ACTIVE ALERTS"):
        assert title in sections, text
    assert "internal-ci" in sections["CREDENTIALS"] and "vendor" in sections["CREDENTIALS"]
    assert [line.split()[:2] for line in sections["ENDPOINTS"].splitlines()[2:]] == [
        ["internal", "up"], ["vendor", "up"]]
    assert {line.split()[0] for line in sections["SOURCES"].splitlines()[2:]} == {
        "docker-events", "registry-log:internal", "registry-notifications"}
    assert sections["SINKS"].splitlines()[2].split()[:3] == ["console", "up", "0"]
    assert "RegistryPlainHTTP" in sections["ACTIVE ALERTS"]
    assert document["host"] == "policy-host" and document["components"]["alerting"]["sinks"]["console"]["up"]
