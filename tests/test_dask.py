"""Beam's DaskRunner on a 2-worker dask.distributed cluster gives exactly the default runner's output."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("distributed", reason="dask[distributed] is not installed (pip install -e '.[dask]')")

ROOT = Path(__file__).resolve().parent.parent
RUN = ["--input", str(ROOT / "sample" / "*.ndjson"), "--input", str(ROOT / "sample" / "*.ndjson.gz"),
       "--as-of", "2026-11-25T00:00:00Z", "--pseudonym-key-file", "sample/dev-pseudonym.key"]
# Every count of the report; not files_written, which depends on how a runner bundles the work.
REPORT_COUNTS = ("input_records", "blank_lines", "output_records", "dropped", "quarantined", "locked_records",
                 "fields_removed", "removed_fields_by_name", "special_category_fields", "identity")


def cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    return proc, time.monotonic() - started


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                      silence_logs=logging.ERROR) as local:
        yield local


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("default") / "out"
    proc, seconds = cli(*RUN, "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, seconds


def tables(out: Path) -> dict[str, pa.Table]:
    """Every output table (record types, _locked/<type>, _quarantine), rows in a canonical order."""
    found: dict[str, list[pa.Table]] = {}
    for path in sorted(out.rglob("*.parquet")):
        parts = path.relative_to(out).parts
        if any(p.startswith(".") for p in parts):
            continue
        depth = 2 if parts[0] == "_locked" else 1
        table = pq.ParquetFile(path).read()
        partition = "/".join(parts[depth:-1])
        table = table.append_column("_partition", pa.array([partition] * table.num_rows, pa.string()))
        found.setdefault("/".join(parts[:depth]), []).append(table.replace_schema_metadata(None))
    result = {}
    for name, parts in found.items():
        table = pa.concat_tables(parts)
        keys = (["source_file", "line_number"] if name == "_quarantine"
                else ["event_id", "device_id_pseudonym", "event_time", "_partition"])
        result[name] = table.sort_by([(k, "ascending") for k in keys])
    return result


def assert_same_output(expected: Path, actual: Path) -> None:
    a, b = tables(expected), tables(actual)
    assert sorted(a) == sorted(b)
    assert len(a) >= 15  # the record types, _quarantine and _locked ones
    for name in a:
        assert a[name].num_rows == b[name].num_rows, name
        assert a[name].equals(b[name]), name
    ra = json.loads((expected / "_report.json").read_text())
    rb = json.loads((actual / "_report.json").read_text())
    assert {k: ra[k] for k in REPORT_COUNTS} == {k: rb[k] for k in REPORT_COUNTS}
    assert rb["identity"]["holds"]


def test_dask_runner_on_two_workers_matches_the_default_runner(cluster, default_run, tmp_path):
    expected, default_seconds = default_run
    out = tmp_path / "dask"
    proc, seconds = cli(*RUN, "--output", str(out), "--runner=DaskRunner",
                        f"--dask_client_address={cluster.scheduler_address}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "_report.json").read_text())
    assert report["runner"].endswith("DaskRunner")
    assert_same_output(expected, out)
    print(f"\ndefault runner {default_seconds:.1f}s, DaskRunner on a 2-worker LocalCluster {seconds:.1f}s "
          f"(pipeline {report['duration_seconds']:.1f}s)")


def test_dask_runner_without_an_address_runs_on_a_local_cluster_of_its_own(default_run, tmp_path):
    expected, _ = default_run
    out = tmp_path / "dask-local"
    proc, seconds = cli(*RUN, "--output", str(out), "--runner=DaskRunner")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "INFO:distributed" not in proc.stderr
    assert_same_output(expected, out)
    print(f"\nDaskRunner with its own LocalCluster {seconds:.1f}s")
