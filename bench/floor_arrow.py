"""Throughput floor for bench/run_bench.py: NDJSON -> Parquet with no policy at all. Plain Python, no Beam.

It is a floor, not a product: it answers "how fast can this machine merely
parse these records and write them as zstd Parquet from Python?".

The input is cut at line boundaries into blocks of about --block-bytes.
Each block is first given to `pyarrow.json.read_json` (one call per block).
When Arrow rejects the block (any broken line, or a field whose JSON type
changes between records, which the dirty telemetry always contains), that
block falls back to orjson, one line at a time: lines that are not valid
JSON or not an object are dropped, and the table is built column by column
(top-level keys, plus one column per key of a `data` object). A column whose
values Arrow cannot put under one type is written as text (JSON for
non-strings). Each block becomes one Parquet file. Python's cyclic garbage
collector is paused while a block is parsed, as the pipeline does per batch.

    python bench/floor_arrow.py --input F --output DIR [--block-bytes 16777216]

Prints one JSON line: blocks read by Arrow vs by the fallback, rows written,
lines dropped.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import sys

import orjson
import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq

BLOCK_BYTES = 16 << 20


def iter_blocks(path: str, block_bytes: int):
    """Blocks of about `block_bytes`, each ending at a newline (or at the end of the file)."""
    with open(path, "rb", buffering=0) as fh:
        reader = io.BufferedReader(fh, buffer_size=block_bytes)
        while True:
            block = reader.read(block_bytes)
            if not block:
                return
            if not block.endswith(b"\n"):
                block += reader.readline()
            yield block


def _array(values: list) -> pa.Array:
    """Arrow array of the values; text when they do not share one Arrow type."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        dumps = orjson.dumps
        return pa.array([v if v is None or type(v) is str else dumps(v).decode() for v in values], pa.string())


def table_from_lines(block: bytes) -> tuple[pa.Table, int]:
    """(table, dropped lines) of one block parsed line by line with orjson."""
    loads = orjson.loads
    records = []
    dropped = 0
    for line in block.split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = loads(line)
        except orjson.JSONDecodeError:
            dropped += 1
            continue
        if type(rec) is dict:
            records.append(rec)
        else:
            dropped += 1
    n = len(records)
    top: dict[str, tuple[list[int], list]] = {}
    nested: dict[str, tuple[list[int], list]] = {}
    for i, rec in enumerate(records):
        for name, value in rec.items():
            if name == "data" and type(value) is dict:
                for key, item in value.items():
                    col = nested.get(key)
                    if col is None:
                        col = nested[key] = ([], [])
                    col[0].append(i)
                    col[1].append(item)
                continue
            col = top.get(name)
            if col is None:
                col = top[name] = ([], [])
            col[0].append(i)
            col[1].append(value)
    columns: dict[str, pa.Array] = {}
    for prefix, cols in (("", top), ("data.", nested)):
        for name, (rows, values) in cols.items():
            if len(rows) < n:
                dense = [None] * n
                for i, value in zip(rows, values, strict=True):
                    dense[i] = value
                values = dense
            columns[prefix + name] = _array(values)
    if not columns:
        return pa.table({"_empty": pa.nulls(n)}), dropped
    return pa.table(columns), dropped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="floor_arrow.py", description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help="one plain NDJSON file")
    ap.add_argument("--output", required=True, help="output directory")
    ap.add_argument("--block-bytes", type=int, default=BLOCK_BYTES)
    args = ap.parse_args(argv)

    os.makedirs(args.output, exist_ok=True)
    read_options = pj.ReadOptions(block_size=args.block_bytes, use_threads=True)
    by_arrow = by_fallback = rows = dropped = 0
    for index, block in enumerate(iter_blocks(args.input, args.block_bytes)):
        try:
            table = pj.read_json(io.BytesIO(block), read_options=read_options)
            by_arrow += 1
        except pa.ArrowInvalid:
            gc.disable()  # as the pipeline does per batch: the collector would rescan every parsed line
            try:
                table, lost = table_from_lines(block)
            finally:
                gc.enable()
            dropped += lost
            by_fallback += 1
        pq.write_table(table, os.path.join(args.output, f"part-{index:05d}.parquet"), compression="zstd")
        rows += table.num_rows
    print(orjson.dumps({"blocks_arrow": by_arrow, "blocks_fallback": by_fallback, "rows_written": rows,
                        "lines_dropped": dropped}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
