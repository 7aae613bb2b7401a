"""Trivy JSON reports (images/trivy.py) and the scan verdict."""

from __future__ import annotations

import json
from typing import Any

import pytest

from regwarden.errors import ImageCheckError
from regwarden.images import trivy
from regwarden.images.component import scan_verdict


def report(*severities: str, results: Any = ...) -> bytes:
    vulns = [{"VulnerabilityID": f"CVE-2024-{i:04d}", "PkgName": "openssl", "InstalledVersion": "3.0.1",
              "FixedVersion": "3.0.9", "Severity": s} for i, s in enumerate(severities)]
    doc = {"SchemaVersion": 2, "ArtifactName": "reg/app@sha256:x", "ArtifactType": "container_image",
           "Results": [{"Target": "reg/app (debian 12)", "Class": "os-pkgs", "Vulnerabilities": vulns or None}]
           if results is ... else results}
    return json.dumps(doc).encode()


def test_findings_are_read_from_every_result() -> None:
    """Each vulnerability of the report is one Finding with its id, package and severity."""
    findings = trivy.parse_report(report("HIGH", "LOW"), "scan")
    assert [(f.id, f.package, f.severity) for f in findings] == [
        ("CVE-2024-0000", "openssl", "HIGH"), ("CVE-2024-0001", "openssl", "LOW")]


@pytest.mark.parametrize("results", [None, []])
def test_a_report_without_results_has_no_findings(results: Any) -> None:
    """Trivy writes Results null (or []) when nothing was found."""
    assert trivy.parse_report(report(results=results), "scan") == []


def test_threshold_keeps_findings_at_or_above_most_severe_first() -> None:
    """at_or_above(HIGH) keeps CRITICAL and HIGH, CRITICAL first."""
    findings = trivy.parse_report(report("LOW", "HIGH", "CRITICAL", "MEDIUM"), "scan")
    assert [f.severity for f in trivy.at_or_above(findings, "HIGH")] == ["CRITICAL", "HIGH"]


@pytest.mark.parametrize(("text", "message"), [
    (b"<html>", "not JSON"),
    (b"[]", "must be a JSON object"),
    (json.dumps({"SchemaVersion": 1, "Results": []}).encode(), "SchemaVersion"),
    (json.dumps({"SchemaVersion": 2, "Results": {}}).encode(), "Results is not a list"),
    (json.dumps({"SchemaVersion": 2, "Results": [{"Vulnerabilities": [{"Severity": "HIGH"}]}]}).encode(),
     "VulnerabilityID is missing"),
    (json.dumps({"SchemaVersion": 2, "Results": [{"Vulnerabilities": [
        {"VulnerabilityID": "CVE-1", "Severity": "SEVERE"}]}]}).encode(), "Severity 'SEVERE'"),
])
def test_garbage_is_an_error_naming_what_is_wrong(text: bytes, message: str) -> None:
    """Output that is not a Trivy report is an ImageCheckError naming the scan and the problem."""
    with pytest.raises(ImageCheckError, match=f"scan of x: .*{message}"):
        trivy.parse_report(text, "scan of x")


def test_a_critical_finding_is_a_vulnerable_verdict() -> None:
    """A CRITICAL finding at threshold CRITICAL: verdict vulnerable, the finding listed, counts by severity."""
    verdict = scan_verdict(report("CRITICAL", "LOW"), "scan", "CRITICAL")
    assert verdict.verdict == "vulnerable"
    assert [f["id"] for f in verdict.detail["findings"]] == ["CVE-2024-0000"]
    assert verdict.detail["severities"] == {"LOW": 1, "CRITICAL": 1}


def test_findings_below_the_threshold_are_clean() -> None:
    """Only findings below the threshold: verdict clean."""
    assert scan_verdict(report("HIGH", "LOW"), "scan", "CRITICAL").verdict == "clean"
