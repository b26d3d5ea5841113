"""Upper bound for bench/run_bench.py: the pipeline's reading and writing machinery with no policy.

It answers "how fast could any pipeline of this design go on this machine, if
the policy cost nothing?". It does strictly less than the sanitizer:

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
- each type's table of a block is written as one zstd Parquet file into the
  type's directory, and at the end one Delta commit per type adds them (as the
  pipeline's commit step does: the bound includes the commit).

No checks, no gates, no transforms, no partitions, no quarantine, no report.
Skipped lines are counted, never written, so the figure is an upper bound.

    python bench/upper_bound.py --input F --output DIR [--processes 2] [--block-bytes 33554432]

Prints one JSON line: rows written, lines skipped, seconds per stage (summed
over processes; commit_s in the parent).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import sys
import time
from collections import Counter

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

BLOCK_BYTES = 32 << 20


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


def work(path: str, start: int, end: int, output: str, block_bytes: int, worker: int) -> Counter:
    from schemas.policy import load_policy
    from transforms.columnar import read_typed, reading_plan, route_lines

    policy = load_policy()
    options, screen = reading_plan(policy)
    stats: Counter = Counter()
    clock = time.perf_counter
    gc.disable()  # as the pipeline does per batch
    for index, block in enumerate(_blocks(path, start, end, block_bytes)):
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
                tables.append((name, pa.concat_tables([table for _, table in read])))
        t2 = clock()
        for name, table in tables:
            directory = os.path.join(output, name.decode())
            os.makedirs(directory, exist_ok=True)
            pq.write_table(table.flatten(), os.path.join(directory, f"part-{worker}-{index:05d}.parquet"),
                           compression="zstd")
            stats["rows_written"] += table.num_rows
            stats[f"rows/{name.decode()}/part-{worker}-{index:05d}.parquet"] = table.num_rows
        t3 = clock()
        stats["route_s"] += t1 - t0
        stats["parse_s"] += t2 - t1
        stats["write_s"] += t3 - t2
    gc.enable()
    return stats


def commit(output: str, rows: dict[str, int]) -> None:
    """One Delta commit per type adding its files (create the table first), as a run's commit step."""
    from deltalake import CommitProperties, DeltaTable, Transaction
    from deltalake.transaction import AddAction

    by_type: dict[str, list[tuple[str, int]]] = {}
    for key, n in rows.items():
        _, name, file = key.split("/", 2)
        by_type.setdefault(name, []).append((file, n))
    now = int(time.time() * 1000)
    for name, files in sorted(by_type.items()):
        uri = os.path.join(output, name)
        schema = pq.read_schema(os.path.join(uri, files[0][0])).remove_metadata()
        table = DeltaTable.create(uri, schema, mode="ignore", configuration={"delta.dataSkippingNumIndexedCols": "0"})
        actions = [AddAction(f, os.path.getsize(os.path.join(uri, f)), {}, now, True, f'{{"numRecords":{n}}}')
                   for f, n in files]
        table.create_write_transaction(actions, "append", table.schema(), commit_properties=CommitProperties(
            custom_metadata={"run_id": "upper-bound"}, app_transactions=[Transaction("upper-bound", 1)]))


def _work(args: tuple) -> Counter:
    return work(*args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="upper_bound.py", description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help="one plain NDJSON file")
    ap.add_argument("--output", required=True, help="output directory")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--block-bytes", type=int, default=BLOCK_BYTES)
    args = ap.parse_args(argv)

    os.makedirs(args.output, exist_ok=True)
    jobs = [(args.input, a, b, args.output, args.block_bytes, k)
            for k, (a, b) in enumerate(byte_ranges(args.input, max(1, args.processes)))]
    if len(jobs) == 1:
        results = [_work(jobs[0])]
    else:
        with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
            results = pool.map(_work, jobs)
    total: Counter = sum(results, Counter())
    t0 = time.perf_counter()
    commit(args.output, {k: v for k, v in total.items() if k.startswith("rows/")})
    total = Counter({k: v for k, v in total.items() if not k.startswith("rows/")})
    total["commit_s"] = time.perf_counter() - t0
    print(orjson.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in sorted(total.items())}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
