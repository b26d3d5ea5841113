"""Writing minimised Parquet: the Beam write transforms (reading is in pipeline.reading).

Writes go to a staging area first and are finalised per partition, where
producer retries meet and are removed. The final files are written straight into
their Delta table's directory under the output location (local path or URI) and
described by a `tables.WrittenFile` each; they become visible only when the run's
commit adds them to the table (pipeline/commit.py), so a failed run never leaves
half-written output behind, only unreferenced files that vacuum removes.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from pipeline.dedupe import DEVICE, EVENT, drop_committed
from pipeline.lease import FileGuard
from pipeline.tables import QUARANTINE, STATS_COLUMNS, WrittenFile, is_remote, join, time_bounds
from transforms.records import PartitionKey, as_written, first_copy_mask

COMPRESSION = "zstd"
SMALL_FILE_ROWS = 16  # files of at most this many rows are written uncompressed
MAX_SLICES = 256  # runs of kept rows in a part of a piece beyond which it is filtered instead


def parquet_compression(rows: int) -> str:
    """zstd, except for files of a few rows (most partitions of a run spread over many
    days): there zstd costs ~20 us per column chunk, 0.42 ms per file of 23 columns, and
    makes the file larger, not smaller (1 row: 7.1 KB vs 6.7 KB; 16 rows: 8.2 vs 8.1 KB;
    64 rows: 8.5 vs 10.4 KB)."""
    return "none" if rows <= SMALL_FILE_ROWS else COMPRESSION


def write_parquet(table: pa.Table, path: str, filesystem=None) -> None:
    """One output Parquet file: compressed as `parquet_compression` says, and with column
    statistics (min/max in the footer) only for the columns the table's Delta statistics cover
    (`tables.STATS_COLUMNS`), so pseudonyms and free text are not copied into footers either.
    Statistics of every column made writing 10-20% slower (2,158 files of a 1M run: 1.88-2.01
    -> 1.65-1.70 CPU s) and the files 6% larger."""
    stats = [name for name in STATS_COLUMNS["data"] + STATS_COLUMNS["quarantine"] if name in table.column_names]
    pq.write_table(table, path, compression=parquet_compression(table.num_rows), filesystem=filesystem,
                   write_statistics=stats or False)


def partition_dir(key: PartitionKey) -> str:
    base = key.record_type if key.area == "data" else os.path.join("_locked", key.record_type)
    return os.path.join(base, f"user_region={key.user_region}", f"event_date={key.event_date}")


def table_of(key: PartitionKey) -> str:
    """Name of the Delta table a partition belongs to."""
    return key.record_type if key.area == "data" else f"_locked/{key.record_type}"


def output_fs(location: str):
    """pyarrow file system and root path of an output location: None (plain local writes) for a
    local path; S3 or Azure (pipeline/location.py) for a URI. Objects need no directories."""
    if not is_remote(location):
        return None, location
    from pipeline.location import filesystem

    return filesystem(location)


def make_dir(path: str) -> None:
    """os.makedirs(path, exist_ok=True), one system call when the parent exists (a partition
    directory usually is new and its parent, the type or region directory, is not)."""
    try:
        os.mkdir(path)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(path, exist_ok=True)


def write_staging(table: pa.Table, path: str) -> None:
    """A staging file: Arrow IPC, uncompressed. It lives for one run on local disk, so
    encoding it as Parquet (a per-file cost that dominates with many small partitions)
    buys nothing; reading it back is a memory map."""
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def read_staging(path: str) -> pa.Table:
    """The table of a staging file, memory-mapped (the map lives as long as the table)."""
    return pa.ipc.open_file(pa.memory_map(path, "r")).read_all()


def inline_piece(table: pa.Table) -> bytes:
    """A small staged table carried in the element itself (Arrow IPC stream bytes)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def read_piece(piece: str | bytes) -> pa.Table:
    """A staged table: a staging file's path, or the bytes of `inline_piece`."""
    if isinstance(piece, bytes):
        return pa.ipc.open_stream(piece).read_all()
    return read_staging(piece)


class _StageWriter(beam.DoFn):
    """Buffers sanitized tables per partition and writes staging files of whole batches.

    With `inline_budget`, a small flush (most partitions of a run spread over
    many days hold a row or a few) travels inline, as IPC bytes in the element,
    instead of as a file: writing, finding and reading back a staging file cost
    ~0.3 ms, the bytes ~0.04 ms. What a worker sends inline is capped by the
    budget, since the runner holds grouped elements until the partitions are
    finalised. Only worth it when the runner keeps them in this process (see
    `WriteMinimizedParquet`).

    With `flush_each`, every table is written as it arrives and its file is
    emitted from process(): for runners that drop what finish_bundle emits
    (Beam's DaskRunner as of 2.77).
    """

    FLUSH_ROWS = 50_000  # per partition
    FLUSH_TOTAL = 100_000  # across partitions: bounds memory whatever the skew
    MAX_PARTITIONS = 256  # buffered at once: each small table costs far more than its rows
    COMPACT_TABLES = 4  # buffered tables per partition before they are merged
    INLINE_BYTES = 64 << 10  # a flush whose table is at most this large travels inline ...
    INLINE_BUDGET = 16 << 20  # ... until the worker has sent this much inline (when inlining)

    def __init__(self, staging_dir: str, flush_each: bool = False, inline_budget: int = 0) -> None:
        self.staging_dir = staging_dir
        self.flush_each = flush_each
        self.inline_budget = inline_budget

    def setup(self) -> None:
        self.made: set[str] = set()  # directories this worker created already
        self.inline_left = self.inline_budget

    def start_bundle(self) -> None:
        # Insertion order = least recently fed first: when too many partitions are
        # buffered (input spread over many dates), the one idle longest is written.
        self.buffers: dict[PartitionKey, list[pa.Table]] = {}
        self.rows: dict[PartitionKey, int] = {}
        self.total = 0

    def process(self, element: tuple[tuple, pa.Table]):
        key, table = PartitionKey(*element[0]), element[1]
        buffered = self.buffers.pop(key, None) or []
        buffered.append(table)
        if len(buffered) >= self.COMPACT_TABLES:
            buffered = [pa.concat_tables(buffered).combine_chunks()]
        self.buffers[key] = buffered
        self.rows[key] = self.rows.pop(key, 0) + table.num_rows
        self.total += table.num_rows
        if self.flush_each or self.rows[key] >= self.FLUSH_ROWS:
            yield self._flush(key)
        while self.total >= self.FLUSH_TOTAL:
            yield self._flush(max(self.rows, key=lambda k: self.rows[k]))
        while len(self.buffers) > self.MAX_PARTITIONS:
            yield self._flush(next(iter(self.buffers)))

    def _flush(self, key: PartitionKey) -> tuple[tuple, str | bytes]:
        tables = self.buffers.pop(key)
        self.total -= self.rows.pop(key)
        table = pa.concat_tables(tables)
        if table.nbytes <= self.INLINE_BYTES and self.inline_left > 0:
            piece = inline_piece(table)
            self.inline_left -= len(piece)
            return tuple(key), piece
        directory = os.path.join(self.staging_dir, "parts", partition_dir(key))
        if directory not in self.made:
            make_dir(directory)
            self.made.add(directory)
        path = os.path.join(directory, f"{uuid.uuid4().hex}.arrow")
        write_staging(table, path)
        return tuple(key), path

    def finish_bundle(self):
        for key in list(self.buffers):
            yield WindowedValue(self._flush(key), GlobalWindow().max_timestamp(), [GlobalWindow()])


def _write_file(tables: list[pa.Table | tuple[pa.Table, pa.Array]], path: str, filesystem=None,
                guard: FileGuard | None = None) -> None:
    """One final Parquet file: rows in input order, hidden columns removed; under the worker's
    lease on the output (pipeline/lease.py) when given. A (table, mask) pair is filtered here, in
    the writer thread: the kept rows of a staged piece are copied only while its file is written."""
    table = as_written(pa.concat_tables([t if isinstance(t, pa.Table) else t[0].filter(t[1]) for t in tables]))
    with guard() if guard is not None else contextlib.nullcontext():
        write_parquet(table, path, filesystem)


def _first_origin(table: pa.Table) -> int:
    """Input position of a staged piece's first row (-1 for an empty piece)."""
    first = pc.min(table.column("_origin")).as_py()
    return -1 if first is None else first


def _kept_rows(table: pa.Table, mask: pa.Array, kept: np.ndarray, first: int,
               stop: int) -> list[pa.Table | tuple[pa.Table, pa.Array]]:
    """Rows `kept` (ascending indices within [first, stop)) of a staged piece, for a file: as
    slices between the dropped rows (views of the memory map: nothing is copied before the
    writer encodes them) when retries are few, else as the range with its mask (filtered by
    the writer)."""
    breaks = np.flatnonzero(np.diff(kept) != 1) + 1  # where a run of consecutive kept rows ends
    if len(breaks) >= MAX_SLICES:
        return [(table.slice(first, stop - first), mask.slice(first, stop - first))]
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(kept)]))
    return [table.slice(int(kept[a]), int(b - a)) for a, b in zip(starts, ends, strict=True)]


def _write_rows(tables: list, path: str, filesystem, guard: FileGuard | None, rows: int) -> int:
    """`_write_file`, returning the file's rows (staged rows, before retries are filtered)."""
    _write_file(tables, path, filesystem, guard)
    return rows


def file_guard(location: str) -> FileGuard:
    """The lease a worker holds while it writes a file into `location` (pipeline/lease.py)."""
    return FileGuard(location)


class _FinalizePartition(beam.DoFn):
    """All staged tables of one partition (files or inline bytes) -> final Parquet, producer retries removed.

    Only the 16 bytes of hidden key and order per row are held for the whole
    partition; rows are then streamed file by file. Of several rows with one
    (device, event) key the first in input order is kept, so the result does
    not depend on the runner or on how work was split. With `committed` (an appending
    run: partition -> its committed files, relative to the output), rows already
    committed are dropped too (pipeline/dedupe.py).
    """

    # Rows per file, exactly (pieces are cut to fit); with MAX_ROWS_PENDING it bounds what a
    # partition holds while it is written (one file filled, one being written), so it is what
    # makes the peak memory of large inputs flat: at 100,000 a 5M-record run peaked higher than a
    # 1M one, whose largest partitions hold about 57,000 rows (docs/performance.md).
    MAX_ROWS_PER_FILE = 50_000
    WRITERS = 2  # Parquet encoding releases the GIL: two files at once use the second core
    MAX_PENDING = 2  # files handed to the writers and not yet written: bounds their memory ...
    # ... and their rows: small files go two at a time, full ones one at a time. Two full files
    # at once (their pages read from the staging files' maps, Parquet's buffers) raised the
    # in-process peak of a 5M-record run by about 45 MiB (docs/performance.md).
    MAX_ROWS_PENDING = MAX_ROWS_PER_FILE

    def __init__(self, final_dir: str, file_prefix: str, committed: dict | None = None) -> None:
        self.final_dir = final_dir  # the output location: tables live right under it
        self.file_prefix = file_prefix
        self.committed = committed or {}

    def setup(self) -> None:
        self._fs, self._root = output_fs(self.final_dir)
        self._guard = file_guard(self.final_dir)
        self._pool = ThreadPoolExecutor(self.WRITERS, thread_name_prefix="parquet")
        self._pending: deque[Future] = deque()
        self._pending_rows = 0  # rows of the files handed to the writers and not yet written

    def _submit(self, tables: list, path: str) -> None:
        rows = sum((t if isinstance(t, pa.Table) else t[0]).num_rows for t in tables)
        while self._pending and (len(self._pending) >= self.MAX_PENDING
                                 or self._pending_rows + rows > self.MAX_ROWS_PENDING):
            self._pending_rows -= self._pending.popleft().result()  # re-raises a failed write, failing the bundle
        self._pending.append(self._pool.submit(_write_rows, tables, path, self._fs, self._guard, rows))
        self._pending_rows += rows

    def finish_bundle(self) -> None:
        # Every file of the bundle is on disk before the bundle counts as done.
        while self._pending:
            self._pending_rows -= self._pending.popleft().result()

    def teardown(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True)

    def process(self, element: tuple[tuple, list[str | bytes]]):
        key = PartitionKey(*element[0])
        # Pieces in input order (by their first row): one worker's pieces then follow each other,
        # so a file made of several needs no sort (a sorted copy of up to MAX_ROWS_PER_FILE rows),
        # and which rows share a file does not depend on the staging files' random names.
        # An inline piece is read once: its bytes are held by the element anyway.
        inline = [read_piece(p) if isinstance(p, bytes) else None for p in element[1]]
        hidden = [(t if t is not None else read_piece(p)).select(["_key", "_origin"])
                  for p, t in zip(element[1], inline, strict=True)]
        firsts = [_first_origin(h) for h in hidden]
        order = sorted(range(len(hidden)), key=firsts.__getitem__)
        pieces = [element[1][i] for i in order]
        inline = [inline[i] for i in order]
        # Only the 16 bytes of key and order per row are kept for the whole partition, copied out
        # of the pieces: a staging file is a memory map, and its pages, once read, count in the
        # resident memory for as long as anything refers to the map.
        hidden = [hidden[i] for i in order]
        sizes = [h.num_rows for h in hidden]
        keys = pa.concat_tables(hidden).combine_chunks()
        del hidden
        origins = keys.column("_origin").to_numpy()
        kept_rows = first_copy_mask(keys)  # in the order of `keys`: the pieces', one after another
        table_name = table_of(key)
        committed = self.committed.get((table_name, key.user_region, key.event_date))
        if committed:
            rows = pa.concat_tables([read_piece(p).select([DEVICE, EVENT, "_origin"]) for p in pieces])
            paths = [join(self._root, f) if self._fs is not None else os.path.join(self._root, f) for f in committed]
            keep = origins if kept_rows is None else origins[kept_rows]
            keep, _ = drop_committed(rows, pa.array(keep), paths, self._fs)
            del rows
            if len(keep) < (keys.num_rows if kept_rows is None else int(kept_rows.sum())):
                kept_rows = np.isin(origins, keep.to_numpy(zero_copy_only=False))
        duplicates = 0 if kept_rows is None else keys.num_rows - int(kept_rows.sum())
        if duplicates == keys.num_rows:  # every row is committed already: no file
            yield self._stats(key, 0, 0, duplicates)
            return
        relative = f"user_region={key.user_region}/event_date={key.event_date}"
        if self._fs is None:
            directory = os.path.join(self._root, partition_dir(key))
            make_dir(directory)
        else:
            directory = join(self._root, table_name, relative)
        pending: list[pa.Table | tuple[pa.Table, pa.Array]] = []
        bounds: list[pa.Table] = []  # the kept rows' event_time, for the file's statistics
        pending_rows = 0
        part = 0
        written = 0
        files: list[WrittenFile] = []

        def flush() -> None:
            nonlocal pending, bounds, pending_rows, part, written
            name = f"part-{self.file_prefix}-{part:05d}.parquet"
            lo, hi, nulls = time_bounds(bounds)
            files.append(WrittenFile(table_name, f"{relative}/{name}", pending_rows, key.user_region,
                                     key.event_date, lo, hi, nulls))
            self._submit(pending, join(directory, name) if self._fs is not None else os.path.join(directory, name))
            written += pending_rows
            part += 1
            pending, bounds, pending_rows = [], [], 0

        times: list[str] = []
        offset = 0
        for piece, size, ready in zip(pieces, sizes, inline, strict=True):
            # a file is mapped again: each piece's pages are let go once its rows are written
            table = ready if ready is not None else read_piece(piece)
            times = ["event_time"] if "event_time" in table.column_names else []
            piece_rows = None if kept_rows is None else kept_rows[offset:offset + size]
            offset += size
            if piece_rows is not None and piece_rows.all():
                piece_rows = None
            kept = None if piece_rows is None else np.flatnonzero(piece_rows)
            mask = None if piece_rows is None else pa.array(piece_rows)
            done = 0  # kept rows of this piece handed to files so far
            total = table.num_rows if kept is None else len(kept)
            while done < total:  # a piece that does not fit is cut: no file exceeds the limit
                take = min(self.MAX_ROWS_PER_FILE - pending_rows, total - done)
                if kept is None:
                    part_table = table.slice(done, take)
                    pending.append(part_table)
                    bounds.append(part_table.select(times))
                else:  # rows [first, stop) of the piece hold exactly `take` kept rows
                    assert mask is not None
                    first = 0 if done == 0 else int(kept[done - 1]) + 1
                    stop = int(kept[done + take - 1]) + 1 if done + take < total else table.num_rows
                    chosen = kept[done:done + take]
                    pending.extend(_kept_rows(table, mask, chosen, first, stop))
                    bounds.append(table.select(times).take(pa.array(chosen)))
                pending_rows += take
                done += take
                if pending_rows >= self.MAX_ROWS_PER_FILE:
                    flush()
        if pending_rows or part == 0:
            flush()
        yield self._stats(key, part, written, duplicates)
        yield from files

    @staticmethod
    def _stats(key: PartitionKey, files: int, written: int, duplicates: int) -> Counter:
        stats = Counter({"files_written": files})
        if key.area == "data":
            stats[f"written/{key.record_type}"] += written
            stats[f"output/{key.record_type}"] -= duplicates
        else:
            stats[f"written_locked/{key.record_type}"] += written
            stats[f"locked/{key.record_type}"] -= duplicates
            stats["dropped/expired_locked"] -= duplicates
        if duplicates:
            stats["dropped/duplicate"] += duplicates
        return stats


class WriteMinimizedParquet(beam.PTransform):
    """(PartitionKey, Arrow table) -> zstd Parquet under <output>/<table>/user_region=/event_date=.

    Emits the write statistics (rows written, duplicates removed) as Counters and one
    `WrittenFile` per file, for the commit.
    """

    def __init__(self, staging_dir: str, output: str, file_prefix: str = "run", flush_each: bool = False,
                 inline_small: bool = False, committed: dict | None = None) -> None:
        super().__init__()
        self.committed = committed
        self.staging_dir = staging_dir
        self.output = output
        self.file_prefix = file_prefix
        self.flush_each = flush_each
        # Small partition pieces inside the grouped elements rather than as staging files:
        # only for a runner that keeps grouped elements in this process. With Beam's
        # multi_processing workers, 8-15 MB sent inline raised the peak RSS of the process
        # tree by 240-330 MiB, outside Python's heap (tracemalloc in the runner process saw
        # the 15 MB of pieces and 74 MiB in all), presumably in the transport between the
        # processes. Other runners use files.
        self.inline_budget = _StageWriter.INLINE_BUDGET if inline_small else 0

    def expand(self, tables):
        return (
            tables
            | "StageFiles" >> beam.ParDo(_StageWriter(self.staging_dir, self.flush_each, self.inline_budget))
            | "GroupByPartition" >> beam.GroupByKey()
            | "FinalizePartitions" >> beam.ParDo(_FinalizePartition(self.output, self.file_prefix, self.committed))
        )


class _QuarantineWriter(beam.DoFn):
    """Quarantine tables -> Parquet files of up to FLUSH_ROWS rows, sorted by file and line.

    Streamed like the data (never collected in one place), so memory does not
    grow with the amount of bad input. Emits a Counter and a `WrittenFile` per file.
    """

    FLUSH_ROWS = 20_000  # rows of quarantine buffered before a file is written

    def __init__(self, output: str, file_prefix: str, flush_each: bool = False) -> None:
        self.output = output
        self.file_prefix = file_prefix
        self.flush_each = flush_each  # see _StageWriter

    def setup(self) -> None:
        self._fs, self._root = output_fs(self.output)
        self._guard = file_guard(self.output)

    def start_bundle(self) -> None:
        self.pending: list[pa.Table] = []
        self.rows = 0

    def process(self, table: pa.Table):
        self.pending.append(table)
        self.rows += table.num_rows
        if self.flush_each or self.rows >= self.FLUSH_ROWS:
            yield from self._flush()

    def _flush(self) -> tuple[Counter, WrittenFile]:
        table = pa.concat_tables(self.pending).sort_by([("source_file", "ascending"), ("line_number", "ascending")])
        name = f"part-{self.file_prefix}-{uuid.uuid4().hex[:12]}.parquet"
        if self._fs is None:
            directory = os.path.join(self._root, QUARANTINE)
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, name)
        else:
            path = join(self._root, QUARANTINE, name)
        with self._guard():
            write_parquet(table, path, self._fs)
        self.pending, self.rows = [], 0
        return (Counter({"files_written": 1, "written/_quarantine": table.num_rows}),
                WrittenFile(QUARANTINE, name, table.num_rows))

    def finish_bundle(self):
        if self.pending:
            for out in self._flush():
                yield WindowedValue(out, GlobalWindow().max_timestamp(), [GlobalWindow()])


class WriteQuarantine(beam.PTransform):
    """Quarantine tables -> `<output>/_quarantine/part-*.parquet`; emits write statistics and files."""

    def __init__(self, output: str, file_prefix: str = "run", flush_each: bool = False) -> None:
        super().__init__()
        self.output = output
        self.file_prefix = file_prefix
        self.flush_each = flush_each

    def expand(self, tables):
        return tables | "Write" >> beam.ParDo(_QuarantineWriter(self.output, self.file_prefix, self.flush_each))
