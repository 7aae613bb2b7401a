"""Human tables for `regwarden status`, from the daemon's /v1/status JSON.

One table per concern, built from the components' `status()` dicts: credentials (the `credentials`
watch joined with `rotation`), endpoints (`probes`), posture findings (`posture`), sources
(`docker-events`, `registry-log:*`, `registry-notifications`), sinks and active alerts (`alerting`),
then the audit chain head and any other component as `key: value` lines. Times are shown relative to
the document's own clock (`started + uptime_seconds`), so the same document always renders the same text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

__all__ = ["SOURCE_COMPONENTS", "render_status", "table"]

# components that are audit sources (exact names, or prefixes ending in ":")
SOURCE_COMPONENTS = ("docker-events", "registry-log:", "registry-notifications")
_SHOWN = frozenset({"credentials", "rotation", "probes", "posture", "alerting", "audit", "audit-witness"})

Doc = Mapping[str, Any]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with columns padded to their widest cell."""
    cells = [[str(h).upper() for h in headers], *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def render_status(status: Doc) -> str:
    now = _now(status)
    components: Doc = status.get("components") or {}
    out = [_header(status)]
    for section in (_vault, _credentials, _endpoints, _posture, _sources, _sinks, _alerts, _audit):
        text = section(components, now)
        if text:
            out.append(text)
    for name, value in sorted(components.items()):
        if name not in _SHOWN and not _is_source(name):
            out.append(f"{name}:\n{_key_values(value)}")
    return "\n\n".join(out)


# --------------------------------------------------------------------------- sections


def _header(status: Doc) -> str:
    ready = "ready" if status.get("ready") else "NOT READY"
    lines = [f"regwarden {status.get('version')} on {status.get('host')} (pid {status.get('pid')}): {ready},"
             f" up {_duration(status.get('uptime_seconds'))}"]
    config = status.get("config") or {}
    if config.get("path"):
        lines.append(f"config: {config['path']}")
    for name, reason in sorted((status.get("not_ready") or {}).items()):
        lines.append(f"  not ready: {name}: {reason}")
    if error := config.get("last_reload_error"):
        lines.append(f"  last reload refused: {str(error).splitlines()[0]}")
    return "\n".join(lines)


def _vault(components: Doc, now: datetime | None) -> str:
    vault = (components.get("credentials") or {}).get("vault")
    if not isinstance(vault, Mapping):
        return ""
    state = "up" if vault.get("up") else ("DOWN" if vault.get("up") is False else "unknown")
    parts = [f"vault: {state}", f"auth {vault.get('auth_method')}"]
    if vault.get("down_since"):
        parts.append(f"down since {_when(vault['down_since'], now)}")
    if vault.get("token_expires_at"):
        renewable = "renewable" if vault.get("token_renewable") else "not renewable"
        parts.append(f"token expires {_when(vault['token_expires_at'], now)} ({renewable})")
    for key in ("last_error", "token_error"):
        if vault.get(key):
            parts.append(f"{key.replace('_', ' ')}: {vault[key]}")
    nodes = [n for n in vault.get("nodes") or [] if isinstance(n, Mapping)]
    if len(nodes) > 1 and vault.get("node") and vault.get("up"):
        parts[0] += f" via {vault['node']}"
    lines = [", ".join(parts)]
    for node in nodes:  # an HA cluster: the nodes this host found failing, each with its last error
        if not node.get("failing_since"):
            continue
        if node.get("retry_at"):
            lines.append(f"  node {node.get('address')}: FAILING since {_when(node['failing_since'], now)}"
                         f" ({node.get('last_error')}), next try {_when(node['retry_at'], now)}")
        else:  # back-off over: the next health check (every few seconds) or request asks it again
            lines.append(f"  node {node.get('address')}: failed {_when(node.get('failed_at'), now)}"
                         f" ({node.get('last_error')}), being checked again")
    return "\n".join(lines)


def _credentials(components: Doc, now: datetime | None) -> str:
    watched: Doc = (components.get("credentials") or {}).get("credentials") or {}
    rotation: Doc = components.get("rotation") or {}
    names = sorted({*watched, *rotation})
    if not names:
        return ""
    rows = []
    for name in names:
        watch: Doc = watched.get(name) or {}
        rot: Doc = rotation.get(name) or {}
        version = watch.get("applied_version")
        if version is not None and watch.get("vault_version") not in (None, version):
            version = f"{version} (vault {watch['vault_version']})"
        rows.append([name, version, _when(watch.get("applied_at"), now), _when(watch.get("verified_at"), now),
                     _duration(watch.get("age_seconds")), _next_rotation(rot, now),
                     _credential_error(watch, rot, now)])
    return "CREDENTIALS\n" + table(
        ["name", "version", "applied", "verified", "age", "next rotation", "last error"], rows)


def _endpoints(components: Doc, now: datetime | None) -> str:
    probes: Doc = components.get("probes") or {}
    if not probes:
        return ""
    rows = []
    for name, probe in sorted(probes.items()):
        verdict = probe.get("verdict")
        state = "pending" if verdict == "pending" else ("up" if probe.get("up") else "DOWN")
        if verdict not in ("up", "down", "pending", None):
            state += f" ({verdict})"
        latency = probe.get("latency_ms")
        rows.append([name, state, None if latency is None else f"{latency:.1f} ms",
                     _number(probe.get("tls_days_left")), probe.get("auth_check"),
                     _when(probe.get("last_probe"), now), _reason(probe)])
    return "ENDPOINTS\n" + table(["registry", "state", "latency", "tls days", "auth", "last probe", "reason"],
                                 rows)


def _posture(components: Doc, now: datetime | None) -> str:
    posture: Doc = components.get("posture") or {}
    if not posture:
        return ""
    rows: list[list[Any]] = []
    notes: list[str] = []
    for name, entry in sorted(posture.items()):
        if entry.get("state") == "pending":
            notes.append(f"  {name}: not checked yet")
            continue
        checks = entry.get("checks") or {}
        notes.append(f"  {name}: {checks.get('pass', 0)} passed, {checks.get('fail', 0)} failed,"
                     f" {checks.get('unknown', 0)} unknown, checked {_when(entry.get('last_run'), now)}")
        notes.extend(f"    could not check: {error}" for error in entry.get("errors") or [])
        rows.extend([name, f.get("check"), f.get("severity"), _first_line(f.get("finding"))]
                    for f in entry.get("findings") or [])
    text = "POSTURE\n" + "\n".join(notes)
    if rows:
        text += "\n" + table(["registry", "check", "severity", "finding"], rows)
    return text


def _sources(components: Doc, _: datetime | None) -> str:
    rows = []
    for name, source in sorted(components.items()):
        if not _is_source(name):
            continue
        lag = source.get("lag_seconds")
        rows.append([_source_name(name), "up" if source.get("state") == "up" else "DOWN", _lag(lag),
                     _source_detail(source)])
    if not rows:
        return ""
    return "SOURCES\n" + table(["source", "up", "lag", "detail"], rows)


def _sinks(components: Doc, _: datetime | None) -> str:
    sinks: Doc = (components.get("alerting") or {}).get("sinks") or {}
    if not sinks:
        return ""
    rows = [[name, "up" if sink.get("up") else "DOWN", sink.get("outbox_depth", 0),
             sink.get("broken") or sink.get("last_error") or None] for name, sink in sorted(sinks.items())]
    return "SINKS\n" + table(["sink", "up", "outbox", "last error"], rows)


def _alerts(components: Doc, now: datetime | None) -> str:
    alerting = components.get("alerting")
    if alerting is None:
        return ""
    active: Sequence[Doc] = alerting.get("active_alerts") or []
    silences = alerting.get("silences") or 0
    title = "ACTIVE ALERTS" + (f" ({silences} silence{'s' if silences != 1 else ''})" if silences else "")
    if not active:
        return f"{title}\nnone"
    rows = [[a.get("alertname"), a.get("severity"), _when(a.get("since"), now),
             " ".join(f"{k}={v}" for k, v in sorted((a.get("labels") or {}).items())
                      if k not in ("alertname", "host"))] for a in active]
    return f"{title}\n" + table(["alert", "severity", "since", "labels"], rows)


def _audit(components: Doc, _: datetime | None) -> str:
    audit = components.get("audit")
    if not isinstance(audit, Mapping):
        return ""
    head = str(audit.get("last_hash") or "")[:12]
    line = (f"audit: {audit.get('path')}: seq {audit.get('seq')}, last hash {head or '-'}"
            f"{', HMAC' if audit.get('hmac') else ''}, {audit.get('written', 0)} written since start")
    if audit.get("error"):
        line += f"\n  ERROR: {audit['error']}"
    witness = components.get("audit-witness")
    if isinstance(witness, Mapping):
        where = witness.get("vault_path") or "Vault"
        line += (f"\n  witnessed in {where}: seq {witness['seq']} at {witness.get('written_at')}"
                 if witness.get("seq") is not None else f"\n  witnessed in {where}: nothing yet")
        if witness.get("failing_since"):
            line += f"\n  WITNESS FAILING since {witness['failing_since']}: {witness.get('error')}"
        elif witness.get("error"):
            line += f"\n  WITNESS OFF: {witness['error']}"
        if witness.get("mismatch"):
            line += f"\n  WITNESS MISMATCH at start: {witness['mismatch']}"
    return line


# --------------------------------------------------------------------------- cells


def _next_rotation(rot: Doc, now: datetime | None) -> str | None:
    if rot.get("error"):
        return "disabled"
    if rot.get("last_step") not in (None, "done", "rolled_back"):
        return f"rotating ({rot['last_step']})"
    due = rot.get("next_due")
    if not due:
        return None
    parsed = _parse_time(due)
    if parsed is not None and now is not None and parsed <= now:
        return "due now"
    return _when(due, now)


def _credential_error(watch: Doc, rot: Doc, now: datetime | None) -> str | None:
    problems = []
    if watch.get("stale_since"):
        problems.append(f"stale since {_when(watch['stale_since'], now)}")
    if watch.get("failed_version") is not None:
        problems.append(f"v{watch['failed_version']} rejected")
    for error in (watch.get("last_error"), rot.get("error"), rot.get("last_error")):
        if error:
            problems.append(_first_line(error))
    return "; ".join(problems) or None


def _reason(probe: Doc) -> str | None:
    if probe.get("reason"):
        phase = probe.get("failed_phase")
        return f"{phase}: {probe['reason']}" if phase else str(probe["reason"])
    findings = probe.get("findings") or []
    return ", ".join(str(f) for f in findings) or None


def _lag(seconds: Any) -> str | None:
    if not isinstance(seconds, int | float):
        return None
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else _duration(seconds, precise=True)


def _is_source(name: str) -> bool:
    return any(name == s or (s.endswith(":") and name.startswith(s)) for s in SOURCE_COMPONENTS)


def _source_name(name: str) -> str:
    """`registry-log:REGISTRY:PATH` is shown as `registry-log:REGISTRY` (the path goes to the detail)."""
    return ":".join(name.split(":", 2)[:2]) if name.startswith("registry-log:") else name


_DETAILS: dict[str, Callable[[Doc], str]] = {
    "lines": lambda s: f"{s['lines']} lines, {s.get('rotations', 0)} rotations, {s.get('path')}",
    "accepted": lambda s: f"{s['accepted']} accepted, {s.get('rejected', 0)} rejected on {s.get('listen')}",
    "gaps": lambda s: f"{s['gaps']} gaps, engine {s.get('host')}",
}


def _source_detail(source: Doc) -> str | None:
    detail = next((render(source) for key, render in _DETAILS.items() if key in source), "")
    if source.get("state") != "up" and source.get("last_error"):
        detail = f"{detail}; {_first_line(source['last_error'])}" if detail else _first_line(source["last_error"])
    return detail or None


def _key_values(value: Any) -> str:
    if isinstance(value, Mapping):
        return "\n".join(f"  {k}: {_flat(v)}" for k, v in value.items()) or "  (nothing)"
    return f"  {_flat(value)}"


def _flat(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return _number(value) or "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_flat(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value) or "-"
    return str(value)


def _number(value: Any) -> str | None:
    if not isinstance(value, int | float):
        return None
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _first_line(text: Any) -> str:
    return str(text).splitlines()[0] if str(text) else ""


# --------------------------------------------------------------------------- time


def _now(status: Doc) -> datetime | None:
    from datetime import UTC

    started, uptime = status.get("started"), status.get("uptime_seconds")
    if not isinstance(started, int | float) or not isinstance(uptime, int | float):
        return None
    return datetime.fromtimestamp(started + uptime, UTC)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _when(value: Any, now: datetime | None) -> str | None:
    """An ISO time as "12s ago" / "in 3m" relative to `now`; unparseable values as they are."""
    if value is None:
        return None
    parsed = _parse_time(value)
    if parsed is None or now is None:
        return str(value)
    delta = (parsed - now).total_seconds()
    return f"in {_duration(delta)}" if delta > 0.5 else f"{_duration(-delta)} ago"


def _duration(seconds: Any, precise: bool = False) -> str:
    if not isinstance(seconds, int | float):
        return "?" if seconds is not None else "-"
    if precise and seconds < 10:
        return f"{seconds:.1f}s"
    seconds = round(seconds)
    for unit, size, smaller, smaller_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if seconds >= size:
            rest = (seconds % size) // smaller_size
            return f"{seconds // size}{unit}" + (f"{rest}{smaller}" if rest else "")
    return f"{seconds}s"
