"""Streaming with TestStream: on-time, late and duplicate events land where they should."""

from __future__ import annotations

import json
import os

import apache_beam as beam
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.utils.timestamp import Timestamp
from deltalake import DeltaTable

from pipeline.streaming import WindowedSanitize


def line(event_id: str, device: str = "D-zq1", url: str = "https://u:zqpw@shop.example.com/x") -> bytes:
    return orjson.dumps({"schema_version": 1, "type": "url_visit", "event_id": event_id, "device_id": device,
                         "ts": "2026-11-20T10:00:00Z", "country": "FR", "consent": {"eula": True, "ksn": True},
                         "data": {"url": url}})


def rows_by_window(out: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for root, _, files in os.walk(os.path.join(out, "url_visit")):
        for name in files:
            if name.endswith(".parquet") and not name.startswith("."):
                win = [p for p in root.split(os.sep) if p.startswith("window=")][0]
                found.setdefault(win, []).extend(pq.ParquetFile(os.path.join(root, name)).read()
                                                 .column("event_id").to_pylist())
    return {k: sorted(v) for k, v in found.items()}


def test_windows_lateness_and_duplicates(ctx, tmp_path):
    out = str(tmp_path / "out")
    base = Timestamp.of(1_700_000_000 - 1_700_000_000 % 60)  # a window boundary
    make_stream = lambda: (  # noqa: E731 - built anew for each pipeline
        TestStream()
        .advance_watermark_to(base)
        .add_elements([
            beam.window.TimestampedValue(line("on-time-1"), base + 5),
            beam.window.TimestampedValue(line("on-time-2"), base + 10),
            beam.window.TimestampedValue(line("on-time-1"), base + 12),   # producer retry: same device+event
            beam.window.TimestampedValue(b"{broken", base + 13),
            beam.window.TimestampedValue(line("next-window"), base + 65),
        ])
        .advance_watermark_to(base + 130)                                 # both windows closed, on time
        .add_elements([beam.window.TimestampedValue(line("late-ok"), base + 20)])  # late, within lateness
        .advance_watermark_to(base + 400)                                 # beyond 60 + 120 s lateness
        .add_elements([beam.window.TimestampedValue(line("too-late"), base + 30)])
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions(["--runner=DirectRunner"])
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        _ = p | make_stream() | WindowedSanitize(ctx, out, window_seconds=60, allowed_lateness_seconds=120, shards=2)

    windows = rows_by_window(out)
    assert len(windows) == 2
    first, second = sorted(windows)
    assert windows[first] == ["late-ok", "on-time-1", "on-time-2"]  # retry removed, late row added as a pane
    assert windows[second] == ["next-window"]
    assert "too-late" not in sum(windows.values(), [])
    win_dir = [r for r, _, f in os.walk(os.path.join(out, "url_visit")) if first in r][0]
    panes = sorted(f.split("-")[1] for f in os.listdir(win_dir))
    assert panes == ["pane000", "pane001"]  # on-time pane, then the late pane

    reports = [json.load(open(os.path.join(out, "_reports", f))) for f in os.listdir(os.path.join(out, "_reports"))]
    total = sum(r.get("input_records", 0) for r in reports)
    assert total == 6  # 7 sent, the one beyond the allowed lateness never reached the pipeline's windows
    assert sum(r.get("dropped/duplicate", 0) for r in reports) == 1
    assert sum(r.get("quarantined/truncated_json", 0) + r.get("quarantined/invalid_json", 0) for r in reports) == 1
    text = json.dumps(windows) + "".join(open(os.path.join(r, f), "rb").read().hex()
                                         for r, _, fs in os.walk(out) for f in fs)
    assert "zqpw" not in text and b"zqpw".hex() not in text

    # The Delta table holds what the files hold, and a restart that replays the same windows
    # and panes commits none of them again: each pane's app transaction is already in the log.
    committed = sorted(DeltaTable(os.path.join(out, "url_visit")).to_pyarrow_table().column("event_id").to_pylist())
    assert committed == sorted(sum(windows.values(), []))
    versions = {t: DeltaTable(os.path.join(out, t)).version() for t in ("url_visit", "_quarantine")}
    with beam.Pipeline(options=options) as p:
        _ = p | make_stream() | WindowedSanitize(ctx, out, window_seconds=60, allowed_lateness_seconds=120, shards=2)
    assert {t: DeltaTable(os.path.join(out, t)).version() for t in versions} == versions
    again = sorted(DeltaTable(os.path.join(out, "url_visit")).to_pyarrow_table().column("event_id").to_pylist())
    assert again == committed


def test_a_large_window_takes_the_columnar_path_and_writes_what_the_batch_code_does(ctx, tmp_path, monkeypatch):
    """Window shards of 64 lines or more go through `sanitize_columnar`, like batch runs; every
    partition file, the quarantine and the report hold what `sanitize_lines` makes of the same
    lines (retries removed per partition, as the window writer does)."""
    import transforms.columnar as columnar
    from pipeline.io import partition_dir
    from pipeline.sample import generate_lines
    from pipeline.streaming import _window_tag
    from transforms.records import SanitizeContext, as_written, first_copies, keep_copies, sanitize_lines

    routed = []
    real = columnar._sanitize_type
    monkeypatch.setattr(columnar, "_sanitize_type",
                        lambda *args: routed.append(len(args[3])) or real(*args))
    lines = [raw for raw in generate_lines(400, seed=3, dirty=True, days=2) if raw.strip()]
    base = Timestamp.of(1_700_000_000 - 1_700_000_000 % 60)
    stream = (TestStream().advance_watermark_to(base)
              .add_elements([beam.window.TimestampedValue(raw, base + 1) for raw in lines])
              .advance_watermark_to_infinity())
    out = str(tmp_path / "out")
    options = PipelineOptions(["--runner=DirectRunner"])
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        _ = p | stream | WindowedSanitize(ctx, out, window_seconds=60, allowed_lateness_seconds=0, shards=1)

    assert sum(routed) > 200  # most lines were read by Arrow, not by the per-record path
    tag = _window_tag(beam.window.IntervalWindow(base, base + 60))
    plain = sanitize_lines(SanitizeContext(policy=ctx.policy, key=ctx.key, as_of=ctx.as_of), f"stream:{tag}:0", 0,
                           list(enumerate(sorted(lines), 1)))

    def read(directory: str):
        files = [os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".parquet")]
        return pa.concat_tables([pq.ParquetFile(f).read() for f in files])

    assert len(plain.outputs) > 5
    for key, table in plain.outputs.items():
        expected = as_written(keep_copies(table, first_copies(table)))
        got = read(os.path.join(out, partition_dir(key), f"window={tag}"))
        assert got.to_pylist() == expected.to_pylist(), key
    quarantine = read(os.path.join(out, "_quarantine", f"window={tag}"))
    assert quarantine.sort_by("line_number").to_pylist() == plain.quarantine.sort_by("line_number").to_pylist()
    [report] = [json.load(open(os.path.join(out, "_reports", f))) for f in os.listdir(os.path.join(out, "_reports"))]
    assert report["input_records"] == plain.stats["input_records"] == len(lines)


def test_a_retry_in_a_later_window_is_dropped_against_what_was_committed(ctx, tmp_path):
    out = str(tmp_path / "out")
    base = Timestamp.of(1_700_000_000 - 1_700_000_000 % 60)
    make_stream = lambda: (  # noqa: E731 - built anew for each pipeline
        TestStream()
        .advance_watermark_to(base)
        .add_elements([beam.window.TimestampedValue(line("first"), base + 5)])
        .advance_watermark_to(base + 200)  # the first window closes and commits
        .add_elements([beam.window.TimestampedValue(line("first"), base + 205),  # the producer's retry
                       beam.window.TimestampedValue(line("second"), base + 206)])
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions(["--runner=DirectRunner"])
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        _ = p | make_stream() | WindowedSanitize(ctx, out, window_seconds=60, allowed_lateness_seconds=0, shards=1)

    def state() -> tuple[list[str], dict[str, dict]]:
        rows = sorted(DeltaTable(os.path.join(out, "url_visit")).to_pyarrow_table().column("event_id").to_pylist())
        folder = os.path.join(out, "_reports")
        return rows, {f: json.load(open(os.path.join(folder, f))) for f in sorted(os.listdir(folder))}

    rows, reports = state()
    assert rows == ["first", "second"]
    assert sum(r.get("dropped/duplicate", 0) for r in reports.values()) == 1
    assert sum(r.get("written/url_visit", 0) for r in reports.values()) == 2
    # A restart replays both windows: nothing is committed again and every pane's report says
    # what it said the first time (a pane's own files are not taken for retries of its rows).
    with beam.Pipeline(options=options) as p:
        _ = p | make_stream() | WindowedSanitize(ctx, out, window_seconds=60, allowed_lateness_seconds=0, shards=1)
    again, replayed = state()
    assert again == rows
    strip = lambda r: {k: v for k, v in r.items() if k not in ("tables",)}  # noqa: E731
    assert {f: strip(r) for f, r in replayed.items()} == {f: strip(r) for f, r in reports.items()}
