"""Human tables for `regwarden status`, from the daemon's /v1/status JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render_status", "table"]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with columns padded to their widest cell."""
    cells = [[str(h).upper() for h in headers], *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def render_status(status: Mapping[str, Any]) -> str:
    ready = "ready" if status.get("ready") else "NOT READY"
    lines = [f"regwarden {status.get('version')} on {status.get('host')} (pid {status.get('pid')}): {ready},"
             f" up {_age(status.get('uptime_seconds'))}"]
    for name, reason in sorted((status.get("not_ready") or {}).items()):
        lines.append(f"  not ready: {name}: {reason}")
    if (error := (status.get("config") or {}).get("last_reload_error")):
        lines.append(f"  last reload refused: {str(error).splitlines()[0]}")
    for name, component in sorted((status.get("components") or {}).items()):
        lines.append("")
        lines.append(f"{name}:")
        lines.append(_render_component(component))
    return "\n".join(lines)


def _render_component(value: Any) -> str:
    """A list of flat records becomes a table; a mapping of records a table keyed by name."""
    if isinstance(value, Mapping) and value and all(isinstance(v, Mapping) for v in value.values()):
        rows = [{"name": k, **v} for k, v in value.items()]
        return _records(rows)
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        return _records(value)
    if isinstance(value, Mapping):
        return "\n".join(f"  {k}: {_flat(v)}" for k, v in value.items()) or "  (nothing)"
    return f"  {_flat(value)}"


def _records(rows: Sequence[Mapping[str, Any]]) -> str:
    headers: list[str] = []
    for row in rows:
        headers += [k for k in row if k not in headers]
    body = table(headers, [[_flat(row.get(h)) for h in headers] for row in rows])
    return "\n".join("  " + line for line in body.splitlines())


def _flat(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_flat(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value) or "-"
    return str(value)


def _age(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
