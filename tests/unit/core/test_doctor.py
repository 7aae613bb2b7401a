"""`regwarden doctor`'s pure parts: the unit's sandbox, paths inside it, and the Vault capabilities a
config needs against what a token's policy grants."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from regwarden.config import load_config
from regwarden.doctor import missing_capabilities, parse_unit, required_capabilities, sandbox_checks

UNIT = """[Unit]
Description=x
[Service]
ProtectSystem=strict
StateDirectory=regwarden
LogsDirectory=regwarden
ReadWritePaths=-/root/.docker \\
    /etc/docker/certs.d
"""


def _config(tmp_path: Path, body: str = "") -> object:
    path = tmp_path / "config.toml"
    path.write_text('[daemon]\nstate_dir = "/var/lib/regwarden"\naudit_log = "/var/log/regwarden/audit.jsonl"\n'
                    + body)
    return load_config(path)


DOCKER = '[docker]\nclient_configs = ["/root/.docker/config.json", "/home/ci/.docker/config.json"]\n'


def test_unit_and_dropins_give_the_writable_paths() -> None:
    """State/Logs directories, ReadWritePaths with '-' and continuation lines; a drop-in's empty
    assignment resets the list and a later one adds to it."""
    sandbox = parse_unit([("unit", UNIT)])
    assert sandbox.protect_system == "strict"
    assert [(str(w.path), w.optional) for w in sandbox.writable] == [
        ("/root/.docker", True), ("/etc/docker/certs.d", False), ("/var/lib/regwarden", False),
        ("/var/log/regwarden", False)]
    reset = parse_unit([("unit", UNIT), ("10.conf", "[Service]\nReadWritePaths=\nReadWritePaths=/srv\n")])
    assert [str(w.path) for w in reset.writable] == ["/srv", "/var/lib/regwarden", "/var/log/regwarden"]
    assert parse_unit([("unit", UNIT), ("20.conf", "[Service]\nProtectSystem=full\n")]).protect_system == "full"


def test_a_written_path_outside_the_sandbox_is_a_problem(tmp_path: Path) -> None:
    """Under ProtectSystem=strict a client config in /home/ci is read-only; /root/.docker is fine when
    it exists and a problem (ignored '-' path) when it does not."""
    cfg = _config(tmp_path, DOCKER)
    sandbox = parse_unit([("unit", UNIT)])
    checks = {c.check: c for c in sandbox_checks(cfg, sandbox, {PurePosixPath("/root/.docker"): True})}
    assert checks["sandbox docker.client_configs[0]"].ok
    assert not checks["sandbox docker.client_configs[1]"].ok
    assert "ReadWritePaths=/home/ci/.docker" in checks["sandbox docker.client_configs[1]"].fix
    assert checks["sandbox daemon.state_dir"].ok and checks["sandbox daemon.audit_log"].ok
    missing = {c.check: c for c in sandbox_checks(cfg, sandbox, {})}
    assert not missing["sandbox docker.client_configs[0]"].ok
    assert missing["sandbox docker.client_configs[0]"].fix == "install -d -m 0700 /root/.docker"


def test_without_protect_system_everything_outside_usr_is_writable(tmp_path: Path) -> None:
    """ProtectSystem=yes leaves /home and /root writable: no sandbox problem there."""
    cfg = _config(tmp_path, DOCKER)
    checks = sandbox_checks(cfg, parse_unit([("unit", "[Service]\nProtectSystem=yes\n")]), {})
    assert all(c.ok for c in checks)


ROTATED = '''[vault]
address = "http://127.0.0.1:8200"
auth = { method = "token", token_file = "/etc/regwarden/vault-token" }
[[credentials]]
name = "ci"
provider = "htpasswd"
vault_path = "secret/regwarden/rotated/ci"
rotate_every = "24h"
htpasswd = { file = "/srv/registry/auth/htpasswd", usernames = ["a", "b"] }
[[credentials]]
name = "vendor"
vault_path = "kv/vendor/pull"
[[registries]]
name = "internal"
url = "https://registry.internal:5000"
credential = "ci"
[[registries]]
name = "vendor"
url = "https://vendor.example:443"
credential = "vendor"
''' + DOCKER


def test_a_rotated_credential_needs_writes_and_its_lock(tmp_path: Path) -> None:
    """Consumed: read data and metadata; rotated: also create/update both and the lock under lock_path."""
    needs = {(n.path, cap) for n in required_capabilities(_config(tmp_path, ROTATED)) for cap in n.capabilities}
    assert {("kv/metadata/vendor/pull", "read"), ("kv/data/vendor/pull", "read")} <= needs
    assert ("kv/data/vendor/pull", "update") not in needs
    assert {("secret/data/regwarden/rotated/ci", "update"), ("secret/data/regwarden/rotated/ci", "create"),
            ("secret/metadata/regwarden/rotated/ci", "update"), ("secret/data/regwarden/locks/ci", "create"),
            ("auth/token/renew-self", "update")} <= needs


def test_missing_capabilities_name_the_path_and_what_lacks(tmp_path: Path) -> None:
    """A path the policy grants only read on is reported with the missing capabilities; root grants all."""
    needs = required_capabilities(_config(tmp_path, ROTATED))
    granted = {n.path: ["create", "read", "update"] for n in needs}
    granted["secret/data/regwarden/locks/ci"] = ["read"]
    problems = [c for c in missing_capabilities(needs, granted) if not c.ok]
    assert [c.check for c in problems] == ["vault policy secret/data/regwarden/locks/ci"]
    assert "lacks create, update" in problems[0].detail and "rotation lock" in problems[0].detail
    assert all(c.ok for c in missing_capabilities(needs, {n.path: ["root"] for n in needs}))
