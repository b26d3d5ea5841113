"""Streaming: the same sanitizing transforms over an unbounded source, in fixed windows.

Graph: source lines -> fixed windows (default 60 s, allowed lateness, late
panes fire per late element) -> lines grouped into batches per window and
shard -> `sanitize_columnar` (the batch code) -> rows grouped per window and
partition -> one Parquet file per window, partition and pane, retries of one
(device, event) removed within the window and against what earlier panes committed in the
partition (pipeline/dedupe.py) -> one Delta commit per table and pane,
exactly once across restarts: each commit carries the app transaction
`telemetry-sanitizer/stream/<job>/<window>` with the pane number as version, and
a table whose log holds it is not committed again (docs/tables.md). Files live in
a `window=<start>-<end>` directory inside their partition.

Windows use the element timestamps the source gives (Pub/Sub publish time, or
the attribute named by --pubsub-timestamp-attribute; Kafka record time). The
record's own `ts` still decides `event_date` and retention, as in batch.
Elements later than the allowed lateness are discarded by the runner before
grouping; the per-window report counts what arrived in time, so compare the
source's counts with the reports' `input_records` to see such losses.

Production sources (Pub/Sub, Kafka) need a runner that supports them
(Dataflow, Flink); they are wired here and documented in the README, and the
windowing, lateness and duplicate behaviour is tested with TestStream.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections import Counter
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam import pvalue
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms import trigger, window

from pipeline import lease
from pipeline.cliparse import non_negative_int, positive_int
from pipeline.dedupe import drop_committed_rows, table_partition_files
from pipeline.graph import QUARANTINE, STATS, SumResults, gc_paused
from pipeline.io import file_guard, output_fs, table_of, write_parquet
from pipeline.tables import (
    APP_ID_PREFIX,
    REPORTS,
    WrittenFile,
    commit_metadata,
    join,
    not_local,
    time_bounds,
)
from pipeline.tables import QUARANTINE as QUARANTINE_TABLE
from transforms.columnar import sanitize_columnar
from transforms.pseudonym import key_fingerprint
from transforms.records import (
    QUARANTINE_SCHEMA,
    PartitionKey,
    SanitizeContext,
    as_written,
    first_copies,
    keep_copies,
)


class StreamingOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--window-seconds", "--window_seconds", dest="window_seconds", type=positive_int,
                            default=60, help="fixed window length in seconds (default 60)")
        parser.add_argument("--allowed-lateness-seconds", "--allowed_lateness_seconds",
                            dest="allowed_lateness_seconds", type=non_negative_int, default=600,
                            help="how late an element may arrive and still be written (default 600)")
        parser.add_argument("--pubsub-subscription", "--pubsub_subscription", dest="pubsub_subscription")
        parser.add_argument("--pubsub-timestamp-attribute", "--pubsub_timestamp_attribute",
                            dest="pubsub_timestamp_attribute", default=None)
        parser.add_argument("--kafka-bootstrap", "--kafka_bootstrap", dest="kafka_bootstrap")
        parser.add_argument("--kafka-topic", "--kafka_topic", dest="kafka_topic")
        parser.add_argument("--shards", type=positive_int, default=4, help="parallel batches per window")


def _window_tag(w: window.IntervalWindow) -> str:
    start = w.start.to_utc_datetime().strftime("%Y%m%dT%H%M%SZ")
    end = w.end.to_utc_datetime().strftime("%Y%m%dT%H%M%SZ")
    return f"{start}-{end}"


@beam.typehints.with_output_types(tuple[Any, Any])
class _SanitizeWindowBatch(beam.DoFn):
    """(shard, [lines]) of one window pane -> the batch outputs of `sanitize_columnar` (which
    hands a shard of fewer than 64 lines to `sanitize_lines` whole)."""

    def __init__(self, ctx: SanitizeContext) -> None:
        self._ctx_state = ctx.__getstate__()

    def setup(self) -> None:
        self.ctx = SanitizeContext(**self._ctx_state)

    def process(self, element, w=beam.DoFn.WindowParam):
        shard, lines = element
        source = f"stream:{_window_tag(w)}:{shard}"
        numbered = list(enumerate(sorted(lines), 1))  # sorted: the order does not depend on arrival
        with gc_paused():
            result = sanitize_columnar(self.ctx, source, shard, numbered)
        yield pvalue.TaggedOutput(STATS, result.stats)
        if result.quarantine is not None:
            yield pvalue.TaggedOutput(QUARANTINE, ("q", result.quarantine))
        for key, table in result.outputs.items():
            yield tuple(key), table


def _write(table: pa.Table, output_dir: str, relative: str) -> None:
    """A data file of the table directory `relative` is in; it is only part of the table once the
    window's commit adds it, so it is written in place (no temporary name, no rename)."""
    fs, root = output_fs(output_dir)
    path = join(root, relative) if fs is not None else os.path.join(root, relative)
    if fs is None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with file_guard(output_dir)():  # pipeline/lease.py
        write_parquet(table, path, fs)


class _WriteWindowPartition(beam.DoFn):
    """All rows of one partition in one window pane -> one Parquet file, retries removed."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir

    def process(self, element, w=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        key = PartitionKey(*element[0])
        table = pa.concat_tables(element[1])
        keep = first_copies(table)
        duplicates = table.num_rows - len(keep)
        if duplicates:
            table = keep_copies(table, keep)
        table = as_written(table)
        name = table_of(key)
        own = f"window={_window_tag(w)}/part-pane{pane.index:03d}-"
        fs, _ = output_fs(self.output_dir)
        committed = table_partition_files(join(self.output_dir, name), key.user_region, key.event_date, skip=own)
        table, retried = drop_committed_rows(table, committed, fs)  # retries of rows earlier panes committed
        duplicates += retried
        stats = Counter({f"written/{key.record_type}": table.num_rows})
        stats[f"output/{key.record_type}"] -= duplicates
        if duplicates:
            stats["dropped/duplicate"] += duplicates
        if not table.num_rows:  # every row is committed already: no file
            yield stats
            return
        relative = (f"user_region={key.user_region}/event_date={key.event_date}/{own}"
                    f"{uuid.uuid4().hex[:8]}.parquet")
        _write(table, self.output_dir, f"{name}/{relative}")
        stats["files_written"] += 1
        yield stats
        lo, hi, nulls = time_bounds([table])
        yield WrittenFile(name, relative, table.num_rows, key.user_region, key.event_date, lo, hi, nulls)


class _WriteWindowQuarantine(beam.DoFn):
    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir

    def process(self, element, w=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        table = pa.concat_tables([QUARANTINE_SCHEMA.empty_table(), *element[1]])
        relative = f"window={_window_tag(w)}/part-pane{pane.index:03d}-{uuid.uuid4().hex[:8]}.parquet"
        _write(table, self.output_dir, f"{QUARANTINE_TABLE}/{relative}")
        yield Counter({"files_written": 1, "written/_quarantine": table.num_rows})
        yield WrittenFile(QUARANTINE_TABLE, relative, table.num_rows)


class _CommitWindow(beam.DoFn):
    """The counters and files of one window pane -> one commit per table that has files, exactly
    once (app transaction per window, pane number as version), then the pane's report naming the
    versions."""

    def __init__(self, output_dir: str, ctx: SanitizeContext) -> None:
        self.output_dir = output_dir
        self.policy = ctx.policy
        self.fingerprint = key_fingerprint(ctx.key)

    def setup(self) -> None:
        from pipeline.commit import Output

        self.output = Output(self.output_dir, self.policy)
        self.output.open()
        self.job = f"{self.policy.sha256[:8]}{self.fingerprint[:8]}"

    def process(self, result, w=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        stats, files = result
        tag = _window_tag(w)
        run_id = f"stream-{tag}-pane{pane.index:03d}"
        meta = commit_metadata(run_id, self.policy, self.fingerprint)
        app_id = f"{APP_ID_PREFIX}/stream/{self.job}/{tag}"
        fs, root = output_fs(self.output_dir)
        by_table: dict[str, list[WrittenFile]] = {}
        for written in files:
            by_table.setdefault(written.table, []).append(written)
        with contextlib.nullcontext() if fs is not None else lease.committing(root, wait=True):
            tables = {name: self.output.append_once(name, by_table[name], meta, app_id, pane.index + 1)
                      for name in sorted(by_table)}
        name = f"window-{tag}-pane{pane.index:03d}.json"
        text = json.dumps({**dict(sorted(stats.items())), "run_id": run_id, "tables": tables})
        if fs is None:
            directory = os.path.join(root, REPORTS)
            os.makedirs(directory, exist_ok=True)
            tmp = os.path.join(directory, "." + name)
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, os.path.join(directory, name))
        else:
            with fs.open_output_stream(join(root, REPORTS, name)) as fh:
                fh.write(text.encode())
        yield name


class WindowedSanitize(beam.PTransform):
    """Unbounded raw lines (bytes) -> per-window Parquet, quarantine and report files under `output_dir`."""

    def __init__(self, ctx: SanitizeContext, output_dir: str, window_seconds: int = 60,
                 allowed_lateness_seconds: int = 600, shards: int = 4) -> None:
        super().__init__()
        self.ctx = ctx
        self.output_dir = output_dir
        self.window_seconds = window_seconds
        self.allowed_lateness = allowed_lateness_seconds
        self.shards = shards

    def _window(self, label: str):
        return label >> beam.WindowInto(
            window.FixedWindows(self.window_seconds),
            trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
            allowed_lateness=self.allowed_lateness,
            accumulation_mode=trigger.AccumulationMode.DISCARDING,
        )

    def expand(self, lines):
        shards = self.shards
        sanitized = (
            lines
            | self._window("Window")
            | "Shard" >> beam.Map(lambda line: (hash(line) % shards, line))
            | "BatchPerWindow" >> beam.GroupByKey()
            | "Sanitize" >> beam.ParDo(_SanitizeWindowBatch(self.ctx)).with_outputs(QUARANTINE, STATS, main="rows")
        )
        written = (
            sanitized.rows
            | "GroupPartition" >> beam.GroupByKey()
            | "WritePartition" >> beam.ParDo(_WriteWindowPartition(self.output_dir))
        )
        quarantined = (
            sanitized[QUARANTINE]
            | "GroupQuarantine" >> beam.GroupByKey()
            | "WriteQuarantine" >> beam.ParDo(_WriteWindowQuarantine(self.output_dir))
        )
        return (
            (sanitized[STATS], written, quarantined)
            | "AllStats" >> beam.Flatten()
            | self._window("Rewindow")
            | "SumStats" >> beam.CombineGlobally(SumResults()).without_defaults()
            | "Commit" >> beam.ParDo(_CommitWindow(self.output_dir, self.ctx))
        )


def read_source(p: beam.Pipeline, opts: StreamingOptions):
    """The production source selected by flags: Pub/Sub or Kafka (values are NDJSON lines)."""
    if opts.pubsub_subscription:
        return p | "ReadPubSub" >> beam.io.ReadFromPubSub(
            subscription=opts.pubsub_subscription, timestamp_attribute=opts.pubsub_timestamp_attribute)
    if opts.kafka_bootstrap and opts.kafka_topic:
        from apache_beam.io.kafka import ReadFromKafka

        return (
            p
            | "ReadKafka" >> ReadFromKafka(consumer_config={"bootstrap.servers": opts.kafka_bootstrap},
                                           topics=[opts.kafka_topic])
            | "Values" >> beam.Map(lambda kv: kv[1])
        )
    raise ValueError("streaming needs --pubsub-subscription or --kafka-bootstrap with --kafka-topic")


def build_streaming(p: beam.Pipeline, options: PipelineOptions, ctx: SanitizeContext, output_dir: str):
    """Wire source -> WindowedSanitize for a production streaming job."""
    opts = options.view_as(StreamingOptions)
    options.view_as(StandardOptions).streaming = True
    lines = read_source(p, opts)
    return lines | "WindowedSanitize" >> WindowedSanitize(
        ctx, output_dir, opts.window_seconds, opts.allowed_lateness_seconds, opts.shards)


def main(argv: list[str]) -> int:
    """`python -m pipeline stream --pubsub-subscription S | --kafka-bootstrap B --kafka-topic T --output DIR ...`"""
    import sys

    from pipeline.options import SanitizerOptions
    from pipeline.run import ConfigError, load_key, parse_as_of
    from schemas.policy import PolicyError, load_policy

    options = PipelineOptions(argv)
    opts = options.view_as(SanitizerOptions)
    stream_opts = options.view_as(StreamingOptions)
    try:
        if not opts.output:
            raise ConfigError("--output is required")
        if not_local("--output", opts.output):
            raise ConfigError(str(not_local("--output", opts.output)))
        if not (stream_opts.pubsub_subscription or (stream_opts.kafka_bootstrap and stream_opts.kafka_topic)):
            raise ConfigError("streaming needs --pubsub-subscription, or --kafka-bootstrap and --kafka-topic")
        policy = load_policy(opts.policy)
        key, _ = load_key(opts.pseudonym_key_file)
        if not opts.pseudonym_key_file:
            raise ConfigError("streaming needs --pseudonym-key-file (a per-run random key would change per restart)")
        ctx = SanitizeContext(policy=policy, key=key, as_of=parse_as_of(opts.as_of))
    except (ConfigError, PolicyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # The job's shared lease on a local output: an erase or maintain (whose vacuum would delete the
    # files of panes not yet committed) is refused while it runs (pipeline/lease.py).
    with lease.writer(opts.output), beam.Pipeline(options=options) as p:
        build_streaming(p, options, ctx, opts.output)
    return 0
