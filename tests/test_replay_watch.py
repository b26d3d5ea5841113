"""`python -m pipeline replay` and `python -m pipeline --watch`: closed files, pacing, micro-batches, restarts."""

from __future__ import annotations

import glob
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from pipeline import replay, watch
from pipeline.commit import KILL_ENV
from pipeline.tables import list_tables

ROOT = Path(__file__).resolve().parent.parent
SAMPLE2 = ROOT / "sample" / "telemetry-sample-2.ndjson.gz"
KEY = ROOT / "sample" / "dev-pseudonym.key"
AS_OF = "2026-11-25T00:00:00Z"
RUN_OPTS = ["--as-of", AS_OF, "--pseudonym-key-file", str(KEY)]


def cli(*args: str, timeout: float = 180, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def sample_lines() -> list[bytes]:
    return gzip.decompress(SAMPLE2.read_bytes()).splitlines(keepends=True)


def landed(landing: Path) -> list[Path]:
    return sorted(p for p in landing.iterdir() if p.is_file() and watch.is_closed_file_name(p.name))


# ------------------------------------------------------------------ output comparison helpers


def _freeze(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def read_rows(out: Path) -> dict[str, Counter]:
    """Every published row per table (type, _locked/type, _quarantine), with its partition directory."""
    tables: dict[str, Counter] = defaultdict(Counter)
    committed = [out / name / p for name in list_tables(str(out))
                 for p in DeltaTable(str(out / name)).get_add_actions(flatten=True).column("path").to_pylist()]
    for path in sorted(committed):
        parts = path.relative_to(out).parts
        depth = 2 if parts[0] == "_locked" else 1
        table, partition = "/".join(parts[:depth]), "/".join(parts[depth:-1])
        for row in pq.ParquetFile(path).read().to_pylist():
            if table == "_quarantine":
                row["source_file"] = os.path.basename(row["source_file"])  # _processing/ vs _done/
            tables[table][(partition, _freeze(row))] += 1
    return tables


def check_identity(report: dict) -> None:
    accounted = (sum(report["output_records"].values()) + sum(report["dropped"].values())
                 + sum(report["quarantined"].values()))
    assert report["input_records"] == accounted
    assert report["identity"]["holds"] and report["identity"]["rows_written_match"]


def watch_reports(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "_reports").glob("*.json"))]


def assert_watch_matches_batch(watch_out: Path, batch_out: Path) -> int:
    """Watch output (many runs) == one batch run, except that retries whose original landed in another
    micro-batch are kept once more; returns how many such extra rows there are."""
    reports = watch_reports(watch_out)
    batch = json.loads((batch_out / "_report.json").read_text())
    for report in [*reports, batch]:
        check_identity(report)
    assert sum(r["input_records"] for r in reports) == batch["input_records"]
    assert sum(r["blank_lines"] for r in reports) == batch["blank_lines"]
    assert sum((Counter(r["quarantined"]) for r in reports), Counter()) == Counter(batch["quarantined"])
    cross = batch["dropped"].get("duplicate", 0) - sum(r["dropped"].get("duplicate", 0) for r in reports)
    assert cross >= 0

    w_rows, b_rows = read_rows(watch_out), read_rows(batch_out)
    assert set(w_rows) == set(b_rows)
    extra = Counter()
    for table in b_rows:
        assert set(w_rows[table]) == set(b_rows[table]), table  # the same distinct rows
        assert not b_rows[table] - w_rows[table], table  # nothing missing
        extra[table] = sum((w_rows[table] - b_rows[table]).values())  # only extra copies
    assert sum(extra.values()) == cross
    w_out = sum((Counter(r["output_records"]) for r in reports), Counter())
    for record_type, n in batch["output_records"].items():
        assert w_out[record_type] == n + extra[record_type], record_type
    return cross


def assert_same_rows(watch_out: Path, batch_out: Path) -> None:
    """The watch output (many runs) is the batch run's, row for row, and the reports add up to it."""
    assert assert_watch_matches_batch(watch_out, batch_out) == 0  # no retry written twice
    assert read_rows(watch_out) == read_rows(batch_out)
    reports = watch_reports(watch_out)
    batch = json.loads((batch_out / "_report.json").read_text())
    assert sum((Counter(r["dropped"]) for r in reports), Counter()) == Counter(batch["dropped"])
    assert sum((Counter(r["output_records"]) for r in reports), Counter()) == Counter(batch["output_records"])


def ledger(landing: Path) -> list[dict]:
    path = landing / "_ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def batch_run(files: list[Path], out: Path) -> None:
    args = [a for f in files for a in ("--input", str(f))]
    proc = cli(*args, "--output", str(out), *RUN_OPTS)
    assert proc.returncode == 0, proc.stderr[-3000:]


def done_files(landing: Path) -> list[Path]:
    return sorted((landing / "_done").glob("*/*.ndjson"))


# ------------------------------------------------------------------ replay


def test_replay_only_ever_shows_complete_files_and_keeps_every_line(tmp_path):
    landing = tmp_path / "landing"
    lines = sample_lines()
    chunks = {b"".join(lines[i:i + 100]) for i in range(0, len(lines), 100)}
    seen: dict[str, bytes] = {}
    problems: list[str] = []
    proc = popen("replay", "--from", str(SAMPLE2), "--into", str(landing), "--file-records", "100",
                 "--rate", "2000/s")
    while True:
        finished = proc.poll() is not None
        if landing.exists():
            for path in landed(landing):
                if path.name not in seen:
                    data = path.read_bytes()
                    seen[path.name] = data
                    if data not in chunks:
                        problems.append(f"{path.name}: {len(data.splitlines())} lines, not a complete chunk")
        if finished:
            break
        time.sleep(0.003)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr
    assert not problems, problems[:5]
    assert len(seen) == 15 and len(seen) > 1
    joined = b"".join(p.read_bytes() for p in landed(landing))
    assert joined == b"".join(lines)  # every line, dirty ones included, byte for byte and in order
    assert joined.count(b"\n") == 1500
    assert not any((landing / ".incoming").iterdir())  # no temporary file left behind
    assert "1500 lines in 15 files" in stdout


def test_replay_rate_is_roughly_honoured(tmp_path):
    src = tmp_path / "in.ndjson"
    src.write_bytes(b"".join(sample_lines()[:300]))
    started = time.monotonic()
    assert replay.main(["--from", str(src), "--into", str(tmp_path / "l"), "--rate", "1000/s"]) == 0
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 10
    assert sum(p.read_bytes().count(b"\n") for p in landed(tmp_path / "l")) == 300


def test_replay_speedup_follows_record_times(tmp_path):
    src = tmp_path / "in.ndjson"
    src.write_bytes(b'{"ts":"2026-11-20T10:00:00Z"}\nnot json\n{"ts":"2026-11-20T10:00:01Z"}\n'
                    b'{"ts":"2026-11-20T09:00:00Z"}\n{"ts":"2026-11-20T10:00:02Z"}\n')
    started = time.monotonic()
    assert replay.main(["--from", str(src), "--into", str(tmp_path / "l"), "--speedup", "4"]) == 0
    assert 0.45 <= time.monotonic() - started < 5  # 2 s of record time at 4x; the late record does not wait
    assert b"".join(p.read_bytes() for p in landed(tmp_path / "l")) == src.read_bytes()


def test_replay_rewrite_timestamps_shifts_only_parsable_ts(tmp_path):
    landing = tmp_path / "l"
    before = time.time()
    assert replay.main(["--from", str(SAMPLE2), "--into", str(landing), "--rewrite-timestamps",
                        "--file-records", "400"]) == 0
    original = sample_lines()
    rewritten = b"".join(p.read_bytes() for p in landed(landing)).splitlines(keepends=True)
    assert len(rewritten) == len(original) == 1500
    deltas, first_new = set(), None
    changed = 0
    for old, new in zip(original, rewritten, strict=True):
        found = replay.record_ts(old)
        if found is None:
            assert new == old  # dirty and ts-less lines are written as they were
            continue
        changed += 1
        new_found = replay.record_ts(new)
        assert new_found is not None
        first_new = first_new or new_found[1]
        deltas.add(new_found[1] - found[1])
        assert new_found[0][19:].lstrip(".0123456789") == found[0][19:].lstrip(".0123456789")  # same offset
        assert new.replace(new_found[0].encode(), found[0].encode(), 1) == old  # only the ts bytes changed
    assert changed > 1400
    assert len(deltas) == 1  # every gap between records is kept
    assert before - 2 <= first_new.timestamp() <= time.time() + 2  # the first record now says "now"


def test_top_level_ts_is_the_one_replaced():
    line = b'{"data":{"ts":"2026-01-01T00:00:00Z"},"s":"a\\"ts\\":x","ts":"2026-01-01T00:00:00Z"}\n'
    out = replay.rewrite_line(line, "2026-01-01T00:00:00Z", "2030-01-01T00:00:00Z")
    assert out == b'{"data":{"ts":"2026-01-01T00:00:00Z"},"s":"a\\"ts\\":x","ts":"2030-01-01T00:00:00Z"}\n'
    assert orjson.loads(out)["data"]["ts"] == "2026-01-01T00:00:00Z"
    assert replay.shift_ts("2026-11-20T23:59:59.250+02:00", datetime(2026, 1, 2) - datetime(2026, 1, 1)) \
        == "2026-11-21T23:59:59.250+02:00"


@pytest.mark.parametrize("args, message", [
    (["--from", "/nonexistent/*.ndjson"], "no file matches"),
    (["--from", str(SAMPLE2), "--rate", "fast"], "--rate 'fast'"),
    (["--from", str(SAMPLE2), "--rate", "10/s", "--speedup", "2"], "not allowed with"),
    (["--from", str(SAMPLE2), "--file-records", "0"], "--file-records"),
])
def test_replay_bad_arguments_exit_2_with_one_line(args, message, capsys, tmp_path):
    assert replay.main([*args, "--into", str(tmp_path / "l")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("error: ") and "\n" not in err
    assert not (tmp_path / "l").exists()


# ------------------------------------------------------------------ watch


def test_watch_end_to_end_matches_one_batch_run(tmp_path):
    landing, out, batch_out = tmp_path / "landing", tmp_path / "out", tmp_path / "batch"
    proc = popen("--watch", str(landing), "--output", str(out), "--idle-timeout", "4", "--max-files-per-batch", "2",
                 *RUN_OPTS)
    rep = cli("replay", "--from", str(SAMPLE2), "--into", str(landing), "--file-records", "300", "--rate", "2000/s")
    assert rep.returncode == 0, rep.stderr
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    batch_lines = [line for line in stdout.splitlines() if line.startswith("batch ")]
    assert len(batch_lines) >= 3 and "latency" in batch_lines[0]
    assert not landed(landing) and not any((landing / "_processing").iterdir())

    entries = ledger(landing)
    names = [f["name"] for e in entries for f in e["files"]]
    assert len(names) == 5 and len(set(names)) == 5
    assert all(e["exit_code"] == 0 and e["identity_holds"] and len(e["files"][0]["sha256"]) == 64 for e in entries)
    assert sum(e["records_in"] for e in entries) == 1498  # 1500 lines, 2 of them blank
    assert all(0 <= e["latency_seconds"]["max"] < 60 for e in entries)

    batch_run(done_files(landing), batch_out)
    # With 300-line files some retries land in a later batch than their original: each batch
    # drops those already committed (pipeline/dedupe.py), so the output is the batch run's, row
    # for row (on main: 3 url_visit, 1 os_event and 1 suspicious_file rows more).
    assert_same_rows(out, batch_out)


def test_watch_restart_after_kill_loses_and_repeats_nothing(tmp_path):
    landing, out, batch_out = tmp_path / "landing", tmp_path / "out", tmp_path / "batch"
    assert replay.main(["--from", str(SAMPLE2), "--into", str(landing), "--file-records", "250"]) == 0
    files = [p.name for p in landed(landing)]
    assert len(files) == 6

    proc = popen("--watch", str(landing), "--output", str(out), "--max-files-per-batch", "2", *RUN_OPTS)
    deadline = time.monotonic() + 90
    while not ledger(landing) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert ledger(landing), "the first batch never reached the ledger"
    assert len({f["name"] for e in ledger(landing) for f in e["files"]}) < 6  # stopped half-way

    # Start again without --idle-timeout; stop it with SIGTERM once everything is in the ledger.
    proc = popen("--watch", str(landing), "--output", str(out), "--max-files-per-batch", "2", *RUN_OPTS)
    deadline = time.monotonic() + 90
    while (len([f for e in ledger(landing) for f in e["files"]]) < 6 and time.monotonic() < deadline
           and proc.poll() is None):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-3000:]
    assert "SIGTERM" in stderr

    names = [f["name"] for e in ledger(landing) for f in e["files"]]
    assert sorted(names) == sorted(files)  # every file exactly once
    assert not any((landing / "_processing").iterdir()) and not landed(landing)
    assert not [p for p in out.iterdir() if p.name.startswith(".staging-")]
    assert sorted(e["run_id"] for e in ledger(landing)) == sorted(r["run_id"] for r in watch_reports(out))

    batch_run(done_files(landing), batch_out)
    assert_same_rows(out, batch_out)  # row for row, across the kill and the restart


def _claimed_batch(landing: Path, batch_id: str, count: int) -> list[str]:
    """Replay the sample into `landing` and claim `count` files the way the watcher does."""
    assert replay.main(["--from", str(SAMPLE2), "--into", str(landing), "--file-records", "500"]) == 0
    bdir = landing / "_processing" / batch_id
    bdir.mkdir(parents=True)
    claimed = []
    for path in landed(landing)[:count]:
        path.rename(bdir / path.name)
        claimed.append(str(bdir / path.name))
    return claimed


def _watch_in_process(landing: Path, out: Path, capsys) -> tuple[int, str, str]:
    code = watch.main(["--watch", str(landing), "--output", str(out), "--idle-timeout", "0", *RUN_OPTS])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _published_once(landing: Path, out: Path) -> None:
    entries = ledger(landing)
    names = [f["name"] for e in entries for f in e["files"]]
    assert len(names) == len(set(names)) == 3
    reports = watch_reports(out)
    assert sorted(r["run_id"] for r in reports) == sorted(e["run_id"] for e in entries)
    assert sum(r["input_records"] for r in reports) == 1498
    written = sum(sum(r["output_records"].values()) for r in reports)
    data_rows = sum(sum(c.values()) for t, c in read_rows(out).items() if not t.startswith("_"))
    assert data_rows == written
    assert not any((landing / "_processing").iterdir()) and not landed(landing)


def test_watch_recovers_a_batch_published_before_its_ledger_entry(tmp_path, capsys):
    from pipeline.run import run_files

    landing, out = tmp_path / "landing", tmp_path / "out"
    files = _claimed_batch(landing, "20260101T000000Z-aaaaaa", 2)
    assert run_files(files, str(out), [*RUN_OPTS, "--append"]) == 0  # the crash came right after this
    (landing / "_ledger.jsonl").write_text('{"batch_id": "torn')  # and while the ledger line was written
    code, stdout, stderr = _watch_in_process(landing, out, capsys)
    assert code == 0, stderr
    assert "not run again" in stderr and "torn" in stderr
    entries = ledger(landing)
    assert [e.get("recovered", False) for e in entries] == [True, False]
    assert len(watch_reports(out)) == 2
    _published_once(landing, out)


@pytest.mark.parametrize("point", ["after_commit:_quarantine", "after_commit:os_event", "committed"])
def test_watch_completes_a_batch_whose_run_was_killed_between_commits(tmp_path, capsys, point):
    landing, out = tmp_path / "landing", tmp_path / "out"
    files = _claimed_batch(landing, "20260101T000000Z-bbbbbb", 2)
    args = [a for f in files for a in ("--input", glob.escape(f))]
    killed = cli(*args, "--output", str(out), *RUN_OPTS, "--append", env={KILL_ENV: point})
    assert killed.returncode == -signal.SIGKILL
    assert not watch_reports(out)  # killed before its report
    code, stdout, stderr = _watch_in_process(landing, out, capsys)
    assert code == 0, stderr
    assert "run again" in stderr
    [first] = [e for e in ledger(landing) if e["batch_id"] == "20260101T000000Z-bbbbbb"]
    report = next(r for r in watch_reports(out) if r["run_id"] == first["run_id"])
    assert report["resumed"]  # the tables the killed run had committed were not committed again
    assert not [p for p in out.iterdir() if p.name.startswith(".staging-")]
    _published_once(landing, out)


def test_watch_finishes_the_move_of_a_batch_already_in_the_ledger(tmp_path, capsys):
    landing, out = tmp_path / "landing", tmp_path / "out"
    assert replay.main(["--from", str(SAMPLE2), "--into", str(landing), "--file-records", "500"]) == 0
    code, _, stderr = _watch_in_process(landing, out, capsys)
    assert code == 0, stderr
    # Put one batch's files back into _processing, as if the crash came after its ledger entry.
    entry = ledger(landing)[0]
    src = landing / "_done" / entry["batch_id"]
    dst = landing / "_processing" / entry["batch_id"]
    src.rename(dst)
    code, _, stderr = _watch_in_process(landing, out, capsys)
    assert code == 0 and "already in the ledger" in stderr
    assert (landing / "_done" / entry["batch_id"]).is_dir()
    _published_once(landing, out)


@pytest.mark.parametrize("extra, message", [
    (["--input", "x.ndjson"], "--input cannot be combined with --watch"),
    (["--pseudonym-key-file", "/nonexistent.key"], "cannot read"),
    (["--as-of", "yesterday"], "--as-of"),
    (["--poll-interval", "0"], "--poll-interval"),
])
def test_watch_bad_configuration_exits_2_before_claiming_anything(tmp_path, capsys, extra, message):
    landing = tmp_path / "landing"
    assert replay.main(["--from", str(SAMPLE2), "--into", str(landing), "--file-records", "1500"]) == 0
    capsys.readouterr()
    assert watch.main(["--watch", str(landing), "--output", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("error: ")
    assert len(landed(landing)) == 1


def test_second_watcher_on_the_same_landing_directory_is_refused(tmp_path, capsys):
    landing = tmp_path / "landing"
    landing.mkdir()
    lock = watch._Lock(str(landing / watch.LANDING_LOCK))
    try:
        code = watch.main(["--watch", str(landing), "--output", str(tmp_path / "out"), "--idle-timeout", "0",
                           *RUN_OPTS])
    finally:
        lock.release()
    assert code == 2 and "another watcher" in capsys.readouterr().err


def test_watch_stops_on_sigint_after_the_current_batch(tmp_path, capsys):
    landing, out = tmp_path / "landing", tmp_path / "out"
    assert replay.main(["--from", str(SAMPLE2), "--into", str(landing), "--file-records", "1500"]) == 0
    stop = threading.Event()

    def interrupt_once_claimed() -> None:  # SIGINT while the batch runs
        while not stop.is_set():
            if (landing / "_processing").is_dir() and any((landing / "_processing").iterdir()):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=interrupt_once_claimed, daemon=True)
    thread.start()
    try:
        code = watch.main(["--watch", str(landing), "--output", str(out), *RUN_OPTS])
    finally:
        stop.set()
        thread.join()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "SIGINT" in captured.err
    assert [len(e["files"]) for e in ledger(landing)] == [1]
    assert datetime.fromisoformat(ledger(landing)[0]["ended_at"]) <= datetime.now(UTC)


def test_replay_reads_a_cut_gzip_file_up_to_the_cut_and_says_what_it_missed(tmp_path):
    import zlib

    from pipeline.replay import read_lines

    data = gzip.compress(b"".join(b'{"n": %d, "pad": "%s"}\n' % (i, b"x" * (i % 97)) for i in range(20_000)))
    cut = tmp_path / "cut.ndjson.gz"
    cut.write_bytes(data[: len(data) // 2])
    warnings: list[str] = []
    got = b"".join(read_lines(str(cut), warnings))
    decodable = zlib.decompressobj(31).decompress(data[: len(data) // 2])  # every byte before the cut
    assert got == decodable + b"\n"  # the cut line too, given its newline as the contract's last line is
    assert len(warnings) == 1 and "cut short" in warnings[0] and "lines before it were replayed" in warnings[0]
