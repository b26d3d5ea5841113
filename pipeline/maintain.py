"""`python -m pipeline maintain`: keep an output's Delta tables small, lawful and clean.

    python -m pipeline maintain --data DIR [--as-of TIME] [--policy F] [--target-file-size-mb 128]

Three steps, each reported as counts (docs/erasure-and-maintenance.md):
1. retention at rest: rows of a type older than its `retention_days` (counted back from
   --as-of, as a run does at ingestion) are deleted; types whose policy says `on_expiry =
   "lock"` have them moved to the locked table DIR/_locked/<type> first;
2. compaction: `optimize.compact` bins each partition's small files into files of up to
   --target-file-size-mb (default 128 MiB; a partition smaller than that becomes one file);
3. vacuum at zero retention: files no current version names (removed by steps 1-2, by
   erasures or runs, or written by killed runs) are deleted, so a plain Parquet reader of
   the directory (DuckDB `read_parquet`) sees exactly the tables' current versions.

Every commit carries `maintenance`, the policy and --as-of in its metadata. One erase or
maintain at a time per output (DIR/_maintenance.lock).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from pipeline.housekeeping import BusyError, exclusive, vacuum
from pipeline.location import Location
from pipeline.run import ConfigError, parse_as_of
from pipeline.tables import (
    DELTA_LOG,
    list_tables,
    locked_name,
    partition_by,
    record_type_of,
    refused,
    table_config,
    table_kind,
    table_schema,
)
from schemas.policy import Policy, PolicyError, load_policy

TARGET_FILE_SIZE_MB = 128
WRITER = WriterProperties(compression="ZSTD")


class MaintenanceError(Exception):
    """A table could not be maintained; one line, exit code 1."""


@dataclass
class Counts:
    files_before: Counter = field(default_factory=Counter)
    files_after: Counter = field(default_factory=Counter)
    expired_deleted: Counter = field(default_factory=Counter)
    expired_locked: Counter = field(default_factory=Counter)
    compacted_removed: Counter = field(default_factory=Counter)
    compacted_added: Counter = field(default_factory=Counter)
    vacuumed: Counter = field(default_factory=Counter)


def data_files(table_dir: Path | str, data: Location | None = None) -> int:
    """Parquet files below a table (what a plain Parquet reader of the directory sees): a local
    directory, or the table `table_dir` of `data`."""
    if data is None:
        table = Path(table_dir)
        return sum(1 for p in table.rglob("*.parquet") if DELTA_LOG not in p.relative_to(table).parts)
    name = str(table_dir)
    return sum(1 for f in data.files(name) if f.endswith(".parquet") and f"/{DELTA_LOG}/" not in f[len(name):])


def _commit(step: str, policy: Policy, as_of: datetime) -> CommitProperties:
    return CommitProperties(custom_metadata={"maintenance": step, "policy_version": policy.version,
                                             "policy_sha256": policy.sha256, "as_of": as_of.isoformat()})


def _cutoff_sql(cutoff: datetime) -> str:
    return f"event_time < '{cutoff.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}'"


def _open_locked(data: Location, policy: Policy, record_type: str) -> DeltaTable:
    name = locked_name(record_type)
    if DeltaTable.is_deltatable(data.uri(name), data.storage_options):
        return DeltaTable(data.uri(name), storage_options=data.storage_options)
    return DeltaTable.create(data.uri(name), table_schema(policy, name), partition_by=partition_by(name),
                             configuration=table_config(name), storage_options=data.storage_options)


def expire(data: Location, name: str, policy: Policy, as_of: datetime, counts: Counts) -> None:
    """Delete (or lock, then delete) the rows of a data table older than its type's retention."""
    tpol = policy.types.get(record_type_of(name) or "")
    if tpol is None:  # a type the policy no longer knows: nothing says how long to keep it
        return
    cutoff = as_of - timedelta(days=tpol.retention_days)
    dt = DeltaTable(data.uri(name), storage_options=data.storage_options)
    dataset = dt.to_pyarrow_dataset()
    times = dataset.to_table(columns=["event_time"]).column("event_time")
    expired = int(pc.sum(pc.less(times, pa.scalar(cutoff, times.type))).as_py() or 0)
    if not expired:
        return
    if tpol.on_expiry == "lock":
        rows = dataset.to_table(filter=pc.field("event_time") < pa.scalar(cutoff, times.type))
        locked = _open_locked(data, policy, tpol.name)
        # A maintain killed between the two commits already copied these rows: copy each once.
        have = locked.to_pyarrow_table(columns=["event_id"]).column("event_id")
        rows = rows.filter(pc.invert(pc.is_in(rows.column("event_id"), value_set=have.combine_chunks())))
        if rows.num_rows:
            write_deltalake(locked, rows.cast(pa.schema(locked.schema().to_arrow())), mode="append",
                            writer_properties=WRITER, commit_properties=_commit("retention-lock", policy, as_of))
        counts.expired_locked[name] += expired
    else:
        counts.expired_deleted[name] += expired
    dt.delete(_cutoff_sql(cutoff), writer_properties=WRITER, commit_properties=_commit("retention", policy, as_of))


def maintain(data: Location, policy: Policy, as_of: datetime, target_mb: int) -> Counts:
    counts = Counts()
    options = data.storage_options
    with exclusive(data):
        for name in list_tables(data.location, options):
            counts.files_before[name] = data_files(name, data)
        for name in list_tables(data.location, options):
            try:
                if table_kind(name) == "data":
                    expire(data, name, policy, as_of, counts)
                dt = DeltaTable(data.uri(name), storage_options=options)
                metrics = dt.optimize.compact(target_size=target_mb << 20, writer_properties=WRITER,
                                              commit_properties=_commit("compaction", policy, as_of))
                counts.compacted_removed[name] += int(metrics.get("numFilesRemoved", 0))
                counts.compacted_added[name] += int(metrics.get("numFilesAdded", 0))
                counts.vacuumed[name] += vacuum(DeltaTable(data.uri(name), storage_options=options), data, name)
            except CommitFailedError as exc:
                raise MaintenanceError(f"{data.uri(name)}: another writer committed to the table meanwhile "
                                       f"({exc}); run maintain again") from None
            except (DeltaError, pa.ArrowException, OSError) as exc:
                raise MaintenanceError(f"{data.uri(name)}: {exc.__class__.__name__}: {exc}") from None
        for name in list_tables(data.location, options):
            counts.files_after[name] = data_files(name, data)
    return counts


def summary(data_dir: Location, counts: Counts, as_of: datetime, target_mb: int, seconds: float) -> str:
    names = sorted(counts.files_after)
    width = max((len(n) for n in names), default=5)
    lines = [f"maintain {data_dir} (as of {as_of.isoformat()}, target file size {target_mb} MiB)",
             f"  {'table':<{width}}  files before -> after  expired: deleted / locked  "
             "compacted: removed -> added  vacuumed"]
    for n in names:
        lines.append(f"  {n:<{width}}  {counts.files_before[n]:>12} -> {counts.files_after[n]:<5}  "
                     f"{counts.expired_deleted[n]:>16} / {counts.expired_locked[n]:<6}  "
                     f"{counts.compacted_removed[n]:>18} -> {counts.compacted_added[n]:<5}  {counts.vacuumed[n]}")
    total = {k: sum(getattr(counts, k).values()) for k in vars(counts)}
    lines.append(f"files {total['files_before']} -> {total['files_after']}; retention: "
                 f"{total['expired_deleted']} row(s) deleted, {total['expired_locked']} row(s) moved to _locked; "
                 f"compaction: {total['compacted_removed']} file(s) -> {total['compacted_added']}; "
                 f"vacuum: {total['vacuumed']} file(s) deleted; {seconds:.1f} s")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from pipeline.cli import add_common
    from pipeline.cliparse import Parser, positive_int

    parser = Parser(prog="telemetry-sanitizer maintain",
                    description="Retention at rest, compaction and vacuum of a run's output.",
                    epilog="example:\n  telemetry-sanitizer maintain --data /data/out --as-of 2026-11-25T00:00:00Z")
    add_common(parser)
    parser.add_argument("--data", required=True, help="output directory of pipeline runs")
    parser.add_argument("--as-of", "--as_of", dest="as_of", default=None,
                        help="time retention is counted back from, RFC 3339 (default: now), as for a run")
    parser.add_argument("--policy", default=None, help="policy TOML file (default: the built-in policy)")
    parser.add_argument("--target-file-size-mb", dest="target_mb", type=positive_int, default=TARGET_FILE_SIZE_MB,
                        help=f"compaction target per file in MiB (default {TARGET_FILE_SIZE_MB})")
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipeline.cliparse import parse_or_code

    args = parse_or_code(build_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        if args.target_mb <= 0:
            raise ConfigError(f"--target-file-size-mb {args.target_mb}: must be a positive number of MiB")
        if refused("--data", args.data):
            raise ConfigError(str(refused("--data", args.data)))
        data_dir = Location(args.data)
        try:
            if not data_dir.is_dir():
                raise ConfigError(f"--data {data_dir}: not a directory")
            if not list_tables(data_dir.location, data_dir.storage_options):
                raise ConfigError(f"--data {data_dir}: no Delta table found (is this the output of a run?)")
        except OSError as exc:
            raise ConfigError(f"--data {data_dir}: cannot read: {str(exc).strip().splitlines()[0]}") from None
        as_of, policy = parse_as_of(args.as_of), load_policy(args.policy)
        start = time.monotonic()
        counts = maintain(data_dir, policy, as_of, args.target_mb)
    except (ConfigError, PolicyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (BusyError, MaintenanceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary(data_dir, counts, as_of, args.target_mb, time.monotonic() - start))
    return 0
