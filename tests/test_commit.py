"""Fault tests of a run's Delta commits: SIGKILL at many points, a failing commit, concurrent runs.

After each fault: every table is readable, every report matches the table versions it names,
and a re-run ends in the state of an uninterrupted run. Inputs are tiny (a few hundred lines)
so each run costs about its start-up time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from pipeline.commit import KILL_ENV
from pipeline.sample import generate_lines
from pipeline.tables import QUARANTINE, REPORT, REPORTS, list_tables, table_kind

ROOT = Path(__file__).resolve().parent.parent
KEY = ROOT / "sample" / "dev-pseudonym.key"
AS_OF = "2026-11-25T00:00:00Z"
OPTS = ["--pseudonym-key-file", str(KEY), "--as-of", AS_OF]


def cli(*args: str, env: dict[str, str] | None = None, strace: list[str] | None = None,
        ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline", *args]
    if strace:
        cmd = ["strace", "-f", "-qq", "-o", os.devnull, *strace, *cmd]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("inputs")
    made = {}
    for name, seed, n in (("previous", 2, 120), ("current", 1, 200), ("other", 3, 150)):
        path = base / f"{name}.ndjson"
        path.write_bytes(b"\n".join(generate_lines(n, seed=seed, dirty=True, days=2)) + b"\n")
        made[name] = path
    return made


def run_args(path: Path, out: Path, *extra: str) -> list[str]:
    return ["--input", str(path), "--output", str(out), *OPTS, *extra]


@pytest.fixture(scope="module")
def previous_output(inputs, tmp_path_factory) -> Path:
    """An output holding a completed run of another input: what a killed run must not damage."""
    out = tmp_path_factory.mktemp("prev") / "out"
    proc = cli(*run_args(inputs["previous"], out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def reference(inputs, previous_output, tmp_path_factory) -> dict[str, list]:
    """Table contents after an uninterrupted run of `current` over the previous output."""
    out = tmp_path_factory.mktemp("ref") / "out"
    shutil.copytree(previous_output, out)
    proc = cli(*run_args(inputs["current"], out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    check_output(out)
    return contents(out)


def rows(out: Path, name: str, version: int | None = None) -> list[str]:
    table = DeltaTable(str(out / name), version=version).to_pyarrow_table()
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in table.to_pylist())


def contents(out: Path) -> dict[str, list]:
    return {name: rows(out, name) for name in list_tables(str(out))}


def expected_rows(report: dict, name: str) -> int:
    kind = table_kind(name)
    if kind == "quarantine":
        return sum(report["quarantined"].values())
    if kind == "locked":
        return report["locked_records"].get(name.split("/", 1)[1], 0)
    return report["output_records"].get(name, 0)


def check_output(out: Path) -> None:
    """Every table readable; every report names versions that hold exactly what it counts."""
    names = list_tables(str(out))
    assert QUARANTINE in names
    for name in names:
        DeltaTable(str(out / name)).to_pyarrow_table()
    reports = [json.loads(p.read_text()) for p in sorted((out / REPORTS).glob("*.json"))]
    if (out / REPORT).exists():
        latest = json.loads((out / REPORT).read_text())
        assert latest in reports
    for report in reports:
        assert set(report["tables"]) == set(names)
        for name, entry in report["tables"].items():
            assert len(rows(out, name, entry["version"])) == expected_rows(report, name), (report["run_id"], name)


def killed(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode == -signal.SIGKILL


# Named points of a run (pipeline.commit.kill_point), in the order a run reaches them.
CHAIN = ["opened", "written",
         *(f"{when}_commit:{table}" for table in ("_quarantine", "antitheft", "detection", "license",
                                                  "_locked/license", "os_event", "wifi")
           for when in ("before", "after")),
         "committed", "reported"]


def test_sigkill_at_every_named_point_then_rerun_matches_an_uninterrupted_run(inputs, previous_output,
                                                                             reference, tmp_path):
    """One output, killed at each point in turn: each run resumes what the one before left."""
    assert len(CHAIN) == 18
    out = tmp_path / "out"
    shutil.copytree(previous_output, out)
    before = contents(out)
    for point in CHAIN:
        proc = cli(*run_args(inputs["current"], out), env={KILL_ENV: point})
        assert killed(proc), (point, proc.returncode, proc.stderr[-1500:])
        check_output(out)
        if point in ("opened", "written"):
            assert contents(out) == before, point  # nothing of the run visible yet
        assert not proc.stdout  # no summary from a killed run
    proc = cli(*run_args(inputs["current"], out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    check_output(out)
    assert contents(out) == reference
    report = json.loads((out / REPORT).read_text())
    # The "reported" kill came after a complete run: the last run is a new one, every table once.
    assert report["resumed"] == []
    history = [e for e in DeltaTable(str(out / "wifi")).history() if e.get("run_app")]
    per_execution = {}
    for entry in history:
        per_execution.setdefault((entry["run_app"], entry["execution"]), []).append(entry["run_id"])
    assert all(len(v) == 1 for v in per_execution.values()), per_execution  # never committed twice


def next_commit(out: Path, table: str) -> str:
    """The log file the next commit of `table` creates (delta-rs links it into place)."""
    return str(out / table / "_delta_log" / f"{DeltaTable(str(out / table)).version() + 1:020d}.json")


@pytest.mark.parametrize("table, inject", [
    ("_quarantine", "inject=linkat:signal=SIGKILL"),   # the first commit
    ("license", "inject=linkat:signal=SIGKILL"),       # the ninth of 16
    (None, "inject=rename:signal=SIGKILL:when=1"),     # writing _reports/<run>.json
    (None, "inject=rename:signal=SIGKILL:when=2"),     # writing _report.json
], ids=["commit-1", "commit-9", "report", "latest-report"])
def test_sigkill_at_a_system_call_then_rerun(inputs, previous_output, reference, tmp_path, table, inject):
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    out = tmp_path / "out"
    shutil.copytree(previous_output, out)
    syscall = inject.split("=")[1].split(":")[0]
    where = ["-P", next_commit(out, table)] if table else []
    proc = cli(*run_args(inputs["current"], out), strace=[*where, "-e", f"trace={syscall}", "-e", inject])
    assert killed(proc), (proc.returncode, proc.stderr[-1500:])
    check_output(out)
    proc = cli(*run_args(inputs["current"], out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    check_output(out)
    assert contents(out) == reference
    assert not [p for p in out.iterdir() if p.name.startswith(".staging-")]


def test_a_failing_commit_of_one_table_exits_4_with_one_line_and_a_rerun_completes(inputs, previous_output,
                                                                                   reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(previous_output, out)
    proc = cli(*run_args(inputs["current"], out), strace=["-P", next_commit(out, "detection"), "-e", "trace=linkat",
                                                          "-e", "inject=linkat:error=EIO"])
    assert proc.returncode == 4, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: --output") and "commit of table" in line and "run it again" in line
    check_output(out)
    assert contents(out) != reference  # part of the tables still hold the previous run
    proc = cli(*run_args(inputs["current"], out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    check_output(out)
    assert contents(out) == reference
    resumed = json.loads((out / REPORT).read_text())["resumed"]
    assert resumed == ["_quarantine", "antitheft", "child_protection", "contact"]  # not committed twice


def test_two_concurrent_replacing_runs_never_mix(inputs, previous_output, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(previous_output, out)
    cmds = [[sys.executable, "-m", "pipeline", *run_args(inputs[name], out)] for name in ("current", "other")]
    procs = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    results = [(p.wait(timeout=180), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 4], [0, 0]), results
    for code, err in results:
        if code == 4:
            [line] = err.strip().splitlines()
            assert line.startswith("error: --output") and ("changed while this run ran" in line
                                                           or "another run is committing to it" in line
                                                           or "commit of table" in line)
    check_output(out)
    latest = json.loads((out / REPORT).read_text())
    for name in list_tables(str(out)):  # every table's current version is the latest report's run
        assert DeltaTable(str(out / name)).history(1)[0]["run_id"] == latest["run_id"], name
        assert latest["tables"][name]["version"] == DeltaTable(str(out / name)).version()


def test_two_concurrent_appending_runs_both_land(inputs, tmp_path):
    out = tmp_path / "out"
    cmds = [[sys.executable, "-m", "pipeline", *run_args(inputs[name], out), "--append"]
            for name in ("current", "other")]
    procs = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    results = [(p.wait(timeout=180), p.stderr.read()) for p in procs]
    assert [code for code, _ in results] == [0, 0], results
    reports = [json.loads(p.read_text()) for p in (out / REPORTS).glob("*.json")]
    assert len(reports) == 2
    for name in list_tables(str(out)):
        assert len(rows(out, name)) == sum(expected_rows(r, name) for r in reports), name
    # The same input appended again commits nothing: its app transaction is in every table.
    versions = {name: DeltaTable(str(out / name)).version() for name in list_tables(str(out))}
    proc = cli(*run_args(inputs["current"], out, "--append"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert versions == {name: DeltaTable(str(out / name)).version() for name in list_tables(str(out))}


def test_slice_replace_keeps_other_dates_and_empty_input_replaces_nothing(inputs, tmp_path):
    out = tmp_path / "out"
    assert cli(*run_args(inputs["current"], out)).returncode == 0
    dates = sorted({r["event_date"] for r in DeltaTable(str(out / "url_visit")).to_pyarrow_table(
        columns=["event_date"]).to_pylist()})
    assert len(dates) >= 2
    day = dates[0]
    one_day = tmp_path / "day.ndjson"
    one_day.write_bytes(b"\n".join(line for line in inputs["current"].read_bytes().splitlines()
                                   if day.encode() in line) + b"\n")
    before = contents(out)
    proc = cli(*run_args(one_day, out, "--slice-dates", f"{day}..{day}"))
    assert proc.returncode in (0, 4), proc.stderr
    if proc.returncode == 4:  # a line of that day whose event time falls on another day (clock skew)
        assert "outside the slice" in proc.stderr
        assert contents(out) == before
    else:
        after = contents(out)
        visits = DeltaTable(str(out / "url_visit")).to_pyarrow_table().to_pylist()
        assert {r["event_date"] for r in visits} == set(dates)  # other days kept
        assert sorted(after) == sorted(before)
        again = cli(*run_args(one_day, out, "--slice-dates", day))
        assert again.returncode == 0 and contents(out) == after  # re-running the slice: same state

    empty = tmp_path / "empty.ndjson"
    empty.write_bytes(b"")
    versions = {name: DeltaTable(str(out / name)).version() for name in list_tables(str(out))}
    proc = cli(*run_args(empty, out))
    assert proc.returncode == 0, proc.stderr
    assert "nothing replaced" in proc.stdout
    assert versions == {name: DeltaTable(str(out / name)).version() for name in list_tables(str(out))}
    proc = cli(*run_args(empty, out, "--replace-empty"))
    assert proc.returncode == 0, proc.stderr
    assert all(not rows(out, name) for name in list_tables(str(out)))


@pytest.mark.parametrize("extra, message", [
    (["--slice-dates", "2026-13-01"], "expected YYYY-MM-DD"),
    (["--slice-dates", "2026-11-25..2026-11-24"], "is after"),
    (["--slice-dates", "2026-11-24", "--append"], "cannot be combined with --append"),
])
def test_bad_slice_options_exit_2_with_one_line_and_write_nothing(inputs, tmp_path, capsys, extra, message):
    from pipeline.run import run

    out = tmp_path / "out"
    assert run(run_args(inputs["current"], out, *extra)) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --slice-dates") and message in line
    assert not out.exists()


def test_a_killed_replace_replaced_by_another_run_is_rerun_whole_not_finished(inputs, previous_output, reference,
                                                                              tmp_path):
    """Killed after some of its commits; another input replaces the output; the killed run's re-run
    must not complete only the tables it had not committed (that would leave half of each run)."""
    out = tmp_path / "out"
    shutil.copytree(previous_output, out)
    proc = cli(*run_args(inputs["current"], out), env={KILL_ENV: "after_commit:detection"})
    assert killed(proc)
    proc = cli(*run_args(inputs["other"], out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    check_output(out)
    other = json.loads((out / REPORT).read_text())
    for name in list_tables(str(out)):  # the other run replaced every table
        assert DeltaTable(str(out / name)).history(1)[0]["run_id"] == other["run_id"], name
    proc = cli(*run_args(inputs["current"], out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    [note] = proc.stderr.strip().splitlines()
    assert note.startswith("note: --output") and "replaced by another run meanwhile" in note
    check_output(out)
    assert contents(out) == reference
    report = json.loads((out / REPORT).read_text())
    assert report["resumed"] == [] and report["superseded_table"] == "_quarantine" and report["execution"] == 2


def test_a_replace_while_another_is_stopped_between_its_commits_fails_with_one_line(inputs, previous_output,
                                                                                   reference, tmp_path):
    """Stopped (SIGSTOP) between two of its own commits: a replace of the same output meanwhile
    fails at once and commits nothing; the stopped run, resumed, completes alone."""
    from test_leases import wait_stopped

    from pipeline.commit import STOP_ENV

    out = tmp_path / "out"
    shutil.copytree(previous_output, out)
    first = subprocess.Popen([sys.executable, "-m", "pipeline", *run_args(inputs["current"], out)], cwd=ROOT,
                             env={**os.environ, STOP_ENV: "after_commit:detection"}, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_stopped(first)
        versions = {name: DeltaTable(str(out / name)).version() for name in list_tables(str(out))}
        proc = cli(*run_args(inputs["other"], out))
        assert proc.returncode == 4, proc.stderr[-2000:]
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith("error: --output") and "another run is committing to it" in line
        assert versions == {name: DeltaTable(str(out / name)).version() for name in list_tables(str(out))}
        os.kill(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=180)
        assert first.returncode == 0, err[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    check_output(out)
    assert contents(out) == reference


def policy_variant(tmp_path: Path, name: str, category: str | None) -> Path:
    """The built-in policy with url_visit's `category` field removed (None) or given another transform."""
    text = (ROOT / "schemas" / "policy.toml").read_text()
    line = 'fields.category = "text"\n'
    start = text.index("[types.url_visit]")
    at = text.index(line, start)
    path = tmp_path / name
    path.write_text(text[:at] + (f'fields.category = "{category}"\n' if category else "") + text[at + len(line):])
    return path


@pytest.mark.parametrize("mode", ["--append", "replace", "--slice-dates"])
def test_a_policy_that_adds_a_column_evolves_the_table(inputs, tmp_path, mode):
    """Output written without url_visit.category; a run under the policy that allows it adds the
    column to the table (no file whose schema the table does not declare): new rows carry it, rows
    written before read it as null."""
    out = tmp_path / "out"
    proc = cli(*run_args(inputs["previous"], out, "--policy", str(policy_variant(tmp_path, "old.toml", None))))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "category" not in DeltaTable(str(out / "url_visit")).schema().to_arrow().names
    extra = []
    if mode == "--append":
        extra = ["--append"]
    elif mode == "--slice-dates":
        extra = ["--slice-dates", "2000-01-01..2099-12-31"]  # a predicate overwrite, not a whole replace
    source = inputs["current"] if mode != "--slice-dates" else inputs["previous"]
    before = DeltaTable(str(out / "url_visit")).to_pyarrow_table().num_rows
    proc = cli(*run_args(source, out, *extra))
    assert proc.returncode == 0, proc.stderr[-2000:]
    if mode == "replace":  # (appended versions, and a slice's quarantine, also hold the first run's rows)
        check_output(out)
    table = DeltaTable(str(out / "url_visit"))
    assert "category" in table.schema().to_arrow().names
    visits = table.to_pyarrow_table()
    added = json.loads((out / REPORTS / f"{table.history(1)[0]['run_id']}.json").read_text())[
        "tables"]["url_visit"]["rows_added"]
    assert visits.column("category").null_count < visits.num_rows  # the new rows carry it
    if mode == "--append":
        assert visits.num_rows == before + added
        assert visits.column("category").null_count >= before  # rows written before: null
    else:
        assert visits.num_rows == added  # replaced: every row is the new run's
    for name in list_tables(str(out)):  # every file a table names matches the table's schema
        table = DeltaTable(str(out / name))
        declared = set(table.schema().to_arrow().names) - {"user_region", "event_date"}
        for uri in table.file_uris():
            assert set(pq.read_schema(uri).names) <= declared, (name, uri)


def test_a_policy_that_changes_a_columns_type_exits_2_with_one_line_and_writes_nothing(inputs, tmp_path):
    out = tmp_path / "out"
    proc = cli(*run_args(inputs["previous"], out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    before = sorted(str(p) for p in out.rglob("*"))
    proc = cli(*run_args(inputs["current"], out, "--append", "--policy",
                         str(policy_variant(tmp_path, "int.toml", "int"))))
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: --output") and "column category is string in the table" in line
    assert sorted(str(p) for p in out.rglob("*") if not p.name.endswith(".lock")) == [
        p for p in before if not p.endswith(".lock")]


def test_two_appending_runs_that_both_add_a_column_both_land(inputs, tmp_path):
    """Both opened the table before either added the column: the later one finds it added."""
    from test_leases import wait_stopped

    from pipeline.commit import STOP_ENV

    out = tmp_path / "out"
    proc = cli(*run_args(inputs["previous"], out, "--policy", str(policy_variant(tmp_path, "old.toml", None))))
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = subprocess.Popen([sys.executable, "-m", "pipeline", *run_args(inputs["current"], out, "--append")],
                             cwd=ROOT, env={**os.environ, STOP_ENV: "written"}, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_stopped(first)  # opened the tables (no category column yet) and wrote its files
        proc = cli(*run_args(inputs["other"], out, "--append"))
        assert proc.returncode == 0, proc.stderr[-2000:]
        os.kill(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=180)
        assert first.returncode == 0, err[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    reports = [json.loads(p.read_text()) for p in (out / REPORTS).glob("*.json")]
    visits = DeltaTable(str(out / "url_visit")).to_pyarrow_table()
    assert visits.num_rows == sum(r["tables"]["url_visit"]["rows_added"] for r in reports)
    assert "category" in visits.column_names and visits.column("category").null_count < visits.num_rows


def test_a_killed_append_wiped_by_a_replace_is_appended_again_everywhere(inputs, previous_output, tmp_path):
    """Killed after some of its commits; a replace then wipes what it had appended; its re-run
    appends the input to every table, not only to the ones it had not reached."""
    out = tmp_path / "out"
    shutil.copytree(previous_output, out)
    proc = cli(*run_args(inputs["current"], out, "--append"), env={KILL_ENV: "after_commit:detection"})
    assert killed(proc)
    proc = cli(*run_args(inputs["other"], out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    replaced = json.loads((out / REPORT).read_text())
    proc = cli(*run_args(inputs["current"], out, "--append"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "replaced by another run meanwhile" in proc.stderr
    run_id = next(line.split()[1].rstrip(":") for line in proc.stdout.splitlines() if line.startswith("run "))
    appended = json.loads((out / REPORTS / f"{run_id}.json").read_text())
    assert appended["execution"] == 2 and appended["resumed"] == []
    for name in list_tables(str(out)):  # the replace's rows plus the whole append, in every table
        assert len(rows(out, name)) == expected_rows(replaced, name) + expected_rows(appended, name), name
