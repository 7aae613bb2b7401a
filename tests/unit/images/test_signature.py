"""cosign signature storage and verification (images/signature.py), against signatures made in cosign's
documented format (tests/cosign_support.py)."""

from __future__ import annotations

import json

import pytest

from regwarden.errors import ImageCheckError
from regwarden.images import signature
from tests.cosign_support import CosignKey, payload_for, signature_manifest

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def test_signature_tag_is_cosigns_tag_scheme() -> None:
    """sha256:HEX is signed under the tag sha256-HEX.sig."""
    assert signature.signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"


def test_signature_tag_refuses_what_is_not_a_digest() -> None:
    """A digest that is not sha256:<64 hex> is an ImageCheckError."""
    with pytest.raises(ImageCheckError, match="not a sha256 manifest digest"):
        signature.signature_tag("latest")


@pytest.mark.parametrize(("tag", "attachment"), [
    ("sha256-" + "ab" * 32 + ".sig", True), ("sha256-" + "ab" * 32 + ".att", True),
    ("sha256-" + "ab" * 32, True), ("1.0", False), (None, False), ("sha256-abc.sig", False)])
def test_cosign_attachment_tags_are_recognised(tag: str | None, attachment: bool) -> None:
    """Pushes of cosign's own tags (signatures, attestations, the referrers fallback) are not images."""
    assert signature.is_signature_tag(tag) is attachment


def test_a_valid_signature_verifies() -> None:
    """The layer's signature over the payload verifies with the signer's public key."""
    key = CosignKey.generate()
    payload = payload_for("reg/app", DIGEST)
    [layer] = signature.signature_layers(signature_manifest(payload, key.sign(payload)), "m")
    public = signature.load_public_key(key.public_pem, "cosign.pub")
    assert signature.verify(public, payload, layer.signature)


def test_a_tampered_payload_does_not_verify() -> None:
    """Changing one byte of the payload after signing breaks the signature."""
    key = CosignKey.generate()
    payload = payload_for("reg/app", DIGEST)
    public = signature.load_public_key(key.public_pem, "cosign.pub")
    assert not signature.verify(public, payload.replace(b"reg/app", b"reg/apq"), key.sign(payload))


def test_another_keys_signature_does_not_verify() -> None:
    """A signature by another key does not verify with the configured one."""
    payload = payload_for("reg/app", DIGEST)
    public = signature.load_public_key(CosignKey.generate().public_pem, "cosign.pub")
    assert not signature.verify(public, payload, CosignKey.generate().sign(payload))


def test_a_signature_that_is_not_base64_does_not_verify() -> None:
    """Garbage in the annotation is a failed verification, not an exception."""
    public = signature.load_public_key(CosignKey.generate().public_pem, "cosign.pub")
    assert not signature.verify(public, b"{}", "not base64!")


def test_the_payload_names_the_signed_digest() -> None:
    """signed_digest reads critical.image.docker-manifest-digest."""
    assert signature.signed_digest(payload_for("reg/app", OTHER), "p") == OTHER


@pytest.mark.parametrize(("payload", "message"), [
    (b"nope", "not JSON"),
    (json.dumps({"critical": {"type": "something else", "image": {"docker-manifest-digest": DIGEST}}}).encode(),
     "is not a 'cosign container image signature'"),
    (json.dumps({"critical": {"type": "cosign container image signature", "image": {}}}).encode(),
     "no critical.image.docker-manifest-digest"),
])
def test_a_payload_that_is_not_cosigns_is_an_error(payload: bytes, message: str) -> None:
    """A payload that is not a cosign simple-signing payload is an ImageCheckError saying what is wrong."""
    with pytest.raises(ImageCheckError, match=message):
        signature.signed_digest(payload, "p")


@pytest.mark.parametrize(("manifest", "message"), [
    (b"<html>", "not JSON"),
    (json.dumps({"layers": []}).encode(), "no layers"),
    (json.dumps({"layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": DIGEST}]}).encode(),
     "mediaType"),
    (json.dumps({"layers": [{"mediaType": signature.PAYLOAD_MEDIA_TYPE, "digest": DIGEST}]}).encode(),
     "annotation"),
    (json.dumps({"layers": [{"mediaType": signature.PAYLOAD_MEDIA_TYPE, "digest": "md5:x",
                             "annotations": {signature.SIGNATURE_ANNOTATION: "x"}}]}).encode(), "digest"),
])
def test_a_signature_manifest_that_is_not_one_is_an_error(manifest: bytes, message: str) -> None:
    """A manifest under the .sig tag that is not a cosign signature manifest names where and what."""
    with pytest.raises(ImageCheckError, match=f"repo:tag: .*{message}"):
        signature.signature_layers(manifest, "repo:tag")


def test_only_p256_public_keys_are_accepted() -> None:
    """A PEM that is not an ECDSA P-256 public key is refused."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ImageCheckError, match="not an ECDSA P-256"):
        signature.load_public_key(p384, "k.pub")
    with pytest.raises(ImageCheckError, match="not a PEM public key"):
        signature.load_public_key(b"junk", "k.pub")
