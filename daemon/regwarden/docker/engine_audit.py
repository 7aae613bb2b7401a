"""Audit of the Docker engine's registry configuration (`docker info` → `RegistryConfig`).

Every `[docker].engine_audit_interval`: insecure registries (CIDRs and `IndexConfigs` with
`Secure: false`) outside `[docker].insecure_registries_allowed` — loopback (127.0.0.0/8, ::1), which the
engine always lists, is expected — mirrors over plain HTTP and mirrors whose `/v2/` does not answer.
The same audit checks what `docker info` does not show (`host_checks`): the daemon's TCP socket answering
without TLS or without a client certificate, `DOCKER_CONTENT_TRUST` not set for services (where
`[docker].content_trust_required`), and static credentials in other config.json files for a registry whose
credential regwarden manages. Each finding is a Signal (resolved when it goes away). A change of the engine's
registry config since it was last seen (its digest is kept in the state store, across restarts) is an Event
`engine.registry_config_changed` carrying the diff.

The pure parts (`normalize`, `config_digest`, `insecure_findings`, `mirror_findings`, `config_diff`) take
plain data; `EngineAudit` is the component around them and the one place calling the Docker SDK here.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

import structlog

from ..component import Context, Health
from ..errors import DockerError
from ..events import Event, Signal
from ..probe.model import ProbeResult
from ..probe.prober import ProbeTarget, probe
from .client_config import hostname_of_key, registry_key
from .host_checks import (
    ApiExposure,
    StaticCredential,
    content_trust,
    daemon_tcp_endpoints,
    probe_docker_api,
    scan_static_credentials,
)

__all__ = [
    "ALERTS",
    "EXPECTED_INSECURE",
    "FIXES",
    "SEVERITY",
    "EngineAudit",
    "EngineFinding",
    "config_diff",
    "config_digest",
    "engine_findings",
    "engine_registry_config",
    "insecure_findings",
    "mirror_findings",
    "normalize",
    "static_credential_findings",
    "tcp_findings",
]

if TYPE_CHECKING:
    from ..config import Config

log = structlog.get_logger(__name__)
T = TypeVar("T")
R = TypeVar("R")

# the engine always treats loopback registries as insecure; that is its default, not a finding
EXPECTED_INSECURE: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
CURSOR = "docker.engine_registry_config"
FindingKind = Literal["insecure_registry", "mirror_plain_http", "mirror_unreachable", "daemon_tcp_plain",
                      "daemon_tcp_no_client_auth", "content_trust_not_enforced", "static_credential"]
ALERTS: dict[str, str] = {
    "insecure_registry": "DockerInsecureRegistry",
    "mirror_plain_http": "DockerMirrorPlainHTTP",
    "mirror_unreachable": "DockerMirrorUnreachable",
    "daemon_tcp_plain": "DockerDaemonTCPPlain",
    "daemon_tcp_no_client_auth": "DockerDaemonTCPNoClientAuth",
    "content_trust_not_enforced": "DockerContentTrustNotEnforced",
    "static_credential": "DockerStaticCredential",
}
_KINDS: tuple[FindingKind, ...] = get_args(FindingKind)
# the label naming a finding's subject; severity and fix per kind (shown by `regwarden posture`)
_LABEL: dict[str, str] = {"mirror_plain_http": "mirror", "mirror_unreachable": "mirror", "daemon_tcp_plain": "endpoint",
                          "daemon_tcp_no_client_auth": "endpoint", "content_trust_not_enforced": "scope",
                          "static_credential": "location"}
SEVERITY: dict[str, Literal["warning", "critical"]] = {"daemon_tcp_plain": "critical",
                                                       "daemon_tcp_no_client_auth": "critical"}
FIXES: dict[str, str] = {
    "insecure_registry": "remove it from insecure-registries in daemon.json (or allow it in "
                         "[docker].insecure_registries_allowed)",
    "mirror_plain_http": "use an https:// registry mirror",
    "mirror_unreachable": "repair or remove the registry mirror",
    "daemon_tcp_plain": "listen on the unix socket only, or use --tlsverify with client certificates",
    "daemon_tcp_no_client_auth": "add --tlsverify and --tlscacert so that only certified clients get in",
    "content_trust_not_enforced": "set DefaultEnvironment=DOCKER_CONTENT_TRUST=1 in a "
                                  "/etc/systemd/system.conf.d/ drop-in (or in /etc/environment)",
    "static_credential": "remove the entry (docker logout) and let regwarden keep the credential",
}


@dataclass(frozen=True)
class EngineFinding:
    kind: FindingKind
    subject: str  # a CIDR, a registry host[:port] or a mirror URL
    detail: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.subject}"

    @property
    def severity(self) -> Literal["warning", "critical"]:
        return SEVERITY.get(self.kind, "warning")


# --------------------------------------------------------------------------- pure parts


def normalize(registry_config: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of `RegistryConfig` that matter, sorted so that equal configs compare (and hash) equal."""
    indexes = registry_config.get("IndexConfigs") or {}
    insecure_names = sorted(
        str(name) for name, index in indexes.items()
        if isinstance(index, Mapping) and index.get("Secure") is False and not index.get("Official"))
    index_mirrors = {
        str(name): sorted(_mirror(m) for m in index.get("Mirrors") or [])
        for name, index in indexes.items() if isinstance(index, Mapping) and index.get("Mirrors")
    }
    return {
        "insecure_cidrs": sorted(str(c) for c in registry_config.get("InsecureRegistryCIDRs") or []),
        "insecure_registries": insecure_names,
        "mirrors": sorted(_mirror(m) for m in registry_config.get("Mirrors") or []),
        "index_mirrors": dict(sorted(index_mirrors.items())),
    }


def config_digest(normalized: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(normalized, sort_keys=True, separators=(",", ":"))
                                      .encode()).hexdigest()


def insecure_findings(normalized: Mapping[str, Any], allowed: Sequence[str]) -> list[EngineFinding]:
    """Insecure CIDRs and registries of the engine that neither the default nor `allowed` covers.

    `allowed` holds CIDRs and `host[:port]` names; a registry is covered by its exact name, by its host
    without port, or by an allowed CIDR holding its address; a CIDR by an allowed CIDR containing it.
    """
    networks = [_network(entry) for entry in (*EXPECTED_INSECURE, *allowed)]
    cidrs = [n for n in networks if n is not None]
    names = {entry.strip().lower() for entry in allowed if _network(entry) is None}
    findings: list[EngineFinding] = []
    for cidr in normalized.get("insecure_cidrs", []):
        network = _network(cidr)
        if network is not None and any(_within(network, allowed_net) for allowed_net in cidrs):
            continue
        findings.append(EngineFinding("insecure_registry", cidr,
                                      f"the engine talks plain HTTP or unverified TLS to registries in {cidr}"))
    for name in normalized.get("insecure_registries", []):
        host = _host_of(name)
        address = _address(host)
        if name.lower() in names or host.lower() in names or (
                address is not None and any(address in allowed_net for allowed_net in cidrs)):
            continue
        findings.append(EngineFinding("insecure_registry", name,
                                      f"the engine talks plain HTTP or unverified TLS to registry {name}"))
    return findings


def mirror_findings(normalized: Mapping[str, Any], unreachable: Mapping[str, str]) -> list[EngineFinding]:
    """Mirrors over plain HTTP, and mirrors in `unreachable` (URL → why their /v2/ did not answer)."""
    findings: list[EngineFinding] = []
    for url in all_mirrors(normalized):
        if url.startswith("http://"):
            findings.append(EngineFinding("mirror_plain_http", url, f"registry mirror {url} is plain HTTP"))
        if url in unreachable:
            findings.append(EngineFinding("mirror_unreachable", url,
                                          f"registry mirror {url} does not answer: {unreachable[url]}"))
    return findings


def tcp_findings(exposures: Mapping[tuple[str, int], ApiExposure]) -> list[EngineFinding]:
    """The endpoints (as bound) where the Docker API answered a client without credentials."""
    findings = []
    for (address, port), how in sorted(exposures.items()):
        endpoint = f"tcp://[{address}]:{port}" if ":" in address else f"tcp://{address}:{port}"
        if how == "plain":
            findings.append(EngineFinding("daemon_tcp_plain", endpoint,
                                          f"the Docker API answers plain HTTP on {endpoint}: whoever reaches it is "
                                          f"root on this host"))
        elif how == "tls_no_client_auth":
            findings.append(EngineFinding("daemon_tcp_no_client_auth", endpoint,
                                          f"the Docker API on {endpoint} answers over TLS without a client "
                                          f"certificate: whoever reaches it is root on this host"))
    return findings


def static_credential_findings(found: Iterable[StaticCredential], managed: Mapping[str, str]) -> list[EngineFinding]:
    """`managed`: auths key → registry name, for the registries whose credential regwarden keeps."""
    by_host = {hostname_of_key(key): name for key, name in managed.items()}
    return [EngineFinding("static_credential", credential.location,
                          f"{credential.location} holds a static credential for registry "
                          f"{by_host.get(hostname_of_key(credential.key), credential.key)}, whose credential "
                          f"regwarden manages: that copy never rotates")
            for credential in found]


def all_mirrors(normalized: Mapping[str, Any]) -> list[str]:
    mirrors = set(normalized.get("mirrors", []))
    for urls in normalized.get("index_mirrors", {}).values():
        mirrors.update(urls)
    return sorted(mirrors)


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """What changed between two normalized configs: `{key: {"added": [...], "removed": [...]}}`;
    `index_mirrors` per index name. Unchanged keys are left out."""
    out: dict[str, Any] = {}
    for key in ("insecure_cidrs", "insecure_registries", "mirrors"):
        change = _list_change(old.get(key, []), new.get(key, []))
        if change:
            out[key] = change
    old_index, new_index = old.get("index_mirrors", {}), new.get("index_mirrors", {})
    per_index = {name: change for name in sorted({*old_index, *new_index})
                 if (change := _list_change(old_index.get(name, []), new_index.get(name, [])))}
    if per_index:
        out["index_mirrors"] = per_index
    return out


def _list_change(old: Iterable[str], new: Iterable[str]) -> dict[str, list[str]]:
    before, after = set(old), set(new)
    change = {}
    if after - before:
        change["added"] = sorted(after - before)
    if before - after:
        change["removed"] = sorted(before - after)
    return change


def _mirror(url: object) -> str:
    return str(url).rstrip("/")


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if "/" not in text:
        return None
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def _within(inner: ipaddress.IPv4Network | ipaddress.IPv6Network,
            outer: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]


def _host_of(name: str) -> str:
    if name.startswith("["):
        return name[1:].split("]", 1)[0]
    host, sep, port = name.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else name


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


# --------------------------------------------------------------------------- the Docker SDK edge


def engine_registry_config(host: str, timeout: float) -> dict[str, Any]:
    """`RegistryConfig` of `docker info` from the engine at `host`; DockerError when it cannot be read."""
    import docker
    import docker.errors
    import requests

    try:
        client = docker.DockerClient(base_url=host, timeout=max(1, int(timeout)))
        try:
            info = client.info()
        finally:
            client.close()
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        raise DockerError(f"docker info on {host} failed: {type(exc).__name__}") from None
    registry_config = info.get("RegistryConfig") if isinstance(info, dict) else None
    if not isinstance(registry_config, dict):
        raise DockerError(f"docker info on {host} has no RegistryConfig")
    return registry_config


# --------------------------------------------------------------------------- the component

InfoFunction = Callable[[], Mapping[str, Any]]
MirrorProbe = Callable[[ProbeTarget], ProbeResult]


def engine_findings(cfg: Config, normalized: Mapping[str, Any], *, mirror_probe: MirrorProbe = probe,
                    root: Path = Path("/")) -> tuple[list[EngineFinding], list[str]]:
    """Every finding of one audit of the engine whose registry config is `normalized`, and the client
    configs that could not be searched (unreadable, not JSON) with why."""
    docker_cfg = cfg.docker
    assert docker_cfg is not None
    timeout = docker_cfg.timeout.total_seconds()
    unreachable = _unreachable_mirrors(all_mirrors(normalized), timeout, mirror_probe)
    findings = insecure_findings(normalized, docker_cfg.insecure_registries_allowed) + \
        mirror_findings(normalized, unreachable)
    # what `docker info` does not show: the daemon's TCP socket, content trust, static credentials
    endpoints = daemon_tcp_endpoints(docker_cfg.host, _daemon_json(docker_cfg.daemon_json), proc=root / "proc")
    findings += tcp_findings(dict(zip(endpoints, _parallel(
        lambda endpoint: probe_docker_api(endpoint[0], endpoint[1], timeout), endpoints), strict=True)))
    if docker_cfg.content_trust_required:
        trust = content_trust(root)
        if not trust.enabled:
            findings.append(EngineFinding("content_trust_not_enforced", "services",
                                          f"Docker content trust is not enforced: {trust.where}"))
    managed = {registry_key(str(reg.url)): reg.name for reg in cfg.registries if reg.credential}
    problems: list[str] = []
    if managed and docker_cfg.static_credential_scan:
        found, problems = scan_static_credentials(docker_cfg.static_credential_scan, docker_cfg.client_configs,
                                                  managed)
        findings += static_credential_findings(found, managed)
    return findings, problems


def _parallel(function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
        return list(pool.map(function, items))


def _daemon_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("engine_audit_daemon_json_unreadable", path=str(path),
                    error=getattr(exc, "strerror", None) or "not valid JSON")
        return None
    return doc if isinstance(doc, dict) else None


def _unreachable_mirrors(mirrors: list[str], timeout: float, mirror_probe: MirrorProbe) -> dict[str, str]:
    results = _parallel(mirror_probe, [ProbeTarget(f"mirror {url}", url, timeout) for url in mirrors])
    # a mirror that asks for credentials still answers; only endpoint failures count
    return {url: f"{r.failed_phase}: {r.reason}" for url, r in zip(mirrors, results, strict=True)
            if r.failed_phase is not None and r.failed_phase != "auth"}


@dataclass(frozen=True)
class AuditReport:
    at: datetime
    config: dict[str, Any]
    digest: str
    findings: list[EngineFinding]
    changed: dict[str, Any] | None  # the diff when the config changed since last seen


class EngineAudit:
    """Audits the engine's registry config on `[docker].engine_audit_interval`."""

    name = "engine-audit"

    def __init__(self, info_function: InfoFunction | None = None,
                 mirror_probe: MirrorProbe = probe, *, root: Path = Path("/")) -> None:
        self._info = info_function
        self._probe = mirror_probe
        self._root = root  # where /proc and /etc are read from (tests: a prepared tree)
        self._scan_problems: list[str] = []
        self._ctx: Context | None = None
        self._last: AuditReport | None = None
        self._error: str | None = None
        self._signalled: bool = False  # findings stated once since start (fired or resolved)

    def start(self, ctx: Context) -> None:
        self._ctx = ctx
        docker_cfg = ctx.config.docker
        if docker_cfg is None:
            return
        if self._info is None:
            host, timeout = docker_cfg.host, docker_cfg.timeout.total_seconds()
            self._info = lambda: engine_registry_config(host, timeout)
        ctx.scheduler.add_job(self.run_audit, "interval", seconds=docker_cfg.engine_audit_interval.total_seconds(),
                              id="engine-audit", name="engine registry-config audit", replace_existing=True,
                              next_run_time=datetime.now(UTC), coalesce=True, max_instances=1)

    def stop(self) -> None:
        if self._ctx is not None:
            with contextlib.suppress(LookupError):
                self._ctx.scheduler.remove_job("engine-audit")

    def health(self) -> Health:
        return Health(self._ctx is not None, "" if self._ctx is not None else "not started")

    def status(self) -> dict[str, Any]:
        report = self._last
        out: dict[str, Any] = {"error": self._error}
        if report is not None:
            out.update({
                "last_audit": report.at.isoformat(), "digest": report.digest,
                "insecure_cidrs": report.config["insecure_cidrs"],
                "insecure_registries": report.config["insecure_registries"],
                "mirrors": all_mirrors(report.config),
                "findings": [{"kind": f.kind, "subject": f.subject, "severity": f.severity, "detail": f.detail}
                             for f in report.findings],
                "static_credential_scan_errors": list(self._scan_problems),
            })
        return out

    def run_audit(self) -> AuditReport | None:
        """Audit once: read, compare with the last seen config, probe mirrors, signal findings."""
        ctx = self._ctx
        if ctx is None or self._info is None or ctx.config.docker is None:
            return None
        try:
            report = self._audit(ctx)
        except DockerError as exc:
            self._error = str(exc)
            ctx.metrics.engine_audit_success.set(0)
            log.warning("engine_audit_failed", error=str(exc))
            return None
        except Exception:  # the scheduled job must not die
            self._error = "internal error"
            ctx.metrics.engine_audit_success.set(0)
            log.exception("engine_audit_failed")
            return None
        self._error = None
        self._last = report
        ctx.metrics.engine_audit_success.set(1)
        return report

    def _audit(self, ctx: Context) -> AuditReport:
        assert self._info is not None and ctx.config.docker is not None
        at = datetime.now(UTC)
        config = normalize(self._info())
        digest = config_digest(config)
        findings, problems = engine_findings(ctx.config, config, mirror_probe=self._probe, root=self._root)
        if problems != self._scan_problems:
            for problem in problems:
                log.warning("engine_audit_config_unreadable", problem=problem)
        self._scan_problems = problems
        stored = ctx.state.get_cursor(CURSOR)
        previous: dict[str, Any] = stored if isinstance(stored, dict) else {}
        changed = None
        if previous.get("digest") not in (None, digest):
            changed = config_diff(previous.get("config", {}), config)
            ctx.metrics.engine_registry_config_changes.inc()
            ctx.emit(Event(source="regwarden", kind="engine.registry_config_changed", time=at, host=ctx.host,
                           outcome="success", detail={"diff": changed, "digest": digest,
                                                      "previous_digest": previous.get("digest")}))
            log.warning("engine_registry_config_changed", diff=changed)
        self._signal(ctx, findings, set(previous.get("findings", [])), at)
        ctx.state.set_cursor(CURSOR, {"digest": digest, "config": config,
                                      "findings": sorted(f.key for f in findings), "seen": time.time()})
        for kind in _KINDS:
            ctx.metrics.engine_audit_findings.labels(kind).set(sum(1 for f in findings if f.kind == kind))
        log.info("engine_audit_finished", digest=digest, findings=[f.key for f in findings])
        return AuditReport(at, config, digest, findings, changed)

    def _signal(self, ctx: Context, findings: list[EngineFinding], before: set[str], at: datetime) -> None:
        """Fire new findings, resolve gone ones; the first audit after a start states every current one."""
        current = {f.key: f for f in findings}
        for key, finding in current.items():
            if key not in before or not self._signalled:
                ctx.signal(_signal(ctx.host, finding.kind, finding.subject, finding.detail, firing=True, at=at))
        for key in sorted(before - set(current)):
            kind, _, subject = key.partition(":")
            ctx.signal(_signal(ctx.host, kind, subject, "no longer in the engine's registry config", firing=False,
                               at=at))
        self._signalled = True


def _signal(host: str, kind: str, subject: str, detail: str, *, firing: bool, at: datetime) -> Signal:
    return Signal(labels={"alertname": ALERTS.get(kind, "DockerEngineRegistryConfig"),
                          _LABEL.get(kind, "registry"): subject, "host": host},
                  firing=firing, severity=SEVERITY.get(kind, "warning"), at=at,
                  annotations={"summary": detail, "engine_host": host})

