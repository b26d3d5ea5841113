"""Comparison peer: the "obvious per-element" stock-Beam design, used only by bench/run_bench.py.

This is NOT how the sanitizer is built. It exists so the benchmark can show
what the straightforward Beam design costs on the same input with the same
policy:

    ReadFromText (raw bytes, one element per line)
      -> Map(parse one line with orjson)
      -> ParDo(sanitize one record)     # emits one dict row per record, tagged by type
      -> WriteToParquet per type        # dict rows, schema = policy.file_schema(type)

"Sanitize one record" calls `transforms.reference.sanitize_one`, the plain
per-record version of the policy that the test suite holds equal to the
pipeline's batch code (tests/test_fast_path.py), with the pipeline's own
quarantine masking. It returns a dict row, which is what WriteToParquet takes.
The context is built once per worker in `DoFn.setup`.

Differences from the real pipeline, on purpose or by construction:
  * one Beam element per line (the pipeline moves batches of 5000 lines);
  * the line is parsed twice: once in the Map step (that is what the obvious
    design does) and once more inside `sanitize_one`, which takes raw bytes;
  * no removal of producer retries (the pipeline removes them when a
    partition is finalised), so this writes `output + dropped.duplicate` rows;
  * no run report, no staging/publish step, no partitioning by region/date;
    rows of the "locked" area (expired, kept locked) are counted and not
    written;
  * quarantine rows are written too (one more WriteToParquet), so the peer
    writes everything the pipeline writes except the report.

    python bench/peer_stock_beam.py --input F --output DIR --as-of TS \
        [--pseudonym-key-file F] [beam options]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter

import apache_beam as beam
import orjson
from apache_beam import coders, pvalue
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from pipeline.run import load_key, parse_as_of  # noqa: E402
from schemas.policy import load_policy  # noqa: E402
from transforms.quarantine import mask_line  # noqa: E402
from transforms.records import HIDDEN_COLUMNS, QUARANTINE_SCHEMA, SanitizeContext  # noqa: E402
from transforms.reference import QUARANTINED, ROW, sanitize_one  # noqa: E402

QUARANTINE_TAG = "_quarantine"
HIDDEN = [f.name for f in HIDDEN_COLUMNS]


def parse_line(line: bytes) -> tuple[bytes, object]:
    """(raw line, parsed JSON or None): the per-element parse step of the obvious design."""
    try:
        return line, orjson.loads(line)
    except orjson.JSONDecodeError:
        return line, None


class SanitizeOneRecord(beam.DoFn):
    """One line -> at most one dict row tagged with its record type (or a quarantine row)."""

    def __init__(self, ctx_state: dict, source: str) -> None:
        self.ctx_state = ctx_state
        self.source = source
        self.locked = beam.metrics.Metrics.counter("peer", "locked_not_written")

    def setup(self) -> None:
        self.ctx = SanitizeContext(**self.ctx_state)

    def process(self, element):
        raw, _parsed = element
        kind, value = sanitize_one(self.ctx, self.source, 0, 1, raw, Counter(), mask=mask_line)
        if kind == ROW:
            key, row = value
            if key.area != "data":
                self.locked.inc()
                return
            for name in HIDDEN:
                del row[name]
            yield pvalue.TaggedOutput(key.record_type, row)
        elif kind == QUARANTINED:
            yield pvalue.TaggedOutput(QUARANTINE_TAG, dict(zip(QUARANTINE_SCHEMA.names, value, strict=True)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="peer_stock_beam.py", description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help="one NDJSON file (plain or .gz)")
    ap.add_argument("--output", required=True, help="output directory")
    ap.add_argument("--as-of", dest="as_of", default=None)
    ap.add_argument("--pseudonym-key-file", dest="pseudonym_key_file", default=None)
    args, beam_args = ap.parse_known_args(argv)

    policy = load_policy()
    key, _mode = load_key(args.pseudonym_key_file)
    ctx = SanitizeContext(policy=policy, key=key, as_of=parse_as_of(args.as_of))
    options = PipelineOptions(beam_args)
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = "FnApiRunner"
    source = os.path.abspath(args.input)
    types = list(policy.types)

    with beam.Pipeline(options=options) as p:
        rows = (
            p
            | "ReadLines" >> beam.io.ReadFromText(source, coder=coders.BytesCoder())
            | "Parse" >> beam.Map(parse_line)
            | "SanitizeOne" >> beam.ParDo(SanitizeOneRecord(ctx.__getstate__(), source)).with_outputs(
                *types, QUARANTINE_TAG)
        )
        for rtype in types:
            _ = rows[rtype] | f"Write_{rtype}" >> beam.io.WriteToParquet(
                os.path.join(args.output, rtype, "part"), schema=policy.file_schema(rtype),
                codec="zstd", file_name_suffix=".parquet")
        _ = rows[QUARANTINE_TAG] | "Write_quarantine" >> beam.io.WriteToParquet(
            os.path.join(args.output, QUARANTINE_TAG, "part"), schema=QUARANTINE_SCHEMA,
            codec="zstd", file_name_suffix=".parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
