"""The one place logging is configured: structlog to stderr (JSON or console) or natively to journald,
secrets redacted.

Log events are snake_case facts (`credential_applied`) with bound context; stdlib logging from
libraries (apscheduler, urllib3, docker) is routed through the same processors.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, WrappedLogger

from .journald import SOCKET, JournalHandler, stream_is_journal
from .redact import scrub

__all__ = ["configure_logging", "redact_processor"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def redact_processor(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Replace registered secret values and values of secret-named keys (on by default)."""
    return {key: scrub(value, key) for key, value in event_dict.items()}


def _scrub_exception(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    if "exception" in event_dict and isinstance(event_dict["exception"], str):
        event_dict["exception"] = scrub(event_dict["exception"])
    return event_dict


def configure_logging(fmt: Literal["auto", "json", "console", "journald"] = "auto", level: str = "info",
                      stream: Any = None, journal_socket: str = SOCKET) -> None:
    """Configure structlog and stdlib logging. `auto`: journald when `stream` is the journal stream
    systemd connected, else console on a TTY and JSON otherwise."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "journald" if stream_is_journal(stream) else "console" if stream.isatty() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        redact_processor,
    ]
    # journald: the handler turns the JSON event dict into journal fields (journald.journal_fields)
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=stream.isatty()) if fmt == "console"
                     else structlog.processors.JSONRenderer())
    tail: list[Any] = [] if fmt == "console" else [structlog.processors.format_exc_info, _scrub_exception]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
    )
    handler: logging.Handler = (JournalHandler(journal_socket, fallback=stream) if fmt == "journald"
                                else logging.StreamHandler(stream))
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level, logging.INFO))
    for noisy in ("apscheduler", "urllib3", "docker", "hvac"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
