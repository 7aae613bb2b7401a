"""docs/runbook.md describes every alert regwarden can raise, and every shipped Prometheus rule."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RUNBOOK = (ROOT / "docs" / "runbook.md").read_text()
# an alert name where the code states one: labels {"alertname": "X"}, `alertname = "X"` class attributes,
# and the module constants that map findings to alert names (FAILED_ALERT, SINK_BROKEN, _ALERTS, ...)
_STATED = re.compile(r'(?:"alertname":\s*|alertname\s*=\s*|_ALERTS?\s*=\s*|_BROKEN\s*=\s*|: )"([A-Z][a-z]+[A-Z]\w+)"')
_FALLBACKS = {"DockerEngineRegistryConfig"}  # the name of an unknown engine finding kind; none exists


def alerts_in_code() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "daemon" / "regwarden").rglob("*.py"):
        names |= set(_STATED.findall(path.read_text()))
    return names - _FALLBACKS


def test_the_scan_finds_alerts_of_every_kind() -> None:
    """The scan sees label dicts, detector attributes and finding maps (else the next test proves nothing)."""
    assert {"VaultUnreachable", "RegistryAuthFailureBurst", "RegistryPlainHTTP", "RegistryProbeFailed",
            "DockerInsecureRegistry", "RegwardenSinkBroken", "RegwardenConfigReloadFailed"} <= alerts_in_code()


def test_every_alert_has_a_section() -> None:
    """Each alert name raised in the code has a `### NAME` section in the runbook."""
    missing = sorted(name for name in alerts_in_code() if f"\n### {name}\n" not in RUNBOOK)
    assert missing == []


def test_every_prometheus_rule_is_in_the_rules_table() -> None:
    """Each alert of contrib/prometheus/regwarden-rules.yml has a row in the runbook's rules table."""
    rules = re.findall(r"- alert: (\w+)", (ROOT / "contrib" / "prometheus" / "regwarden-rules.yml").read_text())
    assert rules
    assert sorted(rule for rule in rules if f"| `{rule}` |" not in RUNBOOK) == []
