"""Alerting: Signals become alerts, grouped, deduplicated and delivered to sinks through a durable outbox.

`pipeline.AlertPipeline` is the daemon component; `model` and `policy` hold the pure decisions;
`store` the SQLite tables; `outbox` the per-sink delivery workers; `cli` the `regwarden alerts` group.

Sinks may declare two optional class attributes the pipeline honours:
`pacing` (seconds between two sends, e.g. Slack 1.0; `[[sinks]] pacing` overrides it) and
`resend_interval` (seconds after which active alerts are sent again, e.g. Alertmanager 60.0).
"""

from __future__ import annotations

__all__: list[str] = []
