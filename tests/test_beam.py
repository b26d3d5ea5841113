"""The composite transforms in a TestPipeline: reading, sanitizing and writing wired as in production."""

from __future__ import annotations

import gzip
import os
from collections import Counter

import apache_beam as beam
import orjson
import pyarrow.dataset as ds
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.files import expand_inputs
from pipeline.graph import STATS, SanitizeRecords, SumCounters
from pipeline.io import WriteMinimizedParquet
from pipeline.reading import ReadTelemetry

RUNNER = "FnApiRunner"


def record(event_id: str, device: str = "D-zq1", **extra) -> bytes:
    r = {"schema_version": 1, "type": "wifi", "event_id": event_id, "device_id": device,
         "ts": "2026-11-20T10:00:00Z", "country": "DE", "consent": {"eula": True, "ksn": True},
         "data": {"ssid": "zqHome", "security": "WPA2", "signal_dbm": -50}}
    r.update(extra)
    return orjson.dumps(r)


def test_read_telemetry_numbers_lines_across_plain_and_gzip(tmp_path):
    plain = tmp_path / "a.ndjson"
    plain.write_bytes(b"\xef\xbb\xbf" + record("1") + b"\r\n\n" + record("2") + b"\n")
    gz = tmp_path / "b.ndjson.gz"
    gz.write_bytes(gzip.compress(record("3") + b"\n" + record("4")))  # no final newline
    files = expand_inputs([str(tmp_path / "*.ndjson"), str(tmp_path / "*.gz")])
    with TestPipeline(runner=RUNNER) as p:
        lines = (p | ReadTelemetry(files, batch_lines=2)
                 | beam.FlatMap(lambda b: [(os.path.basename(b[0]), n, len(raw)) for n, raw in b[2]]))
        assert_that(lines, equal_to([
            ("a.ndjson", 1, len(record("1")) + 3), ("a.ndjson", 2, 0), ("a.ndjson", 3, len(record("2"))),
            ("b.ndjson.gz", 1, len(record("3"))), ("b.ndjson.gz", 2, len(record("4"))),
        ]))


def test_sanitize_records_routes_every_line(ctx):
    batch = ("f.ndjson", 0, [(1, record("1")), (2, record("2", is_child=True)), (3, b"{\"a\": "), (4, b"")])
    with TestPipeline(runner=RUNNER) as p:
        out = p | beam.Create([batch]) | SanitizeRecords(ctx)
        rows = out.records | beam.Map(lambda kv: (kv[0][1], kv[0][2], kv[1].num_rows))
        assert_that(rows, equal_to([("wifi", "EEA", 1)]), label="rows")
        stats = out[STATS] | beam.CombineGlobally(SumCounters()) | beam.Map(
            lambda c: sorted((k, v) for k, v in c.items()))
        assert_that(stats, equal_to([[("blank_lines", 1), ("dropped/child_data", 1), ("input_records", 3),
                                      ("output/wifi", 1), ("quarantined/truncated_json", 1)]]), label="stats")


def test_write_minimized_parquet_removes_retries_across_batches(ctx, tmp_path):
    # The same (device, event) in two batches of two files: written once, first in input order kept.
    b1 = ("a", 0, [(1, record("1")), (2, record("2"))])
    b2 = ("b", 1, [(1, record("1")), (2, record("1", device="D-zq2"))])
    staging = str(tmp_path / "staging")
    with TestPipeline(runner=RUNNER) as p:
        out = p | beam.Create([b1, b2]) | SanitizeRecords(ctx)
        stats = (out.records | WriteMinimizedParquet(staging, os.path.join(staging, "final"))
                 | beam.Filter(lambda x: isinstance(x, Counter)) | beam.CombineGlobally(SumCounters()) | beam.Map(
            lambda c: (c["dropped/duplicate"], c["written/wifi"], c["output/wifi"])))
        assert_that(stats, equal_to([(1, 3, -1)]))
    table = ds.dataset(os.path.join(staging, "final", "wifi"), partitioning="hive").to_table()
    assert table.num_rows == 3
    assert Counter(table.column("event_id").to_pylist()) == {"1": 2, "2": 1}
    assert "_key" not in table.column_names and "_origin" not in table.column_names


def test_chunked_reading_keeps_exact_line_numbers(tmp_path):
    from pipeline.reading import plan_chunks

    path = tmp_path / "big.ndjson"
    lines = [record(str(i)) for i in range(500)]
    lines[123] = b""  # blank lines count for numbering
    path.write_bytes(b"\n".join(lines) + b"\n")
    chunks = plan_chunks([str(path)], chunk_bytes=4096)
    assert len(chunks) > 5
    with TestPipeline(runner=RUNNER) as p:
        numbered = (p | ReadTelemetry([str(path)], batch_lines=7, chunk_bytes=4096)
                    | beam.FlatMap(lambda b: [(n, raw) for n, raw in b[2]]))
        assert_that(numbered, equal_to(list(enumerate(lines, 1))))
    assert plan_chunks([str(path)], chunk_bytes=None) == [(0, str(path), 0, -1, 1)]  # one worker: whole file
    with TestPipeline(runner=RUNNER) as p:
        whole = (p | ReadTelemetry([str(path)], batch_lines=7, chunk_bytes=None)
                 | beam.FlatMap(lambda b: [(n, raw) for n, raw in b[2]]))
        assert_that(whole, equal_to(list(enumerate(lines, 1))))


def test_gc_paused_restores_the_collector_state_even_after_an_error():
    import gc

    import pytest

    from pipeline.graph import gc_paused

    was = gc.isenabled()
    try:
        gc.enable()
        with gc_paused():
            assert not gc.isenabled()
        assert gc.isenabled()
        with pytest.raises(RuntimeError), gc_paused():
            raise RuntimeError("boom")
        assert gc.isenabled()
        gc.disable()  # a caller that had it off keeps it off
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()


def test_final_files_are_written_by_threads_and_a_failed_write_fails_the_bundle(tmp_path, monkeypatch):
    """Parquet files are handed to writer threads; the bundle must not end before they are
    on disk, and a write that failed must fail it (never a silently missing file)."""
    import threading
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline import io

    fn = io._FinalizePartition(str(tmp_path), "t")
    fn.setup()
    in_flight, most = [0], [0]
    lock = threading.Lock()
    real = io._write_file

    def slow_write(tables, path, filesystem=None, guard=None):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.02)
        if path.endswith("bad.parquet"):
            with lock:
                in_flight[0] -= 1
            raise OSError("disk full")
        real(tables, path, filesystem, guard)
        with lock:
            in_flight[0] -= 1

    monkeypatch.setattr(io, "_write_file", slow_write)
    table = pa.table({"x": [2, 1], "_key": [1, 2], "_origin": [20, 10]})
    for i in range(10):
        fn._submit([table], str(tmp_path / f"{i}.parquet"))
        assert len(fn._pending) <= fn.MAX_PENDING
    fn.finish_bundle()
    assert most[0] == fn.WRITERS  # both threads were busy at once
    assert pq.read_table(tmp_path / "9.parquet").column("x").to_pylist() == [1, 2]  # in input order
    fn._submit([table], str(tmp_path / "bad.parquet"))
    with pytest.raises(OSError, match="disk full"):
        fn.finish_bundle()
    fn.teardown()
