"""The pure parts of the engine registry-config audit: normalizing, allow-listing, mirrors, diffs."""

from __future__ import annotations

from typing import Any

import pytest

from regwarden.docker.engine_audit import (
    config_diff,
    config_digest,
    insecure_findings,
    mirror_findings,
    normalize,
)

# the shape of `docker info` RegistryConfig of Engine 20.10 started with
# --insecure-registry 198.18.0.2:5000 --insecure-registry 10.9.0.0/16 --registry-mirror http://127.0.0.1:9
INFO: dict[str, Any] = {
    "AllowNondistributableArtifactsCIDRs": [],
    "AllowNondistributableArtifactsHostnames": [],
    "InsecureRegistryCIDRs": ["10.9.0.0/16", "127.0.0.0/8"],
    "IndexConfigs": {
        "198.18.0.2:5000": {"Name": "198.18.0.2:5000", "Mirrors": [], "Secure": False, "Official": False},
        "docker.io": {"Name": "docker.io", "Mirrors": ["http://127.0.0.1:9/", "https://mirror.example/"],
                      "Secure": True, "Official": True},
    },
    "Mirrors": ["http://127.0.0.1:9/", "https://mirror.example/"],
}
DEFAULT: dict[str, Any] = {"InsecureRegistryCIDRs": ["127.0.0.0/8"],
                           "IndexConfigs": {"docker.io": {"Name": "docker.io", "Mirrors": [], "Secure": True,
                                                          "Official": True}}, "Mirrors": []}


def test_normalize_keeps_what_matters_sorted() -> None:
    """Normalizing keeps insecure CIDRs and names, mirrors (without trailing slash), per-index mirrors."""
    assert normalize(INFO) == {
        "insecure_cidrs": ["10.9.0.0/16", "127.0.0.0/8"],
        "insecure_registries": ["198.18.0.2:5000"],
        "mirrors": ["http://127.0.0.1:9", "https://mirror.example"],
        "index_mirrors": {"docker.io": ["http://127.0.0.1:9", "https://mirror.example"]},
    }


def test_digest_ignores_order() -> None:
    """The same config listed in another order has the same digest."""
    shuffled = {**INFO, "InsecureRegistryCIDRs": ["127.0.0.0/8", "10.9.0.0/16"],
                "Mirrors": list(reversed(INFO["Mirrors"]))}
    assert config_digest(normalize(shuffled)) == config_digest(normalize(INFO))
    assert config_digest(normalize(DEFAULT)) != config_digest(normalize(INFO))


@pytest.mark.parametrize(
    ("allowed", "subjects"),
    [
        ([], ["10.9.0.0/16", "198.18.0.2:5000"]),
        (["10.9.0.0/16"], ["198.18.0.2:5000"]),
        (["10.0.0.0/8"], ["198.18.0.2:5000"]),
        (["10.9.1.0/24"], ["10.9.0.0/16", "198.18.0.2:5000"]),  # a smaller allowed net does not cover a larger
        (["198.18.0.2:5000"], ["10.9.0.0/16"]),
        (["198.18.0.2"], ["10.9.0.0/16"]),
        (["198.18.0.0/15", "10.9.0.0/16"], []),
        (["198.18.0.2:5001"], ["10.9.0.0/16", "198.18.0.2:5000"]),
    ],
)
def test_insecure_registries_outside_the_allowed_list(allowed: list[str], subjects: list[str]) -> None:
    """Insecure CIDRs and registries not covered by the allowed list (or loopback) are findings."""
    assert [f.subject for f in insecure_findings(normalize(INFO), allowed)] == subjects


def test_loopback_default_is_expected() -> None:
    """The engine's own 127.0.0.0/8 default is not a finding."""
    assert insecure_findings(normalize(DEFAULT), []) == []


def test_mirror_findings() -> None:
    """Plain-HTTP mirrors and unreachable mirrors are findings, each with its reason."""
    findings = mirror_findings(normalize(INFO), {"https://mirror.example": "dns: name resolution failed"})
    assert [(f.kind, f.subject) for f in findings] == [
        ("mirror_plain_http", "http://127.0.0.1:9"), ("mirror_unreachable", "https://mirror.example")]
    assert "name resolution failed" in findings[1].detail


def test_diff_lists_added_and_removed() -> None:
    """The diff names what was added and removed, per key and per index."""
    assert config_diff(normalize(DEFAULT), normalize(INFO)) == {
        "insecure_cidrs": {"added": ["10.9.0.0/16"]},
        "insecure_registries": {"added": ["198.18.0.2:5000"]},
        "mirrors": {"added": ["http://127.0.0.1:9", "https://mirror.example"]},
        "index_mirrors": {"docker.io": {"added": ["http://127.0.0.1:9", "https://mirror.example"]}},
    }
    assert config_diff(normalize(INFO), normalize(DEFAULT))["insecure_cidrs"] == {"removed": ["10.9.0.0/16"]}
    assert config_diff(normalize(INFO), normalize(INFO)) == {}
