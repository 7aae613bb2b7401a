"""`alertmanager` sink: posts alerts to Prometheus Alertmanager's API v2 (`POST /api/v2/alerts`).

Each alert becomes `{labels, annotations, startsAt, endsAt, generatorURL}`; the alert's severity is added
as the `severity` label. Firing alerts carry no `endsAt`: Alertmanager keeps them for its
`resolve_timeout`, and the core re-posts active alerts every `resend_interval` (60 s) so they do not time
out. A resolved alert carries its explicit `endsAt`. Authentication (basic or bearer) comes from files
only; neither the password nor the token appears in a `Delivery`, an exception or a log line.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import requests
from pydantic import model_validator

from regwarden.sink_api import (
    Alert,
    Delivery,
    Duration,
    Notification,
    SinkMisconfigured,
    SinkOptions,
    classify_http_status,
    read_secret_option,
)

__all__ = ["AlertmanagerOptions", "AlertmanagerSink", "payload"]

_TEST_TTL = timedelta(minutes=5)  # a test alert ends by itself


class AlertmanagerOptions(SinkOptions):
    url: str
    """Alertmanager's base URL, e.g. http://alertmanager:9093 (a path prefix behind a proxy is fine)."""
    timeout: Duration | None = None
    """Upper bound per request (the core's send_timeout applies too)."""
    ca_cert: Path | None = None
    """CA bundle for an https URL; default: the system's."""
    basic_auth_username: str | None = None
    """Basic auth user (with basic_auth_password_file)."""
    basic_auth_password_file: Path | None = None
    """File holding the basic auth password (mode 0600)."""
    bearer_token_file: Path | None = None
    """File holding a bearer token, instead of basic auth (mode 0600)."""
    generator_url: str | None = None
    """Where a human can see why the alert fired (e.g. regwarden's /status)."""

    @model_validator(mode="after")
    def _consistent(self) -> AlertmanagerOptions:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("url: expected http://HOST:PORT or https://HOST:PORT")
        if (self.basic_auth_username is None) != (self.basic_auth_password_file is None):
            raise ValueError("basic_auth_username and basic_auth_password_file go together")
        if self.basic_auth_username is not None and self.bearer_token_file is not None:
            raise ValueError("set basic auth or bearer_token_file, not both")
        return self


class AlertmanagerSink:
    Options: ClassVar[type[SinkOptions]] = AlertmanagerOptions
    resend_interval: ClassVar[float] = 60.0  # the core re-posts active alerts this often

    def __init__(self, name: str, options: SinkOptions) -> None:
        assert isinstance(options, AlertmanagerOptions)
        self.name = name
        self._options = options
        self._endpoint = options.url.rstrip("/") + "/api/v2/alerts"

    def check(self) -> None:
        self._auth()
        ca = self._options.ca_cert
        if ca is not None and not ca.is_file():
            raise SinkMisconfigured(f"ca_cert {ca}: no such file")

    def send(self, notification: Notification, *, timeout: float) -> Delivery:
        try:
            auth, headers = self._auth()
        except SinkMisconfigured as exc:
            return Delivery(ok=False, retryable=False, detail=str(exc))
        limit = self._options.timeout
        seconds = min(timeout, limit.total_seconds()) if limit is not None else timeout
        verify: str | bool = str(self._options.ca_cert) if self._options.ca_cert else True
        body = payload(notification, self._options.generator_url)
        try:
            resp = requests.post(self._endpoint, json=body, auth=auth, headers=headers, timeout=seconds,
                                 verify=verify, allow_redirects=False)
        except requests.Timeout:
            return Delivery(ok=False, retryable=True, detail=f"alertmanager: no answer within {seconds:g}s")
        except requests.exceptions.SSLError:
            return Delivery(ok=False, retryable=True, detail="alertmanager: TLS handshake failed")
        except requests.ConnectionError:
            return Delivery(ok=False, retryable=True, detail="alertmanager: connection failed")
        except requests.RequestException as exc:
            return Delivery(ok=False, retryable=False, detail=f"alertmanager: request failed ({type(exc).__name__})")
        with resp:
            reason = resp.text[:200].strip() if not resp.ok else ""
            return classify_http_status(resp.status_code, resp.headers.get("Retry-After"),
                                        f"alertmanager: HTTP {resp.status_code}" + (f": {reason}" if reason else ""))

    def _auth(self) -> tuple[tuple[str, str] | None, dict[str, str]]:
        o = self._options
        if o.basic_auth_username is not None:
            return (o.basic_auth_username, read_secret_option("basic_auth_password", o.basic_auth_password_file)), {}
        if o.bearer_token_file is not None:
            return None, {"Authorization": "Bearer " + read_secret_option("bearer_token", o.bearer_token_file)}
        return None, {}


def payload(notification: Notification, generator_url: str | None = None) -> list[dict[str, Any]]:
    """The body of `POST /api/v2/alerts`: one postable alert per alert of the notification."""
    return [_postable(a, notification, generator_url) for a in notification.alerts]


def _postable(alert: Alert, notification: Notification, generator_url: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "labels": {"severity": alert.severity, **alert.labels},
        "annotations": dict(alert.annotations),
        "startsAt": _time(alert.starts_at),
    }
    if alert.ends_at is not None:
        item["endsAt"] = _time(alert.ends_at)
    elif notification.test:
        item["endsAt"] = _time(notification.created_at + _TEST_TTL)
    if generator_url:
        item["generatorURL"] = generator_url
    return item


def _time(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
