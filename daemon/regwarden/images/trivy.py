"""Trivy's JSON report (`trivy image --format json`, SchemaVersion 2), pure.

`{"SchemaVersion": 2, "ArtifactName": ..., "Results": [{"Target": ..., "Vulnerabilities":
[{"VulnerabilityID", "PkgName", "InstalledVersion", "FixedVersion", "Severity", ...}]}]}`;
`Results` and `Vulnerabilities` may be absent or null (nothing found).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..errors import ImageCheckError

__all__ = ["SEVERITIES", "Finding", "at_or_above", "parse_report", "severity_counts"]

SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Finding:
    id: str
    package: str
    severity: str
    installed: str = ""
    fixed: str = ""


def parse_report(text: bytes, where: str) -> list[Finding]:
    """The vulnerabilities of a report; ImageCheckError naming `where` and what is wrong."""
    try:
        doc: Any = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise ImageCheckError(f"{where}: scanner output is not JSON (expected a Trivy JSON report)") from None
    if not isinstance(doc, dict):
        raise ImageCheckError(f"{where}: Trivy report must be a JSON object")
    if doc.get("SchemaVersion") != 2:
        raise ImageCheckError(f"{where}: unsupported Trivy SchemaVersion {str(doc.get('SchemaVersion'))[:20]}"
                              " (expected 2)")
    results = doc.get("Results")
    results = [] if results is None else results
    if not isinstance(results, list):
        raise ImageCheckError(f"{where}: Results is not a list")
    findings = []
    for r, result in enumerate(results):
        if not isinstance(result, dict):
            raise ImageCheckError(f"{where}: Results[{r}] is not an object")
        vulns = result.get("Vulnerabilities")
        vulns = [] if vulns is None else vulns
        if not isinstance(vulns, list):
            raise ImageCheckError(f"{where}: Results[{r}].Vulnerabilities is not a list")
        for v, vuln in enumerate(vulns):
            at = f"{where}: Results[{r}].Vulnerabilities[{v}]"
            if not isinstance(vuln, dict):
                raise ImageCheckError(f"{at} is not an object")
            vid, severity = vuln.get("VulnerabilityID"), vuln.get("Severity")
            if not isinstance(vid, str) or not vid:
                raise ImageCheckError(f"{at}.VulnerabilityID is missing")
            if severity not in _RANK:
                raise ImageCheckError(f"{at}.Severity {str(severity)[:20]!r} is not one of {', '.join(SEVERITIES)}")
            findings.append(Finding(vid[:100], str(vuln.get("PkgName") or "")[:100], str(severity),
                                    str(vuln.get("InstalledVersion") or "")[:100],
                                    str(vuln.get("FixedVersion") or "")[:100]))
    return findings


def at_or_above(findings: list[Finding], threshold: str) -> list[Finding]:
    """The findings at least as severe as `threshold`, most severe first."""
    floor = _RANK[threshold]
    return sorted((f for f in findings if _RANK[f.severity] >= floor), key=lambda f: (-_RANK[f.severity], f.id))


def severity_counts(findings: list[Finding]) -> dict[str, int]:
    counts = Counter(f.severity for f in findings)
    return {name: counts[name] for name in SEVERITIES if counts[name]}
