"""Upper bound for bench/run_bench.py: the pipeline's reading and writing machinery with no policy.

It answers "how fast could any pipeline of this design go on this machine, if
the policy cost nothing?". It does strictly less than the sanitizer, but all the
reading and writing the output's table format (Delta Lake, partitioned by
user_region and event_date) needs:

- the input is cut into blocks of about --block-bytes at line boundaries and
  split among --processes worker processes (forked, one byte range each);
- lines are screened and routed by their `"type":"..."` tag by the columnar
  path's own code (`transforms.columnar.route_lines`, with the schemas and
  screen of `reading_plan`); lines that are not plainly one well-formed JSON
  object of a known type are skipped (the pipeline sends them to its
  per-record path);
- each type's lines of a block are read by `pyarrow.json` with the same narrow
  typed schema the pipeline uses, bad lines isolated by halving
  (`transforms.columnar.read_typed`) and skipped;
- the partition of each row (the region of its country, the UTC date of its
  `ts`; rows whose `ts` is not RFC 3339 are skipped) is found with kernels, and
  the rows are split by one sort per type and block, then buffered per partition;
- each process writes one Parquet file per partition it saw (zstd; uncompressed
  up to 16 rows, as the pipeline does; at most 50,000 rows a file) into the
  table's `user_region=/event_date=` directory, and measures each file's
  `event_time` bounds for the commit's statistics;
- the parent opens every table of the policy before the workers start and at
  the end commits once per table with the pipeline's own commit step
  (`pipeline.commit.Output`: creation of missing tables, app transactions,
  add actions with partition values and statistics).

No checks, no gates, no transforms, no quarantine, no report; two processes may
each write a file of the same partition (the pipeline groups them into one), so
with several processes it writes somewhat more files than the pipeline does.
Skipped lines are counted, never written, so the figure is an upper bound.

    python bench/upper_bound.py --input F --output DIR [--processes 2] [--block-bytes 33554432]

Prints one JSON line: rows written, lines skipped, files, seconds per stage
(summed over processes; open_s and commit_s in the parent).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from pipeline.commit import Output, Slice  # noqa: E402
from pipeline.tables import commit_metadata, partition_by, table_config  # noqa: E402
from schemas.iso3166 import ALPHA2  # noqa: E402
from schemas.policy import PARTITION_COLUMNS, TIMESTAMP  # noqa: E402

BLOCK_BYTES = 32 << 20
MAX_ROWS_PER_FILE = 50_000  # as the pipeline's files (pipeline.io._FinalizePartition)


def byte_ranges(path: str, parts: int) -> list[tuple[int, int]]:
    """`parts` (start, end) ranges of the file, each cut just after a newline."""
    size = os.path.getsize(path)
    cuts = [0]
    with open(path, "rb") as fh:
        for k in range(1, parts):
            fh.seek(max(cuts[-1], size * k // parts))
            fh.readline()
            cuts.append(min(fh.tell(), size))
    cuts.append(size)
    return [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def _blocks(path: str, start: int, end: int, block_bytes: int):
    with open(path, "rb") as fh:
        fh.seek(start)
        left = end - start
        while left > 0:
            block = fh.read(min(block_bytes, left))
            left -= len(block)
            if left > 0 and not block.endswith(b"\n"):
                tail = fh.readline()
                left -= len(tail)
                block += tail
            yield block


def _flat_schema(options) -> pa.Schema:
    """The columns (e) writes for a type: the read schema flattened ('data.url' -> 'data_url'),
    plus event_time."""
    empty = pa.Table.from_batches([], options.explicit_schema).flatten()
    empty = empty.rename_columns([c.replace(".", "_") for c in empty.column_names])
    return empty.schema.append(pa.field("event_time", TIMESTAMP))


def _regions(policy, countries: pa.Array) -> tuple[list[str], pa.Array]:
    """(region names, index of each row's region): the policy's map looked up once per distinct
    raw country, as the pipeline does."""
    encoded = pc.dictionary_encode(countries, null_encoding="encode")
    names: list[str] = []
    codes = []
    for raw in encoded.dictionary.to_pylist():
        code = raw.strip().upper() if isinstance(raw, str) else None
        name = policy.region_of(code if code in ALPHA2 else None).name
        if name not in names:
            names.append(name)
        codes.append(names.index(name))
    return names, pa.array(codes, pa.int32()).take(encoded.indices)


def work(path: str, start: int, end: int, output: str, block_bytes: int, worker: int, prefix: str,
         as_of: datetime) -> Counter:
    from pipeline.io import make_dir, parquet_compression
    from pipeline.tables import WrittenFile, data_file_name, partition_path, time_bounds
    from schemas.policy import load_policy
    from transforms.columnar import _TS, _timestamps, read_typed, reading_plan, route_lines

    policy = load_policy()
    options, screen = reading_plan(policy)
    future = pa.scalar(as_of + timedelta(seconds=policy.future_tolerance_seconds), TIMESTAMP)
    stats: Counter = Counter()
    clock = time.perf_counter
    buffers: dict[tuple[str, str, str], list[pa.Table]] = {}
    buffered: Counter = Counter()
    files: list[WrittenFile] = []
    parts: Counter = Counter()

    def write(key: tuple[str, str, str]) -> None:
        name, region, day = key
        table = pa.concat_tables(buffers.pop(key))
        buffered.pop(key)
        relative = partition_path(region, day)
        directory = os.path.join(output, *name.split("/"), relative)
        make_dir(directory)
        file = data_file_name(prefix, str(worker), parts[key])
        parts[key] += 1
        pq.write_table(table, os.path.join(directory, file), compression=parquet_compression(table.num_rows))
        lo, hi, nulls = time_bounds([table])
        files.append(WrittenFile(name, f"{relative}/{file}", table.num_rows, region, day, lo, hi, nulls))
        stats["rows_written"] += table.num_rows

    def split(table: pa.Table, name: str) -> None:
        """One sort by partition, then a slice per partition into its buffer."""
        if not table.num_rows:
            return
        region_names, region = _regions(policy, table.column("country").combine_chunks())
        days = pc.dictionary_encode(pc.cast(table.column("event_time"), pa.date32()).combine_chunks())
        day_names = [d.isoformat() for d in days.dictionary.to_pylist()]
        code = pc.add(pc.multiply(pc.cast(region, pa.int64()), len(day_names)), pc.cast(days.indices, pa.int64()))
        order = pc.sort_indices(code)
        table, codes = table.take(order), code.take(order).to_numpy()
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        for a, b in zip(starts, np.r_[starts[1:], len(codes)], strict=True):
            c = int(codes[a])
            key = (name, region_names[c // len(day_names)], day_names[c % len(day_names)])
            buffers.setdefault(key, []).append(table.slice(a, b - a))
            buffered[key] += b - a
            if buffered[key] >= MAX_ROWS_PER_FILE:
                write(key)

    gc.disable()  # as the pipeline does per batch
    for block in _blocks(path, start, end, block_bytes):
        t0 = clock()
        lines = [(i, raw) for i, raw in enumerate(block.split(b"\n")) if raw and raw != b"\r"]
        groups, slow = route_lines(options, screen, policy.max_line_bytes, lines)
        stats["skipped_lines"] += len(slow)
        t1 = clock()
        tables = []
        for name, (_, raws, _) in groups.items():
            read, bad = read_typed(options[name], raws)
            stats["skipped_lines"] += len(bad)
            if read:
                tables.append((name.decode(), pa.concat_tables([table for _, table in read]).combine_chunks()))
        t2 = clock()
        for name, table in tables:
            ts = table.column("ts")
            plain = pc.fill_null(pc.match_substring_regex(ts, _TS), False)
            event_time, parsed = _timestamps(pc.if_else(plain, ts, pa.scalar(None, pa.string())))
            table = table.flatten()
            table = table.rename_columns([c.replace(".", "_") for c in table.column_names])
            table = table.append_column("event_time", event_time)
            # Only rows inside the type's retention and not in the future have a partition in the
            # type's table (the pipeline drops or quarantines the others; a locking type's expired
            # rows go to its _locked table).
            tpol = policy.types[name]
            ok = pc.fill_null(pc.and_(pc.and_(plain, parsed), pc.less_equal(event_time, future)), False)
            expired = pc.fill_null(pc.less(event_time, pa.scalar(as_of - timedelta(days=tpol.retention_days),
                                                                 TIMESTAMP)), False)
            if tpol.on_expiry != "lock":
                ok = pc.and_(ok, pc.invert(expired))
            if not pc.all(ok).as_py():
                stats["skipped_lines"] += table.num_rows - (pc.sum(ok).as_py() or 0)
                table, expired = table.filter(ok), expired.filter(ok)
            if tpol.on_expiry == "lock":
                split(table.filter(pc.invert(expired)), name)
                split(table.filter(expired), f"_locked/{name}")
            else:
                split(table, name)
        t3 = clock()
        stats["route_s"] += t1 - t0
        stats["parse_s"] += t2 - t1
        stats["partition_s"] += t3 - t2
    t3 = clock()
    for key in list(buffers):
        write(key)
    stats["write_s"] += clock() - t3
    gc.enable()
    stats["files"] = len(files)
    stats["written"] = files  # type: ignore[assignment]
    return stats


class _Output(Output):
    """The pipeline's commit step; tables are created with the columns (e) writes."""

    def __init__(self, location: str, policy, options) -> None:
        super().__init__(location, policy)
        self.read_options = options

    def _create(self, name: str, append: bool):
        from deltalake import DeltaTable

        from pipeline.tables import record_type_of, table_schema

        record_type = record_type_of(name)
        if record_type is None or record_type.encode() not in self.read_options:
            schema = table_schema(self.policy, name)
        else:
            schema = _flat_schema(self.read_options[record_type.encode()])
            for column in PARTITION_COLUMNS:
                schema = schema.append(pa.field(column, pa.string()))
        table = DeltaTable.create(self.uri(name), schema, mode="error", partition_by=partition_by(name),
                                  configuration=table_config(name))
        self.tables[name] = table
        return table


def _work(args: tuple) -> Counter:
    return work(*args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="upper_bound.py", description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help="one plain NDJSON file")
    ap.add_argument("--output", required=True, help="output directory")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--block-bytes", type=int, default=BLOCK_BYTES)
    ap.add_argument("--as-of", default=None, help="RFC 3339 time retention is counted back from (default: now)")
    args = ap.parse_args(argv)
    as_of = datetime.fromisoformat(args.as_of.replace("Z", "+00:00")) if args.as_of else datetime.now(UTC)

    from schemas.policy import load_policy
    from transforms.columnar import reading_plan

    policy = load_policy()
    output = os.path.abspath(args.output)
    os.makedirs(output, exist_ok=True)
    t0 = time.perf_counter()
    tables = _Output(output, policy, reading_plan(policy)[0])
    tables.open()  # as a run does before its workers start: the snapshot it commits against
    plan = tables.plan("upper-bound", append=False)
    open_s = time.perf_counter() - t0
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    jobs = [(args.input, a, b, output, args.block_bytes, k, run_id, as_of)
            for k, (a, b) in enumerate(byte_ranges(args.input, max(1, args.processes)))]
    if len(jobs) == 1:
        results = [_work(jobs[0])]
    else:
        with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
            results = pool.map(_work, jobs)
    written = [w for r in results for w in r.pop("written")]
    total: Counter = sum(results, Counter())
    t0 = time.perf_counter()
    tables.check_unchanged()
    tables.commit(plan, written, commit_metadata(run_id, policy, "upper-bound"), False, Slice())
    total["commit_s"] = time.perf_counter() - t0
    total["open_s"] = open_s
    print(orjson.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in sorted(total.items())}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
