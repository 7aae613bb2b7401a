"""RegistryReader and the signature lookup against a local HTTP server that answers the referrers API
the ways registries in the field do: an index, 404 (the spec), 400/405/501 (registries without the API),
or a real error."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest

from regwarden.config import RegistryConfig
from regwarden.errors import RegistryError
from regwarden.images import signature
from regwarden.images.component import Verdict, check_signature
from regwarden.registry.client import RegistryReader
from tests.cosign_support import CosignKey, payload_for, signature_manifest
from tests.http_stub import Answer, stub_servers

REPO = "team/app"
IMAGE_DIGEST = "sha256:" + "ab" * 32


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Registry:
    """Holds one signature, reachable only through referrers: the API (when `referrers_status` is 200) or
    the OCI 1.1 fallback tag `sha256-<hex>`; never through cosign's `.sig` tag."""

    def __init__(self, key: CosignKey) -> None:
        self.payload = payload_for(f"localhost/{REPO}", IMAGE_DIGEST)
        self.manifest = signature_manifest(self.payload, key.sign(self.payload))
        self.index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                 "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                "digest": _digest(self.manifest), "size": len(self.manifest),
                                                "artifactType": signature.ARTIFACT_TYPE}]}).encode()
        self.referrers_status = 404
        self.seen: list[dict[str, str]] = []

    @property
    def paths(self) -> list[str]:
        return [request["path"] for request in self.seen]

    def answer(self, path: str) -> tuple[int, bytes]:
        base = f"/v2/{REPO}"
        if path == f"{base}/referrers/{IMAGE_DIGEST}":
            return self.referrers_status, self.index if self.referrers_status == 200 else b'{"errors":[]}'
        if path == f"{base}/manifests/{IMAGE_DIGEST.replace(':', '-')}":
            return 200, self.index
        if path == f"{base}/manifests/{_digest(self.manifest)}":
            return 200, self.manifest
        if path == f"{base}/blobs/{_digest(self.payload)}":
            return 200, self.payload
        return 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}'


@pytest.fixture
def served() -> Iterator[tuple[_Registry, CosignKey, RegistryConfig]]:
    key = CosignKey.generate()
    registry = _Registry(key)

    def answer(path: str) -> Answer:
        status, body = registry.answer(path)
        return status, {"Content-Type": "application/json"}, body

    with stub_servers() as start:
        url, registry.seen = start(answer)
        yield registry, key, RegistryConfig.model_validate({"name": "field", "url": url})


def _check(config: RegistryConfig, key: CosignKey) -> Verdict:
    reader = RegistryReader(config, None, timeout=5)
    try:
        return check_signature(reader, REPO, IMAGE_DIGEST, key.private.public_key())
    finally:
        reader.close()


@pytest.mark.parametrize("status", [400, 404, 405, 501])
def test_a_registry_without_the_referrers_api_gets_the_fallback_tag(
        served: tuple[_Registry, CosignKey, RegistryConfig], status: int) -> None:
    """Each 'no referrers API' answer leads to the fallback tag, where the signature is found and verified."""
    registry, key, config = served
    registry.referrers_status = status
    verdict = _check(config, key)
    assert verdict.verdict == "verified", verdict
    assert f"/v2/{REPO}/manifests/{IMAGE_DIGEST.replace(':', '-')}" in registry.paths


def test_the_referrers_api_is_used_when_the_registry_has_it(
        served: tuple[_Registry, CosignKey, RegistryConfig]) -> None:
    registry, key, config = served
    registry.referrers_status = 200
    verdict = _check(config, key)
    assert verdict.verdict == "verified", verdict
    assert f"/v2/{REPO}/manifests/{IMAGE_DIGEST.replace(':', '-')}" not in registry.paths


@pytest.mark.parametrize("status", [403, 500, 503])
def test_a_failing_referrers_api_is_an_error_not_unsigned(
        served: tuple[_Registry, CosignKey, RegistryConfig], status: int) -> None:
    """A registry that fails to answer cannot say 'unsigned': the check is an error (retried), not a verdict."""
    registry, key, config = served
    registry.referrers_status = status
    with pytest.raises(RegistryError) as caught:
        _check(config, key)
    assert str(status) in str(caught.value)


def test_a_missing_manifest_is_none_but_a_400_on_it_is_an_error(
        served: tuple[_Registry, CosignKey, RegistryConfig]) -> None:
    """The wider 'absent' set is the referrers API's only: elsewhere a 400 stays an error."""
    registry, _, config = served
    reader = RegistryReader(config, None, timeout=5)
    try:
        assert reader.manifest(REPO, "no-such-tag") is None
        registry.answer = lambda path: (400, b"{}")  # type: ignore[method-assign]
        with pytest.raises(RegistryError):
            reader.manifest(REPO, "latest")
    finally:
        reader.close()
