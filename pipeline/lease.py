"""Leases on a local output: writers, erasure/maintenance and commit phases never overlap badly.

A run writes its final Parquet files into the table directories before it commits them,
and `subject erase` / `maintain` vacuum at zero retention: every file no version names is
deleted. Without a lease a run that starts between an erase's check for live runs and its
vacuum loses files it is about to commit (its commit then names missing files), and an
erase can miss rows committed under it. So (docs/erasure-and-maintenance.md):

- `DIR/_maintenance.lock`: every writer (a run, each `--watch` micro-batch, a `stream` job)
  holds a *shared* flock on it from before it opens the tables until its report is written;
  each worker process also holds it while it writes a file (so a worker that outlives a
  killed driver cannot write into a table being vacuumed). `subject erase` and `maintain`
  take it *exclusively* (never waiting): refused while any writer holds it; a writer that
  starts during one waits for it to end.
- `DIR/_commit.lock`: the commit phase of a run (the check that no table moved, one commit
  per table, the report) holds it exclusively, so two runs' commits never interleave table
  by table. A replacing run that finds it held fails (exit 4, one line); an appending run
  waits for it.

flock locks are released by the kernel when their process dies (SIGKILL included), so a
killed holder never blocks anyone. They work on a local file system only. On an S3 output the
same three leases are objects under DIR/_leases/ created with a conditional put and renewed
until released (pipeline/store_lease.py); every function here picks one or the other by the
location (docs/tables.md, Locations).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator

from pipeline.location import scheme

LEASE_FILE = "_maintenance.lock"
COMMIT_LOCK = "_commit.lock"


class LeaseBusy(RuntimeError):
    """The lock is held by another process (one line for the user)."""


def _open(directory: str, name: str) -> int:
    os.makedirs(directory, exist_ok=True)
    return os.open(os.path.join(directory, name), os.O_RDWR | os.O_CREAT, 0o600)


def check_held() -> None:
    """Before each commit and each vacuum: fail (store_lease.LeaseLost) if a lease on an object
    store could not be renewed in time. flock leases cannot be lost while their process lives."""
    from pipeline import store_lease

    store_lease.check()


@contextlib.contextmanager
def _stored(take: Callable[[], object]) -> Iterator[None]:
    lease = take()
    try:
        yield
    finally:
        lease.release()  # type: ignore[attr-defined]


@contextlib.contextmanager
def _held(directory: str, name: str, mode: int, wait: bool, on_wait: Callable[[], None] | None) -> Iterator[None]:
    fd = _open(directory, name)
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise LeaseBusy(os.path.join(directory, name)) from None
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)


def writer(directory: str, on_wait: Callable[[], None] | None = None) -> contextlib.AbstractContextManager[None]:
    """Shared lease of a writer on a local output, for its whole life: waits while an erase or a
    maintain holds the output (`on_wait` is called once before waiting)."""
    if scheme(directory):
        from pipeline import store_lease

        return _stored(lambda: store_lease.shared(directory, "run", on_wait))
    return _held(directory, LEASE_FILE, fcntl.LOCK_SH, True, on_wait)


def maintenance(directory: str) -> contextlib.AbstractContextManager[None]:
    """Exclusive lease of `subject erase` / `maintain`: LeaseBusy at once if a writer or another
    erase/maintain holds the output."""
    if scheme(directory):
        from pipeline import store_lease

        return _stored(lambda: store_lease.exclusive(directory, store_lease.EXCLUSIVE, "maintenance", False, None,
                                                     lambda: LeaseBusy(directory), shared=store_lease.SHARED))
    return _held(directory, LEASE_FILE, fcntl.LOCK_EX, False, None)


def committing(directory: str, wait: bool, on_wait: Callable[[], None] | None = None,
               ) -> contextlib.AbstractContextManager[None]:
    """Exclusive lock of a run's commit phase: LeaseBusy if held and not `wait`."""
    if scheme(directory):
        from pipeline import store_lease

        return _stored(lambda: store_lease.exclusive(directory, store_lease.COMMIT, "commit", wait, on_wait,
                                                     lambda: LeaseBusy(directory)))
    return _held(directory, COMMIT_LOCK, fcntl.LOCK_EX, wait, on_wait)


class FileGuard:
    """A worker's shared lease while it writes one data file into a local output (see module doc).

    Picklable (a path only). Each write opens the lock file, takes the lease and closes it
    (three system calls): writer threads of one worker never release each other's lease.
    Without a driver holding its lease (killed), an erase or maintain may hold the output
    exclusively: the write fails rather than put a file into a table being vacuumed. On an S3
    output a worker has no lease object of its own: before each file it checks (one HEAD) that
    no live exclusive lease exists (docs/tables.md, Locations, says what this leaves open)."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if self.directory is None:
            yield
            return
        if scheme(self.directory):  # an object store: no lease to hold, but none may be held exclusively
            from pipeline import store_lease

            if store_lease.exclusive_held(self.directory):
                raise RuntimeError(f"{self.directory}: a `subject erase` or `maintain` holds the output, so the "
                                   "run that started this worker has ended; no file was written")
            yield
            return
        fd = _open(self.directory, LEASE_FILE)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(f"{self.directory}: a `subject erase` or `maintain` holds the output, so the "
                                   "run that started this worker has ended; no file was written") from None
            yield
        finally:
            os.close(fd)
