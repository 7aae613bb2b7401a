"""journald's native protocol: structured log entries as datagrams to /run/systemd/journal/socket.

Spec: https://systemd.io/JOURNAL_NATIVE_PROTOCOL/. An entry is a list of fields `NAME=value\\n`; a value
holding a newline is sent as `NAME\\n` + its length (64-bit little endian) + the value + `\\n`. An entry too
large for one datagram is written to a sealed memfd whose descriptor is passed with SCM_RIGHTS.
`logging.py` renders each log event into fields (`journal_fields`); `JournalHandler` sends them and, when
the journal cannot be reached, writes the message to stderr instead: a log line is never lost silently.

No dependency: `systemd-python` has no wheels on PyPI (an sdist built against libsystemd-dev's headers,
so a compiler on every host), and the protocol is a few lines.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import logging
import os
import re
import socket
import struct
import sys
from collections.abc import Mapping
from typing import IO, Any

import orjson

__all__ = ["SOCKET", "JournalHandler", "encode_entry", "journal_fields", "stream_is_journal"]

SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "regwarden"
# syslog priorities (journalctl -p): structlog's level names to their numbers
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3, "critical": 2}
_NOT_FIELD_CHARS = re.compile(r"[^A-Z0-9_]")
# keys rendered into other fields, or the journal's own (it stamps the time itself)
_CONSUMED = frozenset({"event", "level", "timestamp", "exception"})


def field_name(key: str) -> str:
    """`REGWARDEN_<KEY>`: upper case, anything but A-Z, 0-9 and _ as _, at most 64 characters."""
    return ("REGWARDEN_" + _NOT_FIELD_CHARS.sub("_", key.upper()))[:64]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        return str(value)


def journal_fields(event_dict: Mapping[str, Any]) -> dict[str, str]:
    """The journal fields of one (already redacted) structlog event: MESSAGE (the one-line human form,
    with an exception's traceback after it), PRIORITY, SYSLOG_IDENTIFIER, REGWARDEN_EVENT and one
    REGWARDEN_<KEY> for each bound key."""
    event = str(event_dict.get("event", ""))
    context = {key: value for key, value in event_dict.items() if key not in _CONSUMED}
    message = " ".join([event, *(f"{key}={_text(value)}" for key, value in context.items())])
    if event_dict.get("exception"):
        message += "\n" + str(event_dict["exception"])
    fields = {
        "MESSAGE": message,
        "PRIORITY": str(PRIORITIES.get(str(event_dict.get("level", "info")).lower(), 6)),
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "REGWARDEN_EVENT": event,
    }
    for key, value in context.items():
        fields.setdefault(field_name(key), _text(value))
    return fields


def encode_entry(fields: Mapping[str, str]) -> bytes:
    """One entry in the native protocol's wire form."""
    parts: list[bytes] = []
    for name, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            parts.append(name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(name.encode() + b"=" + data + b"\n")
    return b"".join(parts)


def stream_is_journal(stream: IO[Any]) -> bool:
    """Whether `stream` is the journal stream systemd connected (JOURNAL_STREAM=<dev>:<inode> matches it)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in expected.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


class JournalHandler(logging.Handler):
    """Sends each record, rendered by its formatter as a JSON event dict, to journald as fields."""

    def __init__(self, address: str = SOCKET, fallback: IO[str] | None = None) -> None:
        super().__init__()
        self.address = address
        self.fallback = fallback
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            rendered = self.format(record)
            try:
                fields = journal_fields(orjson.loads(rendered))
            except orjson.JSONDecodeError:
                fields = journal_fields({"event": rendered, "level": record.levelname})
            entry = encode_entry(fields)
        except Exception:
            self.handleError(record)
            return
        try:
            self._send(entry)
        except OSError as exc:
            self._fall_back(fields, exc)

    def _send(self, entry: bytes) -> None:
        try:
            self._socket.sendto(entry, self.address)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(entry)

    def _send_memfd(self, entry: bytes) -> None:
        """An entry too large for a datagram: in a sealed memfd, passed as SCM_RIGHTS (no payload)."""
        fd = os.memfd_create("regwarden-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            with open(fd, "wb", closefd=False) as out:
                out.write(entry)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
            self._socket.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))], 0,
                                 self.address)
        finally:
            os.close(fd)

    def _fall_back(self, fields: Mapping[str, str], error: OSError) -> None:
        stream = self.fallback or sys.stderr
        with contextlib.suppress(Exception):
            stream.write(f"{fields['MESSAGE']} (journal unreachable: {error.strerror or error})\n")
            stream.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.close()
        super().close()
