"""`ImageChecks`: checks every manifest push that a registry notification reports.

- signature: `image_checks.signature_wait` after the push, look in the same repository for a cosign
  signature (tag `sha256-HEX.sig`, or an OCI referrer of artifactType `signature.ARTIFACT_TYPE`) and,
  with a `public_key_file`, verify it. The first `[[image_checks.signatures]]` rule that matches the
  repository applies; no rule, no check.
- scan: run `image_checks.scanner.command` and read its stdout as a Trivy JSON report.

Both are queued in the state store (table `image_checks`, one row per check, registry, repository and
digest), so a digest is checked once, also across restarts; a check interrupted by a stop runs again
after the start. Each result is an audit record (`image.signature`, `image.scan`, source regwarden);
the detectors turn the bad ones into alerts (ImageUnsigned, ImageSignatureInvalid, ImageVulnerable,
ImageScanFailed). Bad input (a registry answer, a signature manifest that is not what it claims, a
scanner that hangs, fails or prints garbage) is counted in regwarden_image_check_errors_total and
never stops the component.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog
from cryptography.hazmat.primitives.asymmetric import ec

from ..component import Context, Health
from ..config import Config, RegistryConfig, SignatureRule
from ..credentials.model import CredentialSecret
from ..errors import ImageCheckError, RegistryError, RegwardenError
from ..events import Event, Signal, Target, utcnow
from ..registry.client import RegistryReader
from . import signature, trivy
from .scanner import command_for, run_scanner

__all__ = ["ImageChecks", "Verdict", "check_signature", "scan_verdict"]

log = structlog.get_logger(__name__)

Check = Literal["signature", "scan"]
CredentialLookup = Callable[[str], CredentialSecret | None]
_DDL = """
CREATE TABLE IF NOT EXISTS image_checks (
    check_name TEXT NOT NULL, registry TEXT NOT NULL, repository TEXT NOT NULL, digest TEXT NOT NULL,
    tag TEXT, due REAL NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, verdict TEXT,
    PRIMARY KEY (check_name, registry, repository, digest));
"""
_REGISTRY_ATTEMPTS = 3
_RETRY_AFTER = 30.0
_TOP_FINDINGS = 10
_recovered: set[Path] = set()  # state stores whose interrupted checks this process has re-queued


@dataclass(frozen=True)
class Verdict:
    verdict: str  # signature: verified | present | unsigned | invalid | error; scan: clean | vulnerable | failed
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- the checks (I/O through the reader)


def check_signature(reader: RegistryReader, repository: str, digest: str,
                    key: ec.EllipticCurvePublicKey | None) -> Verdict:
    """What the registry holds as signature of `repository@digest`. RegistryError when it cannot say."""
    manifests = _signature_manifests(reader, repository, digest)
    if not manifests:
        return Verdict("unsigned", f"no cosign signature for {repository}@{digest}")
    for where, manifest in manifests:
        try:
            layers = signature.signature_layers(manifest, where)
            for layer in layers:
                payload = reader.blob(repository, layer.payload_digest)
                at = f"{where} payload {layer.payload_digest}"
                if payload is None:
                    raise ImageCheckError(f"{at}: blob is missing")
                if "sha256:" + hashlib.sha256(payload).hexdigest() != layer.payload_digest:
                    raise ImageCheckError(f"{at}: blob does not match its digest")
                signed = signature.signed_digest(payload, at)
                if signed != digest:
                    raise ImageCheckError(f"{at}: signs {signed}, not {digest}")
                if key is None:
                    return Verdict("present", f"signed ({where})")
                if signature.verify(key, payload, layer.signature):
                    return Verdict("verified", f"signature verified ({where})")
        except ImageCheckError as exc:
            return Verdict("invalid", str(exc), {"error": "bad_signature"})
    return Verdict("invalid", f"no signature of {repository}@{digest} verifies against the configured public key",
                   {"error": "not_verified"})


def _signature_manifests(reader: RegistryReader, repository: str, digest: str) -> list[tuple[str, bytes]]:
    tag = signature.signature_tag(digest)
    found = []
    by_tag = reader.manifest(repository, tag)
    if by_tag is not None:
        found.append((f"{repository}:{tag}", by_tag))
    index = reader.referrers(repository, digest)
    if index is None:  # no referrers API: the OCI 1.1 fallback tag
        index = reader.manifest(repository, digest.replace(":", "-"))
    for ref in _referrer_digests(index):
        manifest = reader.manifest(repository, ref)
        if manifest is not None:
            found.append((f"{repository}@{ref}", manifest))
    return found


def _referrer_digests(index: bytes | None) -> list[str]:
    if index is None:
        return []
    try:
        doc: Any = json.loads(index)
    except (ValueError, UnicodeDecodeError):
        return []
    entries = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return []
    return [str(e["digest"]) for e in entries if isinstance(e, dict) and isinstance(e.get("digest"), str)
            and e.get("artifactType") == signature.ARTIFACT_TYPE]


def scan_verdict(report: bytes, where: str, threshold: str) -> Verdict:
    """A Trivy report's verdict at `threshold`; ImageCheckError when the report is unreadable."""
    findings = trivy.parse_report(report, where)
    bad = trivy.at_or_above(findings, threshold)
    detail: dict[str, Any] = {"severities": trivy.severity_counts(findings), "threshold": threshold}
    if not bad:
        return Verdict("clean", f"no finding at or above {threshold}", detail)
    detail["findings"] = [{"id": f.id, "package": f.package, "severity": f.severity, "installed": f.installed,
                           "fixed": f.fixed} for f in bad[:_TOP_FINDINGS]]
    top = ", ".join(f"{f.id} ({f.severity}, {f.package})" for f in bad[:3])
    return Verdict("vulnerable", f"{len(bad)} finding(s) at or above {threshold}: {top}", detail)


def rule_for(cfg: Config, registry: RegistryConfig | None, repository: str) -> SignatureRule | None:
    for rule in cfg.image_checks.signatures:
        if rule.registry is not None and (registry is None or registry.name != rule.registry):
            continue
        if any(fnmatch.fnmatchcase(repository, pattern) for pattern in rule.repositories):
            return rule
    return None


def registry_for(cfg: Config, host: str) -> RegistryConfig | None:
    """The [[registries]] entry at `host` (a notification's `request.host`), as `RegistryNames` matches."""
    name = cfg.registry_names.name(host)
    return cfg.registry(name) if name is not None else None


# --------------------------------------------------------------------------- the component


@dataclass(frozen=True)
class _Job:
    check: Check
    registry: str
    repository: str
    digest: str
    tag: str | None
    attempts: int


class ImageChecks:
    name = "image-checks"
    bus_consumer = True  # stopped after the bus is drained: a push accepted before a stop is still queued

    def __init__(self, credential_lookup: CredentialLookup | None = None, poll_interval: float = 1.0) -> None:
        self._lookup = credential_lookup
        self._poll = poll_interval
        self._ctx: Context | None = None
        self._keys: dict[Path, ec.EllipticCurvePublicKey] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._claim_lock = threading.Lock()
        self._done = 0
        self._last_error: str | None = None

    def start(self, ctx: Context) -> None:
        self._ctx = ctx
        cfg = ctx.config.image_checks
        self._keys = {}
        for rule in cfg.signatures:  # fail fast on a bad key file
            if rule.public_key_file is not None and rule.public_key_file not in self._keys:
                try:
                    pem = rule.public_key_file.read_bytes()
                except OSError as exc:
                    raise ImageCheckError(f"public_key_file {rule.public_key_file}: {exc.strerror}") from None
                self._keys[rule.public_key_file] = signature.load_public_key(pem, str(rule.public_key_file))
        ctx.state.ensure_schema("image_checks", _DDL)
        if ctx.state.path not in _recovered:  # interrupted by a crash: again (not at a reload: a check may run)
            ctx.state.execute("UPDATE image_checks SET state='pending' WHERE state='running'")
            _recovered.add(ctx.state.path)
        ctx.bus.subscribe(self.name, self.handle, self.handle_batch)
        self._stop.clear()
        workers: list[Check] = ["signature"] if cfg.signatures else []
        if cfg.scanner is not None:
            workers += ["scan"] * cfg.scanner.concurrency
        self._threads = [threading.Thread(target=self._work, args=(check,), name=f"image-{check}-{i}", daemon=True)
                         for i, check in enumerate(workers)]
        for thread in self._threads:
            thread.start()
        self._update_queue_gauge()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(2.0)
        if self._ctx is not None:
            self._ctx.bus.unsubscribe(self.name)

    def handle(self, item: Event | Signal) -> None:
        if isinstance(item, Event):
            self.handle_batch((item,))

    def handle_batch(self, events: Sequence[Event]) -> None:
        """Queue the checks a manifest push asks for (pushes of cosign's own tags are not images)."""
        if self._ctx is None:
            return
        for event in events:
            if event.kind != "image.push" or event.source != "registry-notify" or event.outcome != "success":
                continue
            target = event.target
            if not target.digest or not target.repository or signature.is_signature_tag(target.tag):
                continue
            if str(event.detail.get("media_type", "")).startswith("application/vnd.dev.cosign"):
                continue
            self._enqueue(event, target)

    def _enqueue(self, event: Event, target: Target) -> None:
        assert self._ctx is not None
        cfg = self._ctx.config
        host, repository = target.host, target.repository or ""
        checks: list[tuple[Check, float]] = []
        if rule_for(cfg, registry_for(cfg, host), repository) is not None:
            checks.append(("signature", time.time() + cfg.image_checks.signature_wait.total_seconds()))
        scanner = cfg.image_checks.scanner
        if scanner is not None and any(fnmatch.fnmatchcase(repository, p) for p in scanner.repositories):
            checks.append(("scan", time.time()))
        for check, due in checks:
            self._ctx.state.execute(
                "INSERT OR IGNORE INTO image_checks (check_name, registry, repository, digest, tag, due, state)"
                " VALUES (?, ?, ?, ?, ?, ?, 'pending')", (check, host, repository, target.digest, target.tag, due))
        if checks:
            self._update_queue_gauge()
            self._wake.set()

    # ------------------------------------------------------------------ workers

    def _work(self, check: Check) -> None:
        while not self._stop.is_set():
            try:
                job = self._claim(check)
            except RegwardenError as exc:
                log.error("image_check_queue_failed", check=check, error=str(exc))
                job = None
            if job is None:
                self._wake.wait(self._poll)
                self._wake.clear()
                continue
            try:
                self._run(job)
            except Exception:  # a bug: logged, the job is retried after a start, the worker lives on
                log.exception("image_check_crashed", check=check, repository=job.repository, digest=job.digest)
                self._stop.wait(self._poll)

    def _claim(self, check: Check) -> _Job | None:
        assert self._ctx is not None
        with self._claim_lock:
            rows = self._ctx.state.query(
                "SELECT registry, repository, digest, tag, attempts FROM image_checks WHERE check_name=? AND"
                " state='pending' AND due<=? ORDER BY due LIMIT 1", (check, time.time()))
            if not rows:
                return None
            row = rows[0]
            self._ctx.state.execute(
                "UPDATE image_checks SET state='running', attempts=attempts+1 WHERE check_name=? AND registry=?"
                " AND repository=? AND digest=?", (check, row["registry"], row["repository"], row["digest"]))
        return _Job(check, row["registry"], row["repository"], row["digest"], row["tag"], row["attempts"] + 1)

    def _run(self, job: _Job) -> None:
        assert self._ctx is not None
        cfg = self._ctx.config
        bound = log.bind(check=job.check, registry=job.registry, repository=job.repository, digest=job.digest)
        if job.check == "signature":
            verdict, retry = self._signature(cfg, job)
            attempts = _REGISTRY_ATTEMPTS
        else:
            verdict, retry = self._scan(cfg, job)
            attempts = cfg.image_checks.scanner.attempts if cfg.image_checks.scanner else 1
        if verdict.verdict == "cancelled":  # stopped mid-scan: the next start runs it again, not counted
            self._ctx.state.execute(
                "UPDATE image_checks SET state='pending', attempts=attempts-1 WHERE check_name=? AND registry=? AND"
                " repository=? AND digest=?", (job.check, job.registry, job.repository, job.digest))
            return
        if retry and job.attempts < attempts and not self._stop.is_set():
            bound.warning("image_check_retry", attempt=job.attempts, error=verdict.reason)
            self._ctx.state.execute(
                "UPDATE image_checks SET state='pending', due=? WHERE check_name=? AND registry=? AND"
                " repository=? AND digest=?", (time.time() + _retry_delay(job), job.check, job.registry,
                                               job.repository, job.digest))
            return
        self._record(job, verdict)
        (bound.info if verdict.verdict in ("verified", "present", "clean") else bound.warning)(
            "image_checked", verdict=verdict.verdict, reason=verdict.reason)

    def _signature(self, cfg: Config, job: _Job) -> tuple[Verdict, bool]:
        registry = registry_for(cfg, job.registry)
        rule = rule_for(cfg, registry, job.repository)
        if registry is None or rule is None:
            self._error("signature", "unknown_registry")
            return Verdict("error", f"no [[registries]] entry for {job.registry} (or its rule was removed)"), False
        key = self._keys.get(rule.public_key_file) if rule.public_key_file is not None else None
        secret = self._lookup(registry.credential) if self._lookup and registry.credential else None
        reader = RegistryReader(registry, secret, timeout=cfg.image_checks.registry_timeout.total_seconds())
        try:
            verdict = check_signature(reader, job.repository, job.digest, key)
        except RegistryError as exc:
            self._error("signature", "registry")
            return Verdict("error", str(exc)), True
        finally:
            reader.close()
        if verdict.detail.get("error"):
            self._error("signature", str(verdict.detail["error"]))
        if verdict.verdict == "unsigned" and not rule.require_signature:
            verdict = Verdict("unsigned-allowed", verdict.reason)
        return verdict, False

    def _scan(self, cfg: Config, job: _Job) -> tuple[Verdict, bool]:
        scanner = cfg.image_checks.scanner
        if scanner is None:
            return Verdict("error", "the scanner was removed from the config"), False
        image = f"{job.registry}/{job.repository}@{job.digest}"
        argv = command_for(scanner.command, {"image": image, "registry": job.registry,
                                             "repository": job.repository, "digest": job.digest})
        try:
            report = run_scanner(argv, timeout=scanner.timeout.total_seconds(),
                                 max_output_bytes=scanner.max_output_bytes, cancel=self._stop)
            return scan_verdict(report, f"scan of {image}", scanner.severity_threshold), False
        except ImageCheckError as exc:
            if exc.reason == "cancelled":
                return Verdict("cancelled", str(exc)), True
            self._error("scan", exc.reason if exc.reason != "bad_input" else "bad_report")
            return Verdict("failed", str(exc)), True

    def _error(self, check: str, reason: str) -> None:
        assert self._ctx is not None
        self._ctx.metrics.image_check_errors.labels(check, reason).inc()

    def _record(self, job: _Job, verdict: Verdict) -> None:
        assert self._ctx is not None
        ok = verdict.verdict in ("verified", "present", "clean", "unsigned-allowed")
        detail = {"verdict": verdict.verdict, "reason": verdict.reason, **verdict.detail}
        event = Event(source="regwarden", kind=f"image.{job.check}", time=utcnow(), host=self._ctx.host,
                      target=self._ctx.config.registry_names.target(job.registry, job.repository, job.tag,
                                                                    job.digest),
                      outcome="success" if ok else "failure", detail=detail)
        self._ctx.emit(event)
        self._ctx.state.execute(
            "UPDATE image_checks SET state='done', verdict=? WHERE check_name=? AND registry=? AND repository=?"
            " AND digest=?", (verdict.verdict, job.check, job.registry, job.repository, job.digest))
        self._ctx.metrics.image_checks.labels(job.check, verdict.verdict).inc()
        self._done += 1
        self._last_error = None if ok else verdict.reason
        self._update_queue_gauge()

    def _update_queue_gauge(self) -> None:
        assert self._ctx is not None
        rows = self._ctx.state.query(
            "SELECT check_name, COUNT(*) AS n FROM image_checks WHERE state!='done' GROUP BY check_name")
        counts = {row["check_name"]: row["n"] for row in rows}
        for check in ("signature", "scan"):
            self._ctx.metrics.image_check_queue.labels(check).set(counts.get(check, 0))

    def health(self) -> Health:
        return Health(self._ctx is not None, "" if self._ctx is not None else "not started")

    def status(self) -> dict[str, Any]:
        return {"checked": self._done, "last_problem": self._last_error}


def _retry_delay(job: _Job) -> float:
    return _RETRY_AFTER * job.attempts

