"""cosign signatures, pure: where they are stored and what makes one valid (cosign SIGNATURE_SPEC).

A signature of manifest `sha256:HEX` is stored in the same repository as the manifest tagged
`sha256-HEX.sig` (tag-based discovery), or as an OCI referrer whose artifactType is
`application/vnd.dev.cosign.artifact.sig.v1+json`. Each layer of that manifest is one signature: the
layer blob is the simple-signing payload and the layer annotation `dev.cosignproject.cosign/signature`
holds the base64 ECDSA-P256/SHA-256 DER signature over the payload bytes. A payload is valid for a
manifest when its `critical.image.docker-manifest-digest` is that digest and its `critical.type` is
`cosign container image signature`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import ImageCheckError

__all__ = [
    "ARTIFACT_TYPE",
    "PAYLOAD_MEDIA_TYPE",
    "SIGNATURE_ANNOTATION",
    "SignatureLayer",
    "is_signature_tag",
    "load_public_key",
    "signature_layers",
    "signature_tag",
    "signed_digest",
    "verify",
]

ARTIFACT_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
PAYLOAD_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_ATTACHMENT_TAG = re.compile(r"^sha256-[0-9a-f]{64}(\.sig|\.att|\.sbom)?$")


@dataclass(frozen=True)
class SignatureLayer:
    """One signature of a signature manifest: its payload blob and the base64 signature."""

    payload_digest: str
    signature: str


def signature_tag(digest: str) -> str:
    """`sha256:HEX` -> `sha256-HEX.sig`."""
    if not _DIGEST.match(digest):
        raise ImageCheckError(f"not a sha256 manifest digest: {digest[:80]!r}")
    return digest.replace(":", "-") + ".sig"


def is_signature_tag(tag: str | None) -> bool:
    """A tag cosign writes next to an image (signature, attestation, SBOM, referrers fallback)."""
    return tag is not None and _ATTACHMENT_TAG.match(tag) is not None


def signature_layers(manifest: bytes, where: str) -> list[SignatureLayer]:
    """The signatures in a signature manifest; ImageCheckError naming `where` when it is not one."""
    try:
        doc: Any = json.loads(manifest)
    except (ValueError, UnicodeDecodeError):
        raise ImageCheckError(f"{where}: signature manifest is not JSON") from None
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list) or not layers:
        raise ImageCheckError(f"{where}: signature manifest has no layers")
    out = []
    for index, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise ImageCheckError(f"{where}: layers[{index}] is not an object")
        if layer.get("mediaType") != PAYLOAD_MEDIA_TYPE:
            raise ImageCheckError(f"{where}: layers[{index}].mediaType is {str(layer.get('mediaType'))[:80]!r},"
                                  f" not {PAYLOAD_MEDIA_TYPE}")
        digest = layer.get("digest")
        annotations = layer.get("annotations")
        signature = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise ImageCheckError(f"{where}: layers[{index}].digest is not a sha256 digest")
        if not isinstance(signature, str) or not signature:
            raise ImageCheckError(f"{where}: layers[{index}] has no {SIGNATURE_ANNOTATION} annotation")
        out.append(SignatureLayer(digest, signature))
    return out


def signed_digest(payload: bytes, where: str) -> str:
    """The manifest digest a simple-signing payload signs; ImageCheckError when it is not a cosign payload."""
    try:
        doc: Any = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ImageCheckError(f"{where}: signature payload is not JSON") from None
    critical = doc.get("critical") if isinstance(doc, dict) else None
    if not isinstance(critical, dict) or critical.get("type") != PAYLOAD_TYPE:
        raise ImageCheckError(f"{where}: payload is not a {PAYLOAD_TYPE!r}")
    image = critical.get("image")
    digest = None
    if isinstance(image, dict):  # cosign writes docker-manifest-digest; its docs show Docker-manifest-digest
        digest = next((v for k, v in image.items() if k.lower() == "docker-manifest-digest"), None)
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ImageCheckError(f"{where}: payload has no critical.image.docker-manifest-digest")
    return digest


def load_public_key(pem: bytes, where: str) -> ec.EllipticCurvePublicKey:
    """An ECDSA P-256 public key from PEM (cosign.pub)."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise ImageCheckError(f"{where}: not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ImageCheckError(f"{where}: not an ECDSA P-256 public key")
    return key


def verify(key: ec.EllipticCurvePublicKey, payload: bytes, signature: str) -> bool:
    """Whether `signature` (base64 DER) is `key`'s ECDSA/SHA-256 signature of `payload`."""
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, payload, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True
