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

import pyarrow.parquet as pq
from deltalake import DeltaTable

from pipeline import lease
from pipeline.commit import kill_point
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
def exclusive(data_dir: Path) -> Iterator[None]:
    """Hold DIR/_maintenance.lock exclusively (pipeline/lease.py): one erase or maintain at a time
    on an output, and none while a writer (run, watch batch, stream job) holds its shared lease,
    which it takes before it writes a file and keeps until its commits and report are done. So a
    vacuum never deletes a file a run is about to commit, and no run commits under an erase.
    Runs of older versions only hold their staging lock: `check_no_live_run` still looks."""
    try:
        with lease.maintenance(str(data_dir)):
            check_no_live_run(data_dir)
            yield
    except lease.LeaseBusy:
        raise BusyError(f"{data_dir}: a run, a `subject erase` or a `maintain` is using it "
                        f"({lease.LEASE_FILE} is held); run again when it has ended") from None


def check_no_live_run(data_dir: Path) -> int:
    """A run writes its final files into the tables before it commits them, and a vacuum at zero
    retention would delete them: stop if a run is alive (it holds the lock of its staging
    directory DIR/.staging-<run_id>). Staging directories of dead runs hold sanitized rows,
    pseudonyms included: they are removed. Returns how many were removed."""
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


def vacuum(dt: DeltaTable, data_dir: Path) -> int:
    """Delete every file the current version does not name (removed by a commit, or never
    committed), with zero retention; returns how many. Leftover commit temp files and
    partition directories left empty go too. Checked again just before: no run is alive."""
    check_no_live_run(data_dir)
    root = Path(dt.table_uri.removeprefix("file://"))
    kill_point(f"vacuum:{os.path.relpath(root, data_dir.resolve())}")  # fault tests
    # A tombstone stays in the log after its file is deleted, and delta-rs lists it again:
    # only files still on disk are counted, and no VACUUM commits are made for none.
    listed = dt.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=True, full=True)
    removed = [p for p in listed if (root / p).exists()]
    if removed:
        dt.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False, full=True)
    log = root / DELTA_LOG
    stale = [p for p in log.iterdir() if STALE_COMMIT_TEMP.match(p.name)] if log.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        here = Path(dirpath)
        if DELTA_LOG in here.relative_to(root).parts:
            continue
        for name in filenames:
            if STAGING_FILE.search(name):
                (here / name).unlink(missing_ok=True)
                stale.append(here / name)
        if here != root and not any(here.iterdir()):
            with contextlib.suppress(OSError):
                here.rmdir()
    return len(removed) + len(stale)


def _log_text(path: Path) -> bytes:
    if path.suffix == ".parquet":  # checkpoints are compressed: compare the decoded values
        try:
            return str(pq.read_table(path).to_pylist()).encode("utf-8", "surrogatepass")
        except Exception:  # an unreadable checkpoint is compared as raw bytes
            pass
    return path.read_bytes()


def log_files_holding(table_dir: Path, needles: list[str]) -> list[Path]:
    """Files under the table's _delta_log that contain any of `needles`."""
    log = table_dir / DELTA_LOG
    if not needles or not log.is_dir():
        return []
    raw = [n.encode("utf-8", "surrogatepass") for n in needles]
    hits = []
    for path in sorted(p for p in log.rglob("*") if p.is_file()):
        text = _log_text(path)
        if any(n in text for n in raw):
            hits.append(path)
    return hits


def expire_log(dt: DeltaTable) -> int:
    """Checkpoint the current version, then delete every commit and checkpoint below it (the
    history before it is given up); returns how many log files were deleted."""
    dt.create_checkpoint()
    log = Path(dt.table_uri.removeprefix("file://")) / DELTA_LOG
    current = dt.version()
    deleted = 0
    for path in sorted(log.iterdir()):
        m = COMMIT_FILE.match(path.name) or CHECKPOINT_FILE.match(path.name)
        if (m and int(m.group(1)) < current) or STALE_COMMIT_TEMP.match(path.name) or path.name.endswith(".crc"):
            path.unlink(missing_ok=True)
            deleted += 1
    return deleted
