"""Producer retries across runs: rows already committed to the output are not written again.

Within a run, copies of one `(device_id, event_id)` meet in their partition and the first in
input order is kept (`transforms.records.first_copies`). An appending run (`--append`, every
`--watch` micro-batch) also looks up the rows already committed in the same table and
partition (type, `user_region`, `event_date`: a retry carries the event's own time and
country, so it lands in its original's partition) and drops a row whose
`(device_id_pseudonym, event_id)` is there as `duplicate`, whenever its copy arrives.

The streaming path does the same per window pane: before a pane's partition file is written,
the rows whose key the table's current version holds in that partition are dropped, except
those of the pane itself (a restart replays the pane and must find what it found before). Two
panes written at the same moment do not see each other's rows, as with concurrent appending
runs.

State: none of its own. The committed tables are the state, so it is always consistent
with what is committed (a run that failed before its commit added nothing to look up).
What a run holds is the keys of one partition's committed rows at a time, in Arrow's
hash table (64-bit hashes and the keys), and only the two columns are read from the
partition's files. Measured on 1M records: docs/input.md.

Horizon: as long as the original row is in the table, i.e. the type's retention (rows
past it are removed or locked at rest by `maintain`; a locked row is looked up in the
`_locked` table of its type). Pseudonyms are comparable across runs only under the same
`--pseudonym-key-file`: with a random per-run key nothing is found (the summary says that
pseudonyms are not linkable across runs).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.tables import QUARANTINE

DEVICE = "device_id_pseudonym"
EVENT = "event_id"
Partition = tuple[str, str, str]  # table ("<type>" or "_locked/<type>"), user_region, event_date


def row_keys(table: pa.Table) -> pa.Array:
    """`device_id_pseudonym` NUL `event_id` per row: the key a retry repeats."""
    joined = pc.binary_join_element_wise(table.column(DEVICE), table.column(EVENT), "\x00")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def committed_keys(files: Iterable[str], filesystem=None) -> pa.Array:
    """Keys of the committed rows in these files (only the two columns are read)."""
    tables = [pq.read_table(path, columns=[DEVICE, EVENT], filesystem=filesystem) for path in files]
    return row_keys(pa.concat_tables(tables)) if tables else pa.array([], pa.string())


def drop_committed(rows: pa.Table, keep: pa.Array, files: list[str], filesystem=None) -> tuple[pa.Array, int]:
    """(`_origin` of the rows to write, how many were dropped because they are committed already).
    `rows`: `_origin` and the two key columns of this run's rows of one partition; `keep`:
    the `_origin`s kept within the run. Arrow's `is_in` holds the committed keys in a hash
    table (64-bit hashes and the keys) for the one partition."""
    if not files:
        return keep, 0
    seen = pc.fill_null(pc.is_in(row_keys(rows), value_set=committed_keys(files, filesystem), skip_nulls=True), False)
    seen = seen.to_numpy(zero_copy_only=False)
    origins = rows.column("_origin").to_numpy()
    kept = np.isin(origins, keep.to_numpy(zero_copy_only=False))
    n = int((kept & seen).sum())
    if not n:
        return keep, 0
    return pa.array(origins[kept & ~seen], pa.int64()), n


def drop_committed_rows(table: pa.Table, files: list[str], filesystem=None) -> tuple[pa.Table, int]:
    """The rows of one partition whose (device, event) is not in the committed `files`, and how
    many were dropped (the streaming path: its rows carry both key columns)."""
    if not files or not table.num_rows:
        return table, 0
    seen = pc.fill_null(pc.is_in(row_keys(table), value_set=committed_keys(files, filesystem), skip_nulls=True),
                        False)
    n = pc.sum(seen).as_py() or 0
    return (table.filter(pc.invert(seen)), n) if n else (table, 0)


def table_partition_files(table_uri: str, user_region: str, event_date: str, skip: str = "") -> list[str]:
    """Paths (under `table_uri`) of the files the table's current version names in one partition,
    except those whose path holds `skip` (a streaming pane's own files: replaying the pane after a
    restart must compute what it computed before). A table not created yet has none."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(table_uri):
        return []
    sep = "/" if "://" in table_uri else os.sep
    paths = partition_files(DeltaTable(table_uri)).get((user_region, event_date), [])
    return [f"{table_uri.rstrip('/')}{sep}{path}" for path in paths if not (skip and skip in path)]


def partition_files(table) -> dict[tuple[str, str], list[str]]:
    """(user_region, event_date) -> the paths, relative to the table, of the files its version names."""
    actions = pa.table(table.get_add_actions(flatten=True))
    found: dict[tuple[str, str], list[str]] = {}
    if not actions.num_rows:
        return found
    paths = actions.column("path").to_pylist()
    regions = actions.column("partition.user_region").to_pylist()
    dates = actions.column("partition.event_date").to_pylist()
    for path, region, date in zip(paths, regions, dates, strict=True):
        found.setdefault((region, date), []).append(path)
    return found


def committed_partition_files(output, skip: Iterable[str] = ()) -> dict[Partition, list[str]]:
    """The committed data files of every partition of the output's type and locked tables, at
    the version the run opened (`commit.Output.open`), as paths relative to the output. For an
    appending run: only these are looked up (files on disk outside the table's version, of
    killed runs or replaced versions, are not). `skip`: tables this run committed already (a
    resumed run, `commit.Plan.done`): their rows are its own, and are not committed again."""
    found: dict[Partition, list[str]] = {}
    skip = set(skip)
    for name, table in output.tables.items():
        if table is None or name == QUARANTINE or name in skip:
            continue
        for (region, date), paths in partition_files(table).items():
            found[(name, region, date)] = [f"{name}/{path}" for path in paths]
    return found
