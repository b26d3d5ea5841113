"""Streaming: the same sanitizing transforms over an unbounded source, in fixed windows.

Graph: source lines -> fixed windows (default 60 s, allowed lateness, late
panes fire per late element) -> lines grouped into batches per window and
shard -> `sanitize_columnar` (the batch code) -> rows grouped per window and
partition -> one atomic set of Parquet files per window, partition and pane,
retries of one (device, event) removed within the window.

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

import json
import os
import uuid
from collections import Counter
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam import pvalue
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms import trigger, window

from pipeline.cliparse import non_negative_int, positive_int
from pipeline.graph import QUARANTINE, STATS, SumCounters, gc_paused
from pipeline.io import parquet_compression, partition_dir
from transforms.columnar import sanitize_columnar
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


def _atomic_write(table: pa.Table, directory: str, name: str) -> None:
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
    pq.write_table(table, tmp, compression=parquet_compression(table.num_rows))
    os.replace(tmp, os.path.join(directory, name))


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
        directory = os.path.join(self.output_dir, partition_dir(key), f"window={_window_tag(w)}")
        _atomic_write(table, directory, f"part-pane{pane.index:03d}-{uuid.uuid4().hex[:8]}.parquet")
        stats = Counter({"files_written": 1, f"written/{key.record_type}": table.num_rows})
        stats[f"output/{key.record_type}"] -= duplicates
        if duplicates:
            stats["dropped/duplicate"] += duplicates
        yield stats


class _WriteWindowQuarantine(beam.DoFn):
    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir

    def process(self, element, w=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        table = pa.concat_tables([QUARANTINE_SCHEMA.empty_table(), *element[1]])
        directory = os.path.join(self.output_dir, "_quarantine", f"window={_window_tag(w)}")
        _atomic_write(table, directory, f"part-pane{pane.index:03d}-{uuid.uuid4().hex[:8]}.parquet")
        yield Counter({"files_written": 1, "written/_quarantine": table.num_rows})


class _WriteWindowReport(beam.DoFn):
    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir

    def process(self, stats: Counter, w=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        directory = os.path.join(self.output_dir, "_reports")
        os.makedirs(directory, exist_ok=True)
        name = f"window-{_window_tag(w)}-pane{pane.index:03d}-{uuid.uuid4().hex[:8]}.json"
        tmp = os.path.join(directory, "." + name)
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(dict(sorted(stats.items())), fh)
        os.replace(tmp, os.path.join(directory, name))
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
            | "SumStats" >> beam.CombineGlobally(SumCounters()).without_defaults()
            | "WriteReport" >> beam.ParDo(_WriteWindowReport(self.output_dir))
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
    with beam.Pipeline(options=options) as p:
        build_streaming(p, options, ctx, opts.output)
    return 0
