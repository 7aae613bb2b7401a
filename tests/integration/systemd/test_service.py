"""regwarden as its users run it: the shipped unit, under a real systemd (PID 1 of a booted container).

Each test starts from a stopped, reset unit with the site's config; the host (booted once per session)
reaches the session's OpenBao and registry over loopback, and the daemon's listeners are reached the
same way from here.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.harness import OpenBaoDev, RegistryServer, free_port, wait_for
from tests.integration.systemd.conftest import CONFIG, DROPIN_DIR, UNIT
from tests.integration.systemd_host import SystemdHost

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
POLICY = (REPO / "contrib" / "vault" / "regwarden-policy.hcl").read_text()
VAULT_PATH = "regwarden/systemd/internal-ci"


@dataclass
class Site:
    host: SystemdHost
    config: str  # the good config.toml
    listen: int
    notify_port: int
    notify_token: str
    registry: RegistryServer
    openbao: OpenBaoDev

    def write_config(self, text: str) -> None:
        self.host.write(CONFIG, text, 0o640)

    def main_pid(self) -> int:
        return int(self.host.show(UNIT, "MainPID")["MainPID"])

    def dropin(self, name: str, text: str) -> None:
        self.host.write(f"{DROPIN_DIR}/{name}.conf", text, 0o644)
        self.host.systemctl("daemon-reload")

    def audit_records(self) -> list[dict[str, Any]]:
        path = self.host.path("/var/log/regwarden/audit.jsonl")
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _config(openbao: OpenBaoDev, registry: RegistryServer, listen: int, notify_port: int) -> str:
    return f"""[daemon]
state_dir = "/var/lib/regwarden"
audit_log = "/var/log/regwarden/audit.jsonl"
listen = "127.0.0.1:{listen}"
host = "systemd-host"

[vault]
address = "{openbao.address}"
timeout = "3s"
auth = {{ method = "token", token_file = "/etc/regwarden/vault-token" }}

[docker]
host = "unix:///run/docker.sock"
client_configs = ["/root/.docker/config.json"]
certs_dir = "/etc/docker/certs.d"

[[registries]]
name = "internal"
url = "{registry.url}"
credential = "internal-ci"
expect_auth = true
probe_interval = "5s"

[[credentials]]
name = "internal-ci"
vault_path = "secret/{VAULT_PATH}"
watch_interval = "2s"

[sources.docker_events]
enabled = true

[sources.registry_notifications]
listen = "127.0.0.1:{notify_port}"
token_file = "/etc/regwarden/notify-token"

[alerts]
group_wait = "1s"

[[sinks]]
name = "console"
type = "log"
min_severity = "info"
"""


@pytest.fixture(scope="module")
def site(systemd_host: SystemdHost, openbao: OpenBaoDev, registry: RegistryServer) -> Site:
    """The host configured as README says: the shipped policy's token, a consumed credential, secrets 0600."""
    root = openbao.client()
    root.sys.create_or_update_policy("regwarden", POLICY)
    token = root.auth.token.create(policies=["regwarden"], no_default_policy=True, ttl="2h",
                                   renewable=True)["auth"]["client_token"]
    root.secrets.kv.v2.create_or_update_secret(
        VAULT_PATH, secret={"username": registry.username, "password": registry.password}, mount_point="secret")
    listen, notify_port = free_port(), free_port()
    notify_token = secrets.token_hex(16)
    systemd_host.write("/etc/regwarden/vault-token", token + "\n")
    systemd_host.write("/etc/regwarden/notify-token", notify_token + "\n")
    # ProtectSystem=strict + ProtectHome=read-only: the writable Docker paths must exist before start
    systemd_host.run(["install", "-d", "-m", "0700", "/root/.docker"])
    systemd_host.run(["install", "-d", "-m", "0755", "/etc/docker/certs.d"])
    site = Site(systemd_host, _config(openbao, registry, listen, notify_port), listen, notify_port, notify_token,
                registry, openbao)
    site.write_config(site.config)
    return site


@pytest.fixture
def service(site: Site) -> Iterator[Site]:
    """The unit stopped and reset, no drop-ins, the good config in place; stopped again afterwards."""
    def reset() -> None:
        site.host.systemctl("stop", UNIT, check=False)
        site.host.run(["rm", "-rf", DROPIN_DIR])
        site.host.systemctl("daemon-reload")
        site.host.systemctl("reset-failed", UNIT, check=False)
        site.write_config(site.config)

    reset()
    yield site
    reset()


def _start(site: Site) -> None:
    result = site.host.systemctl("start", UNIT, check=False)
    assert result.returncode == 0, result.stderr + site.host.unit_log(UNIT)


def _status(site: Site) -> str:
    return site.host.systemctl("status", UNIT, "--lines=0", check=False).stdout


def test_start_returns_only_once_the_daemon_said_ready(service: Site) -> None:
    """`systemctl start` blocks until READY=1: when it returns, the unit is active (running), the status
    line is the daemon's, its HTTP listener answers, and daemon_started was logged before systemd's Started."""
    _start(service)
    props = service.host.show(UNIT, "ActiveState", "SubState", "StatusText", "Type")
    assert (props["ActiveState"], props["SubState"], props["Type"]) == ("active", "running", "notify")
    assert re.match(r"(ready|degraded: .+); 1 credentials, 1 registries, 1 sinks", props["StatusText"]), props
    assert requests.get(f"http://127.0.0.1:{service.listen}/healthz", timeout=5).status_code == 200
    entries = service.host.journal("-u", UNIT, "--boot")
    started = [i for i, e in enumerate(entries) if e.get("REGWARDEN_EVENT") == "daemon_started"]
    ready = [i for i, e in enumerate(entries) if e.get("JOB_RESULT") == "done" and e.get("JOB_TYPE") == "start"]
    assert started and ready and started[-1] < ready[-1], [e.get("MESSAGE") for e in entries[-20:]]


def test_reload_applies_a_valid_config_in_the_same_process(service: Site) -> None:
    """`systemctl reload` with a valid new config succeeds, applies it and keeps the main PID."""
    _start(service)
    pid = service.main_pid()
    service.write_config(service.config.replace('probe_interval = "5s"', 'probe_interval = "7s"'))
    result = service.host.systemctl("reload", UNIT, check=False)
    assert result.returncode == 0, result.stderr + service.host.unit_log(UNIT)
    assert service.main_pid() == pid
    assert any(e.get("REGWARDEN_EVENT") == "config_reloaded" for e in service.host.journal("-u", UNIT))
    assert "config reload refused" not in service.host.show(UNIT, "StatusText")["StatusText"]


def test_reload_refuses_a_bad_config_and_status_says_why(service: Site) -> None:
    """An invalid config fails `systemctl reload`, the old one keeps running, `systemctl status` names the
    problem; a fixed config reloads and clears it."""
    _start(service)
    pid = service.main_pid()
    service.write_config(service.config.replace('probe_interval = "5s"', 'probe_interval = "5 parsecs"'))
    result = service.host.systemctl("reload", UNIT, check=False)
    assert result.returncode != 0
    assert service.host.show(UNIT, "ActiveState")["ActiveState"] == "active" and service.main_pid() == pid
    status = _status(service)
    assert "config reload refused" in status and "probe_interval" in status, status
    assert requests.get(f"http://127.0.0.1:{service.listen}/healthz", timeout=5).status_code == 200
    service.write_config(service.config)
    assert service.host.systemctl("reload", UNIT, check=False).returncode == 0
    assert "config reload refused" not in _status(service)


def test_a_hung_daemon_is_killed_by_the_watchdog_and_restarted(service: Site) -> None:
    """A stopped (SIGSTOP) daemon stops pinging; systemd's watchdog kills it and Restart= brings it back."""
    service.dropin("watchdog", "[Service]\nWatchdogSec=4s\nTimeoutAbortSec=3s\nRestartSec=1s\n")
    _start(service)
    pid = service.main_pid()
    service.host.systemctl("kill", "--kill-whom=main", "--signal=SIGSTOP", UNIT)

    def restarted() -> bool:
        props = service.host.show(UNIT, "NRestarts", "ActiveState", "MainPID")
        return int(props["NRestarts"]) >= 1 and props["ActiveState"] == "active" and int(props["MainPID"]) != pid

    wait_for("a watchdog restart", restarted, 60)
    messages = " ".join(str(e.get("MESSAGE")) for e in service.host.journal("-u", UNIT))
    assert "Watchdog timeout" in messages, messages[-2000:]


def test_stop_is_prompt_and_flushes_the_audit_trail(service: Site) -> None:
    """A notification accepted just before `systemctl stop` is in the audit log after a clean exit within
    10 s, and `regwarden audit verify` passes on the trail."""
    from tests.unit.sources.test_notifications import envelope

    _start(service)
    event_id = "systemd-" + secrets.token_hex(6)
    response = requests.post(f"http://127.0.0.1:{service.notify_port}/v1/registry-events", data=envelope(event_id),
                             headers={"Authorization": f"Bearer {service.notify_token}",
                                      "Content-Type": "application/vnd.docker.distribution.events.v2+json"},
                             timeout=5)
    assert response.status_code == 200, response.text
    began = time.monotonic()
    service.host.systemctl("stop", UNIT)
    took = time.monotonic() - began
    props = service.host.show(UNIT, "Result", "ExecMainStatus", "ActiveState")
    assert took < 10 and props == {"Result": "success", "ExecMainStatus": "0", "ActiveState": "inactive"}, (took, props)
    assert any(r.get("request_id") == f"r-{event_id}" or event_id in json.dumps(r) for r in service.audit_records())
    verify = service.host.run(["/opt/regwarden/bin/regwarden", "audit", "verify", "-c", CONFIG], check=False)
    assert verify.returncode == 0 and verify.stdout.startswith("OK:"), verify.stdout + verify.stderr


def test_credentials_are_written_0600_inside_the_sandbox(service: Site) -> None:
    """Under ProtectSystem=strict the daemon writes root's Docker config (0600, root-owned) with the
    credential from Vault, while the rest of the file system stays read-only to it."""
    _start(service)
    config_json = service.host.path("/root/.docker/config.json")
    wait_for("the credential applied", lambda: service.registry.url.split("//")[1] in config_json.read_text(), 30)
    st = config_json.stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o600, 0, 0)
    pid = str(service.main_pid())
    denied = service.host.run(["nsenter", "-t", pid, "-m", "touch", "/etc/regwarden/written-by-service"],
                              check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied.stderr
    allowed = service.host.run(["nsenter", "-t", pid, "-m", "touch", "/var/lib/regwarden/probe"], check=False)
    assert allowed.returncode == 0, allowed.stderr


def test_journald_gets_structured_fields_and_priorities(service: Site) -> None:
    """Log lines reach journald natively: SYSLOG_IDENTIFIER=regwarden, the event as REGWARDEN_EVENT, the
    priority from the level, so `journalctl -u regwarden -p warning` shows warnings and errors only."""
    _start(service)
    service.write_config(service.config.replace('watch_interval = "2s"', 'watch_interval = "2 fortnights"'))
    service.host.systemctl("reload", UNIT, check=False)
    entries = service.host.journal("-u", UNIT, f"_PID={service.main_pid()}")  # this test's daemon
    ours = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "regwarden"]
    started = next(e for e in ours if e.get("REGWARDEN_EVENT") == "daemon_started")
    assert started["PRIORITY"] == "6" and started.get("REGWARDEN_VERSION")
    failed = next(e for e in ours if e.get("REGWARDEN_EVENT") == "config_reload_failed")
    assert failed["PRIORITY"] == "3" and "watch_interval" in failed["MESSAGE"]
    warnings = service.host.journal("-u", UNIT, "-p", "warning", f"_PID={service.main_pid()}")
    events = {e.get("REGWARDEN_EVENT") for e in warnings}
    assert "config_reload_failed" in events and "daemon_started" not in events


def test_a_crash_loop_is_bounded_by_the_start_limit(service: Site) -> None:
    """A daemon that cannot start (its port is taken) is restarted until StartLimitBurst starts within
    StartLimitIntervalSec, then systemd gives up and leaves the unit failed."""
    service.dropin("fast-restart", "[Service]\nRestartSec=200ms\n")
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", service.listen))
        squatter.listen()
        service.host.systemctl("start", UNIT, "--no-block")
        deadline = time.monotonic() + 90
        while "Start request repeated too quickly" not in (log := service.host.unit_log(UNIT, 200)):
            assert time.monotonic() < deadline, log
            time.sleep(0.5)
        service.host.wait_for_state(UNIT, {"failed"}, 30)
        props = service.host.show(UNIT, "NRestarts", "StartLimitBurst")
        assert int(props["NRestarts"]) == int(props["StartLimitBurst"]) == 5, props
        time.sleep(2)  # well past RestartSec: nothing restarts it any more
        assert service.host.show(UNIT, "ActiveState", "NRestarts") == {"ActiveState": "failed", "NRestarts": "5"}


def test_the_hardened_unit_scores_at_most_1_5(service: Site) -> None:
    """`systemd-analyze security` in the booted host rates the shipped unit's exposure 1.5 or better,
    and better than the distribution's docker.service and ssh.service."""
    scores = {}
    for unit in (UNIT, "docker.service", "ssh.service"):
        out = service.host.run(["systemd-analyze", "security", "--no-pager", unit], check=False).stdout
        match = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d)", out)
        assert match, out[-1500:]
        scores[unit] = float(match.group(1))
    assert scores[UNIT] <= 1.5 and scores[UNIT] < min(scores["docker.service"], scores["ssh.service"]), scores


def test_doctor_passes_on_the_installed_host_and_names_each_problem(service: Site) -> None:
    """`regwarden doctor` on the configured host (real unit, Docker socket, Vault) finds nothing; with a
    token whose policy cannot read the credential's metadata and a client config outside ReadWritePaths,
    it names exactly those two and exits 1."""
    doctor = ["/opt/regwarden/bin/regwarden", "doctor", "--json", "-c"]
    good = service.host.run([*doctor, CONFIG], check=False)
    report = json.loads(good.stdout)
    assert good.returncode == 0 and report["ok"], good.stdout
    assert {"docker", "vault", f"vault policy secret/metadata/{VAULT_PATH}"} <= {c["check"] for c in report["checks"]}

    root = service.openbao.client()
    policy = POLICY.replace("secret/metadata/regwarden/*", "secret/metadata/regwarden/elsewhere/*")
    root.sys.create_or_update_policy("regwarden-data-only", policy)
    token = root.auth.token.create(policies=["regwarden-data-only"], no_default_policy=True,
                                   ttl="10m")["auth"]["client_token"]
    service.host.write("/etc/regwarden/vault-token-data-only", token + "\n")
    service.host.run(["install", "-d", "-m", "0700", "/home/ci/.docker"])
    bad = (service.config.replace("/etc/regwarden/vault-token", "/etc/regwarden/vault-token-data-only")
           .replace('client_configs = ["/root/.docker/config.json"]',
                    'client_configs = ["/root/.docker/config.json", "/home/ci/.docker/config.json"]'))
    service.host.write("/etc/regwarden/doctor-bad.toml", bad, 0o640)
    result = service.host.run([*doctor, "/etc/regwarden/doctor-bad.toml"], check=False)
    problems = {c["check"]: c for c in json.loads(result.stdout)["checks"] if not c["ok"]}
    assert result.returncode == 1
    assert set(problems) == {f"vault policy secret/metadata/{VAULT_PATH}", "sandbox docker.client_configs[1]"}, problems
    assert "lacks read" in problems[f"vault policy secret/metadata/{VAULT_PATH}"]["detail"]
    assert token not in result.stdout + result.stderr
