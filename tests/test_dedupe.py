"""Producer retries across runs into one output: a row already committed is not written again."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from pipeline.run import run

ROOT = Path(__file__).resolve().parent.parent
KEY = str(ROOT / "sample" / "dev-pseudonym.key")
OPTS = ["--as-of", "2026-11-25T00:00:00Z"]


def line(event: str, device: str = "D-1", ts: str = "2026-11-20T10:04:05Z", duration: int = 1) -> bytes:
    return json.dumps({
        "schema_version": 1, "type": "product_usage", "event_id": event, "device_id": device, "ts": ts,
        "country": "NL", "product": "KIS 21.3", "consent": {"eula": True, "ksn": True, "marketing": True},
        "data": {"feature": "scan", "duration_ms": duration, "scan_type": "quick", "result": "ok"},
    }, separators=(",", ":")).encode() + b"\n"


def rows(out: Path) -> list[tuple[str, int]]:
    """The committed rows (read through the table's log, not the files on disk)."""
    from deltalake import DeltaTable

    t = pa.table(DeltaTable(str(out / "product_usage")).to_pyarrow_table(columns=["event_id", "duration_ms"]))
    return sorted(zip(t.column("event_id").to_pylist(), t.column("duration_ms").to_pylist(), strict=True))


def append_run(tmp_path: Path, name: str, data: bytes, out: Path, *extra: str) -> dict:
    path = tmp_path / name
    path.write_bytes(data)
    assert run(["--input", str(path), "--output", str(out), "--append", *OPTS, *extra]) == 0
    [report] = [json.loads(p.read_text()) for p in (out / "_reports").glob("*.json")
                if str(path) in json.loads(p.read_text())["inputs"]]
    return report


def test_a_retry_in_a_later_run_is_dropped_as_duplicate(tmp_path, capsys):
    out = tmp_path / "out"
    first = append_run(tmp_path, "a.ndjson", line("e1") + line("e2", device="D-2"), out,
                       "--pseudonym-key-file", KEY)
    assert first["dropped"] == {}
    # e1 again (a retry, even with another field value: the first copy written wins), e2 from
    # another device (not a copy), e3 new, e1 on another day (another partition: not a copy)
    second = append_run(tmp_path, "b.ndjson", line("e1", duration=9) + line("e2") + line("e3")
                        + line("e1", ts="2026-11-21T10:04:05Z", duration=5), out, "--pseudonym-key-file", KEY)
    assert second["dropped"] == {"duplicate": 1}
    assert second["output_records"] == {"product_usage": 3}
    assert second["identity"]["holds"]
    assert rows(out) == [("e1", 1), ("e1", 5), ("e2", 1), ("e2", 1), ("e3", 1)]
    # a third run holding only copies writes no file at all
    third = append_run(tmp_path, "c.ndjson", line("e3") + line("e1"), out, "--pseudonym-key-file", KEY)
    assert third["dropped"] == {"duplicate": 2} and third["output_records"] == {} and third["files_written"] == 0
    assert rows(out) == [("e1", 1), ("e1", 5), ("e2", 1), ("e2", 1), ("e3", 1)]


def test_without_a_key_file_runs_cannot_recognise_each_others_rows(tmp_path, capsys):
    out = tmp_path / "out"
    append_run(tmp_path, "a.ndjson", line("e1"), out)
    second = append_run(tmp_path, "b.ndjson", line("e1"), out)
    assert second["dropped"] == {}  # random per-run keys: pseudonyms differ (the summary says so)
    assert len(rows(out)) == 2


def test_a_replacing_run_does_not_look_up_what_it_replaces(tmp_path, capsys):
    out = tmp_path / "out"
    data = tmp_path / "a.ndjson"
    data.write_bytes(line("e1") + line("e2"))
    for _ in range(2):
        assert run(["--input", str(data), "--output", str(out), "--pseudonym-key-file", KEY, *OPTS]) == 0
    report = json.loads((out / "_report.json").read_text())
    assert report["dropped"] == {} and rows(out) == [("e1", 1), ("e2", 1)]
