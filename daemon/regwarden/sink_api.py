"""The contract between the core and sink plugins; the only regwarden module a sink imports.

A sink turns one `Notification` into one delivery attempt and says how it went (`Delivery`).
Retries, deduplication, grouping and pacing belong to the core, not to sinks.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from .config import Duration, read_secret
from .errors import ConfigError, SinkMisconfigured

__all__ = [
    "Alert",
    "Delivery",
    "Duration",
    "Notification",
    "Sink",
    "SinkMisconfigured",
    "SinkOptions",
    "classify_http_status",
    "read_secret",
    "read_secret_option",
]


@dataclass(frozen=True)
class Alert:
    """One alert as the sinks see it; `fingerprint` is the hash of its sorted labels."""

    labels: dict[str, str]
    annotations: dict[str, str]
    severity: Literal["info", "warning", "critical"]
    starts_at: datetime
    ends_at: datetime | None
    fingerprint: str

    @property
    def resolved(self) -> bool:
        return self.ends_at is not None

    @property
    def summary(self) -> str:
        return self.annotations.get("summary") or self.labels.get("alertname", "alert")


@dataclass(frozen=True)
class Notification:
    """What one sink is asked to deliver: a group of alerts that share `group_key`."""

    id: int
    group_key: str
    status: Literal["firing", "resolved"]
    alerts: tuple[Alert, ...]
    host: str
    receiver: str
    created_at: datetime
    common_labels: dict[str, str] = field(default_factory=dict)
    test: bool = False


@dataclass(frozen=True)
class Delivery:
    """The outcome of one attempt. `retry_after` (seconds) is a hint such as HTTP `Retry-After`."""

    ok: bool
    retryable: bool = False
    detail: str = ""
    retry_after: float | None = None

    @classmethod
    def success(cls, detail: str = "") -> Delivery:
        return cls(ok=True, detail=detail)


class SinkOptions(BaseModel):
    """Base for a sink's own options (the keys of its `[[sinks]]` table besides the common ones).

    A field's docstring is its description in docs/configuration.md."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


@runtime_checkable
class Sink(Protocol):
    name: str
    Options: ClassVar[type[SinkOptions]]

    def send(self, notification: Notification, *, timeout: float) -> Delivery: ...

    def check(self) -> None:
        """Validate config and secrets without sending; raise SinkMisconfigured."""


def classify_http_status(status: int, retry_after: str | None = None, detail: str = "") -> Delivery:
    """The one rule for HTTP answers: 2xx ok; 408/425/429/5xx retryable; other 4xx permanent."""
    hint = _parse_retry_after(retry_after)
    if 200 <= status < 300:
        return Delivery(ok=True, detail=detail or str(status))
    retryable = status in (408, 425, 429) or status >= 500
    return Delivery(ok=False, retryable=retryable, detail=detail or f"HTTP {status}", retry_after=hint)


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from datetime import UTC

    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def read_secret_option(option: str, file: Path | str | None = None, env: str | None = None) -> str:
    """The secret behind a sink's `<option>_file` or `<option>_env`, registered for redaction.

    A file must be a regular file that only its owner can read (0600). Raises SinkMisconfigured naming
    the option and the file or variable, never the value.
    """
    if file is not None:
        path = Path(file)
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            raise SinkMisconfigured(f"{option}_file {path}: {exc.strerror}") from None
        if not stat.S_ISREG(mode):
            raise SinkMisconfigured(f"{option}_file {path} is not a regular file")
        if mode & 0o077:
            raise SinkMisconfigured(
                f"{option}_file {path} is readable by group or others (mode {mode & 0o777:o}); chmod 600 it")
    elif env is not None and env not in os.environ:
        raise SinkMisconfigured(f"{option}_env: environment variable {env} is not set")
    try:
        value = read_secret(file=file, env=env)
    except ConfigError as exc:
        where = f"{option}_file {file}" if file is not None else option
        raise SinkMisconfigured(f"{where}: {exc.problems[0].message}") from None
    if not value:
        raise SinkMisconfigured(f"{option}: the secret is empty")
    return value
