"""Native journald logging: each log event reaches a real AF_UNIX datagram socket (standing in for
/run/systemd/journal/socket) as the fields of journald's native protocol."""

from __future__ import annotations

import array
import fcntl
import io
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from regwarden import redact
from regwarden.journald import encode_entry, journal_fields, stream_is_journal
from regwarden.logging import configure_logging


def parse_entry(data: bytes) -> dict[str, str]:
    """Decode one entry as journald does (both the `NAME=value` and the length-prefixed form)."""
    fields: dict[str, str] = {}
    while data:
        line, sep, rest = data.partition(b"\n")
        assert sep, "an entry ends with a newline"
        if b"=" in line:
            name, _, value = line.partition(b"=")
            data = rest
        else:
            name = line
            (size,) = struct.unpack("<Q", rest[:8])
            value, data = rest[8:8 + size], rest[8 + size:]
            assert data[:1] == b"\n"
            data = data[1:]
        fields[name.decode()] = value.decode()
    return fields


class Journal:
    """A bound datagram socket; `.entries()` returns what arrived, including memfd-passed entries."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.memfd_entries = 0

    def entries(self) -> list[dict[str, str]]:
        out = []
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(4))
            except BlockingIOError:
                return out
            for level, kind, payload in ancillary:
                assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
                (fd,) = array.array("i", payload[:4])
                # journald refuses an unsealed memfd: it must not change after it was sent
                assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_WRITE
                with os.fdopen(fd, "rb") as memfd:  # journald maps it; the offset is the sender's
                    data = os.pread(memfd.fileno(), os.fstat(fd).st_size, 0)
                self.memfd_entries += 1
            out.append(parse_entry(data))


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    sink = Journal(tmp_path / "journal.socket")
    configure_logging("journald", "debug", stream=io.StringIO(), journal_socket=sink.path)
    yield sink
    sink.sock.close()
    configure_logging("json", "info", stream=io.StringIO())


def test_an_event_becomes_fields_with_priority_identifier_and_context(journal: Journal) -> None:
    """MESSAGE, PRIORITY from the level, SYSLOG_IDENTIFIER, REGWARDEN_EVENT and each bound key."""
    log = structlog.get_logger("test")
    log.info("credential_applied", credential="internal-ci", version=3)
    log.warning("probe_failed", registry="internal")
    log.error("rotation_failed", **{"step-name": "verify"})
    info, warning, error = journal.entries()
    assert info["MESSAGE"] == "credential_applied credential=internal-ci version=3"
    assert (info["PRIORITY"], info["SYSLOG_IDENTIFIER"], info["REGWARDEN_EVENT"]) == ("6", "regwarden",
                                                                                      "credential_applied")
    assert (info["REGWARDEN_CREDENTIAL"], info["REGWARDEN_VERSION"]) == ("internal-ci", "3")
    assert (warning["PRIORITY"], warning["REGWARDEN_REGISTRY"]) == ("4", "internal")
    assert (error["PRIORITY"], error["REGWARDEN_STEP_NAME"]) == ("3", "verify")
    assert "REGWARDEN_TIMESTAMP" not in info and "REGWARDEN_LEVEL" not in info


def test_values_with_newlines_use_the_length_prefixed_form(journal: Journal) -> None:
    """A multi-line value (an exception's traceback, a config problem list) arrives whole."""
    log = structlog.get_logger("test")
    try:
        raise ValueError("first line\nsecond line")
    except ValueError:
        log.exception("source_crashed", problems="a\nb")
    (entry,) = journal.entries()
    assert entry["REGWARDEN_PROBLEMS"] == "a\nb"
    assert entry["MESSAGE"].startswith("source_crashed problems=a\nb\nTraceback")
    assert "second line" in entry["MESSAGE"] and entry["PRIORITY"] == "3"
    assert b"REGWARDEN_PROBLEMS\n" in encode_entry({"REGWARDEN_PROBLEMS": "a\nb"})


def test_an_entry_too_large_for_a_datagram_goes_through_a_sealed_memfd(journal: Journal) -> None:
    """Past the socket's datagram limit the entry is passed as a memfd (SCM_RIGHTS), not lost."""
    journal.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    big = "x" * (400 * 1024)
    structlog.get_logger("test").info("big_event", payload=big)
    (entry,) = journal.entries()
    assert len(entry.get("REGWARDEN_PAYLOAD", "")) == len(big) and journal.memfd_entries == 1, sorted(entry)


def test_an_unreachable_journal_falls_back_to_the_stream(tmp_path: Path) -> None:
    """No socket: the message goes to stderr (the stream) with the reason, and logging goes on."""
    stream = io.StringIO()
    configure_logging("journald", "info", stream=stream, journal_socket=str(tmp_path / "missing.socket"))
    try:
        log = structlog.get_logger("test")
        log.info("daemon_started", version="1.0")
        log.info("daemon_stopping")
    finally:
        configure_logging("json", "info", stream=io.StringIO())
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("daemon_started version=1.0 (journal unreachable: ") and len(lines) == 2


def test_registered_secrets_are_scrubbed_from_journal_fields(journal: Journal) -> None:
    """A secret value bound to a log event never reaches the journal, in any field."""
    secret = "s3cr3t-journal-value-" + os.urandom(4).hex()
    redact.register(secret)
    structlog.get_logger("test").warning("vault_login_failed", detail=f"token {secret} refused")
    (entry,) = journal.entries()
    assert all(secret not in value for value in entry.values()) and "refused" in entry["REGWARDEN_DETAIL"]


def test_auto_picks_journald_only_for_the_stream_systemd_connected(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """JOURNAL_STREAM names the device:inode of the journal stream; another stream is not it."""
    with (tmp_path / "stream").open("w") as stream, (tmp_path / "other").open("w") as other:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert stream_is_journal(stream) and not stream_is_journal(other)
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert not stream_is_journal(stream)
        assert not stream_is_journal(io.StringIO())


def test_field_names_are_what_journald_accepts() -> None:
    """Keys become upper-case A-Z0-9_ names under REGWARDEN_, at most 64 characters."""
    fields = journal_fields({"event": "e", "level": "info", "weird key.ü": 1, "k" * 80: "v"})
    names = [name for name in fields if name.startswith("REGWARDEN_") and name != "REGWARDEN_EVENT"]
    assert names == ["REGWARDEN_WEIRD_KEY__", "REGWARDEN_" + "K" * 54]
