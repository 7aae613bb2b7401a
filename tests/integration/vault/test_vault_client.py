"""The Vault adapter against a real OpenBao: re-reading secrets, telling a dead token from a denied path,
certificate login over TLS, and TLS verification by default."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
import requests

from regwarden.config import VaultConfig
from regwarden.errors import VaultError
from regwarden.metrics import Metrics
from regwarden.vault import VaultClient
from tests.integration.credentials.conftest import approle_login_files, consume_policy
from tests.integration.harness import Process, binary, free_port, running, secret_file

pytestmark = pytest.mark.integration


def requests_made(metrics: Metrics, operation: str) -> float:
    value = metrics.registry.get_sample_value(
        "regwarden_vault_requests_total", {"operation": operation, "outcome": "success"})
    return value or 0.0


def put(openbao: Any, path: str) -> None:
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"username": "u", "password": "p"}, mount_point="secret")


def test_replaced_token_file_is_picked_up(openbao: Any, tmp_path: Path) -> None:
    """When the token is revoked and the token file replaced, the next request uses the new token."""
    root = openbao.client()
    put(openbao, "regwarden/token-file")
    policy = consume_policy(root)
    first = root.auth.token.create(policies=[policy], ttl="1h")["auth"]["client_token"]
    token_file = secret_file(tmp_path / "token", first)
    metrics = Metrics()
    client = VaultClient(VaultConfig.model_validate(
        {"address": openbao.address, "auth": {"method": "token", "token_file": str(token_file)}}), metrics)
    assert client.read_metadata("secret", "regwarden/token-file").current_version == 1

    root.auth.token.revoke(first)
    secret_file(token_file, root.auth.token.create(policies=[policy], ttl="1h")["auth"]["client_token"])
    assert client.read_metadata("secret", "regwarden/token-file").current_version == 1
    assert client.up is True


def test_replaced_secret_id_is_used_at_next_login(openbao: Any, tmp_path: Path) -> None:
    """AppRole: after the token is revoked, the re-login reads the secret-id file again."""
    root = openbao.client()
    put(openbao, "regwarden/approle")
    auth = approle_login_files(root, tmp_path, token_ttl="1h", token_max_ttl="2h")
    metrics = Metrics()
    client = VaultClient(VaultConfig.model_validate({"address": openbao.address, "auth": auth}), metrics)
    client.read_metadata("secret", "regwarden/approle")

    old_secret_id = Path(auth["secret_id_file"]).read_text()
    root.auth.approle.destroy_secret_id("regwarden", old_secret_id)
    secret_file(Path(auth["secret_id_file"]),
                 root.auth.approle.generate_secret_id("regwarden")["data"]["secret_id"])
    root.auth.token.revoke(client._token)  # the daemon's token dies (revoked, expired, ...)
    client.read_metadata("secret", "regwarden/approle")
    assert requests_made(metrics, "login") == 2


def test_path_denied_by_policy_does_not_log_in_again(openbao: Any, tmp_path: Path) -> None:
    """A 403 for a path the policy does not allow is reported, without minting a new token."""
    root = openbao.client()
    put(openbao, "elsewhere/x")
    auth = approle_login_files(root, tmp_path, token_ttl="1h", token_max_ttl="2h")
    metrics = Metrics()
    client = VaultClient(VaultConfig.model_validate({"address": openbao.address, "auth": auth}), metrics)
    for _ in range(3):
        with pytest.raises(VaultError) as caught:
            client.read_metadata("secret", "elsewhere/x")
        assert (caught.value.status, caught.value.retryable) == (403, False)
    assert requests_made(metrics, "login") == 1


@pytest.fixture
def openbao_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, str]]:
    """An OpenBao dev server with a TLS listener: (address, CA file, root token)."""
    work = tmp_path_factory.mktemp("openbao-tls")
    port, token = free_port(), "root-tls"
    ca = work / "vault-ca.pem"
    address = f"https://127.0.0.1:{port}"
    process = Process(
        "openbao-tls",
        [binary("bao"), "server", "-dev", "-dev-tls", f"-dev-tls-cert-dir={work}", f"-dev-root-token-id={token}",
         f"-dev-listen-address=127.0.0.1:{port}"],
        work / "openbao.log",
        lambda: requests.get(f"{address}/v1/sys/health", verify=str(ca), timeout=2).status_code == 200,
        env={"HOME": str(work), "BAO_ADDR": "", "VAULT_ADDR": ""},
    )
    with running(process):
        yield address, ca, token


def test_cert_login_over_tls(openbao_tls: tuple[str, Path, str], tmp_path: Path) -> None:
    """Method `cert` logs in with the client certificate and reads KV; the server is verified with ca_cert."""
    address, ca, token = openbao_tls
    root = hvac.Client(url=address, token=token, verify=str(ca))
    root.sys.enable_secrets_engine("pki", path="pki")
    root.sys.tune_mount_configuration("pki", max_lease_ttl="24h")
    issuer = root.secrets.pki.generate_root("internal", "regwarden test CA", mount_point="pki")["data"]
    root.secrets.pki.create_or_update_role("client", {"allow_any_name": True, "client_flag": True,
                                                      "server_flag": False, "ttl": "1h"}, mount_point="pki")
    issued = root.secrets.pki.generate_certificate("client", "regwarden-host", mount_point="pki")["data"]
    cert_file = secret_file(tmp_path / "client.pem", issued["certificate"])
    key_file = secret_file(tmp_path / "client.key", issued["private_key"])
    root.sys.enable_auth_method("cert")
    root.write_data("auth/cert/certs/regwarden", data={
        "certificate": issuer["certificate"], "token_policies": [consume_policy(root)], "token_ttl": "1h"})
    root.secrets.kv.v2.create_or_update_secret(path="regwarden/cert", secret={"username": "u", "password": "p"},
                                               mount_point="secret")
    client = VaultClient(VaultConfig.model_validate({
        "address": address, "ca_cert": str(ca),
        "auth": {"method": "cert", "cert_file": str(cert_file), "key_file": str(key_file), "role": "regwarden"}}),
        Metrics())
    assert client.read_version("secret", "regwarden/cert", 1) == {"username": "u", "password": "p"}
    assert client.token is not None and client.token.ttl > 0


def test_tls_verified_by_default(openbao_tls: tuple[str, Path, str], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ca_cert, a server certificate from an unknown CA is refused (not silently accepted)."""
    address, _, token = openbao_tls
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # the system trust store, not a test override
        monkeypatch.delenv(name, raising=False)
    token_file = secret_file(tmp_path / "token", token)
    client = VaultClient(VaultConfig.model_validate(
        {"address": address, "auth": {"method": "token", "token_file": str(token_file)}}), Metrics())
    with pytest.raises(VaultError, match="TLS verification failed") as caught:
        client.read_metadata("secret", "anything")
    assert caught.value.retryable and token not in str(caught.value)
