"""The Vault adapter: hvac and requests are used here and nowhere else.

Authentication (token file, AppRole, TLS certificate), token renewal at 2/3 of its TTL, re-login
when renewal is refused or the token was revoked, and backoff while Vault is unreachable all live
in `VaultClient`; callers see typed KV v2 helpers that raise `VaultError(retryable, status)`.

Renewal is checked before each request (plus a periodic `keep_token_fresh()` call from the
credentials component for idle hours) rather than by a timer thread of its own: the daemon talks to
Vault every `watch_interval` anyway, so the check costs nothing, needs no extra thread, and renewal
can never race a request that is using the token being replaced.

A 403 is ambiguous (revoked/expired token, or a policy that denies the path). The client asks
`lookup-self`: if the token is still valid the 403 is a policy denial and is raised as is, so a
misconfigured policy does not mint a new AppRole token every poll; if the token is invalid the
client logs in once more (re-reading the token file, role-id and secret-id files) and retries once.

With several `[vault].address` entries (the nodes of an HA cluster) every request goes to the node
that answered last; on a connection error, timeout, 5xx (sealed, standby without a leader) or 429 the
same request is sent to the next node not in back-off (`NodePool`). The token is the cluster's, so it
is shared by every node's connection and renewals go wherever requests go. Every request carries the
newest storage index the cluster has answered with (`StorageIndex`, see `nodes`), so that a standby
never answers from an older state than this client has already seen; a 412 (a standby that can neither
reach that index nor forward) moves the request to the next node like a 5xx.

Error messages carry the operation, the KV path, the HTTP status and Vault's short error text
(scrubbed), never request bodies, tokens or response text.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import hvac
import hvac.exceptions
import requests
import structlog

from .. import redact
from ..config import AppRoleAuth, CertAuth, TokenAuth, VaultConfig, read_secret
from ..errors import ConfigError, VaultError
from ..metrics import Metrics
from .nodes import NodePool, NodeState, StorageIndex

__all__ = ["RENEW_AT", "KvMetadata", "KvVersion", "TokenAction", "TokenState", "VaultClient", "token_action",
           "translate_error"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

RENEW_AT = 2 / 3  # renew when this fraction of the token's TTL has passed
CAPPED_BELOW = 0.9  # a renewal granting less than this share of the login TTL hit the token's max TTL

_STATUS_OF: dict[type[Exception], int] = {
    hvac.exceptions.InvalidRequest: 400,
    hvac.exceptions.Unauthorized: 401,
    hvac.exceptions.Forbidden: 403,
    hvac.exceptions.InvalidPath: 404,
    hvac.exceptions.PreconditionFailed: 412,
    hvac.exceptions.RateLimitExceeded: 429,
    hvac.exceptions.InternalServerError: 500,
    hvac.exceptions.VaultNotInitialized: 501,
    hvac.exceptions.BadGateway: 502,
    hvac.exceptions.VaultDown: 503,
}
_REASON = {400: "invalid request", 401: "unauthorized", 403: "permission denied", 404: "not found or deleted",
           412: "precondition failed", 429: "rate limited", 500: "internal error", 501: "not initialized",
           502: "bad gateway", 503: "sealed or unavailable"}


# --------------------------------------------------------------------------- pure decisions


@dataclass(frozen=True)
class TokenState:
    """What regwarden knows about its current token (never the token itself)."""

    obtained_at: float  # unix time at which `ttl` was learned (login, renewal or lookup)
    ttl: float  # seconds left at `obtained_at`; 0 means the token never expires
    renewable: bool
    granted: float  # the full TTL granted at login, to recognise a renewal capped by max TTL
    capped: bool = False

    @property
    def expires_at(self) -> float | None:
        return None if self.ttl <= 0 else self.obtained_at + self.ttl

    @property
    def renew_at(self) -> float | None:
        return None if self.ttl <= 0 else self.obtained_at + RENEW_AT * self.ttl

    def renewed(self, now: float, ttl: float, renewable: bool) -> TokenState:
        return TokenState(now, ttl, renewable, self.granted, capped=ttl < CAPPED_BELOW * self.granted)


TokenAction = Literal["none", "renew", "login"]


def token_action(state: TokenState | None, now: float) -> TokenAction:
    """What to do with the token before the next request.

    No token: log in. A token that never expires, or before 2/3 of its TTL: nothing. Past that:
    renew if the token is renewable and the last renewal was not capped by its max TTL, otherwise
    obtain a new one (log in again; for a token file, re-read the file).
    """
    if state is None:
        return "login"
    if state.renew_at is None or now < state.renew_at:
        return "none"
    return "renew" if state.renewable and not state.capped else "login"


def translate_error(operation: str, what: str, exc: Exception) -> VaultError:
    """An hvac/requests exception as a VaultError whose message is safe to log (no request data)."""
    where = f"Vault {operation} {what}".rstrip()
    if isinstance(exc, hvac.exceptions.VaultError):
        status = next((s for cls, s in _STATUS_OF.items() if isinstance(exc, cls)), None)
        reason = _REASON.get(status or 0, "unexpected answer")
        errors = [str(e) for e in (exc.errors or []) if isinstance(e, str)]
        said = redact.scrub_text("; ".join(errors))[:200]
        retryable = status is None or status == 429 or status >= 500
        text = f"{where}: HTTP {status} {reason}" if status else f"{where}: {reason}"
        return VaultError(f"{text} ({said})" if said and said != reason else text, retryable=retryable,
                          status=status)
    if isinstance(exc, requests.exceptions.SSLError):
        return VaultError(f"{where}: TLS verification failed (check vault.ca_cert)", retryable=True)
    if isinstance(exc, requests.exceptions.Timeout):
        return VaultError(f"{where}: timed out", retryable=True)
    if isinstance(exc, requests.exceptions.ConnectionError):
        return VaultError(f"{where}: connection failed", retryable=True)
    if isinstance(exc, requests.RequestException):
        return VaultError(f"{where}: request failed ({type(exc).__name__})", retryable=True)
    return VaultError(f"{where}: malformed answer ({type(exc).__name__})", retryable=True)


def _unreachable(err: VaultError) -> bool:
    """The node could not serve the request (another node may): no answer, 5xx, 429, or 412 (a standby
    behind the storage index we sent). KV's check-and-set mismatch is a 400, never a 412."""
    return (err.retryable and (err.status is None or err.status >= 500 or err.status == 429)) or err.status == 412


class _IndexedSession(requests.Session):
    """A session that sends the cluster's newest storage index with each request and keeps the one
    each answer carries (shared by the sessions of every node of one cluster)."""

    def __init__(self, index: StorageIndex, *, verify: str | bool, cert: tuple[str, str] | None) -> None:
        super().__init__()
        self._index = index
        # hvac takes verify and cert from a session it is given (over its own arguments): set them here
        self.verify, self.cert = verify, cert

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        value = self._index.value
        if value is not None:
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "X-Vault-Index": value,
                                 "X-Vault-Inconsistent": "forward-active-node"}
        response = super().request(method, url, *args, **kwargs)
        self._index.observe(response.headers.get("X-Vault-Index"))
        return response


# --------------------------------------------------------------------------- the adapter


class KvMetadata(NamedTuple):
    current_version: int
    custom_metadata: dict[str, str]


class KvVersion(NamedTuple):
    """One version in a KV v2 key's metadata: when Vault wrote it (its own clock), and whether it is
    still readable."""

    version: int
    created_time: str
    deleted: bool  # soft-deleted (deletion_time set) or destroyed


_VENDOR_ERRORS = (hvac.exceptions.VaultError, requests.RequestException, ValueError, KeyError, TypeError)
_SERVING = frozenset({200, 429, 472, 473})  # sys/health: active, standby, DR secondary, performance standby
RECHECK_TIMEOUT = 3.0  # seconds a health check of a failed node may take (it runs in the upkeep job)


class VaultClient:
    """One authenticated connection to Vault, shared by every credential job (thread-safe)."""

    def __init__(self, cfg: VaultConfig, metrics: Metrics, *, clock: Callable[[], float] = time.time) -> None:
        self._cfg = cfg
        self._metrics = metrics
        self._clock = clock
        self._pool = NodePool(tuple(cfg.address), initial=1.0, maximum=cfg.retry_max.total_seconds())
        self._auth_lock = threading.RLock()
        self._state_lock = threading.Lock()
        cert = (str(cfg.auth.cert_file), str(cfg.auth.key_file)) if isinstance(cfg.auth, CertAuth) else None
        self.storage_index = StorageIndex()
        verify: str | bool = str(cfg.ca_cert) if cfg.ca_cert else True
        self._nodes = [hvac.Client(url=address, verify=verify, timeout=cfg.timeout.total_seconds(),
                                   namespace=cfg.namespace, cert=cert,
                                   session=_IndexedSession(self.storage_index, verify=verify, cert=cert))
                       for address in cfg.address]
        self.token: TokenState | None = None
        self.up: bool | None = None  # None until the first answer or failure
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.token_error: str | None = None  # the last failed renewal/login, cleared by a good one
        self.node: str = cfg.address[0]  # the node that answered last (or will be tried first)

    @property
    def auth_method(self) -> str:
        return self._cfg.auth.method

    def nodes(self) -> list[NodeState]:
        """The state of each node of `[vault].address` (failing ones with their last error)."""
        with self._state_lock:
            return self._pool.states(self._clock())

    def close(self) -> None:
        for node in self._nodes:
            node.adapter.close()

    def recheck_nodes(self) -> list[str]:
        """Health-check each failed node whose back-off is over (`HEAD sys/health`): one that is
        unsealed and in the cluster (200, or 429/472/473 for the standbys) is known healthy again
        without becoming the node in use; one that is not backs off further. Returns the nodes asked."""
        with self._state_lock:
            due = self._pool.due_rechecks(self._clock())
        timeout = min(self._cfg.timeout.total_seconds(), RECHECK_TIMEOUT)
        for index in due:
            address = self._pool.address(index)
            try:
                resp = self._nodes[index].adapter.head("/v1/sys/health", raise_exception=False, timeout=timeout)
                status = int(getattr(resp, "status_code", 200))
                error = None if status in _SERVING else f"sys/health answered HTTP {status}" + (
                    " (sealed)" if status == 503 else " (not initialized)" if status == 501 else "")
            except requests.RequestException as exc:
                error = f"sys/health: {type(exc).__name__}"
            self._metrics.vault_requests.labels("health", "success" if error is None else "unreachable").inc()
            if error is None:
                with self._state_lock:
                    self._pool.recovered(index)
                self._metrics.vault_node_up.labels(address).set(1)
                log.info("vault_node_answered", node=address, by="health check")
                continue
            with self._state_lock:  # (counted above, not in vault_node_failures: that is what requests met)
                delay = self._pool.failed(index, self._clock(), error=error)
            log.debug("vault_node_still_failing", node=address, error=error, retry_in=round(delay, 1))
        return [self._pool.address(i) for i in due]

    @property
    def _token(self) -> str | None:
        token: str | None = self._nodes[0].token
        return token

    @_token.setter
    def _token(self, token: str | None) -> None:
        for node in self._nodes:  # one cluster, one token: every node's connection carries it
            node.token = token

    def capabilities_self(self, paths: list[str]) -> dict[str, list[str]]:
        """What the token's policies allow on each of `paths` (`sys/capabilities-self`)."""
        def ask(c: Any) -> dict[str, list[str]]:
            resp = c.adapter.post("/v1/sys/capabilities-self", json={"paths": paths})
            body = resp.get("data", resp) if isinstance(resp, dict) else {}
            if len(paths) == 1 and paths[0] not in body and isinstance(body.get("capabilities"), list):
                body = {paths[0]: body["capabilities"]}
            return {path: [str(cap) for cap in body.get(path, [])] for path in paths}
        return self._call("capabilities", "sys/capabilities-self", ask)

    # ------------------------------------------------------------------ KV v2

    def read_metadata(self, mount: str, path: str) -> KvMetadata:
        """`current_version` and `custom_metadata` of a KV v2 key (no secret data is read)."""
        def read(c: Any) -> KvMetadata:
            data = c.secrets.kv.v2.read_secret_metadata(path=path, mount_point=mount)["data"]
            return KvMetadata(int(data["current_version"]), _str_dict(data.get("custom_metadata")))

        return self._call("read_metadata", f"{mount}/{path}", read)

    def versions(self, mount: str, path: str) -> list[KvVersion]:
        """Every version the key still keeps (oldest first), from its metadata; no secret data is read."""
        def read(c: Any) -> list[KvVersion]:
            kept = c.secrets.kv.v2.read_secret_metadata(path=path, mount_point=mount)["data"].get("versions") or {}
            return sorted(KvVersion(int(number), str(info.get("created_time") or ""),
                                    bool(info.get("deletion_time")) or bool(info.get("destroyed")))
                          for number, info in dict(kept).items())

        return self._call("read_metadata", f"{mount}/{path}", read)

    def read_version(self, mount: str, path: str, version: int) -> dict[str, Any]:
        """The data of one version; a deleted or destroyed version is a 404 VaultError."""
        def read(c: Any) -> dict[str, Any]:
            data = c.secrets.kv.v2.read_secret_version(
                path=path, version=version, mount_point=mount, raise_on_deleted_version=True)["data"]["data"]
            if not isinstance(data, dict):
                raise TypeError("no data")
            return data

        return self._call("read_version", f"{mount}/{path} v{version}", read)

    def write(self, mount: str, path: str, data: Mapping[str, Any], *, cas: int | None) -> int:
        """Write a new version (check-and-set: `cas=0` only if absent, `cas=N` only if current is N).

        Returns the new version. A cas mismatch is a VaultError with status 400, not retryable.
        """
        return self._call("write", f"{mount}/{path}", lambda c: int(c.secrets.kv.v2.create_or_update_secret(
            path=path, secret=dict(data), cas=cas, mount_point=mount)["data"]["version"]))

    def update_custom_metadata(self, mount: str, path: str, updates: Mapping[str, str]) -> dict[str, str]:
        """Merge `updates` into the key's custom_metadata (other metadata settings are kept)."""
        where = f"{mount}/{path}"
        current: dict[str, Any] = self._call(
            "read_metadata", where, lambda c: dict(c.secrets.kv.v2.read_secret_metadata(
                path=path, mount_point=mount)["data"]))
        merged = {**_str_dict(current.get("custom_metadata")), **{str(k): str(v) for k, v in updates.items()}}
        # hvac always sends delete_version_after (default "0s"): pass the current settings through
        self._call("update_metadata", where, lambda c: c.secrets.kv.v2.update_metadata(
            path=path, mount_point=mount, custom_metadata=merged, max_versions=current.get("max_versions"),
            cas_required=current.get("cas_required"),
            delete_version_after=current.get("delete_version_after") or "0s"))
        return merged

    # ------------------------------------------------------------------ PKI (vault-pki provider)

    def pki_issue(self, mount: str, role: str, common_name: str, ttl_seconds: int) -> dict[str, Any]:
        """Issue a certificate from a PKI role: certificate, private_key, ca_chain, serial_number, expiration."""
        def issue(c: Any) -> dict[str, Any]:
            data = c.secrets.pki.generate_certificate(
                name=role, common_name=common_name, extra_params={"ttl": f"{ttl_seconds}s"},
                mount_point=mount)["data"]
            if not isinstance(data, dict) or "certificate" not in data or "private_key" not in data:
                raise TypeError("no certificate in the answer")
            redact.register(str(data["private_key"]))
            return data

        return self._call("pki_issue", f"{mount}/issue/{role}", issue)

    def pki_revoke(self, mount: str, serial: str) -> None:
        """Revoke a certificate by serial (revoking a revoked or expired one is not an error)."""
        self._call("pki_revoke", f"{mount}/revoke {serial}",
                   lambda c: c.secrets.pki.revoke_certificate(serial_number=serial, mount_point=mount))

    # ------------------------------------------------------------------ token upkeep

    def keep_token_fresh(self) -> None:
        """Renew or re-obtain the token if it is due (no request otherwise). Raises VaultError."""
        self._ensure_token()

    def _ensure_token(self) -> None:
        with self._auth_lock:
            action = token_action(self.token, self._clock())
            if action == "none":
                return
            try:
                if action == "renew":
                    try:
                        self._renew()
                        return
                    except VaultError as exc:
                        if _unreachable(exc):
                            raise
                        log.info("vault_token_renewal_refused", reason=str(exc))
                self._login()
            except VaultError as exc:
                self.token_error = str(exc)
                raise

    def _renew(self) -> None:
        _, ttl, renewable = self._request("renew", "", lambda c: _grant(c.auth.token.renew_self()))
        assert self.token is not None
        self._set_token(self.token.renewed(self._clock(), ttl, renewable))
        log.debug("vault_token_renewed", ttl=ttl, capped=self.token.capped)

    def _login(self) -> None:
        """Obtain a token by the configured method; secrets are re-read from their files every time."""
        auth = self._cfg.auth
        now = self._clock()
        if isinstance(auth, TokenAuth):
            self._token = self._secret(auth.token_file, auth.token_env, "token")
            ttl, renewable, created = self._request("lookup", "", lambda c: _lookup(c.auth.token.lookup_self()))
            state = TokenState(now, ttl, renewable, created or ttl)
        else:
            self._token = None  # a login must not carry a stale token
            if isinstance(auth, AppRoleAuth):
                role_id = self._plain(auth.role_id_file, "role_id_file")
                secret_id = self._secret(auth.secret_id_file, auth.secret_id_env, "secret_id")
                token, ttl, renewable = self._request("login", "", lambda c: _grant(c.auth.approle.login(
                    role_id=role_id, secret_id=secret_id, mount_point=auth.mount)))
            else:
                token, ttl, renewable = self._request("login", "", lambda c: _grant(c.auth.cert.login(
                    name=auth.role or "", cert_pem=str(auth.cert_file), key_pem=str(auth.key_file),
                    mount_point=auth.mount)))
            self._token = token
            state = TokenState(now, ttl, renewable, ttl)
        self._set_token(state)
        log.info("vault_logged_in", method=auth.method, ttl=state.ttl, renewable=state.renewable)

    def _set_token(self, state: TokenState) -> None:
        self.token = state
        self.token_error = None
        self._metrics.vault_token_expiry.set(state.expires_at or 0)

    @staticmethod
    def _secret(file: Path | None, env: str | None, what: str) -> str:
        try:
            return read_secret(file=file, env=env)
        except ConfigError as exc:
            raise VaultError(f"cannot read the Vault {what}: {exc}", retryable=True) from None

    @staticmethod
    def _plain(file: Path, what: str) -> str:
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise VaultError(f"cannot read {what} {file}: {exc.strerror}", retryable=True) from None

    # ------------------------------------------------------------------ requests

    def _call(self, operation: str, what: str, fn: Callable[[Any], T]) -> T:
        """One authenticated request: token upkeep first; on 403 check the token and re-login once."""
        self._ensure_token()
        used = self._token
        try:
            return self._request(operation, what, fn)
        except VaultError as exc:
            if exc.status != 403:
                raise
            with self._auth_lock:  # concurrent jobs that hit the same dead token log in once
                if self._token == used:
                    if not self._token_rejected():
                        raise
                    log.info("vault_token_rejected", operation=operation, method=self.auth_method)
                    self._login()
        return self._request(operation, what, fn)

    def _token_rejected(self) -> bool:
        """After a 403: is the token itself invalid (expired, revoked), rather than the path denied?"""
        try:
            self._request("lookup", "", lambda c: _lookup(c.auth.token.lookup_self()))
        except VaultError as exc:
            if exc.status == 403:
                return True
            raise
        return False

    def _request(self, operation: str, what: str, fn: Callable[[Any], T]) -> T:
        """Send one request to the first node that answers, translating vendor errors and tracking
        reachability and per-node backoff; Vault is "down" only when no node answered."""
        now = self._clock()
        with self._state_lock:
            order = self._pool.order(now)
            retry_at = self._pool.next_attempt()
        if not order:
            raise VaultError(f"Vault unreachable ({self.last_error}); next attempt in {retry_at - now:.0f}s",
                             retryable=True)
        for attempt, index in enumerate(order):
            try:
                result = fn(self._nodes[index])
            except _VENDOR_ERRORS as exc:
                err = translate_error(operation, what, exc)
                if not _unreachable(err):
                    self._answered(index)  # the node answered; the request was refused
                    self._record(operation, err, index)
                    raise err from None
                with self._state_lock:
                    delay = self._pool.failed(index, self._clock(), error=str(err))
                last = attempt == len(order) - 1 or err.status == 429  # rate limits are the cluster's
                self._metrics.vault_node_failures.labels(self._pool.address(index)).inc()
                self._metrics.vault_node_up.labels(self._pool.address(index)).set(0)
                if not last:
                    log.warning("vault_node_failed", node=self._pool.address(index), error=str(err),
                                retry_in=round(delay, 1), next_node=self._pool.address(order[attempt + 1]))
                    continue
                self._record(operation, err, index)
                raise err from None
            self._answered(index)
            self._record(operation, None, index)
            return result
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _answered(self, index: int) -> None:
        with self._state_lock:
            failing = self._pool.failing(index)
            self._pool.succeeded(index)
        if failing:
            log.info("vault_node_answered", node=self._pool.address(index))
        self._metrics.vault_node_up.labels(self._pool.address(index)).set(1)

    def _record(self, operation: str, err: VaultError | None, index: int) -> None:
        now = self._clock()
        unreachable = err is not None and _unreachable(err)
        self._metrics.vault_requests.labels(
            operation, "success" if err is None else "unreachable" if unreachable else "error").inc()
        with self._state_lock:
            if unreachable:
                assert err is not None
                if self.up is not False:
                    self.down_since = now
                    log.warning("vault_unreachable", error=str(err),
                                retry_in=round(max(0.0, self._pool.next_attempt() - now), 1),
                                nodes_backing_off=self._pool.backing_off(now))
                self.up = False
                self.last_error = str(err)
            else:
                if self.up is False:
                    log.info("vault_reachable", down_for=round(now - (self.down_since or now), 1),
                             node=self._pool.address(index))
                self.up, self.down_since = True, None
                self.last_error = None if err is None else str(err)
            self.node = self._pool.address(self._pool.preferred)
        self._metrics.vault_up.set(1 if self.up else 0)


def _grant(resp: Any) -> tuple[str, float, bool]:
    """(token, ttl, renewable) of a login or renewal answer; the token is registered for redaction."""
    auth = resp["auth"]
    token = str(auth["client_token"])
    redact.register(token)
    return token, float(auth["lease_duration"]), bool(auth["renewable"])


def _lookup(resp: Any) -> tuple[float, bool, float]:
    """(ttl, renewable, creation_ttl) of a lookup-self answer."""
    data = resp["data"]
    return float(data.get("ttl") or 0), bool(data.get("renewable")), float(data.get("creation_ttl") or 0)


def _str_dict(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}
