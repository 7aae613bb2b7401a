"""Fingerprints, group keys, matchers and sink filters: the pure vocabulary of alerts."""

from __future__ import annotations

import pytest

from regwarden.alerting.model import (
    SinkFilter,
    fingerprint,
    group_key,
    matcher_from_config,
    parse_matcher,
    silenced,
)


def test_fingerprint_ignores_label_order() -> None:
    """The same labels in any order give the same fingerprint."""
    assert fingerprint({"alertname": "A", "host": "h"}) == fingerprint({"host": "h", "alertname": "A"})


@pytest.mark.parametrize("other", [
    {"alertname": "A", "host": "h2"},
    {"alertname": "A", "host": "h", "x": ""},
    {"alertnam": "eA", "host": "h"},
    {"alertname": "A", "hos": "th"},
])
def test_fingerprint_differs_for_different_labels(other: dict[str, str]) -> None:
    """Any change of a label name or value (even at a boundary between them) changes the fingerprint."""
    assert fingerprint({"alertname": "A", "host": "h"}) != fingerprint(other)


def test_fingerprint_is_16_hex_digits() -> None:
    """Fingerprints are 16 hex digits, like Alertmanager's."""
    fp = fingerprint({"alertname": "A"})
    assert len(fp) == 16 and int(fp, 16) >= 0


@pytest.mark.parametrize(("labels", "group_by", "key"), [
    ({"alertname": "A", "host": "h"}, ["alertname"], '{alertname="A"}'),
    ({"alertname": "A", "host": "h"}, ["host", "alertname"], '{alertname="A",host="h"}'),
    ({"alertname": "A"}, ["alertname", "registry"], '{alertname="A"}'),
    ({"alertname": 'say "hi"'}, ["alertname"], '{alertname="say \\"hi\\""}'),
])
def test_group_key(labels: dict[str, str], group_by: list[str], key: str) -> None:
    """The group key lists the group_by labels an alert has, sorted, quoted."""
    assert group_key(labels, group_by) == key


@pytest.mark.parametrize(("text", "labels", "matches"), [
    ("sink=slack", {"sink": "slack"}, True),
    ("sink=slack", {"sink": "slack2"}, False),
    ("sink!=slack", {"sink": "slack2"}, True),
    ("registry=~int.*", {"registry": "internal"}, True),
    ("registry=~int", {"registry": "internal"}, False),  # anchored like Alertmanager
    ("registry!~int.*", {"registry": "external"}, True),
    ('team="core"', {"team": "core"}, True),
    ("team=", {}, True),  # a missing label is the empty string
    ("team=core", {}, False),
])
def test_matchers(text: str, labels: dict[str, str], matches: bool) -> None:
    """Matchers follow Alertmanager: =, !=, anchored =~ and !~, missing label equals ""."""
    assert parse_matcher(text).matches(labels) is matches


@pytest.mark.parametrize("text", ["", "=x", "1abc=x", "a=~(", "justtext"])
def test_bad_matchers_are_refused_with_the_reason(text: str) -> None:
    """A malformed matcher or regex is a ValueError naming it."""
    with pytest.raises(ValueError, match=r"matcher|regular expression"):
        parse_matcher(text)


@pytest.mark.parametrize(("value", "actual", "matches"), [
    ("internal", "internal", True),
    ("internal", "internal-2", False),
    ("=~internal.*", "internal-2", True),
    ("!=internal", "other", True),
    ("!~int.*", "internal", False),
])
def test_sink_config_matchers(value: str, actual: str, matches: bool) -> None:
    """A [[sinks]] matchers value is exact, or a regex/negation with a =~, !~ or != prefix."""
    assert matcher_from_config("registry", value).matches({"registry": actual}) is matches


@pytest.mark.parametrize(("min_severity", "severity", "labels", "accepted"), [
    ("warning", "critical", {"team": "core"}, True),
    ("warning", "warning", {"team": "core"}, True),
    ("warning", "info", {"team": "core"}, False),
    ("info", "info", {"team": "other"}, False),
])
def test_sink_filter(min_severity: str, severity: str, labels: dict[str, str], accepted: bool) -> None:
    """A sink receives alerts at or above its min_severity whose labels match all its matchers."""
    sink_filter = SinkFilter.from_config(min_severity, {"team": "core"})
    assert sink_filter.accepts(labels, severity) is accepted


def test_silence_needs_every_matcher_of_one_silence() -> None:
    """An alert is silenced when all matchers of at least one silence match it."""
    silences = [(parse_matcher("alertname=A"), parse_matcher("host=h1")), (parse_matcher("sink=x"),)]
    assert silenced({"alertname": "A", "host": "h1"}, silences)
    assert not silenced({"alertname": "A", "host": "h2"}, silences)
    assert silenced({"alertname": "B", "sink": "x"}, silences)
    assert not silenced({"alertname": "A"}, [()])


@pytest.mark.parametrize(("matchers", "message"), [
    ({"registry": "=~("}, "invalid regular expression"),
    ({"bad-name": "x"}, "invalid label name"),
])
def test_config_refuses_bad_sink_matchers(matchers: dict[str, str], message: str) -> None:
    """A [[sinks]] matcher with a bad label name or regex is a config error, not a failure at start."""
    from regwarden.config import parse_config
    from regwarden.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse_config({"daemon": {}, "sinks": [{"name": "j", "type": "log", "matchers": matchers}]})
