"""Dependency checks behind /readyz: Vault and the Docker engine answer at all.

The daemon starts and serves even when they do not; it reports not-ready and why. Registries are the
probe component's: its last probe of each says whether it is reachable (no second request to `/v2/`).
"""

from __future__ import annotations

import threading
from typing import Any

import requests
import structlog

from .component import Context, Health

__all__ = ["DependencyChecker"]

log = structlog.get_logger(__name__)


class DependencyChecker:
    """Every `interval` seconds: Vault `/v1/sys/health` and Docker `/_ping` (one client, kept)."""

    name = "dependencies"

    def __init__(self, interval: float = 10.0) -> None:
        self._interval = interval
        self._results: dict[str, str | None] = {}  # "vault" / "docker" / "registry:NAME" -> error or None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ctx: Context | None = None
        self._docker: Any = None  # docker.DockerClient, built at the first check and kept
        self._http = requests.Session()  # one keep-alive connection to Vault

    def start(self, ctx: Context) -> None:
        self._ctx = ctx
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="dependency-checks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)  # a check still running closes its clients when it ends

    def health(self) -> Health:
        if self._ctx is None:
            return Health(False, "not started")
        expected = self._targets(self._ctx)
        failing = {k: v for k, v in self._results.items() if k in expected and v is not None}
        pending = [k for k in expected if k not in self._results]
        if failing:
            return Health(False, "; ".join(f"{k}: {v}" for k, v in sorted(failing.items())))
        if pending:
            return Health(False, "checking " + ", ".join(sorted(pending)))
        return Health(True)

    def status(self) -> dict[str, Any]:
        return {k: ("up" if v is None else f"down: {v}") for k, v in sorted(self._results.items())}

    @staticmethod
    def _targets(ctx: Context) -> list[str]:
        cfg = ctx.config
        names = ["vault"] if cfg.vault else []
        if cfg.docker or (cfg.sources.docker_events and cfg.sources.docker_events.enabled):
            names.append("docker")
        return names

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                assert self._ctx is not None
                self.check_all(self._ctx)
                self._stop.wait(self._interval)
        finally:  # the clients belong to this thread: closed by it, never under a running check
            if self._docker is not None:
                self._docker.close()
                self._docker = None
            self._http.close()

    def check_all(self, ctx: Context) -> None:
        cfg = ctx.config
        timeout = 5.0
        if cfg.vault is not None:
            verify: bool | str = str(cfg.vault.ca_cert) if cfg.vault.ca_cert else True
            # 429/473/501/503 from sys/health still mean "Vault answered"; standby and sealed are reported
            self._record(ctx, "vault", "vault", lambda: self._any_vault_node(
                cfg.vault.address if cfg.vault else [], timeout, verify))
        if "docker" in self._targets(ctx):
            host = cfg.docker.host if cfg.docker else "unix:///var/run/docker.sock"
            self._record(ctx, "docker", "docker", lambda: self._docker_ping(host, timeout))

    def _any_vault_node(self, addresses: list[str], timeout: float, verify: bool | str) -> str | None:
        """None when some node of the cluster answers as active or standby, else the last node's error."""
        error: str | None = "no address"
        for address in addresses:
            error = _http_ok(self._http, f"{address}/v1/sys/health?standbyok=true", timeout, verify,
                             ok=lambda s: s in (200, 429))
            if error is None:
                return None
        return error if len(addresses) == 1 else f"no node answered ({error} from {addresses[-1]})"

    def _docker_ping(self, host: str, timeout: float) -> str | None:
        import docker
        import docker.errors

        try:
            if self._docker is None:
                self._docker = docker.DockerClient(base_url=host, timeout=int(timeout))
            self._docker.ping()
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            if self._docker is not None:  # built anew at the next check
                self._docker.close()
                self._docker = None
            return f"engine not reachable ({type(exc).__name__})"
        return None

    def _record(self, ctx: Context, key: str, kind: str, check: Any) -> None:
        try:
            error = check()
        except Exception as exc:  # a check must never kill the loop
            error = f"{type(exc).__name__}: {exc}"
        previous = self._results.get(key, "unset")
        self._results[key] = error
        ctx.metrics.dependency_up.labels(kind, key.partition(":")[2] or kind).set(0 if error else 1)
        if error != previous:
            if error:
                log.warning("dependency_down", dependency=key, reason=error)
            else:
                log.info("dependency_up", dependency=key)


def _http_ok(http: requests.Session, url: str, timeout: float, verify: bool | str, ok: Any) -> str | None:
    try:
        response = http.get(url, timeout=timeout, verify=verify, allow_redirects=False)
    except requests.exceptions.SSLError as exc:
        return f"TLS error: {exc.__class__.__name__}"
    except requests.exceptions.ConnectionError:
        return "connection failed"
    except requests.exceptions.Timeout:
        return "timed out"
    except requests.RequestException as exc:
        return f"request failed: {exc.__class__.__name__}"
    return None if ok(response.status_code) else f"HTTP {response.status_code}"
