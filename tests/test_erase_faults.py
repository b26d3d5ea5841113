"""SIGKILL at points of `subject erase` (a real process, killed by strace at the Nth call of a
system call): every table stays readable at its old or its new version, and a second erase
finishes the job with nothing of the subject left in any file under the output."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from delta_util import leaks
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

# Each commit of delta-rs links its log entry into place (linkat); data files are written as
# `<name>#1` and renamed; VACUUM unlinks. Per table the erase makes the erasure commit, then
# VACUUM START and VACUUM END commits around the deletions; the first tables holding the
# subject are detection and installed_app (the quarantine and tables without the subject only
# vacuum the stray file planted below, in url_visit).
KILL_POINTS = [
    ("rename", 1),   # first new data file of the first rewrite written, not yet in place
    ("linkat", 1),   # first erasure commit (detection), before it lands
    ("linkat", 2),   # detection committed, its VACUUM START not: old files still on disk
    ("unlink", 3),   # during detection's vacuum: some old files deleted
    ("linkat", 3),   # detection's files deleted, VACUUM END not committed
    ("linkat", 4),   # second table's erasure commit
    ("linkat", 9),   # a later table
]


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to kill at a system call")
@pytest.mark.parametrize(("syscall", "when"), KILL_POINTS, ids=[f"{s}-{n}" for s, n in KILL_POINTS])
def test_killed_erase_leaves_old_or_new_tables_and_a_second_erase_finishes(data, device_id, syscall, when,  # noqa: F811
                                                                           capsys):
    subject = {t: len(r) for t, r in direct_rows(data, device_id).items()}
    before = total_rows(data)
    stray_copy(data, "url_visit", direct_rows(data, device_id)["url_visit"])  # a killed run's leftover
    cmd = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={syscall}",
           "-e", f"inject={syscall}:signal=SIGKILL:when={when}",
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
