"""Consent withdrawals: parsing, the exact-instant rule, and the side input in a real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from transforms.records import sanitize_lines
from transforms.withdrawals import WithdrawalsError, load_withdrawals

ROOT = Path(__file__).resolve().parent.parent


def visit(device: str, ts: str, event_id: str = "e") -> bytes:
    return orjson.dumps({"schema_version": 1, "type": "url_visit", "event_id": event_id, "device_id": device,
                         "ts": ts, "country": "NL", "consent": {"eula": True, "ksn": True},
                         "data": {"url": "https://example.com/"}})


@pytest.fixture
def wfile(tmp_path):
    path = tmp_path / "w.ndjson"
    path.write_text(
        '{"device_id": "D-1", "basis": "ksn", "withdrawn_at": "2026-11-20T10:00:00Z"}\n'
        '{"device_id": "D-1", "basis": "ksn", "withdrawn_at": "2026-11-22T10:00:00Z"}\n'  # later one: earliest wins
        '\n{"device_id": "D-2", "basis": "marketing", "withdrawn_at": "2026-11-01T00:00:00+01:00"}\n')
    return path


def test_withdrawal_at_or_after_record_time_drops(ctx, wfile):
    w = load_withdrawals(str(wfile), ctx.device_hash)
    lines = [visit("D-1", "2026-11-20T09:59:59Z", "before"), visit("D-1", "2026-11-20T10:00:00Z", "exact"),
             visit("D-1", "2026-11-21T00:00:00Z", "after"), visit("D-2", "2026-11-21T00:00:00Z", "other-basis")]
    result = sanitize_lines(ctx, "f", 0, list(enumerate(lines, 1)), w)
    kept = [r["event_id"] for t in result.outputs.values() for r in t.to_pylist()]
    assert sorted(kept) == ["before", "other-basis"]
    assert result.stats["dropped/consent_withdrawn"] == 2


def test_csv_form_and_no_raw_ids_held(ctx, tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("device_id,basis,withdrawn_at\nD-zq9,ksn,2026-11-20T10:00:00Z\n")
    w = load_withdrawals(str(path), ctx.device_hash)
    assert list(w) == [ctx.device_hash("D-zq9")] and "D-zq9" not in repr(w)


@pytest.mark.parametrize("content, message", [
    ('{"device_id": "D", "basis": "ksn", "withdrawn_at": "soon"}\n', "w.ndjson:1: withdrawn_at"),
    ('{"device_id": "D", "basis": "kns", "withdrawn_at": "2026-11-20T10:00:00Z"}\n', "w.ndjson:1: basis"),
    ('\n\n{"device_id": 5}\n', "w.ndjson:3: device_id"),
    ('{"device_id": "D"\n', "w.ndjson:1: not a JSON object"),
])
def test_bad_withdrawals_name_line_and_problem(ctx, tmp_path, content, message):
    path = tmp_path / "w.ndjson"
    path.write_text(content)
    with pytest.raises(WithdrawalsError, match=message):
        load_withdrawals(str(path), ctx.device_hash)


def test_side_input_in_a_real_run(tmp_path):
    data = tmp_path / "in.ndjson"
    data.write_bytes(b"\n".join([visit("D-1", "2026-11-20T09:00:00Z", "a"), visit("D-1", "2026-11-21T09:00:00Z", "b"),
                                 visit("D-3", "2026-11-21T09:00:00Z", "c")]) + b"\n")
    w = tmp_path / "w.csv"
    w.write_text("device_id,basis,withdrawn_at\nD-1,ksn,2026-11-20T10:00:00Z\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--input", str(data), "--output", str(out),
                           "--withdrawals", str(w), "--as-of", "2026-11-25T00:00:00Z"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "_report.json").read_text())
    assert report["dropped"] == {"consent_withdrawn": 1}
    assert report["output_records"] == {"url_visit": 2}
    bad = tmp_path / "bad.csv"
    bad.write_text("device,basis\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--input", str(data), "--output", str(tmp_path / "o2"),
                           "--withdrawals", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "bad.csv:1: CSV header" in proc.stderr
    assert not (tmp_path / "o2").exists()
