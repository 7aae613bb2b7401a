"""Run the configured vulnerability scanner for one image, bounded: its own process group (killed
whole on timeout or too much output), stdout to a private temp file, a size limit.

`ImageCheckError` names what went wrong (timeout, exit status with the end of stderr, output too
large, not startable); the caller parses stdout as a Trivy report.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence

from ..errors import ImageCheckError
from ..redact import scrub_text

__all__ = ["command_for", "run_scanner"]

_POLL = 0.1
_STDERR_TAIL = 400


def command_for(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """The command with "{image}", "{registry}", "{repository}" and "{digest}" replaced."""
    out = []
    for arg in template:
        text = arg
        for key, value in values.items():
            text = text.replace("{" + key + "}", value)
        out.append(text)
    return out


def run_scanner(argv: Sequence[str], *, timeout: float, max_output_bytes: int,
                cancel: threading.Event | None = None) -> bytes:
    """The scanner's stdout; ImageCheckError when it fails, hangs past `timeout` or prints too much.
    When `cancel` is set (the daemon stops) the scanner is killed: reason "cancelled"."""
    name = os.path.basename(argv[0])
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                       start_new_session=True, close_fds=True)
        except OSError as exc:
            raise ImageCheckError(f"scanner {name} cannot be started: {exc.strerror or exc}",
                                  reason="not_startable") from None
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            if cancel is not None and cancel.is_set():
                _kill_group(process)
                raise ImageCheckError(f"scanner {name} was stopped with the daemon", reason="cancelled")
            if time.monotonic() >= deadline:
                _kill_group(process)
                raise ImageCheckError(f"scanner {name} did not finish within {timeout:g}s and was killed",
                                      reason="timeout")
            if os.fstat(out.fileno()).st_size > max_output_bytes:
                _kill_group(process)
                raise ImageCheckError(f"scanner {name} printed more than {max_output_bytes} bytes and was killed",
                                      reason="output_too_large")
            time.sleep(_POLL)
        _kill_group(process)  # what it left running in its group
        if process.returncode != 0:
            err.seek(0, os.SEEK_END)
            err.seek(max(0, err.tell() - _STDERR_TAIL))
            tail = scrub_text(err.read().decode("utf-8", "replace").strip())
            raise ImageCheckError(f"scanner {name} exited with status {process.returncode}"
                                  + (f": {tail}" if tail else ""), reason="exit_status")
        if os.fstat(out.fileno()).st_size > max_output_bytes:
            raise ImageCheckError(f"scanner {name} printed more than {max_output_bytes} bytes",
                                  reason="output_too_large")
        out.seek(0)
        return out.read()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
