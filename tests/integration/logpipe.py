"""Runs a command with its stdout+stderr written line by line to a log file that can be rotated.

    python logpipe.py LOG_PATH -- COMMAND ARGS...

Signals (sent to this process, not its group):
- SIGHUP: reopen LOG_PATH (after the file was renamed away: a rename rotation's "postrotate");
- SIGUSR1: copytruncate: copy LOG_PATH to LOG_PATH.1 and truncate it, between two lines (no line is
  lost in between, unlike logrotate's copytruncate which races the writer).
Each rotation done appends its name to LOG_PATH.done. Every line is also appended to LOG_PATH.all,
which is never rotated: the ground truth of what the command wrote. Each line is written with one write(2) on an
O_APPEND descriptor; the signal handler runs between two such writes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from types import FrameType


def main(argv: list[str]) -> int:
    path, command = argv[0], argv[argv.index("--") + 1:]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:  # the same descriptor number now writes to the new file
            new = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(new, fd)
            os.close(new)
        else:
            shutil.copyfile(path, path + ".1")
            os.ftruncate(fd, 0)
        with open(path + ".done", "a") as done:
            done.write(("reopen" if signum == signal.SIGHUP else "copytruncate") + "\n")

    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGUSR1, on_signal)
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    assert child.stdout is not None
    everything = os.open(path + ".all", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for line in iter(child.stdout.readline, b""):
        os.write(fd, line)
        os.write(everything, line)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
