"""docs/configuration.md is generated from the config models and must not drift from them."""

from __future__ import annotations

from pathlib import Path

from regwarden.config_reference import render_reference, undocumented_fields

REFERENCE = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def test_every_key_has_a_description() -> None:
    """Each key of the config models and of the built-in sinks' options carries a description (its docstring)."""
    assert undocumented_fields() == []


def test_docs_configuration_md_matches_the_models() -> None:
    """The committed reference is what the generator writes for the current models."""
    assert REFERENCE.read_text() == render_reference(), (
        "docs/configuration.md is out of date: python -m regwarden.config_reference > docs/configuration.md")


def test_reference_names_every_table_and_the_sink_types() -> None:
    """Top-level tables, inline tables (auth variants, providers) and every built-in sink type appear."""
    text = render_reference()
    for heading in ("[daemon]", "[vault]", '[vault].auth (method = "approle")', "[[credentials]].htpasswd",
                    "[sources.registry_notifications]", "[[sources.registry_logs]]", "[[sinks]]",
                    '[[sinks]] type = "slack"', '[[sinks]] type = "webhook"'):
        assert f"## `{heading}`" in text
    assert "| `watch_interval` | duration | `\"15s\"` |" in text
    assert "| `usernames` | list of strings (at least 2 items, at most 2 items) | required |" in text
