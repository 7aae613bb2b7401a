"""The `log` sink under the sink contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from tests.unit.sinks.contract import SinkContract


class _LogReceiver:
    """Captures structlog events for as long as it is open: the log sink's receiving end."""

    def __init__(self) -> None:
        self._capture = structlog.testing.capture_logs()
        self.events = self._capture.__enter__()

    def close(self) -> None:
        self._capture.__exit__(None, None, None)


class TestLogSinkContract(SinkContract):
    sink_type = "log"

    def options(self, tmp_path: Path, base_url: str, canary: str) -> dict[str, Any]:
        return {"level": "warning"}

    def make_server(self, canary: str) -> Any:
        return _LogReceiver()

    def accepted(self, server: Any) -> int:
        return sum(1 for e in server.events if e["event"] in ("alert_firing", "alert_resolved"))
