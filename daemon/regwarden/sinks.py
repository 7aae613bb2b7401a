"""The one module that finds and loads sink plugins (entry-point group `regwarden.sinks`).

A plugin that fails to import, has invalid options or fails `check()` is reported by name and left
out; it never takes the daemon down.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any

import structlog
from pydantic import ValidationError

from .config import SinkConfig
from .errors import RegwardenError
from .sink_api import Sink, SinkOptions

__all__ = ["LoadedSinks", "available_sink_types", "load_sinks", "plugin_config_problems"]

GROUP = "regwarden.sinks"
log = structlog.get_logger(__name__)


@cache
def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available_sink_types() -> list[str]:
    return sorted(_entry_points())


def _plugin_class(type_name: str) -> type[Any]:
    ep = _entry_points().get(type_name)
    if ep is None:
        raise LookupError(f"unknown sink type {type_name!r}; installed: {', '.join(available_sink_types()) or 'none'}")
    try:
        cls = ep.load()
    except Exception as exc:  # a broken third-party plugin must not take the daemon down
        raise LookupError(f"sink plugin {type_name!r} failed to load: {type(exc).__name__}: {exc}") from None
    if not isinstance(getattr(cls, "Options", None), type) or not issubclass(cls.Options, SinkOptions):
        raise LookupError(f"sink plugin {type_name!r} has no Options model (a SinkOptions subclass)")
    return cls  # type: ignore[no-any-return]


def plugin_config_problems(sink: SinkConfig) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(key path inside the sink table, message) for each problem with a sink's plugin options."""
    try:
        cls = _plugin_class(sink.type)
    except LookupError as exc:
        yield ("type",), str(exc)
        return
    try:
        cls.Options.model_validate(sink.options)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            msg = "unknown key" if err["type"] == "extra_forbidden" else str(err["msg"]).removeprefix("Value error, ")
            yield tuple(err["loc"]), msg


@dataclass
class LoadedSinks:
    sinks: dict[str, Sink]
    broken: dict[str, str]  # sink name -> why it is unavailable


def load_sinks(configs: list[SinkConfig]) -> LoadedSinks:
    """Build every configured sink and run its `check()`; failures are collected, not raised."""
    result = LoadedSinks({}, {})
    for cfg in configs:
        try:
            cls = _plugin_class(cfg.type)
            sink: Sink = cls(cfg.name, cls.Options.model_validate(cfg.options))
            sink.check()
        except (LookupError, ValidationError, RegwardenError) as exc:
            result.broken[cfg.name] = str(exc).splitlines()[0]
            log.error("sink_unavailable", sink=cfg.name, type=cfg.type, reason=result.broken[cfg.name])
            continue
        except Exception as exc:  # third-party code: report by name, keep running
            result.broken[cfg.name] = f"{type(exc).__name__}: {exc}"
            log.error("sink_unavailable", sink=cfg.name, type=cfg.type, reason=result.broken[cfg.name])
            continue
        result.sinks[cfg.name] = sink
    return result
