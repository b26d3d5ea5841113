"""Batch-run behaviour of the command line: the key check, the machine defaults, progress."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pipeline import cli, commands, progress
from pipeline.keycheck import data_key
from transforms.pseudonym import key_fingerprint

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = str(ROOT / "sample" / "telemetry-sample.ndjson")
DEV_KEY = ROOT / "sample" / "dev-pseudonym.key"
AS_OF = "2026-11-25T00:00:00Z"


def call(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """An output written with the development key."""
    out = tmp_path_factory.mktemp("keyed") / "out"
    assert cli.main(["--input", SAMPLE, "--output", str(out), "--as-of", AS_OF, "--pseudonym-key-file",
                     str(DEV_KEY), "--quiet"]) == 0
    return out


def _tree(path: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(path)), p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file())


def test_the_report_records_the_key_fingerprint_never_the_key(written):
    report = json.loads((written / "_report.json").read_text())
    key = DEV_KEY.read_bytes().strip()
    assert report["key_fingerprint"] == key_fingerprint(key) and len(report["key_fingerprint"]) == 16
    assert data_key(written) == (key_fingerprint(key), "development")
    text = (written / "_report.json").read_text()
    assert key.decode() not in text and key.hex() not in text


def test_a_run_with_another_key_into_the_output_is_refused(written, tmp_path, capsys):
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32).hex().encode())
    before = _tree(written)
    code, out, err = call(capsys, "--input", SAMPLE, "--output", str(written), "--as-of", AS_OF,
                          "--pseudonym-key-file", str(other))
    assert code == 2 and err.count("\n") == 1 and "does not match the data" in err and not out
    assert key_fingerprint(DEV_KEY.read_bytes().strip()) in err
    code, _, err = call(capsys, "--input", SAMPLE, "--output", str(written), "--as-of", AS_OF)
    assert code == 2 and "random per-run key" in err
    assert _tree(written) == before


def test_subject_commands_refuse_another_key(written, tmp_path, capsys):
    other = tmp_path / "other.key"
    other.write_bytes(b"k" * 32)
    before = _tree(written)
    for argv in (["subject", "erase", "--id", "D-1", "--data", str(written), "--pseudonym-key-file", str(other)],
                 ["subject", "export", "--id", "D-1", "--data", str(written), "--pseudonym-key-file", str(other),
                  "--output", str(tmp_path / "export")]):
        code, out, err = call(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and "does not match the data" in err, err
    assert _tree(written) == before and not (tmp_path / "export").exists()


def test_the_same_key_passes_the_check(written, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(written, copy)
    code, _, err = call(capsys, "--input", SAMPLE, "--output", str(copy), "--as-of", AS_OF,
                        "--pseudonym-key-file", str(DEV_KEY), "--quiet")
    assert code == 0, err


def test_default_run_uses_every_core_when_the_input_can_be_spread(tmp_path, monkeypatch):
    from pipeline.reading import CHUNK_BYTES

    big = tmp_path / "big.ndjson"
    with open(big, "wb") as fh:  # sparse: only the size matters for planning
        fh.truncate(3 * CHUNK_BYTES)
    small = tmp_path / "small.ndjson"
    small.write_bytes(b"{}\n")
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert commands.machine_defaults([], [str(big)]) == ["--direct_num_workers=3",
                                                         "--direct_running_mode=multi_processing"]
    assert commands.machine_defaults([], [str(small)]) == []
    assert commands.machine_defaults(["--runner=FnApiRunner"], [str(big)]) == []
    assert commands.machine_defaults(["--direct_num_workers", "1"], [str(big)]) == []
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert commands.machine_defaults([], [str(big), str(small)])[0] == "--direct_num_workers=2"
    # many small files: two chunks, but not worth starting workers for
    assert commands.machine_defaults([], [str(small), str(small) + ".copy"]) == []
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert commands.machine_defaults([], [str(big)]) == []


def test_readers_report_every_line_to_the_progress_file(tmp_path, monkeypatch):
    from pipeline.run import run

    sink = tmp_path / "progress"
    sink.write_bytes(b"")
    monkeypatch.setenv(progress.PROGRESS_ENV, str(sink))
    assert run(["--input", SAMPLE, "--output", str(tmp_path / "out"), "--as-of", AS_OF, "--batch-lines", "700"]) == 0
    shown = progress.Progress([SAMPLE], str(tmp_path), enabled=False)
    shown.path, shown.started = str(sink), 0.0
    shown.poll()
    data = Path(SAMPLE).read_bytes()
    assert shown.lines == data.count(b"\n")
    # bytes of the lines as read: without the BOM, CRs, and the part of an over-long line that is cut off
    assert 0.98 * len(data) <= shown.bytes <= len(data) and shown.total == len(data)
    assert f"{shown.lines:,} records" in shown.line() and "(98%)" in shown.line()


def test_progress_line_shows_share_rate_and_eta(tmp_path):
    shown = progress.Progress([SAMPLE], str(tmp_path), enabled=False)
    shown.started = 0.0
    shown.lines, shown.bytes = 1000, shown.total // 4
    line = shown.line()
    assert line.startswith("progress: 1,000 records, ") and "(25%)" in line and "ETA " in line
    assert "records/s" in line


def test_expected_bytes_of_a_gzip_file_is_its_uncompressed_size(tmp_path):
    import gzip

    path = tmp_path / "x.ndjson.gz"
    payload = b'{"a": 1}\n' * 1000
    path.write_bytes(gzip.compress(payload))
    assert progress.expected_bytes([str(path)]) == len(payload)


def test_quiet_run_prints_nothing_on_stderr(tmp_path, capsys):
    code, out, err = call(capsys, "--quiet", "--input", SAMPLE, "--output", str(tmp_path / "o"), "--as-of", AS_OF,
                          "--progress-interval", "0.01")
    assert code == 0 and err == "" and out.startswith("run ")
