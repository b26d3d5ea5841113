"""The Beam graph: ReadTelemetry -> SanitizeRecords -> WriteMinimizedParquet (+ quarantine, stats).

Beam code only wires; every rule lives in `transforms/` as plain functions.
"""

from __future__ import annotations

import gc
import json
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import apache_beam as beam

from pipeline.io import WriteMinimizedParquet, WriteQuarantine
from pipeline.reading import CHUNK_BYTES, ReadTelemetry
from pipeline.tables import WrittenFile
from transforms.columnar import sanitize_columnar
from transforms.mapping import FormatSetup, map_lines
from transforms.records import SanitizeContext
from transforms.withdrawals import load_withdrawals

RECORDS = "records"
QUARANTINE = "quarantine"
STATS = "stats"


@contextmanager
def gc_paused() -> Iterator[None]:
    """Run a block with Python's cyclic garbage collector off, restoring its state after.

    Sanitizing a batch allocates a few container objects per field of every record
    (parsed JSON, rows), all freed by reference counting when the batch is done; the
    collector would scan them again and again while they are alive, which measured
    about a quarter of the sanitizing time. Cycles made meanwhile are collected as
    soon as the collector is back on, so memory stays bounded by one batch.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _SanitizeBatch(beam.DoFn):
    """One batch of lines -> (partition, table) outputs, a quarantine table, a stats Counter."""

    def __init__(self, ctx: SanitizeContext, formats: FormatSetup | None = None) -> None:
        self._ctx_state = ctx.__getstate__()
        self.formats = formats

    def setup(self) -> None:
        # Caches (hosts, pseudonyms, the suffix list) are built once per worker.
        self.ctx = SanitizeContext(**self._ctx_state)

    def process(self, element, withdrawals=None):
        source, index, lines = element
        mapped = None
        fmt = self.formats.format_of(index) if self.formats is not None else "contract"
        with gc_paused():
            if fmt != "contract":  # a real-world format: mapped onto the contract first (transforms/mapping.py)
                lines, mapped = map_lines(self.formats, fmt, lines, self.ctx.line_digest,
                                          self.ctx.policy.max_line_bytes)
            result = sanitize_columnar(self.ctx, source, index, lines, withdrawals)
        if mapped:
            result.stats.update(mapped)
        yield STATS, result.stats
        if result.quarantine is not None:
            yield QUARANTINE, result.quarantine
        for key, table in result.outputs.items():
            yield RECORDS, (tuple(key), table)


def _select(tagged: tuple[str, object], tag: str):
    if tagged[0] == tag:
        yield tagged[1]


class _Outputs(dict):
    """The outputs of SanitizeRecords by tag; `.records` works too."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class SanitizeRecords(beam.PTransform):
    """Line batches -> sanitized Arrow tables keyed by partition, plus quarantine and stats outputs.

    One output of (tag, value) pairs split by three selects rather than a
    multi-output ParDo: Beam's DaskRunner (2.77) hands every output of a
    multi-output ParDo to each consumer.
    """

    def __init__(self, ctx: SanitizeContext, withdrawals=None, formats: FormatSetup | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        self.withdrawals = withdrawals
        self.formats = formats  # optional PCollection with one element: the withdrawals lookup

    def expand(self, batches):
        side = {} if self.withdrawals is None else {"withdrawals": beam.pvalue.AsSingleton(self.withdrawals)}
        tagged = batches | "Sanitize" >> beam.ParDo(_SanitizeBatch(self.ctx, self.formats), **side)
        return _Outputs({tag: tagged | f"Select{tag.title()}" >> beam.FlatMap(_select, tag)
                         for tag in (RECORDS, QUARANTINE, STATS)})


class _LoadWithdrawals(beam.DoFn):
    """The withdrawals file -> one lookup {device hash: {basis: time}}, used as a side input:
    each worker gets it once, not once per record."""

    def __init__(self, ctx: SanitizeContext) -> None:
        self._ctx_state = ctx.__getstate__()

    def process(self, path: str):
        ctx = SanitizeContext(**self._ctx_state)
        yield load_withdrawals(path, ctx.device_hash)


class SumCounters(beam.CombineFn):
    """Adds up Counters; the run report is the sum of what every batch and writer saw."""

    def create_accumulator(self) -> Counter:
        return Counter()

    def add_input(self, acc: Counter, item: Counter) -> Counter:
        acc.update(item)
        return acc

    def merge_accumulators(self, accs) -> Counter:
        total: Counter = Counter()
        for acc in accs:
            total.update(acc)
        return total

    def extract_output(self, acc: Counter) -> Counter:
        return acc


class SumResults(beam.CombineFn):
    """Counters added up, and the `WrittenFile`s of the writers collected: what the run's
    report and its commit need."""

    def create_accumulator(self) -> tuple[Counter, list]:
        return Counter(), []

    def add_input(self, acc: tuple[Counter, list], item) -> tuple[Counter, list]:
        if isinstance(item, WrittenFile):
            acc[1].append(item)
        else:
            acc[0].update(item)
        return acc

    def merge_accumulators(self, accs) -> tuple[Counter, list]:
        total: Counter = Counter()
        files: list = []
        for counts, written in accs:
            total.update(counts)
            files.extend(written)
        return total, files

    def extract_output(self, acc: tuple[Counter, list]) -> tuple[Counter, list]:
        return acc


def _write_stats(result: tuple[Counter, list], path: str) -> None:
    stats, files = result
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"stats": dict(stats), "files": [list(f) for f in files]}, fh, sort_keys=True)


def read_results(path: str) -> tuple[Counter, list[WrittenFile]]:
    """What `_write_stats` wrote: the summed counters and the files written."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    return Counter(data["stats"]), [WrittenFile(*f) for f in data["files"]]


def build_pipeline(p: beam.Pipeline, files: list[str], staging_dir: str, ctx: SanitizeContext,
                   batch_lines: int = 20000, file_prefix: str = "run", withdrawals_path: str | None = None,
                   flush_each: bool = False, inline_small: bool = False,
                   chunk_bytes: int | None = CHUNK_BYTES, output: str | None = None,
                   quarantine_prefix: str | None = None, committed: dict | None = None,
                   formats: FormatSetup | None = None) -> None:
    """Attach the sanitizing graph to `p`: data files land in the tables under `output` (default:
    `staging_dir`/final), uncommitted; counters and the list of files in `staging_dir`/_stats.json
    (see `read_results`). `flush_each`: see
    io._StageWriter; `inline_small`: see io.WriteMinimizedParquet; `chunk_bytes`: see reading.plan_chunks;
    `committed`: the committed files per partition an appending run drops retries against (dedupe.py);
    `formats`: the input format of each file, when not every file is in the contract's (mapping.py)."""
    batches = p | "ReadTelemetry" >> ReadTelemetry(files, batch_lines, ctx.policy.max_line_bytes, chunk_bytes)
    withdrawals = None
    if withdrawals_path:
        withdrawals = (p | "WithdrawalsFile" >> beam.Create([withdrawals_path])
                       | "LoadWithdrawals" >> beam.ParDo(_LoadWithdrawals(ctx)))
    sanitized = batches | "SanitizeRecords" >> SanitizeRecords(ctx, withdrawals, formats)
    output = output or os.path.join(staging_dir, "final")
    write_stats = sanitized[RECORDS] | "WriteMinimizedParquet" >> WriteMinimizedParquet(
        staging_dir, output, file_prefix, flush_each, inline_small, committed)
    quarantine_stats = sanitized[QUARANTINE] | "WriteQuarantine" >> WriteQuarantine(
        output, quarantine_prefix or file_prefix, flush_each)
    (
        (sanitized[STATS], write_stats, quarantine_stats)
        | "AllStats" >> beam.Flatten()
        | "SumStats" >> beam.CombineGlobally(SumResults())
        | "WriteStats" >> beam.Map(_write_stats, os.path.join(staging_dir, "_stats.json"))
    )
