"""Physical clean-up of the output's Delta tables, shared by `subject erase` and `maintain`.

A Delta DELETE or overwrite only marks files as removed; the bytes stay on disk until a
VACUUM deletes them, and plain Parquet readers of the directory keep seeing them. Files a
killed run wrote but never committed (orphans) are not named by the log at all. `vacuum`
here removes both, at once (zero retention): the output is exactly the current version.

The table log is checked too: `log_files_holding` finds any log file (commit JSON,
checkpoint Parquet, leftover commit temp files) holding one of the given values, and
`expire_log` writes a checkpoint and deletes every log entry below it, so values recorded by
older commits (a DELETE predicate, column statistics of a table created without the
statistics configuration) are gone from the log as well.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

from pipeline import lease
from pipeline.commit import kill_point
from pipeline.location import Location
from pipeline.staging import LOCK as STAGING_LOCK
from pipeline.staging import PREFIX as STAGING_PREFIX
from pipeline.staging import remove_stale
from pipeline.tables import DELTA_LOG

COMMIT_FILE = re.compile(r"^(\d{20})\.json$")
CHECKPOINT_FILE = re.compile(r"^(\d{20})\.checkpoint(\.\d+\.\d+)?\.parquet$")
STALE_COMMIT_TEMP = re.compile(r"^\d{20}\.json#\d+$")  # left by a commit killed between write and link
STAGING_FILE = re.compile(r"#\d+$")  # delta-rs writes `<file>#N` and renames it; a kill leaves it behind


class BusyError(RuntimeError):
    """Another erase or maintain holds the output."""


@contextlib.contextmanager
def exclusive(data: Location) -> Iterator[None]:
    """Hold the output's maintenance lease exclusively (pipeline/lease.py): one erase or maintain
    at a time on an output, and none while a writer (run, watch batch, stream job) holds its
    shared lease, which it takes before it writes a file and keeps until its commits and report
    are done. So a vacuum never deletes a file a run is about to commit, and no run commits under
    an erase. Runs of older versions only hold their staging lock: `check_no_live_run` still looks
    (local outputs)."""
    from pipeline.store_lease import LeaseError

    try:
        with lease.maintenance(str(data)):
            check_no_live_run(data)
            yield
    except lease.LeaseBusy:
        held = "a lease under _leases/ is live" if data.remote else f"{lease.LEASE_FILE} is held"
        raise BusyError(f"{data}: a run, a `subject erase` or a `maintain` is using it ({held}); run again when it "
                        "has ended") from None
    except LeaseError as exc:
        raise BusyError(str(exc)) from None


def check_no_live_run(data: Location) -> int:
    """A run writes its final files into the tables before it commits them, and a vacuum at zero
    retention would delete them: stop if a run is alive (it holds the lock of its staging
    directory DIR/.staging-<run_id>). Staging directories of dead runs hold sanitized rows,
    pseudonyms included: they are removed. Returns how many were removed. Runs into an object
    store stage on their own machine: nothing to look at there (their lease is what counts)."""
    if data.remote:
        return 0
    data_dir = Path(data.location)
    for path in sorted(data_dir.glob(f"{STAGING_PREFIX}*")):
        if not path.is_dir():
            continue
        try:
            fd = os.open(path / STAGING_LOCK, os.O_RDWR)
        except OSError:
            continue  # no lock (yet, or any more): remove_stale decides
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(f"{data_dir}: a run is writing into it ({path.name}); run again when it has "
                            "ended") from None
        finally:
            os.close(fd)
    return len(remove_stale(str(data_dir)))


def _check_lease(data: Location) -> None:
    from pipeline.store_lease import LeaseLost

    try:
        lease.check_held()
    except LeaseLost as exc:
        raise BusyError(f"{data}: {exc}") from None


def vacuum(dt: DeltaTable, data: Location, name: str) -> int:
    """Delete every file the current version does not name (removed by a commit, or never
    committed), with zero retention; returns how many. Leftover commit temp files and
    partition directories left empty go too. Checked again just before: no run is alive, and
    this process still holds its lease."""
    check_no_live_run(data)
    _check_lease(data)
    kill_point(f"vacuum:{name}")  # fault tests
    # A tombstone stays in the log after its file is deleted, and delta-rs lists it again:
    # only files still there are counted, and no VACUUM commits are made for none.
    listed = dt.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=True, full=True)
    removed = data.existing([f"{name}/{p}" for p in listed])
    if removed:
        dt.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False, full=True)
    stale = []
    for rel in data.files(name):
        inside = rel[len(name) + 1:]
        in_log = inside.split("/", 1)[0] == DELTA_LOG
        if (in_log and STALE_COMMIT_TEMP.match(inside.rsplit("/", 1)[-1])) or (
                not in_log and STAGING_FILE.search(inside)):
            data.delete(rel)
            stale.append(rel)
    if not data.remote:  # partition directories left empty (an object store has none)
        root = Path(data.location) / name
        for dirpath, _dirnames, _filenames in os.walk(root, topdown=False):
            here = Path(dirpath)
            if here != root and DELTA_LOG not in here.relative_to(root).parts and not any(here.iterdir()):
                with contextlib.suppress(OSError):
                    here.rmdir()
    return len(removed) + len(stale)


def _log_text(data: Location, rel: str) -> bytes:
    raw = data.read(rel)
    if rel.endswith(".parquet"):  # checkpoints are compressed: compare the decoded values
        try:
            return str(pq.read_table(pa.BufferReader(raw)).to_pylist()).encode("utf-8", "surrogatepass")
        except Exception:  # an unreadable checkpoint is compared as raw bytes
            pass
    return raw


def log_files_holding(data: Location, name: str, needles: list[str]) -> list[str]:
    """Files under the table's _delta_log that contain any of `needles` (relative to the output)."""
    if not needles:
        return []
    raw = [n.encode("utf-8", "surrogatepass") for n in needles]
    return [rel for rel in data.files(name, DELTA_LOG) if any(n in _log_text(data, rel) for n in raw)]


def expire_log(dt: DeltaTable, data: Location, name: str) -> int:
    """Checkpoint the current version, then delete every commit and checkpoint below it (the
    history before it is given up); returns how many log files were deleted."""
    dt.create_checkpoint()
    current = dt.version()
    deleted = 0
    for rel in data.files(name, DELTA_LOG):
        base = rel.rsplit("/", 1)[-1]
        if rel != f"{name}/{DELTA_LOG}/{base}":
            continue  # not directly in the log directory
        m = COMMIT_FILE.match(base) or CHECKPOINT_FILE.match(base)
        if (m and int(m.group(1)) < current) or STALE_COMMIT_TEMP.match(base) or base.endswith(".crc"):
            data.delete(rel)
            deleted += 1
    return deleted
