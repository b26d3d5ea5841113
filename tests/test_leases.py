"""A run and a `subject erase` / `maintain` on one output at the same time, as real processes.

The leases of pipeline/lease.py keep them apart: an erase or maintain is refused while a run
has written files it has not committed yet, and a run that starts while one of them works
waits for it. So no vacuum deletes a file a run is about to commit (every file a table names
exists), and an erase never finishes with rows of its subject committed under it.
One process is stopped (SIGSTOP at a named point, pipeline.commit.STOP_ENV) exactly inside
the window the other one must not use, and resumed once the other has shown what it does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from delta_util import leaks
from deltalake import DeltaTable
from test_subject import (  # noqa: F401 (fixtures)
    AS_OF,
    KEY_FILE,
    ROOT,
    SAMPLE_GZ,
    accepted,
    data,
    dataset,
    device_id,
    direct_rows,
    erase_args,
    needles,
)

from pipeline.commit import STOP_ENV
from pipeline.sample import generate_lines
from pipeline.tables import list_tables

RUN_OPTS = ["--pseudonym-key-file", str(KEY_FILE), "--as-of", AS_OF]


def start(args: list[str], stop_at: str | None = None) -> subprocess.Popen:
    env = {**os.environ, **({STOP_ENV: stop_at} if stop_at else {})}
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_stopped(proc: subprocess.Popen) -> None:
    """Until the process has stopped itself at its STOP_ENV point (bounded, so a bug cannot hang)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, (proc.returncode, proc.stderr.read() if proc.stderr else "")
        with open(f"/proc/{proc.pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.05)
    raise AssertionError("the process never reached its stop point")


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def on_disk(root: Path) -> set[Path]:
    return {p for p in root.rglob("*.parquet") if "_delta_log" not in p.parts}


def named(root: Path) -> set[Path]:
    """Every data file the current version of every table names; each must exist and read."""
    files = set()
    for name in list_tables(str(root)):
        table = DeltaTable(str(root / name))
        for uri in table.file_uris():
            path = Path(uri.removeprefix("file://"))
            assert path.is_file(), f"{name} names a missing file {path}"
            files.add(path)
        table.to_pyarrow_table()
    return files


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_erase_is_refused_while_a_run_holds_files_it_has_not_committed(data, device_id, procs):  # noqa: F811
    """The run (a replace of the same input, so it writes the subject's rows again) has written its
    files and stopped before its first commit; an erase then must not vacuum them."""
    named_before = named(data)
    run = start(["--input", str(SAMPLE_GZ), "--output", str(data), *RUN_OPTS], stop_at="before_commit:_quarantine")
    procs.append(run)
    wait_stopped(run)
    assert on_disk(data) - named_before, "the run has written files the tables do not name yet"

    erase = start(["subject", *erase_args(data, device_id)])
    procs.append(erase)
    code, _, err = finish(erase)
    assert code == 1, err
    [line] = err.strip().splitlines()
    assert "a run, a `subject erase` or a `maintain` is using it" in line

    os.kill(run.pid, signal.SIGCONT)
    code, _, err = finish(run)
    assert code == 0, err[-2000:]
    named(data)
    assert direct_rows(data, device_id), "the run committed the subject's rows again"

    erase = start(["subject", *erase_args(data, device_id)])
    procs.append(erase)
    code, _, err = finish(erase)
    assert code == 0, err[-2000:]
    assert on_disk(data) == named(data)  # vacuumed: what is on disk is exactly what the tables name
    assert direct_rows(data, device_id) == {}
    assert leaks(data, needles(device_id)) == []


@pytest.mark.parametrize("command", ["erase", "maintain"])
def test_a_run_that_starts_during_an_erase_or_maintain_waits_for_it(data, device_id, tmp_path, procs,  # noqa: F811
                                                                   command):
    """The erase (or maintain) has passed its check for live runs and stopped just before the vacuum
    of url_visit; a run starting now must not write into the tables until it has ended."""
    extra = tmp_path / "more.ndjson"
    extra.write_bytes(b"\n".join(line for line in generate_lines(300, seed=11, dirty=False, days=2)
                                 if device_id.encode() not in line) + b"\n")  # the run adds other devices
    args = ["subject", *erase_args(data, device_id)] if command == "erase" else ["maintain", "--data", str(data),
                                                                                 "--as-of", AS_OF]
    holder = start(args, stop_at="vacuum:url_visit")
    procs.append(holder)
    wait_stopped(holder)

    files = on_disk(data)
    run = start(["--input", str(extra), "--output", str(data), *RUN_OPTS, "--append"])
    procs.append(run)
    for line in run.stderr:  # read until the run says it waits (a run that did not wait ends the loop)
        if "is running on it; waiting for it to end" in line:
            break
    else:
        raise AssertionError(f"the run did not wait: exit {run.wait()}")
    assert on_disk(data) == files, "the waiting run has written nothing"

    os.kill(holder.pid, signal.SIGCONT)
    code, _, err = finish(holder)
    assert code == 0, err[-2000:]
    code, _, err = finish(run)
    assert code == 0, err[-2000:]
    named(data)
    if command == "erase":
        assert direct_rows(data, device_id) == {}
        assert leaks(data, needles(device_id)) == []
