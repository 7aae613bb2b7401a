"""`log` sink: every notification becomes one structured log line."""

from __future__ import annotations

from typing import ClassVar, Literal

import structlog

from regwarden.sink_api import Delivery, Notification, SinkOptions

__all__ = ["LogSink"]


class LogOptions(SinkOptions):
    level: Literal["info", "warning", "error"] = "warning"
    """Log level of the alert_firing / alert_resolved lines."""


class LogSink:
    Options: ClassVar[type[SinkOptions]] = LogOptions

    def __init__(self, name: str, options: SinkOptions) -> None:
        assert isinstance(options, LogOptions)
        self.name = name
        self._level = options.level
        self._log = structlog.get_logger("regwarden.sink.log").bind(sink=name)

    def check(self) -> None:
        return None

    def send(self, notification: Notification, *, timeout: float) -> Delivery:
        for alert in notification.alerts:
            getattr(self._log, self._level)(
                "alert_resolved" if alert.resolved else "alert_firing",
                alertname=alert.labels.get("alertname", ""),
                severity=alert.severity,
                summary=alert.summary,
                labels=alert.labels,
                fingerprint=alert.fingerprint,
                test=notification.test,
            )
        return Delivery.success()
