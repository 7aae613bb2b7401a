"""The configuration reference (docs/configuration.md), generated from the config models.

Every key of `regwarden.config.Config`, with its type, default and description (a field's docstring),
table by table, then the options of the built-in sink plugins. Regenerate after changing a model:

    python -m regwarden.config_reference > docs/configuration.md

(tests/unit/core/test_config_reference.py fails while the file and the models disagree).
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .config import Config, format_duration

__all__ = ["BUILTIN_SINKS", "render_reference", "undocumented_fields"]

# the sink plugins that ship with regwarden (third-party ones document their own options)
BUILTIN_SINKS = {"log": "regwarden_sinks.log:LogSink", "slack": "regwarden_sinks.slack:SlackSink",
                 "alertmanager": "regwarden_sinks.alertmanager:AlertmanagerSink",
                 "webhook": "regwarden_sinks.webhook:WebhookSink"}
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"

HEADER = """\
# Configuration reference

Generated from the config models (`regwarden.config`) by
`python -m regwarden.config_reference > docs/configuration.md`: do not edit by hand. The commented
example is `config.example.toml` (`regwarden example config`); `regwarden check-config -c FILE` validates
a file and names the line of every problem.

Types: a *duration* is a string such as `"250ms"`, `"30s"`, `"5m"`, `"1h30m"`, `"24h"`, `"7d"`; a *path*
is a string; a *name* is 1-63 letters, digits, `.`, `_` or `-`, starting with a letter or digit.
Secrets are never inline: `*_file` keys name files that must not be readable by group or others,
`*_env` keys name environment variables. Only `[daemon]` is required.
"""


@dataclass(frozen=True)
class _Table:
    heading: str  # e.g. "[[credentials]]" or "credentials[].htpasswd"
    description: str
    model: type[BaseModel]
    note: str = ""


def render_reference() -> str:
    """The whole reference as Markdown."""
    parts = [HEADER]
    for table in _tables(Config, ""):
        parts.append(_render_table(table))
    parts.append("## Sink plugins\n\nThe keys of a `[[sinks]]` table besides the common ones above, by `type`.\n")
    for name, target in BUILTIN_SINKS.items():
        options = _sink_options(target)
        parts.append(_render_table(_Table(f'[[sinks]] type = "{name}"', _first_line(options.__doc__), options)))
    return "\n".join(parts)


def undocumented_fields() -> list[str]:
    """Keys without a description (`table.key`), core tables and built-in sinks alike."""
    tables = [*_tables(Config, ""), *(_Table(f"sinks.{name}", "", _sink_options(target))
                                      for name, target in BUILTIN_SINKS.items())]
    return [f"{t.heading}.{key}" for t in tables for key, field in _own_fields(t.model) if not field.description]


# --------------------------------------------------------------------------- walking the models


def _tables(model: type[BaseModel], prefix: str = "", heading: str = "") -> Iterator[_Table]:
    """Depth first: each table with plain keys, then its sub-tables. A model-valued key of a table that
    has plain keys of its own is an inline table (`htpasswd = {...}`); otherwise a table of its own
    (`[sources.docker_events]`, `[[sources.registry_logs]]`)."""
    inline = bool(_own_fields(model))
    for key, field in model.model_fields.items():
        variants, many = _unwrap_model(field.annotation)
        description = _flat(field.description)
        if inline:
            for variant in variants:
                note = _variant_note(variant)
                yield _Table(f"{heading}.{key}" + (f" ({note})" if note else ""), description, variant,
                             f"an inline table: `{key} = {{ ... }}`")
            continue
        dotted = f"{prefix}.{key}" if prefix else key
        table_heading = f"[[{dotted}]]" if many else f"[{dotted}]"
        for variant in variants:
            if _own_fields(variant):
                yield _Table(table_heading, description, variant)
            yield from _tables(variant, dotted, table_heading)


def _variant_note(model: type[BaseModel]) -> str:
    method = model.model_fields.get("method")
    if method is not None and typing.get_origin(method.annotation) is Literal:
        return f'method = "{typing.get_args(method.annotation)[0]}"'
    return ""


def _unwrap_model(annotation: Any) -> tuple[list[type[BaseModel]], bool]:
    """(model classes, is a list) if the annotation is a model, a list of models or a union of models."""
    args = [a for a in _union_args(annotation) if a is not type(None)]
    many = False
    if len(args) == 1 and typing.get_origin(args[0]) is list:
        args, many = list(typing.get_args(args[0])), True
    flat: list[Any] = []
    for arg in args:
        flat += _union_args(_strip_annotated(arg))
    models = [a for a in flat if isinstance(a, type) and issubclass(a, BaseModel)]
    return (models, many) if models and len(models) == len(flat) else ([], False)


def _union_args(annotation: Any) -> list[Any]:
    annotation = _strip_annotated(annotation)
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return list(typing.get_args(annotation))
    return [annotation]


def _strip_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _own_fields(model: type[BaseModel]) -> list[tuple[str, FieldInfo]]:
    """The plain keys of a table (model-valued keys are documented as tables of their own)."""
    return [(k, f) for k, f in model.model_fields.items() if not _unwrap_model(f.annotation)[0]]


def _sink_options(target: str) -> type[BaseModel]:
    import importlib

    module, _, attr = target.partition(":")
    options: type[BaseModel] = getattr(importlib.import_module(module), attr).Options
    return options


# --------------------------------------------------------------------------- rendering


def _render_table(table: _Table) -> str:
    lines = [f"## `{table.heading}`", ""]
    if table.description:
        lines += [table.description, ""]
    if table.note:
        lines += [f"Written as {table.note}.", ""]
    lines += ["| key | type | default | description |", "|---|---|---|---|"]
    for key, field in _own_fields(table.model):
        lines.append(f"| `{key}` | {_type(field)} | {_default(field)} | {_flat(field.description)} |")
    return "\n".join(lines) + "\n"


def _type(field: FieldInfo) -> str:
    text = _type_name(field.annotation, field.metadata)
    bounds = _bounds(field.metadata)
    return f"{text} ({bounds})" if bounds else text


def _type_name(annotation: Any, metadata: list[Any]) -> str:
    args = [a for a in _union_args(annotation) if a is not type(None)]
    if len(args) > 1:
        return " or ".join(_type_name(a, []) for a in args)
    annotation = args[0] if args else annotation
    inner_metadata = list(metadata)
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *extra = typing.get_args(annotation)
        for item in extra:
            inner_metadata += getattr(item, "metadata", []) or []
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in typing.get_args(annotation))
    if origin is list:
        return "list of " + _plural(_type_name(typing.get_args(annotation)[0], []))
    if origin is dict:
        return "table of " + _plural(_type_name(typing.get_args(annotation)[1], []))
    if any(getattr(m, "pattern", None) == _NAME_PATTERN for m in inner_metadata):
        return "name"
    names = {timedelta: "duration", Path: "path", bool: "boolean", int: "integer", float: "number", str: "string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _plural(name: str) -> str:
    return name + "s" if name.isalpha() else name


def _bounds(metadata: list[Any]) -> str:
    symbols = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "at least", "max_length": "at most"}
    found = []
    for item in metadata:
        for attribute, symbol in symbols.items():
            value = getattr(item, attribute, None)
            if value is not None:
                found.append(f"{symbol} {value}" + (" items" if "length" in attribute else ""))
    return ", ".join(found)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "not set"
    return f"`{_toml(value)}`"


def _toml(value: Any) -> str:
    if isinstance(value, timedelta):
        return json.dumps(format_duration(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def _flat(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def _first_line(text: str | None) -> str:
    return _flat((text or "").strip().split("\n\n", 1)[0])


if __name__ == "__main__":
    print(render_reference(), end="")
