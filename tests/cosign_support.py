"""Test signatures in cosign's documented format (cosign specs/SIGNATURE_SPEC.md), pushed with the
registry's own HTTP API: a simple-signing payload blob, an empty config, and an OCI manifest tagged
`sha256-HEX.sig` whose layer carries the base64 ECDSA-P256 signature in the
`dev.cosignproject.cosign/signature` annotation.

Debian's skopeo 1.9 cannot produce these (`--sign-by-sigstore-private-key` fails with "Debian-local
change: sigstore disabled") and cosign is not packaged, so this is the only producer available here.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["CosignKey", "payload_for", "push_blob", "push_signature", "signature_manifest"]


@dataclass(frozen=True)
class CosignKey:
    private: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> CosignKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, payload: bytes) -> str:
        return base64.b64encode(self.private.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()


def payload_for(reference: str, digest: str) -> bytes:
    """The simple-signing payload cosign signs for `reference` (REGISTRY/REPOSITORY) at `digest`."""
    return json.dumps({"critical": {"identity": {"docker-reference": reference},
                                    "image": {"docker-manifest-digest": digest},
                                    "type": "cosign container image signature"},
                       "optional": None}, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def signature_manifest(payload: bytes, signature: str, config: bytes = b"{}") -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config),
                   "digest": _digest(config)},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "size": len(payload),
                    "digest": _digest(payload),
                    "annotations": {"dev.cosignproject.cosign/signature": signature}}],
    }).encode()


def push_blob(url: str, repository: str, data: bytes, auth: tuple[str, str] | None = None,
              headers: dict[str, str] | None = None) -> str:
    """Monolithic upload (POST then PUT ?digest=); returns the digest. `headers`: e.g. a Bearer token."""
    digest = _digest(data)
    start = requests.post(f"{url}/v2/{repository}/blobs/uploads/", timeout=10, auth=auth, headers=headers)
    assert start.status_code == 202, start.text
    location = start.headers["Location"]
    location = location if location.startswith("http") else url + location
    sep = "&" if "?" in location else "?"
    done = requests.put(f"{location}{sep}digest={digest}", data=data, timeout=10, auth=auth,
                        headers={**(headers or {}), "Content-Type": "application/octet-stream"})
    assert done.status_code == 201, done.text
    return digest


def push_signature(url: str, repository: str, digest: str, key: CosignKey, *, payload: bytes | None = None,
                   signature: str | None = None, manifest: bytes | None = None,
                   auth: tuple[str, str] | None = None, headers: dict[str, str] | None = None) -> None:
    """Sign `repository@digest` as `cosign sign --key` stores it (payload, signature and manifest can be
    replaced to make bad ones)."""
    host = url.split("://", 1)[1]
    body = payload if payload is not None else payload_for(f"{host}/{repository}", digest)
    push_blob(url, repository, body, auth, headers)
    push_blob(url, repository, b"{}", auth, headers)
    doc = manifest if manifest is not None else signature_manifest(body, signature or key.sign(body))
    tag = digest.replace(":", "-") + ".sig"
    answer = requests.put(f"{url}/v2/{repository}/manifests/{tag}", data=doc, timeout=10, auth=auth,
                          headers={**(headers or {}), "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert answer.status_code == 201, answer.text
