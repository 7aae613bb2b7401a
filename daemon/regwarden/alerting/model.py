"""Pure alert vocabulary: fingerprints, group keys, label matchers and sink filters.

Nothing here does I/O; the pipeline and the CLI build on these functions.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "SEVERITIES",
    "Matcher",
    "SinkFilter",
    "fingerprint",
    "group_key",
    "group_labels",
    "matcher_from_config",
    "parse_matcher",
    "severity_at_least",
    "silenced",
]

SEVERITIES: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
Op = Literal["=", "!=", "=~", "!~"]
_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)(.*)$")


def fingerprint(labels: Mapping[str, str]) -> str:
    """The identity of an alert: a hash of its sorted labels (16 hex digits, like Alertmanager's)."""
    digest = hashlib.sha256()
    for name in sorted(labels):
        digest.update(name.encode())
        digest.update(b"\xff")
        digest.update(labels[name].encode())
        digest.update(b"\xff")
    return digest.hexdigest()[:16]


def group_labels(labels: Mapping[str, str], group_by: Iterable[str]) -> dict[str, str]:
    """The labels an alert is grouped by (those of `group_by` it has)."""
    return {name: labels[name] for name in sorted(set(group_by)) if name in labels}


def group_key(labels: Mapping[str, str], group_by: Iterable[str]) -> str:
    """A readable, stable key for the group an alert belongs to: `{alertname="X",host="h"}`."""
    parts = group_labels(labels, group_by)
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in parts.items()) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True)
class Matcher:
    """One label matcher as Alertmanager writes them; a missing label matches as the empty string."""

    name: str
    op: Op
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def make(cls, name: str, op: Op, value: str) -> Matcher:
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r} for label {name!r}: {exc}") from None
        return cls(name, op, value, regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self._regex is not None
        found = self._regex.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


def parse_matcher(text: str) -> Matcher:
    """`k=v`, `k!=v`, `k=~regex`, `k!~regex` (quotes around the value are optional)."""
    match = _MATCHER.match(text)
    if not match:
        raise ValueError(f"invalid matcher {text!r}: expected NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX")
    name, op, value = match.group(1), match.group(2), match.group(3).strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return Matcher.make(name, op, value)  # type: ignore[arg-type]


def matcher_from_config(name: str, value: str) -> Matcher:
    """A `[[sinks]] matchers = { k = "v" }` entry: exact match, or a regex when the value starts with `=~`
    (`!=` and `!~` prefixes negate)."""
    ops: tuple[Op, ...] = ("=~", "!~", "!=")
    for op in ops:
        if value.startswith(op):
            return Matcher.make(name, op, value[len(op):])
    return Matcher.make(name, "=", value)


def severity_at_least(severity: str, minimum: str) -> bool:
    return SEVERITIES.get(severity, 0) >= SEVERITIES.get(minimum, 0)


@dataclass(frozen=True)
class SinkFilter:
    """Which alerts a sink receives: a minimum severity and label matchers (all must match)."""

    min_severity: str = "info"
    matchers: tuple[Matcher, ...] = ()

    @classmethod
    def from_config(cls, min_severity: str, matchers: Mapping[str, str]) -> SinkFilter:
        return cls(min_severity, tuple(matcher_from_config(k, v) for k, v in sorted(matchers.items())))

    def accepts(self, labels: Mapping[str, str], severity: str) -> bool:
        return severity_at_least(severity, self.min_severity) and all(m.matches(labels) for m in self.matchers)


def silenced(labels: Mapping[str, str], silences: Iterable[tuple[Matcher, ...]]) -> bool:
    """True if every matcher of at least one (non-empty) silence matches the labels."""
    return any(matchers and all(m.matches(labels) for m in matchers) for matchers in silences)
