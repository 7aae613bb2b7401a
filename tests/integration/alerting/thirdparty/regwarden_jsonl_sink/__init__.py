"""Example third-party sink: appends each notification as one JSON line to `path`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from regwarden.sink_api import Delivery, Notification, SinkMisconfigured, SinkOptions


class JsonLinesOptions(SinkOptions):
    path: Path


class JsonLinesSink:
    Options: ClassVar[type[SinkOptions]] = JsonLinesOptions

    def __init__(self, name: str, options: SinkOptions) -> None:
        assert isinstance(options, JsonLinesOptions)
        self.name, self._path = name, options.path

    def check(self) -> None:
        if not self._path.parent.is_dir():
            raise SinkMisconfigured(f"path {self._path}: directory does not exist")

    def send(self, notification: Notification, *, timeout: float) -> Delivery:
        line = {"status": notification.status, "group_key": notification.group_key, "host": notification.host,
                "alerts": [dict(a.labels) for a in notification.alerts]}
        try:
            with self._path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(line, sort_keys=True) + "\n")
        except OSError as exc:
            return Delivery(ok=False, retryable=True, detail=f"cannot append to {self._path}: {exc.strerror}")
        return Delivery.success()
