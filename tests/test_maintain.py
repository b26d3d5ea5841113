"""`python -m pipeline maintain` on the Delta output of a real run, and the readers of the output."""

from __future__ import annotations

import fcntl
import os
import shutil
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from delta_util import leaks
from deltalake import DeltaTable, write_deltalake
from test_subject import dataset, stray_copy  # noqa: F401 (fixture)

from pipeline import maintain as maintain_mod
from pipeline.maintain import main as maintain_main
from pipeline.tables import list_tables
from schemas.policy import load_policy

SPLIT = ("url_visit", "license", "detection")  # rewritten as several commits: small files to compact


@pytest.fixture
def data(dataset, tmp_path) -> Path:  # noqa: F811
    """A copy of the run's output whose SPLIT tables hold four small files per partition."""
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    for name in SPLIT:
        table = DeltaTable(str(copy / name))
        rows, config = table.to_pyarrow_table(), table.metadata().configuration
        shutil.rmtree(copy / name)
        cuts = [i * rows.num_rows // 4 for i in range(5)]
        for start, end in zip(cuts, cuts[1:], strict=False):
            write_deltalake(str(copy / name), rows.slice(start, end - start),
                            partition_by=["user_region", "event_date"], mode="append", configuration=config)
        DeltaTable(str(copy / name)).delete("event_id IS NULL")  # no-op commit, as a run's history has
    return copy


def table(root: Path, name: str) -> pa.Table:
    return DeltaTable(str(root / name)).to_pyarrow_table()


def files_named(root: Path, name: str) -> int:
    return len(DeltaTable(str(root / name)).file_uris())


def parquet_rows(root: Path, name: str) -> int:
    """Rows a plain Parquet reader of the directory sees (every file on disk; DuckDB fails on none)."""
    if not any((root / name).rglob("*.parquet")):
        return 0
    glob = str(root / name / "**" / "*.parquet")
    return duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = true)").fetchone()[0]


def test_maintain_expires_locks_compacts_and_vacuums(data, capsys):
    policy = load_policy()
    license_times = table(data, "license").column("event_time")
    as_of = pc.min(license_times).as_py() + timedelta(days=policy.types["license"].retention_days, hours=12)
    before = {n: table(data, n) for n in list_tables(str(data))}
    expected_expired = {}
    for name, t in before.items():
        if name in policy.types:
            cutoff = as_of - timedelta(days=policy.types[name].retention_days)
            expected_expired[name] = t.filter(pc.less(t.column("event_time"), pa.scalar(cutoff, t.column(
                "event_time").type)))
    locked_ids = set(expected_expired["license"].column("event_id").to_pylist())
    assert 0 < len(locked_ids) < before["license"].num_rows
    assert 0 < expected_expired["url_visit"].num_rows
    orphan = stray_copy(data, "wifi", before["wifi"].slice(0, 3).to_pylist())  # a killed run's leftover
    assert parquet_rows(data, "wifi") == before["wifi"].num_rows + 3
    small = {n: files_named(data, n) for n in SPLIT}

    code = maintain_main(["--data", str(data), "--as-of", as_of.isoformat()])
    out = capsys.readouterr().out
    assert code == 0
    deleted = sum(t.num_rows for n, t in expected_expired.items() if policy.types[n].on_expiry == "delete")
    assert f"retention: {deleted} row(s) deleted, {len(locked_ids)} row(s) moved to _locked" in out
    for name, t in before.items():
        if name not in policy.types:
            continue
        after = table(data, name)
        assert after.num_rows == t.num_rows - expected_expired[name].num_rows
        cutoff = as_of - timedelta(days=policy.types[name].retention_days)
        times = after.column("event_time")
        assert not pc.any(pc.less(times, pa.scalar(cutoff, times.type))).as_py()
    locked = table(data, "_locked/license")
    assert sorted(locked.column("event_id").to_pylist()) == sorted(locked_ids)
    # Compaction: one file per partition; the log holds no pseudonym after it.
    for name in SPLIT:
        parts = {tuple(p.values()) for p in DeltaTable(str(data / name)).partitions()}
        assert files_named(data, name) == len(parts) < small[name]
    pseudonyms = before["detection"].column("device_id_pseudonym").drop_null().to_pylist()[:20]
    assert leaks(data / "detection" / "_delta_log", pseudonyms) == []
    # Vacuum: on disk are exactly the files the tables name, so a plain Parquet reader agrees.
    assert not orphan.exists()
    for name in list_tables(str(data)):
        assert parquet_rows(data, name) == table(data, name).num_rows, name
        assert maintain_mod.data_files(data / name) == files_named(data, name)

    # A second maintain with the same --as-of finds nothing to do and commits nothing.
    versions = {n: DeltaTable(str(data / n)).version() for n in list_tables(str(data))}
    assert maintain_main(["--data", str(data), "--as-of", as_of.isoformat()]) == 0
    out = capsys.readouterr().out
    assert "0 row(s) deleted, 0 row(s) moved to _locked; compaction: 0 file(s) -> 0; vacuum: 0" in out
    assert {n: DeltaTable(str(data / n)).version() for n in list_tables(str(data))} == versions


def test_a_maintain_that_fails_after_locking_copies_each_row_once(data, monkeypatch, capsys):
    policy = load_policy()
    as_of = pc.max(table(data, "license").column("event_time")).as_py() + timedelta(
        days=policy.types["license"].retention_days + 1)
    n_license = table(data, "license").num_rows
    real_delete = DeltaTable.delete

    def failing_delete(self, *args, **kwargs):  # the delete after the copy to _locked/license fails
        if self.table_uri.rstrip("/").endswith("/license"):
            raise OSError(5, "Input/output error")
        return real_delete(self, *args, **kwargs)

    monkeypatch.setattr(DeltaTable, "delete", failing_delete)
    assert maintain_main(["--data", str(data), "--as-of", as_of.isoformat()]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Input/output error" in err
    assert table(data, "_locked/license").num_rows == n_license  # copied, not yet deleted
    monkeypatch.setattr(DeltaTable, "delete", real_delete)
    assert maintain_main(["--data", str(data), "--as-of", as_of.isoformat()]) == 0
    assert table(data, "_locked/license").num_rows == n_license and table(data, "license").num_rows == 0
    capsys.readouterr()


def test_bad_arguments_are_one_line(tmp_path, capsys):
    assert maintain_main(["--data", str(tmp_path / "missing")]) == 2
    assert maintain_main(["--data", str(tmp_path)]) == 2
    assert maintain_main(["--data", str(tmp_path), "--as-of", "yesterday"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "not a directory" in err and "no Delta table" in err


def test_readers_see_the_current_version(data):
    """deltalake -> pyarrow and pandas, Polars, and DuckDB read_parquet (after maintain) agree."""
    stray_copy(data, "url_visit", table(data, "url_visit").slice(0, 2).to_pylist())
    dt = DeltaTable(str(data / "url_visit"))
    n = dt.to_pyarrow_table().num_rows
    assert len(dt.to_pandas()) == n
    assert pl.read_delta(str(data / "url_visit")).height == n
    assert parquet_rows(data, "url_visit") == n + 2, "a plain Parquet reader sees files the table does not name"
    assert maintain_main(["--data", str(data), "--as-of", "2026-11-25T00:00:00Z"]) == 0
    assert parquet_rows(data, "url_visit") == n == pl.read_delta(str(data / "url_visit")).height
    eea = pl.scan_delta(str(data / "url_visit")).filter(pl.col("user_region") == "EEA").collect().height
    assert eea == duckdb.sql(f"SELECT count(*) FROM read_parquet('{data}/url_visit/**/*.parquet', "
                             "hive_partitioning = true) WHERE user_region = 'EEA'").fetchone()[0] > 0


def test_maintain_refuses_while_a_run_is_alive(data, capsys):
    (data / ".staging-live").mkdir()
    fd = os.open(data / ".staging-live" / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a run holds its staging lock while it lives
    versions = {n: DeltaTable(str(data / n)).version() for n in list_tables(str(data))}
    try:
        assert maintain_main(["--data", str(data), "--as-of", "2030-01-01T00:00:00Z"]) == 1
    finally:
        os.close(fd)
    assert "a run is writing into it" in capsys.readouterr().err
    assert {n: DeltaTable(str(data / n)).version() for n in list_tables(str(data))} == versions
