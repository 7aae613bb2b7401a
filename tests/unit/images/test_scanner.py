"""The scanner subprocess is bounded (images/scanner.py): timeout, exit status, output size."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from regwarden.errors import ImageCheckError
from regwarden.images.scanner import command_for, run_scanner


def alive(pid: int) -> bool:
    """Running (a killed child whose parent died may linger as a zombie until PID 1 reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_stdout_is_returned() -> None:
    """A scanner that exits 0 gives its stdout."""
    assert run_scanner(python("print('{}')"), timeout=10, max_output_bytes=1024) == b"{}\n"


def test_a_hanging_scanner_is_killed_with_its_children(tmp_path: Path) -> None:
    """Past the timeout the whole process group is killed (a child it started does not survive)."""
    pidfile = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; "
            f"time.sleep(3600)']); open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(3600)")
    with pytest.raises(ImageCheckError, match="did not finish within 1s") as caught:
        run_scanner(python(code), timeout=1, max_output_bytes=1024)
    assert caught.value.reason == "timeout"
    child, deadline = int(pidfile.read_text()), time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:  # SIGKILL is delivered asynchronously
        time.sleep(0.02)
    assert not alive(child)


def test_a_failing_scanner_names_its_status_and_stderr() -> None:
    """A non-zero exit is an error with the status and the end of stderr."""
    with pytest.raises(ImageCheckError, match="exited with status 3: no database") as caught:
        run_scanner(python("import sys; sys.stderr.write('no database'); sys.exit(3)"), timeout=10,
                    max_output_bytes=1024)
    assert caught.value.reason == "exit_status"


def test_a_flooding_scanner_is_killed() -> None:
    """A scanner printing past max_output_bytes is killed and reported."""
    with pytest.raises(ImageCheckError, match="printed more than 4096 bytes") as caught:
        run_scanner(python("import sys\nwhile True: sys.stdout.write('x' * 65536)"), timeout=30,
                    max_output_bytes=4096)
    assert caught.value.reason == "output_too_large"


def test_a_missing_scanner_is_an_error() -> None:
    """A command that cannot be started is an ImageCheckError, not an OSError."""
    with pytest.raises(ImageCheckError, match="cannot be started") as caught:
        run_scanner(["/nonexistent/trivy"], timeout=1, max_output_bytes=1024)
    assert caught.value.reason == "not_startable"


def test_placeholders_are_replaced_in_every_argument() -> None:
    """{image}, {repository} and {digest} are replaced, other text is kept."""
    assert command_for(["trivy", "image", "{image}", "--label={repository}"],
                       {"image": "r:5000/a@sha256:1", "repository": "a", "digest": "sha256:1"}) == \
        ["trivy", "image", "r:5000/a@sha256:1", "--label=a"]


def test_a_scan_is_killed_when_the_daemon_stops() -> None:
    """A set cancel event kills the scanner at once: reason cancelled (the check is queued again)."""
    import threading

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ImageCheckError, match="stopped with the daemon") as caught:
        run_scanner(python("import time; time.sleep(3600)"), timeout=600, max_output_bytes=1024, cancel=cancel)
    assert caught.value.reason == "cancelled"
