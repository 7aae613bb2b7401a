"""Posture findings against real registries, through the daemon to a real Alertmanager: each appears,
then clears when the registry is fixed.

- `basic`: distribution with htpasswd over plain HTTP, with a user admin/admin (a default pair);
  fixed by a new admin password and moving the url to the TLS front below (a config reload).
- `open`: distribution without auth (anonymous push, open catalog); fixed by restarting it with auth,
  which makes it a Basic-auth-over-HTTP finding instead.
- `legacy`: nginx in front of `basic` accepting TLS 1.0/1.1 with every cipher (`@SECLEVEL=0`), a
  self-signed RSA leaf, bound to 0.0.0.0; fixed by a CA-issued cert, TLS 1.2+ with ECDHE-AEAD ciphers only,
  bound to 127.0.0.1.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from regwarden.config import load_config
from regwarden.daemon import Daemon
from regwarden.demo.processes import tcp_open
from regwarden.posture.checks import CHECKS
from regwarden.posture.component import PostureComponent
from tests.integration.alerting.test_alertmanager_pipeline import am_alerts
from tests.integration.harness import (
    Alertmanager,
    Process,
    RegistryServer,
    RegistryTLS,
    binary,
    daemon_table,
    free_port,
    make_certificates,
    running,
    wait_for,
)
from tests.integration.token_realm import ISSUER, SERVICE, TokenRealm

pytestmark = pytest.mark.integration

LEGACY_TLS = "ssl_protocols TLSv1 TLSv1.1 TLSv1.2; ssl_ciphers ALL:@SECLEVEL=0;"
MODERN_TLS = "ssl_protocols TLSv1.2 TLSv1.3; ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;"


def self_signed_rsa(workdir: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "legacy registry")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=60))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = workdir / "self.pem", workdir / "self.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


class TlsFront:
    """nginx terminating TLS in front of a registry; `configure()` rewrites its config and restarts it (a reload
    cannot move a listener from 0.0.0.0 to 127.0.0.1 on the same port)."""

    def __init__(self, workdir: Path, upstream: str, port: int) -> None:
        self.workdir, self.upstream, self.port = workdir, upstream, port
        self.conf = workdir / "nginx.conf"
        self.process = Process("nginx", [binary("nginx"), "-p", str(workdir), "-c", str(self.conf), "-e",
                                         str(workdir / "error.log")], workdir / "nginx.out",
                               lambda: tcp_open("127.0.0.1", port))

    def configure(self, bind: str, cert: Path, key: Path, tls: str) -> None:
        self.conf.write_text(f"""daemon off; pid {self.workdir}/nginx.pid; error_log {self.workdir}/error.log;
events {{}}
http {{ access_log off; client_body_temp_path {self.workdir}/body; proxy_temp_path {self.workdir}/proxy;
  fastcgi_temp_path {self.workdir}/fcgi; uwsgi_temp_path {self.workdir}/uwsgi; scgi_temp_path {self.workdir}/scgi;
  server {{ listen {bind}:{self.port} ssl; ssl_certificate {cert}; ssl_certificate_key {key}; {tls}
    client_max_body_size 0;
    location / {{ proxy_pass http://{self.upstream}; proxy_set_header Host $http_host; }} }} }}
""")
        if self.process.running:
            self.process.stop()
            self.process.start()

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()


def restart_with_auth(server: RegistryServer) -> None:
    config = json.loads(server.config_path.read_text())
    config["auth"] = {"htpasswd": {"realm": "regwarden-test", "path": str(server.htpasswd_path)}}
    server.add_user(server.username, server.password)
    server.config_path.write_text(json.dumps(config))
    server.stop()
    server.start()


def active(am: Alertmanager) -> set[tuple[str, str]]:
    """(alertname, registry) of the alerts Alertmanager holds as active."""
    names = {a["labels"]["alertname"] for a in requests.get(f"{am.url}/api/v2/alerts", timeout=5).json()}
    return {(a["labels"]["alertname"], a["labels"].get("registry", ""))
            for name in names for a in am_alerts(am.url, name)}


def audit(path: Path, kind: str) -> set[tuple[str, str]]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return {(r["target"]["registry"], r["detail"]["check"]) for r in records if r["kind"] == kind}


def test_findings_appear_and_clear_through_alertmanager(
        tmp_path: Path, registry_factory: Callable[..., RegistryServer], alertmanager: Alertmanager) -> None:
    basic = registry_factory(auth=True)
    basic.add_user("admin", "admin")
    open_ = registry_factory(auth=False)
    certs = make_certificates(tmp_path / "pki", "127.0.0.1", days=60)
    self_cert, self_key = self_signed_rsa(tmp_path)
    front = TlsFront(tmp_path / "nginx", basic.host_port, free_port())
    front.workdir.mkdir()
    front.configure("0.0.0.0", self_cert, self_key, LEGACY_TLS)
    listen = f"127.0.0.1:{free_port()}"
    config = tmp_path / "config.toml"

    def write_config(basic_url: str) -> None:
        config.write_text(daemon_table(tmp_path, listen) + f"""
[[registries]]
name = "basic"
url = "{basic_url}"
ca_cert = "{certs.ca}"
expect_auth = true
check_default_credentials = true
probe_interval = "1h"

[[registries]]
name = "open"
url = "{open_.url}"
expect_auth = true
probe_interval = "1h"

[[registries]]
name = "legacy"
url = "https://127.0.0.1:{front.port}"
ca_cert = "{certs.ca}"
expect_auth = true
check_default_credentials = false
probe_interval = "1h"

[posture]
interval = "1h"
timeout = "3s"

[alerts]
group_wait = "1s"
group_interval = "1s"

[[sinks]]
name = "am"
type = "alertmanager"
url = "{alertmanager.url}"
""")

    write_config(basic.url)
    expected = {
        ("RegistryBasicAuthPlainHTTP", "basic"), ("RegistryDefaultCredentials", "basic"),
        ("RegistryAnonymousPush", "open"), ("RegistryCatalogExposed", "open"),
        ("RegistryTLSLegacyProtocol", "legacy"), ("RegistryTLSWeakCipher", "legacy"),
        ("RegistryTLSUntrusted", "legacy"), ("RegistryTLSSelfSigned", "legacy"), ("RegistryExposed", "legacy"),
    }
    posture_alerts = {alert for alert, _ in expected} | {"RegistryTLSHostnameMismatch", "RegistryAnonymousPull",
                                                         "RegistryTokenRealmInsecure"}
    with running(front):
        daemon = Daemon(config, load_config(config))
        daemon.start()
        try:
            posture = next(c for c in daemon.components if isinstance(c, PostureComponent))
            reports = {r.registry: r for r in posture.run_all()}
            assert {r: report.errors for r, report in reports.items()} == {"basic": (), "open": (), "legacy": ()}
            wait_for("every finding in Alertmanager",
                     lambda: {a for a in active(alertmanager) if a[0] in posture_alerts} == expected, 30)
            weak = next(o for o in reports["legacy"].outcomes if o.check == "tls_weak_cipher")
            assert weak.severity == "critical" and "no forward secrecy" in weak.detail  # aNULL and kRSA offered
            metrics = requests.get(f"http://{listen}/metrics", timeout=5).text
            assert 'regwarden_posture_finding{check="default_credentials",registry="basic",severity="critical"} 1.0' \
                in metrics
            status = requests.get(f"http://{listen}/status", timeout=5).json()["components"]["posture"]
            assert {f["check"] for f in status["open"]["findings"]} == {
                "plain_http", "anonymous_access", "anonymous_push", "catalog_anonymous"}
            assert "admin:admin" not in (tmp_path / "audit.jsonl").read_text()

            # fix every registry, then let the next run see it
            basic.add_user("admin", secrets.token_urlsafe(12))
            restart_with_auth(open_)
            front.configure("127.0.0.1", certs.server_cert, certs.server_key, MODERN_TLS)
            wait_for("nginx on 127.0.0.1 only", lambda: _bound_to_loopback(front.port), 10)
            for key in ("basic",):  # default logins run once per interval: make this run due
                daemon.ctx.state.set_cursor(f"posture:default-logins:{key}", None)
            write_config(f"https://127.0.0.1:{front.port}")
            assert daemon.reload()
            posture = next(c for c in daemon.components if isinstance(c, PostureComponent))
            reports = {r.registry: r for r in posture.run_all()}
            # `open` now asks for Basic credentials over plain HTTP: fixed one way, found the other
            assert {(r.registry, o.check) for r in reports.values() for o in r.findings
                    if CHECKS[o.check].alerted_by == "posture"} == {("open", "basic_auth_plain_http")}
            wait_for("every other finding resolved in Alertmanager",
                     lambda: {a for a in active(alertmanager) if a[0] in posture_alerts}
                     == {("RegistryBasicAuthPlainHTTP", "open")}, 30)
        finally:
            daemon.stop()
    found = audit(tmp_path / "audit.jsonl", "posture.finding")
    cleared = audit(tmp_path / "audit.jsonl", "posture.cleared")
    assert {("legacy", "tls_legacy_protocol"), ("open", "anonymous_push"), ("basic", "default_credentials")} <= found
    assert {("legacy", "tls_legacy_protocol"), ("open", "anonymous_push"), ("basic", "default_credentials"),
            ("basic", "basic_auth_plain_http"), ("legacy", "exposure"), ("legacy", "tls_self_signed")} <= cleared


def _bound_to_loopback(port: int) -> bool:
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
    local = {line.split()[3] for line in out.splitlines()}
    return local == {f"127.0.0.1:{port}"}



def token_registry(workdir: Path, realm: TokenRealm, tls: RegistryTLS) -> RegistryServer:
    workdir.mkdir()
    registry = RegistryServer(workdir, auth=False, tls=tls)
    config = json.loads(registry.config_path.read_text())
    config["auth"] = {"token": {"realm": realm.url, "service": SERVICE, "issuer": ISSUER,
                                "rootcertbundle": str(realm.bundle)}}
    registry.config_path.write_text(json.dumps(config))
    return registry


def posture_cli(config: Path) -> tuple[int, dict[str, Any]]:
    run = subprocess.run([sys.executable, "-m", "regwarden", "posture", "--json", "-c", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode in (0, 1), run.stderr
    return run.returncode, json.loads(run.stdout)


def test_token_realm_over_http_anonymous_pull_and_host_name_by_the_cli(tmp_path: Path) -> None:
    """A TLS registry whose certificate names another address, with a token realm over plain HTTP that
    grants anonymous pull: three findings; with the realm granting nothing anonymously, anonymous_pull
    clears (exit status 1 while any check fails)."""
    certs = make_certificates(tmp_path / "pki", "127.0.0.2", days=60)  # the url says 127.0.0.1
    tls = RegistryTLS(certs.server_cert, certs.server_key)
    config = tmp_path / "config.toml"
    with TokenRealm(tmp_path, None, "ci", secrets.token_urlsafe(12), anonymous_actions=["pull"]) as realm:
        registry = token_registry(tmp_path / "registry", realm, tls)
        with running(registry):
            config.write_text(daemon_table(tmp_path, free_port()) + f"""
[[registries]]
name = "tok"
url = "{registry.url}"
ca_cert = "{certs.ca}"
expect_auth = true
check_default_credentials = true
""")
            status, report = posture_cli(config)
            failed = {row["check"] for row in report["checks"] if row["state"] == "FAIL"}
            assert (status, failed) == (1, {"tls_hostname_mismatch", "token_realm_insecure", "anonymous_pull"})
            assert report["errors"] == {}
            rows = {row["check"]: row for row in report["checks"]}
            assert "the registry's own host" in rows["token_realm_insecure"]["finding"]
            assert "127.0.0.2" in rows["tls_hostname_mismatch"]["finding"]
            assert rows["tls_untrusted_chain"]["state"] == rows["tls_self_signed"]["state"] == "pass"
            assert rows["default_credentials"]["state"] == "pass"  # the realm refuses every default pair

            realm.anonymous_actions = []
            status, report = posture_cli(config)
            failed = {row["check"] for row in report["checks"] if row["state"] == "FAIL"}
            assert (status, failed) == (1, {"tls_hostname_mismatch", "token_realm_insecure"})
