"""Scratch space of one run (staging files, the run's counters), and clean-up of killed runs' scratch.

Staging files hold sanitized rows (pseudonyms included) and are never part of the output:
a run removes its own when it ends, and removes those of earlier runs that were killed.
A run holds an exclusive lock on its staging directory while it lives, so a directory
whose lock can be taken belongs to a dead run.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile

from pipeline.tables import is_remote

PREFIX = ".staging-"
LOCK = ".lock"


class Staging:
    """A locked scratch directory; `close()` removes it."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(path)
        self._lock = os.open(os.path.join(path, LOCK), os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock)


def make_staging(out: str, run_id: str) -> Staging:
    """Staging beside a local output (same disk), in the temp directory for a URI; stale staging
    directories of killed runs are removed first."""
    if is_remote(out):
        parent = tempfile.gettempdir()
    else:
        os.makedirs(out, exist_ok=True)
        parent = out
    remove_stale(parent)
    return Staging(os.path.join(parent, f"{PREFIX}{run_id}"))


def remove_stale(parent: str) -> list[str]:
    """Remove `.staging-*` directories under `parent` whose run is gone (its lock is free)."""
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(parent, name)
        if not name.startswith(PREFIX) or not os.path.isdir(path):
            continue
        try:
            fd = os.open(os.path.join(path, LOCK), os.O_RDWR)
        except FileNotFoundError:
            fd = None  # an older layout, or killed before its lock existed
        except OSError:
            continue
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live run
        shutil.rmtree(path, ignore_errors=True)
        if fd is not None:
            os.close(fd)
        removed.append(path)
    return removed
