"""The benchmark's upper bound (e) does the work it claims: every line read or counted as skipped."""

from __future__ import annotations

import glob
import json
import os
import sys

import pyarrow.parquet as pq
from deltalake import DeltaTable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import upper_bound  # noqa: E402

from pipeline.sample import write_sample  # noqa: E402
from pipeline.tables import list_tables, table_names  # noqa: E402
from schemas.policy import load_policy  # noqa: E402


def test_byte_ranges_cover_the_file_at_line_boundaries(tmp_path):
    path = tmp_path / "in.ndjson"
    write_sample(str(path), 3000, seed=3, dirty=True)
    data = path.read_bytes()
    for parts in (1, 2, 3, 7):
        ranges = upper_bound.byte_ranges(str(path), parts)
        assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
        assert all(data[end - 1:end] == b"\n" for _, end in ranges)
        assert 1 <= len(ranges) <= parts


def test_every_line_is_written_or_skipped_in_one_and_two_processes(tmp_path, capsys):
    path = tmp_path / "in.ndjson"
    write_sample(str(path), 6000, seed=5, dirty=True)
    lines = [ln for ln in path.read_bytes().split(b"\n") if ln.rstrip(b"\r")]
    counts = []
    for processes in (1, 2):
        out = tmp_path / f"out{processes}"
        assert upper_bound.main(["--input", str(path), "--output", str(out), "--processes", str(processes),
                                 "--block-bytes", str(256 << 10), "--as-of", "2026-11-25T00:00:00Z"]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        found = glob.glob(str(out / "**" / "*.parquet"), recursive=True)
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in found)
        assert rows == summary["rows_written"]
        committed = sum(DeltaTable(str(out / name)).count() for name in list_tables(str(out)))
        assert committed == rows  # one Delta commit per type adds every file
        # Files are partitioned as the pipeline's: <type>/user_region=R/event_date=D/, 16 rows and fewer uncompressed.
        parquet = glob.glob(str(out / "**" / "user_region=*" / "event_date=*" / "part-*.parquet"), recursive=True)
        assert len(parquet) == len(found) == summary["files"] and parquet
        assert set(list_tables(str(out))) == set(table_names(load_policy()))  # every table of the policy
        for name in list_tables(str(out)):
            if name != "_quarantine":
                assert DeltaTable(str(out / name)).metadata().partition_columns == ["user_region", "event_date"]
        assert summary["rows_written"] + summary["skipped_lines"] == len(lines)
        # Most lines of the dirty sample are well-formed: the bound reads them, it does not skip them.
        assert summary["rows_written"] > 0.9 * len(lines)
        counts.append((summary["rows_written"], summary["skipped_lines"]))
    assert counts[0] == counts[1]


def test_back_to_back_runs_both_commits_on_the_same_work(capsys):
    """bench/back_to_back.py with one commit on both sides: every run succeeds, both sides report
    the same counts, a sum row gives the ratios, and its worktrees are gone afterwards."""
    import subprocess

    import back_to_back

    if not os.path.isdir(os.path.join(ROOT, ".git")):
        import pytest

        pytest.skip("not a git checkout")
    before = subprocess.run(["git", "-C", ROOT, "worktree", "list"], capture_output=True, text=True).stdout
    assert back_to_back.main(["--base", "HEAD", "--new", "HEAD", "--rounds", "1", "--records", "3000"]) == 0
    out = capsys.readouterr().out
    sums = [line for line in out.splitlines() if line.startswith("| sum |")]
    assert len(sums) == 1 and sums[0].count("**") == 4
    base = [line for line in out.splitlines() if line.startswith("- base")]
    new = [line for line in out.splitlines() if line.startswith("- new")]
    assert len(base) == len(new) == 1
    assert "records in" in base[0] and base[0].split(": ", 1)[1] == new[0].split(": ", 1)[1]
    after = subprocess.run(["git", "-C", ROOT, "worktree", "list"], capture_output=True, text=True).stdout
    assert after == before
