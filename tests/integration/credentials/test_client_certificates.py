"""Client certificates from OpenBao PKI, swapped under a pulling Docker engine (mTLS registry in a netns)."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from regwarden.config import Config, parse_config
from regwarden.credentials.apply import apply_credential, targets_hold
from regwarden.credentials.model import CredentialSecret
from regwarden.errors import CredentialError
from regwarden.registry.verify import verify_credential
from tests.integration.harness import (
    DockerEngine,
    ImageTransferError,
    NetnsHost,
    OpenBaoDev,
    RegistryServer,
    RegistryTLS,
    pull_image,
    push_image,
)

pytestmark = pytest.mark.integration

# The engine reads client certificates only from here (no flag moves it); each test uses its own host:port.
ENGINE_CERTS_DIR = Path("/etc/docker/certs.d")
SWAPS = 20


@dataclass
class Pki:
    """One OpenBao PKI mount with a server role (IP SANs) and a client role."""

    client: Any
    mount: str
    ca_pem: str

    def issue(self, role: str, common_name: str, **extra: str) -> dict[str, Any]:
        answer = self.client.secrets.pki.generate_certificate(
            name=role, common_name=common_name, extra_params={"ttl": "1h", **extra}, mount_point=self.mount)
        data: dict[str, Any] = answer["data"]
        return data

    def client_secret(self, version: int) -> CredentialSecret:
        data = self.issue("client", f"ci-client-{version}")
        chain = data.get("ca_chain") or [data["issuing_ca"]]
        return CredentialSecret.from_kv("mtls", version, {"certificate": data["certificate"],
                                                          "private_key": data["private_key"],
                                                          "ca_chain": chain})


@contextlib.contextmanager
def make_pki(openbao: OpenBaoDev) -> Iterator[Pki]:
    client = openbao.client()
    mount = f"pki-rwtest-{secrets.token_hex(4)}"
    client.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": "24h"})
    try:
        root = client.secrets.pki.generate_root("internal", f"regwarden test CA {mount}",
                                                extra_params={"ttl": "24h"}, mount_point=mount)
        client.secrets.pki.create_or_update_role("server", extra_params={
            "allow_any_name": True, "allow_ip_sans": True, "server_flag": True, "client_flag": False,
            "key_type": "ec", "key_bits": 256}, mount_point=mount)
        client.secrets.pki.create_or_update_role("client", extra_params={
            "allow_any_name": True, "server_flag": False, "client_flag": True, "key_type": "ec",
            "key_bits": 256}, mount_point=mount)
        yield Pki(client, mount, root["data"]["certificate"])
    finally:
        client.sys.disable_secrets_engine(mount)


@dataclass
class MtlsSetup:
    cfg: Config
    registry: RegistryServer
    pki: Pki
    reference: str


@pytest.fixture
def mtls(openbao: OpenBaoDev, tmp_path: Path, netns_factory: Callable[[], NetnsHost],
         registry_factory: Callable[..., RegistryServer]) -> Iterator[MtlsSetup]:
    """A registry at NETNS:5000 requiring client certificates from an OpenBao PKI CA."""
    with contextlib.ExitStack() as stack:
        pki = stack.enter_context(make_pki(openbao))
        host = netns_factory()
        server = pki.issue("server", host.ns_addr, ip_sans=host.ns_addr)
        files = {"server.pem": server["certificate"], "server.key": server["private_key"], "ca.pem": pki.ca_pem}
        for name, text in files.items():
            (tmp_path / name).write_text(text)
        registry = registry_factory(auth=False, netns=host, tls=RegistryTLS(
            tmp_path / "server.pem", tmp_path / "server.key", clientcas=[tmp_path / "ca.pem"]))
        cfg = parse_config({
            "daemon": {"state_dir": str(tmp_path / "state")},
            "vault": {"address": openbao.address, "auth": {"method": "token", "token_env": "RW_UNUSED"}},
            "docker": {"certs_dir": str(ENGINE_CERTS_DIR)},
            "registries": [{"name": "mtls", "url": registry.url, "credential": "mtls",
                            "ca_cert": str(tmp_path / "ca.pem")}],
            "credentials": [{"name": "mtls", "vault_path": "secret/regwarden/mtls"}],
        })
        stack.callback(_remove_engine_certs, registry.host_port)
        yield MtlsSetup(cfg, registry, pki, f"{registry.host_port}/rwtest/tiny:latest")


def _remove_engine_certs(host_port: str) -> None:
    link = ENGINE_CERTS_DIR / host_port
    if link.is_symlink():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    shutil.rmtree(ENGINE_CERTS_DIR / ".regwarden" / host_port, ignore_errors=True)
    with contextlib.suppress(OSError):
        (ENGINE_CERTS_DIR / ".regwarden").rmdir()


def test_pull_loop_sees_no_failure_across_twenty_certificate_swaps(
        mtls: MtlsSetup, dockerd: DockerEngine, tiny_image: str) -> None:
    """Pulls every ~0.2 s through the engine never fail while 20 fresh client certificates are swapped in."""
    client = dockerd.client()
    credential = mtls.cfg.credential("mtls")
    registry = mtls.cfg.registry("mtls")
    with pytest.raises(ImageTransferError):  # the registry really requires a client certificate
        push_image(client, mtls.registry.host_port, "rwtest/tiny")
    current = mtls.pki.client_secret(1)
    verify_credential(registry, current, timeout=10)
    apply_credential(mtls.cfg, credential, current, previous=None)
    assert (ENGINE_CERTS_DIR / mtls.registry.host_port).is_symlink()
    push_image(client, mtls.registry.host_port, "rwtest/tiny")

    failures: list[str] = []
    pulls = 0
    stop = threading.Event()

    def pull_loop() -> None:
        nonlocal pulls
        while not stop.is_set():
            try:
                pull_image(client, mtls.reference)
            except ImageTransferError as exc:
                failures.append(str(exc))
            pulls += 1
            stop.wait(0.2)

    puller = threading.Thread(target=pull_loop, name="pull-loop")
    puller.start()
    try:
        for version in range(2, SWAPS + 2):
            fresh = mtls.pki.client_secret(version)
            verify_credential(registry, fresh, timeout=10)
            apply_credential(mtls.cfg, credential, fresh, previous=current)
            current = fresh
            time.sleep(0.25)
    finally:
        stop.set()
        puller.join(timeout=60)
        client.close()
    assert targets_hold(mtls.cfg, credential, current)
    assert failures == [], f"{len(failures)} of {pulls} pulls failed: {failures[:3]}"
    assert pulls >= SWAPS


def test_verify_rejects_a_client_certificate_from_another_ca(mtls: MtlsSetup, openbao: OpenBaoDev) -> None:
    """verify() with a client certificate the registry does not trust raises CredentialError."""
    with make_pki(openbao) as other:
        rogue = other.client_secret(1)
    with pytest.raises(CredentialError):
        verify_credential(mtls.cfg.registry("mtls"), rogue, timeout=10)
