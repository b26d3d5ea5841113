"""Reading telemetry files: lines come out exactly as plain splitting would give them."""

from __future__ import annotations

import io as stdio
import random

from pipeline import io, reading


def reference_lines(data: bytes, max_bytes: int) -> list[bytes]:
    """What reading must give, written the plain way: lines split at "\\n", one trailing "\\r"
    removed, lines over max_bytes cut to max_bytes + 1 bytes."""
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()  # a final newline ends the last line; it does not start another
    out = []
    for piece in pieces:
        if piece.endswith(b"\r"):
            piece = piece[:-1]
        out.append(piece if len(piece) <= max_bytes else piece[:max_bytes + 1])
    return out


def test_reading_lines_equals_plain_splitting_whatever_the_read_size(monkeypatch):
    """Lines cut across reads, "\\r" and "\\n" on either side of a read boundary, overlong
    lines with or without a newline yet, blank lines, a last line without newline."""
    rnd = random.Random(5)
    for _ in range(3000):
        data = bytes(rnd.choice(b"ab{}\r\n\n") for _ in range(rnd.randrange(0, 60)))
        max_bytes = rnd.randrange(1, 12)
        monkeypatch.setattr(reading, "READ_BUFFER", rnd.randrange(1, 9))
        got = list(reading.iter_lines(stdio.BytesIO(data), max_bytes))
        assert got == list(enumerate(reference_lines(data, max_bytes), 1)), (data, max_bytes, reading.READ_BUFFER)


def _stage(writer: io._StageWriter, elements) -> list:
    writer.setup()
    writer.start_bundle()
    out = [e for element in elements for e in writer.process(element)]
    out += [wv.value for wv in writer.finish_bundle()]
    return out


def _finalise(tmp_path, grouped: dict) -> tuple[dict, list]:
    import collections

    import pyarrow.parquet as pq

    fn = io._FinalizePartition(str(tmp_path / "final"), "t")
    fn.setup()
    stats = collections.Counter()
    for key, pieces in grouped.items():
        for counts in fn.process((key, pieces)):
            stats.update(counts)
    fn.finish_bundle()
    fn.teardown()
    rows = {}
    for f in sorted((tmp_path / "final").rglob("*.parquet")):
        rows[str(f.relative_to(tmp_path / "final").parent)] = pq.read_table(f).to_pylist()
    return rows, stats


def test_small_staged_tables_travel_inline_and_finalise_like_files(tmp_path, monkeypatch):
    """Small flushes go as bytes, large ones (or all, once the budget is spent) as files;
    the final files, retries removed across pieces of both kinds, are the same either way."""
    import pyarrow as pa

    from transforms.records import PartitionKey

    def table(keys, origins):
        return pa.table({"v": [f"r{o}" for o in origins], "_key": pa.array(keys, pa.int64()),
                         "_origin": pa.array(origins, pa.int64())})

    small = PartitionKey("data", "wifi", "EEA", "2026-01-01")
    large = PartitionKey("data", "wifi", "EEA", "2026-01-02")
    elements = [
        (tuple(small), table([1, 2], [30, 31])),
        (tuple(large), table(list(range(5000)), list(range(100, 5100)))),
        (tuple(small), table([2, 3], [10, 11])),  # key 2 again: the copy of origin 10 is first
    ]
    monkeypatch.setattr(io._StageWriter, "MAX_PARTITIONS", 1)  # flush each partition as another arrives
    outputs = {}
    expected_kinds = {  # budget -> kinds of the two small pieces, in flush order
        io._StageWriter.INLINE_BUDGET: [bytes, bytes],
        1: [bytes, str],  # the first piece spends the budget
        0: [str, str],
    }
    for budget, small_kinds in expected_kinds.items():
        staged = _stage(io._StageWriter(str(tmp_path / f"staging{budget}"), inline_budget=budget), elements)
        assert [type(piece) for k, piece in staged if k == tuple(small)] == small_kinds
        assert [type(piece) for k, piece in staged if k == tuple(large)] == [str]
        grouped: dict = {}
        for k, piece in staged:
            grouped.setdefault(k, []).append(piece)
        outputs[budget] = _finalise(tmp_path / f"out{budget}", grouped)
    assert outputs[io._StageWriter.INLINE_BUDGET] == outputs[1] == outputs[0]
    rows, stats = outputs[0]
    assert [r["v"] for r in rows["wifi/user_region=EEA/event_date=2026-01-01"]] == ["r10", "r11", "r30"]
    assert stats["dropped/duplicate"] == 1 and stats["written/wifi"] == 5003


def test_small_pieces_travel_inline_only_where_the_runner_groups_in_process():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.run import grouped_in_process

    def inline(*flags):
        return grouped_in_process(PipelineOptions(list(flags)))

    assert inline() and inline("--runner=FnApiRunner") and inline("--runner=DirectRunner")
    assert inline("--runner=FnApiRunner", "--direct_num_workers=2")  # in_memory: still one process
    assert not inline("--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing")
    assert not inline("--runner=FnApiRunner", "--direct_running_mode=multi_threading")
    assert not inline("--runner=apache_beam.runners.dask.dask_runner.DaskRunner")
    assert not inline("--runner=DataflowRunner")


def test_files_are_read_whole_only_by_a_single_in_process_worker():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.run import one_worker

    def whole(*flags):
        return one_worker(PipelineOptions(list(flags)))

    assert whole() and whole("--runner=FnApiRunner") and whole("--runner=DirectRunner")
    assert not whole("--runner=FnApiRunner", "--direct_num_workers=2")
    assert not whole("--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing")
    assert not whole("--runner=apache_beam.runners.dask.dask_runner.DaskRunner")


def test_a_partition_larger_than_a_file_is_cut_into_files_of_exactly_the_limit(tmp_path, monkeypatch):
    """Pieces that do not fit are cut (what bounds a partition's memory while it is written): every
    file but the last holds exactly MAX_ROWS_PER_FILE rows, in input order, no row lost or doubled."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from transforms.records import PartitionKey

    key = tuple(PartitionKey("data", "wifi", "EEA", "2026-01-01"))
    pieces = []
    origin = 0
    for size in (3, 11, 1, 9, 4):  # crossing the limit inside pieces and at their edges
        origins = list(range(origin, origin + size))
        table = pa.table({"v": [f"r{o}" for o in origins], "_key": pa.array(origins, pa.int64()),
                          "_origin": pa.array(origins, pa.int64())})
        path = tmp_path / f"piece{origin:03d}.arrow"
        io.write_staging(table, str(path))
        pieces.append(str(path))
        origin += size
    pieces.append(io.inline_piece(pa.table({"v": ["dup"], "_key": pa.array([5], pa.int64()),
                                            "_origin": pa.array([100], pa.int64())})))  # a retry of row 5
    monkeypatch.setattr(io._FinalizePartition, "MAX_ROWS_PER_FILE", 7)
    fn = io._FinalizePartition(str(tmp_path / "final"), "t")
    fn.setup()
    out = list(fn.process((key, pieces)))
    fn.finish_bundle()
    fn.teardown()
    files = sorted((tmp_path / "final").rglob("*.parquet"))
    sizes = [pq.ParquetFile(f).metadata.num_rows for f in files]
    assert sizes == [7, 7, 7, 7]  # 28 rows; the retry dropped
    values = [pq.read_table(f).column("v").to_pylist() for f in files]
    assert all(v == sorted(v, key=lambda s: int(s[1:])) for v in values)
    assert sorted(x for v in values for x in v) == sorted(f"r{o}" for o in range(28))
    written = [w for w in out if not isinstance(w, dict)]
    assert sorted(w.rows for w in written if hasattr(w, "rows")) == [7, 7, 7, 7]


def test_retries_removed_across_pieces_and_file_cuts_give_the_same_files_by_slices_or_masks(tmp_path, monkeypatch):
    """Retries (a later copy of a (device, event) key) spread over staged pieces given in any
    order, with the file limit cutting pieces between and next to dropped rows: every file but
    the last holds exactly the limit, the files together hold the first copy of every key once,
    in input order across files too, and each file's `event_time` statistics are those of its
    own rows. Kept rows travel as slices between the dropped ones, or (past MAX_SLICES runs) as
    a range with its mask: both give the same files."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.tables import time_bounds
    from transforms.records import PartitionKey

    key = tuple(PartitionKey("data", "wifi", "EEA", "2026-01-01"))
    rnd = random.Random(11)
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    origins = list(range(200))
    keys = [o if o < 40 or rnd.random() < 0.7 else rnd.randrange(0, o) for o in origins]  # about 30% retries
    first_of: dict[int, int] = {}
    for o, k in zip(origins, keys, strict=True):
        first_of.setdefault(k, o)
    expected = sorted(first_of.values())
    times = {o: base + dt.timedelta(seconds=rnd.randrange(86_400)) for o in origins}
    cuts = sorted(rnd.sample(range(1, 200), 9))
    results = {}
    for max_slices in (0, 2, 10_000):
        monkeypatch.setattr(io, "MAX_SLICES", max_slices)
        monkeypatch.setattr(io._FinalizePartition, "MAX_ROWS_PER_FILE", 23)
        pieces = []
        for n, (a, b) in enumerate(zip([0, *cuts], [*cuts, 200], strict=True)):
            table = pa.table({"v": [f"r{o}" for o in origins[a:b]],
                              "event_time": pa.array([times[o] for o in origins[a:b]], pa.timestamp("us", "UTC")),
                              "_key": pa.array(keys[a:b], pa.int64()), "_origin": pa.array(origins[a:b], pa.int64())})
            if n % 2:
                pieces.append(io.inline_piece(table))
            else:
                path = tmp_path / f"s{max_slices}-{a:03d}.arrow"
                io.write_staging(table, str(path))
                pieces.append(str(path))
        rnd.shuffle(pieces)
        out_dir = tmp_path / f"final{max_slices}"
        fn = io._FinalizePartition(str(out_dir), "t")
        fn.setup()
        out = list(fn.process((key, pieces)))
        fn.finish_bundle()
        fn.teardown()
        written = sorted((w for w in out if hasattr(w, "rows")), key=lambda w: w.path)
        files = [pq.read_table(out_dir / "wifi" / w.path) for w in written]
        assert [f.num_rows for f in files] == [w.rows for w in written]
        assert all(f.num_rows == 23 for f in files[:-1]) and 0 < files[-1].num_rows <= 23
        values = [v for f in files for v in f.column("v").to_pylist()]
        assert values == [f"r{o}" for o in expected]  # first copies only, in input order across files
        for w, f in zip(written, files, strict=True):
            assert (w.min_time, w.max_time, w.time_nulls) == time_bounds([f])
        assert out[0]["dropped/duplicate"] == 200 - len(expected)
        results[max_slices] = [f.to_pylist() for f in files]
    assert results[0] == results[2] == results[10_000]
