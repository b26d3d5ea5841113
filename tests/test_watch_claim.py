"""`--watch` claims a landing file only when it is complete, and never cuts a claimed file short.

A producer appending in place (on main: claimed after 15 of 200 lines, the rest never
processed, exit 0), a file that changes while its batch reads it, grows after its
batch was published, is rewritten after it was read, or never gets its last newline.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from pipeline import reading, watch

ROOT = Path(__file__).resolve().parent.parent
KEY = ROOT / "sample" / "dev-pseudonym.key"
RUN_OPTS = ["--as-of", "2026-11-25T00:00:00Z", "--pseudonym-key-file", str(KEY)]


def line(i: int) -> bytes:
    return json.dumps({
        "schema_version": 1, "type": "product_usage", "event_id": f"e{i}", "device_id": f"D-{i % 7}",
        "ts": "2026-11-20T10:04:05Z", "country": "NL", "product": "KIS 21.3",
        "consent": {"eula": True, "ksn": True, "marketing": True},
        "data": {"feature": "scan", "duration_ms": i, "scan_type": "quick", "result": "ok"},
    }, separators=(",", ":")).encode() + b"\n"


def ledger(landing: Path) -> list[dict]:
    path = landing / "_ledger.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def written_ids(out: Path) -> list[int]:
    import pyarrow.parquet as pq

    ids = []
    for f in (out / "product_usage").rglob("*.parquet"):
        ids.extend(int(e[1:]) for e in pq.read_table(f).column("event_id").to_pylist())
    return sorted(ids)


def run_watch(landing: Path, out: Path, *extra: str) -> int:
    return watch.main(["--watch", str(landing), "--output", str(out), "--poll-interval", "0.05", *extra, *RUN_OPTS])


def test_a_producer_appending_slowly_in_place_is_claimed_only_when_done(tmp_path, capsys):
    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    target = landing / "slow.ndjson"
    n = 200

    def produce() -> None:
        with open(target, "ab", buffering=0) as fh:
            for i in range(n):
                fh.write(line(i))
                time.sleep(0.005 if i % 20 else 0.1)  # bursts and pauses, each far below the settle time

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        code = run_watch(landing, out, "--settle-seconds", "1.5", "--idle-timeout", "0.5")
    finally:
        producer.join()
    err = capsys.readouterr().err
    assert code == 0, err
    # Every line exactly once, whether the watcher waited for the producer (the usual case) or a
    # pause longer than the settle time on a loaded machine let it claim early (then the growth
    # is detected and the added lines are landed again).
    assert written_ids(out) == list(range(n))
    assert sum(e["records_in"] for e in ledger(landing)) == n
    assert not list(landing.glob("*.ndjson"))


def test_a_stable_file_without_its_last_newline_is_never_claimed(tmp_path, capsys):
    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    (landing / "done.ndjson").write_bytes(line(0) + line(1))
    (landing / "unfinished.ndjson").write_bytes(line(2) + line(3)[:40])
    code = run_watch(landing, out, "--settle-seconds", "0.2", "--idle-timeout", "0.3")
    err = capsys.readouterr().err
    assert code == 3  # partial input: a file was left unclaimed
    assert "unfinished.ndjson: unchanged for 0.2s but it does not end in a newline" in err
    assert "PARTIAL INPUT: 1 file(s) left unclaimed, incomplete: unfinished.ndjson" in err
    assert written_ids(out) == [0, 1]
    assert (landing / "unfinished.ndjson").exists()


def test_a_gzip_file_is_claimed_only_at_the_end_of_a_whole_member(tmp_path, capsys):
    import gzip

    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    whole = gzip.compress(line(0) + line(1))
    (landing / "cut.ndjson.gz").write_bytes(whole[:-3])
    code = run_watch(landing, out, "--settle-seconds", "0", "--idle-timeout", "0.2")
    assert code == 3 and "cut.ndjson.gz" in capsys.readouterr().err
    (landing / "cut.ndjson.gz").write_bytes(whole)  # the producer finishes it
    assert run_watch(landing, out, "--settle-seconds", "0", "--idle-timeout", "0.2") == 0
    assert written_ids(out) == [0, 1]


def test_a_file_that_grows_while_its_batch_reads_it_is_run_again_once_settled(tmp_path, monkeypatch, capsys):
    """The producer appends a line while the run reads the claimed file (a real write to the real
    file, at a fixed point of the read): that run publishes nothing, the batch runs again."""
    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    (landing / "a.ndjson").write_bytes(b"".join(line(i) for i in range(50)))
    real_read = reading.PlainChunk.read
    appended = []

    def read_and_append(self, size):
        block = real_read(self, size)
        if block and not appended:
            appended.append(self.fh.name)
            with open(self.fh.name, "ab") as fh:
                fh.write(line(50))
        return block

    monkeypatch.setattr(reading.PlainChunk, "read", read_and_append)
    code = run_watch(landing, out, "--settle-seconds", "0.2", "--idle-timeout", "0")
    err = capsys.readouterr().err
    assert code == 0, err
    assert "a.ndjson changed while it was read" in err and "runs again once its files have settled" in err
    assert written_ids(out) == list(range(51))
    [entry] = ledger(landing)
    assert entry["records_in"] == 51
    reports = list((out / "_reports").glob("*.json"))
    assert len(reports) == 1  # the failed run left no report


def test_bytes_appended_after_a_publish_are_landed_again_not_lost(tmp_path, monkeypatch, capsys):
    from pipeline import run as run_module

    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    (landing / "a.ndjson").write_bytes(b"".join(line(i) for i in range(30)))
    real = run_module.run_files
    calls = []

    def run_then_append(files, output, extra=None):
        code = real(files, output, extra)
        if not calls:  # the producer writes to the claimed file after the batch was published
            with open(files[0], "ab") as fh:
                fh.write(line(30) + line(31))
        calls.append(files)
        return code

    monkeypatch.setattr(run_module, "run_files", run_then_append)
    code = run_watch(landing, out, "--settle-seconds", "0", "--idle-timeout", "0")
    err = capsys.readouterr().err
    assert code == 0, err
    assert "a.ndjson grew after batch" in err
    assert written_ids(out) == list(range(32))  # each line once
    first, second = ledger(landing)
    assert first["appended_after_read"][0]["name"] == "a.ndjson"
    assert [f["name"] for f in second["files"]] == [first["appended_after_read"][0]["rest"]]
    assert second["records_in"] == 2


@pytest.mark.parametrize("change", ["cut", "rewrite"])
def test_a_claimed_file_rewritten_after_it_was_read_stops_the_watcher(tmp_path, monkeypatch, capsys, change):
    from pipeline import run as run_module

    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    (landing / "a.ndjson").write_bytes(b"".join(line(i) for i in range(30)))
    (landing / "b.ndjson").write_bytes(line(99))
    real = run_module.run_files

    def run_then_change(files, output, extra=None):
        code = real(files, output, extra)
        data = Path(files[0]).read_bytes()
        if change == "cut":
            os.truncate(files[0], len(data) // 2)
        else:
            time.sleep(0.01)
            Path(files[0]).write_bytes(data.replace(b'"e1"', b'"e7"'))
        return code

    monkeypatch.setattr(run_module, "run_files", run_then_change)
    code = run_watch(landing, out, "--settle-seconds", "0", "--idle-timeout", "0", "--max-files-per-batch", "1")
    err = capsys.readouterr().err
    assert code == 1
    assert "ERROR: a.ndjson:" in err and "stopping" in err
    [entry] = ledger(landing)
    assert "after it was read" in entry["changed_after_read"][0]
    assert (landing / "b.ndjson").exists()  # the watcher stopped before the next batch
