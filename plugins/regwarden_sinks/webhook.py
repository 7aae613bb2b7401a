"""`webhook` sink: POST each notification as a versioned JSON document, optionally signed.

The body follows schema version "1" (see `payload` and the README). With a key (`secret_file` or
`secret_env`) every request carries `X-Regwarden-Timestamp` (Unix seconds) and
`X-Regwarden-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`. The URL may itself be a
secret (`url_file`, `url_env`): neither it nor the key appears in a `Delivery`, an exception or a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from pydantic import Field, field_validator, model_validator

from regwarden.sink_api import (
    Delivery,
    Duration,
    Notification,
    SinkMisconfigured,
    SinkOptions,
    classify_http_status,
    read_secret_option,
)

__all__ = ["SCHEMA_VERSION", "WebhookOptions", "WebhookSink", "payload", "signature"]

SCHEMA_VERSION = "1"
_RESERVED = ("content-type", "content-length", "host", "user-agent", "x-regwarden-")
_SECRET_HEADERS = ("authorization", "proxy-authorization", "cookie")


class WebhookOptions(SinkOptions):
    url: str | None = None
    """Endpoint URL (one of url, url_file, url_env)."""
    url_file: Path | None = None
    """File holding the URL, when the URL itself is a secret (mode 0600)."""
    url_env: str | None = None
    """Environment variable holding the URL."""
    secret_file: Path | None = None
    """File holding the HMAC-SHA256 key that signs requests (mode 0600); no key: unsigned."""
    secret_env: str | None = None
    """Environment variable holding the HMAC key."""
    timeout: Duration | None = None
    """Upper bound per request (the core's send_timeout applies too)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers (no credentials here)."""
    ca_cert: Path | None = None
    """CA bundle for https URLs; default: the system's."""

    @model_validator(mode="after")
    def _sources(self) -> WebhookOptions:
        if sum(v is not None for v in (self.url, self.url_file, self.url_env)) != 1:
            raise ValueError("set exactly one of url, url_file, url_env")
        if self.secret_file is not None and self.secret_env is not None:
            raise ValueError("set at most one of secret_file, secret_env")
        if self.url is not None and not _plausible(self.url):
            raise ValueError("url: not an http:// or https:// URL")
        return self

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            low = name.lower()
            if low.startswith(_RESERVED):
                raise ValueError(f"header {name!r} is set by regwarden")
            if low in _SECRET_HEADERS:
                raise ValueError(f"header {name!r} would put a secret inline; use url_file or secret_file")
        return value


class WebhookSink:
    Options: ClassVar[type[SinkOptions]] = WebhookOptions

    def __init__(self, name: str, options: SinkOptions) -> None:
        assert isinstance(options, WebhookOptions)
        self.name = name
        self._options = options

    def check(self) -> None:
        self._url()
        self._key()
        ca = self._options.ca_cert
        if ca is not None and not ca.is_file():
            raise SinkMisconfigured(f"ca_cert {ca}: no such file")

    def send(self, notification: Notification, *, timeout: float) -> Delivery:
        try:
            url, key = self._url(), self._key()
        except SinkMisconfigured as exc:
            return Delivery(ok=False, retryable=False, detail=str(exc))
        limit = self._options.timeout
        seconds = min(timeout, limit.total_seconds()) if isinstance(limit, timedelta) else timeout
        body = json.dumps(payload(notification), separators=(",", ":"), sort_keys=True).encode()
        return _Client(url, self._options, seconds).post(body, key)

    def _url(self) -> str:
        o = self._options
        if o.url is not None:
            return o.url
        url = read_secret_option("url", o.url_file, o.url_env)
        if not _plausible(url):
            raise SinkMisconfigured("url: not an http:// or https:// URL")  # the URL may be a secret: not shown
        return url

    def _key(self) -> bytes | None:
        o = self._options
        if o.secret_file is None and o.secret_env is None:
            return None
        return read_secret_option("secret", o.secret_file, o.secret_env).encode()


def _plausible(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class _Client:
    """One POST through requests, no redirects followed, no retries (the core owns retries)."""

    def __init__(self, url: str, options: WebhookOptions, timeout: float) -> None:
        self._url, self._options, self._timeout = url, options, timeout

    def post(self, body: bytes, key: bytes | None) -> Delivery:
        headers = {**self._options.headers, "Content-Type": "application/json", "User-Agent": _user_agent()}
        if key is not None:
            stamp = str(int(time.time()))
            headers["X-Regwarden-Timestamp"] = stamp
            headers["X-Regwarden-Signature"] = signature(key, stamp, body)
        verify: str | bool = str(self._options.ca_cert) if self._options.ca_cert else True
        try:
            resp = requests.post(self._url, data=body, headers=headers, timeout=self._timeout, verify=verify,
                                 allow_redirects=False)
        except requests.Timeout:
            return Delivery(ok=False, retryable=True, detail=f"webhook: no answer within {self._timeout:g}s")
        except requests.exceptions.SSLError:
            return Delivery(ok=False, retryable=True, detail="webhook: TLS handshake failed")
        except requests.ConnectionError as exc:  # its text names the URL: never shown
            refused = "refused" in str(exc).lower()
            return Delivery(ok=False, retryable=True,
                            detail="webhook: connection refused" if refused else "webhook: connection failed")
        except requests.RequestException as exc:
            return Delivery(ok=False, retryable=False, detail=f"webhook: request failed ({type(exc).__name__})")
        with resp:
            return classify_http_status(resp.status_code, resp.headers.get("Retry-After"),
                                        f"webhook: HTTP {resp.status_code}")


def signature(key: bytes, timestamp: str, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256 over `<timestamp>.<body>` (the value of `X-Regwarden-Signature`)."""
    return "sha256=" + hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def payload(notification: Notification) -> dict[str, Any]:
    """The JSON document of schema version "1"; fields are only ever added within a version."""
    n = notification
    return {
        "version": SCHEMA_VERSION,
        "notification_id": n.id,
        "status": n.status,
        "receiver": n.receiver,
        "group_key": n.group_key,
        "host": n.host,
        "test": n.test,
        "created_at": _time(n.created_at),
        "common_labels": n.common_labels,
        "alerts": [
            {"status": "resolved" if a.resolved else "firing", "labels": a.labels, "annotations": a.annotations,
             "severity": a.severity, "startsAt": _time(a.starts_at),
             "endsAt": _time(a.ends_at) if a.ends_at is not None else None, "fingerprint": a.fingerprint}
            for a in n.alerts
        ],
    }


def _time(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _user_agent() -> str:
    try:
        return f"regwarden/{version('regwarden')}"
    except PackageNotFoundError:
        return "regwarden"
