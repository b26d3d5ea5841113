"""Quiet Beam's worker processes: their INFO start-up and shut-down lines (about 20 per worker)
go straight to the inherited stderr, outside this process's logging configuration.

Beam's multi-process runner starts each worker with the parent's stderr and gives it no way
to set its log level (the workers receive no pipeline options). So, for the duration of a
run, file descriptor 2 is a pipe, and a thread copies to the real stderr every line except the
workers' own below-WARNING log lines and known noise. Lines of this process (errors, progress)
pass unchanged. After a SIGINT everything the workers print (their interrupted stacks) is
dropped, unless --debug. With --log-format json each copied line becomes one JSON object, so a
log collector never sees a plain worker line mixed into the JSON stream.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator

from pipeline.logs import json_entry

# Python's default log format in the workers (logging.basicConfig): LEVEL:logger:message
_WORKER_LINE = re.compile(rb"^(DEBUG|INFO):[\w.]+:")
_NOISE = (b"No semi_persistent_directory found", b"apitools not found")
_LEVELED = re.compile(rb"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):([\w.]+):(.*)$", re.S)


def keep_line(line: bytes, verbose: bool) -> bool:
    """Whether a line written to stderr during a run reaches the terminal."""
    if any(n in line for n in _NOISE):
        return False
    return verbose or not _WORKER_LINE.match(line)


def as_json_line(line: bytes) -> bytes:
    """One stderr line as a JSON log object; a line that already is one passes unchanged. Worker
    lines keep their level and logger; anything else (a traceback line) is level "error"."""
    text = line.rstrip(b"\r\n")
    if text.lstrip().startswith(b"{"):
        return text + b"\n"
    leveled = _LEVELED.match(text)
    if leveled:
        level, logger, message = (part.decode("utf-8", "replace") for part in leveled.groups())
        level = level.lower()
    else:
        level, logger, message = "error", "beam-worker", text.decode("utf-8", "replace")
    return json_entry(level, logger, message).encode() + b"\n"


@contextlib.contextmanager
def filtered_stderr(verbose: bool, dropping: Callable[[], bool], json_lines: bool = False) -> Iterator[None]:
    """Filter fd 2 for the duration of the block (see the module docstring). `dropping()` turns
    true after an interrupt: from then on nothing is copied."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to filter
        yield
        return
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def pump() -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            for line in pipe:
                if dropping() or not keep_line(line, verbose):
                    continue
                if json_lines and line.strip():
                    line = as_json_line(line)
                with contextlib.suppress(OSError):
                    os.write(saved, line)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)  # our end of the pipe closes; the pump ends when the workers' copies close
        thread.join(timeout=5)
        os.close(saved)
