"""SIGKILL at points of `subject erase` (a real process, killed by strace at the Nth call of a
system call): every table stays readable at its old or its new version, and a second erase
finishes the job with nothing of the subject left in any file under the output."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from delta_util import leaks
from deltalake import DeltaTable
from test_subject import (  # noqa: F401 (fixtures)
    ROOT,
    accepted,
    data,
    dataset,
    device_id,
    direct_rows,
    erase_args,
    needles,
    run_subject,
    stray_copy,
    total_rows,
)

# Each commit of delta-rs writes `_delta_log/<version>.json#1` and links it into place (linkat);
# data files are written as `<name>#1` and renamed; VACUUM unlinks. Per table the erase makes
# the erasure commit (version v+1), then VACUUM START (v+2) and VACUUM END (v+3) around the
# deletions. strace counts `when=` per thread, so a point is named by its path (-P) instead.
KILL_POINTS = [
    ("rename", None, 0),         # the first rewritten data file staged, not yet in place
    ("linkat", "detection", 1),  # the first table's erasure commit, before it lands
    ("linkat", "detection", 2),  # committed; VACUUM START not: the old files are still on disk
    ("unlink", "detection", 0),  # during the vacuum: deleting one of the old files
    ("linkat", "detection", 3),  # old files deleted, VACUUM END not committed
    ("linkat", "url_visit", 1),  # a later table's erasure commit (earlier tables done)
    ("linkat", "url_visit", 2),  # the later table committed, not vacuumed
]


def strace_point(root: Path, table: str | None, step: int, raw_id: str) -> list[str]:
    """strace's -P filter: the log entry of `step` commits on, or (step 0) an old data file of the
    subject's first partition; nothing for the first call anywhere."""
    if table is None:
        return []
    if step:
        version = DeltaTable(str(root / table)).version() + step
        return ["-P", str(root / table / "_delta_log" / f"{version:020d}.json")]
    region, day = min((r["user_region"], r["event_date"]) for r in direct_rows(root, raw_id)[table])
    return ["-P", str(next((root / table / f"user_region={region}" / f"event_date={day}").glob("*.parquet")))]


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to kill at a system call")
@pytest.mark.parametrize(("syscall", "table", "step"), KILL_POINTS,
                         ids=[f"{s}-{t or 'first'}-{n}" for s, t, n in KILL_POINTS])
def test_killed_erase_leaves_old_or_new_tables_and_a_second_erase_finishes(data, device_id, syscall,  # noqa: F811
                                                                           table, step, capsys):
    subject = {t: len(r) for t, r in direct_rows(data, device_id).items()}
    before = total_rows(data)
    stray_copy(data, "url_visit", direct_rows(data, device_id)["url_visit"])  # a killed run's leftover
    cmd = ["strace", "-f", "-qq", "-o", "/dev/null", *strace_point(data, table, step, device_id),
           "-e", f"trace={syscall}", "-e", f"inject={syscall}:signal=SIGKILL:when=1",
           sys.executable, "-m", "pipeline", "subject", *erase_args(data, device_id)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode in (-9, 137), (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])

    # Every table reads, at its old version (all the subject's rows) or its new one (none).
    partial = total_rows(data)
    left = {t: len(r) for t, r in direct_rows(data, device_id).items()}
    assert set(partial) == set(before)
    for table, n in subject.items():
        assert left.get(table, 0) in (0, n)
        assert partial[table] == before[table] - (n - left.get(table, 0))

    code, stdout, err = run_subject(capsys, *erase_args(data, device_id))
    assert code == 0, err
    assert direct_rows(data, device_id) == {}
    assert total_rows(data) == {t: n - subject.get(t, 0) for t, n in before.items()}
    assert leaks(data, needles(device_id)) == []
    assert not [p for p in data.rglob("*") if "#" in p.name], "no staging or commit temp file is left"
