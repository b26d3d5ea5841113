"""The output as Delta Lake tables: layout, table configuration, opening and committing.

Layout under an output location DIR (a local directory, s3:// or abfss://, pipeline/location.py):
  DIR/<type>/                one Delta table per record type, partitioned by user_region, event_date
  DIR/_locked/<type>/        rows of types whose retention locks them; same schema and partitioning
  DIR/_quarantine/           one unpartitioned Delta table
  DIR/_report.json           report of the latest run; DIR/_reports/<run_id>.json every run's
Data files are DIR/<table>/user_region=R/event_date=D/part-<run_id>-*.parquet, so plain Parquet
readers keep working (they see every file on disk, committed or not: Delta readers see what the
log names). The layout is shared with `pipeline.subject` and `pipeline.maintain` (docs/tables.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from schemas.policy import PARTITION_COLUMNS, Policy
from transforms.records import QUARANTINE_SCHEMA

QUARANTINE = "_quarantine"
LOCKED = "_locked"
REPORT = "_report.json"
REPORTS = "_reports"
DELTA_LOG = "_delta_log"
PARTITION_BY = list(PARTITION_COLUMNS)
APP_ID_PREFIX = "telemetry-sanitizer"

# Column statistics (minValues/maxValues) end up in _delta_log, which an erasure cannot
# rewrite cheaply: only columns that never hold a pseudonym, free text or a location get
# them. delta-rs honours the setting for its own writes and for optimize.compact too.
DATA_TABLE_CONFIG: dict[str, str] = {"delta.dataSkippingStatsColumns": "event_time"}
QUARANTINE_TABLE_CONFIG: dict[str, str] = {"delta.dataSkippingStatsColumns": "line_number,line_bytes"}
STATS_COLUMNS = {"data": ("event_time",), "quarantine": ("line_number", "line_bytes")}


def is_remote(location: str) -> bool:
    """Whether `location` is a URI (s3://, gs://, abfs://, file://...) rather than a local path."""
    return "://" in location


def refused(option: str, location: str) -> str | None:
    """Why an output location is refused (one line), or None: a local path, s3:// or abfs[s]:// is accepted
    (pipeline/location.py says why the others are not)."""
    from pipeline.location import refused as why

    return why(option, location)


def not_local(option: str, location: str) -> str | None:
    """Why a location is refused where only a local directory is supported (`--watch` and `stream`:
    not tested on object stores), or None for a local path."""
    if not is_remote(location):
        return None
    return (f"{option} {location}: only a local directory (or a mounted file system) is supported for watch and "
            "stream, not a URI (they are not tested on object stores); a run, `subject` and `maintain` accept "
            "s3:// and abfss:// (docs/tables.md, Locations)")


def join(location: str, *parts: str) -> str:
    """`location`/part/...: a URI keeps '/' separators, a local path uses os.path."""
    if is_remote(location):
        return "/".join([location.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(location, *parts)


def locked_name(record_type: str) -> str:
    """Table name of a type's locked rows."""
    return f"{LOCKED}/{record_type}"


def table_names(policy: Policy) -> list[str]:
    """Every table a run of `policy` commits to: the quarantine, each type, and the locked table
    of each type whose retention locks expired rows (on_expiry = "lock")."""
    names = [QUARANTINE]
    for name in sorted(policy.types):
        names.append(name)
        if policy.types[name].on_expiry == "lock":
            names.append(locked_name(name))
    return names


def table_kind(name: str) -> str:
    """'quarantine', 'locked' or 'data'."""
    if name == QUARANTINE:
        return "quarantine"
    return "locked" if name.startswith(LOCKED + "/") else "data"


def record_type_of(name: str) -> str | None:
    """The record type a data or locked table holds; None for the quarantine."""
    kind = table_kind(name)
    if kind == "quarantine":
        return None
    return name.split("/", 1)[1] if kind == "locked" else name


def table_schema(policy: Policy, name: str) -> pa.Schema:
    """Schema of a table as Delta sees it (partition columns included)."""
    record_type = record_type_of(name)
    if record_type is None:
        return QUARANTINE_SCHEMA.remove_metadata()
    return policy.dataset_schema(record_type).remove_metadata()


def partition_by(name: str) -> list[str] | None:
    return None if table_kind(name) == "quarantine" else PARTITION_BY


def table_config(name: str) -> dict[str, str]:
    """Configuration a table is created with (see DATA_TABLE_CONFIG)."""
    return dict(QUARANTINE_TABLE_CONFIG if table_kind(name) == "quarantine" else DATA_TABLE_CONFIG)


def partition_path(user_region: str, event_date: str) -> str:
    """Relative directory of one partition inside a table."""
    return f"user_region={user_region}/event_date={event_date}"


def data_file_name(run_id: str, attempt: str, part: int) -> str:
    """Name of a data file: the run id first (the contract's `part-<run_id>-*.parquet`), then
    the attempt, so a re-run that completes a killed run never reuses a committed file's name."""
    return f"part-{run_id}-{attempt}-{part:05d}.parquet"


def commit_metadata(run_id: str, policy: Policy, key_fingerprint: str, **extra: Any) -> dict[str, str]:
    """Custom commitInfo fields of every commit of a run (never the key itself)."""
    meta = {"run_id": run_id, "policy_version": policy.version, "policy_sha256": policy.sha256,
            "key_fingerprint": key_fingerprint}
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


class WrittenFile(NamedTuple):
    """A data file a worker wrote, to be added to its table by the run's commit.

    `path` is relative to the table's root; `min_time`/`max_time` (ISO, ms, widened to
    whole milliseconds) bound `event_time` for data skipping; None for the quarantine."""

    table: str
    path: str
    rows: int
    user_region: str | None = None
    event_date: str | None = None
    min_time: str | None = None
    max_time: str | None = None
    time_nulls: int = 0


def time_bounds(tables: list[pa.Table], column: str = "event_time") -> tuple[str | None, str | None, int]:
    """(min, max, nulls) of a timestamp column over tables, as Delta statistics want them:
    milliseconds, the minimum rounded down and the maximum up, so skipping never skips a row."""
    lo = hi = None
    nulls = 0
    for table in tables:
        if column not in table.column_names or not table.num_rows:
            continue
        col = table.column(column)
        nulls += col.null_count
        mm = pc.min_max(col)
        if mm["min"].is_valid:
            a, b = mm["min"].as_py(), mm["max"].as_py()
            lo = a if lo is None or a < lo else lo
            hi = b if hi is None or b > hi else hi
    if lo is None or hi is None:
        return None, None, nulls
    return _iso_ms(lo, up=False), _iso_ms(hi, up=True), nulls


def _iso_ms(value: datetime, up: bool) -> str:
    value = value.astimezone(UTC)
    floor = value.replace(microsecond=value.microsecond // 1000 * 1000)
    if up and floor != value:
        floor += timedelta(milliseconds=1)
    return floor.strftime("%Y-%m-%dT%H:%M:%S.") + f"{floor.microsecond // 1000:03d}Z"


def file_stats(written: WrittenFile) -> str:
    """The add action's `stats` JSON: row count and event_time bounds only (see DATA_TABLE_CONFIG)."""
    import json

    stats: dict[str, Any] = {"numRecords": written.rows}
    if written.min_time is not None:
        stats["minValues"] = {"event_time": written.min_time}
        stats["maxValues"] = {"event_time": written.max_time}
        stats["nullCount"] = {"event_time": written.time_nulls}
    return json.dumps(stats, separators=(",", ":"))


def list_tables(location: str, storage_options: dict[str, str] | None = None) -> list[str]:
    """Names of the Delta tables under an output location ('dns', '_locked/dns', '_quarantine')."""
    from deltalake import DeltaTable

    found = []
    for name in _candidate_names(location):
        if DeltaTable.is_deltatable(join(location, name), storage_options):
            found.append(name)
    return sorted(found)


def _candidate_names(location: str) -> Iterator[str]:
    import pyarrow.fs as pafs

    from pipeline.location import filesystem

    fs, root = filesystem(location) if is_remote(location) else (pafs.LocalFileSystem(), os.path.abspath(location))
    try:
        top = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return
    for info in top:
        if info.type != pafs.FileType.Directory or info.base_name.startswith("."):
            continue
        if info.base_name == LOCKED:
            for sub in fs.get_file_info(pafs.FileSelector(info.path, allow_not_found=True)):
                if sub.type == pafs.FileType.Directory:
                    yield locked_name(sub.base_name)
        elif info.base_name != REPORTS:
            yield info.base_name
