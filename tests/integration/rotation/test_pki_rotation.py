"""vault-pki rotation: client certificates for an mTLS registry rotated under a pulling Docker engine."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from regwarden.rotation.providers import vault_serial
from tests.integration.credentials.test_client_certificates import (
    ENGINE_CERTS_DIR,
    _remove_engine_certs,
    make_pki,
)
from tests.integration.harness import (
    DockerEngine,
    NetnsHost,
    OpenBaoDev,
    RegistryServer,
    RegistryTLS,
    daemon_table,
    free_port,
    pull_image,
    push_image,
    secret_file,
    wait_for,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def daemon_proc() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_certificates_rotate_every_20s_without_a_failed_pull(
        openbao: OpenBaoDev, dockerd: DockerEngine, tiny_image: str, tmp_path: Path,
        netns_factory: Callable[[], NetnsHost], registry_factory: Callable[..., RegistryServer],
        daemon_proc: list[subprocess.Popen[bytes]]) -> None:
    """vault-pki: a new client certificate every 20 s for 2 minutes, zero failed pulls, old serials revoked."""
    with contextlib.ExitStack() as stack:
        pki = stack.enter_context(make_pki(openbao))
        host = netns_factory()
        server = pki.issue("server", host.ns_addr, ip_sans=host.ns_addr)
        for name, text in {"server.pem": server["certificate"], "server.key": server["private_key"],
                           "ca.pem": pki.ca_pem}.items():
            (tmp_path / name).write_text(text)
        registry = registry_factory(auth=False, netns=host, tls=RegistryTLS(
            tmp_path / "server.pem", tmp_path / "server.key", clientcas=[tmp_path / "ca.pem"]))
        stack.callback(_remove_engine_certs, registry.host_port)
        token = secret_file(tmp_path / "vault-token", openbao.token)
        config, listen = tmp_path / "regwarden.toml", f"127.0.0.1:{free_port()}"
        config.write_text(daemon_table(tmp_path, listen) + f"""
[vault]
address = "{openbao.address}"
auth = {{ method = "token", token_file = "{token}" }}
lock_path = "secret/regwarden-pki/locks"

[docker]
host = "{dockerd.host}"
certs_dir = "{ENGINE_CERTS_DIR}"

[[registries]]
name = "mtls"
url = "{registry.url}"
credential = "mtls"
ca_cert = "{tmp_path / 'ca.pem'}"
probe_interval = "1m"

[[credentials]]
name = "mtls"
provider = "vault-pki"
vault_path = "secret/regwarden-pki/mtls"
watch_interval = "2s"
rotate_every = "20s"
overlap = "5s"
pki = {{ mount = "{pki.mount}", role = "client", common_name = "ci.regwarden.test", ttl = "1h" }}
""")
        log = (tmp_path / "daemon.log").open("ab")
        daemon_proc.append(subprocess.Popen(
            [sys.executable, "-m", "regwarden", "run", "-c", str(config)], stdout=log, stderr=log,
            env={**os.environ, "PYTHONPATH": f"{REPO / 'daemon'}{os.pathsep}{REPO / 'plugins'}"}))
        link = ENGINE_CERTS_DIR / registry.host_port
        wait_for("the first certificate is in certs.d", (link / "client.cert").exists, timeout=60)
        client = dockerd.client()
        reference = push_image(client, registry.host_port, "pki/tiny", "1")

        kv = openbao.client().secrets.kv.v2
        first = int(kv.read_secret_metadata(path="regwarden-pki/mtls", mount_point="secret")["data"]
                    ["current_version"])
        stop, failures, pulls = threading.Event(), [], [0]

        def pull_loop() -> None:
            while not stop.is_set():
                try:
                    pull_image(client, reference)
                    pulls[0] += 1
                except Exception as exc:
                    failures.append(f"{type(exc).__name__}: {exc}"[:200])
                stop.wait(0.3)

        thread = threading.Thread(target=pull_loop, daemon=True)
        thread.start()
        time.sleep(120)
        stop.set()
        thread.join(30)
        last = int(kv.read_secret_metadata(path="regwarden-pki/mtls", mount_point="secret")["data"]
                   ["current_version"])
        assert not failures, failures[:5]
        assert pulls[0] > 150
        assert 5 <= last - first <= 7
        # the daemon probes the mTLS registry with the client certificate it applied
        metrics = requests.get(f"http://{listen}/metrics", timeout=5).text
        assert 'regwarden_probe_success{registry="mtls"} 1.0' in metrics
        assert 'regwarden_probe_auth_success{registry="mtls"} 1.0' in metrics
        pki_api = openbao.client()

        def revoked(version: int) -> bool:
            cert = kv.read_secret_version(path="regwarden-pki/mtls", mount_point="secret", version=version,
                                          raise_on_deleted_version=True)["data"]["data"]["certificate"]
            answer = pki_api.secrets.pki.read_certificate(vault_serial(cert), mount_point=pki.mount)
            return bool(answer["data"]["revocation_time"] > 0)

        # the last rotation's old serial is revoked once its 5 s overlap has passed
        wait_for("every replaced serial revoked", lambda: all(revoked(v) for v in range(first, last)), timeout=30)
        current = kv.read_secret_version(path="regwarden-pki/mtls", mount_point="secret",
                                         raise_on_deleted_version=True)["data"]["data"]["certificate"]
        assert pki_api.secrets.pki.read_certificate(vault_serial(current), mount_point=pki.mount)[
            "data"]["revocation_time"] == 0
