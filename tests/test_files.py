"""What an --input names: directories, globs, other files skipped with a warning, key files never read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.files import InputError, expand_inputs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def landing(tmp_path):
    for name in ("b.ndjson", "a.ndjson.gz", "c.jsonl", "d.jsonl.gz", "notes.txt", "key.key", "x.json"):
        (tmp_path / name).write_bytes(b"{}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deeper.ndjson").write_bytes(b"{}\n")
    return tmp_path


def test_a_directory_means_its_telemetry_files_and_names_what_it_skips(landing):
    warnings: list[str] = []
    files = expand_inputs([str(landing)], warn=warnings.append)
    assert [Path(f).name for f in files] == ["a.ndjson.gz", "b.ndjson", "c.jsonl", "d.jsonl.gz"]
    [warning] = warnings
    assert "skipped 3 file(s)" in warning
    for name in ("notes.txt", "key.key", "x.json"):
        assert str(landing / name) in warning


def test_a_glob_matching_other_files_skips_them_with_a_warning(landing):
    warnings: list[str] = []
    files = expand_inputs([str(landing / "*")], warn=warnings.append)
    assert [Path(f).name for f in files] == ["a.ndjson.gz", "b.ndjson", "c.jsonl", "d.jsonl.gz"]
    assert len(warnings) == 1 and str(landing / "key.key") in warnings[0]


def test_the_key_file_is_never_read_as_telemetry_whatever_its_name(landing):
    key = landing / "b.ndjson"  # a key file named like telemetry
    warnings: list[str] = []
    files = expand_inputs([str(landing / "*.ndjson*")], never={str(key): "the --pseudonym-key-file"},
                          warn=warnings.append)
    assert [Path(f).name for f in files] == ["a.ndjson.gz"]
    assert warnings == [f"--input {str(landing / '*.ndjson*')!r}: skipped {key}: it is the --pseudonym-key-file, "
                        "never read as telemetry"]
    with pytest.raises(InputError, match="is the --pseudonym-key-file, never read as telemetry"):
        expand_inputs([str(key)], never={str(key): "the --pseudonym-key-file"}, warn=warnings.append)


def test_a_pattern_with_no_telemetry_file_is_an_error_naming_it(landing):
    with pytest.raises(InputError, match=r"'.*\*\.txt': no telemetry file matches"):
        expand_inputs([str(landing / "*.txt")], warn=lambda m: None)
    with pytest.raises(InputError, match="no file matches"):
        expand_inputs([str(landing / "*.nothing")], warn=lambda m: None)


def test_cli_reads_a_directory_and_never_the_bundled_key(tmp_path):
    """On main `--input sample` said "no file matches" and `--input 'sample/*'` read the key file."""
    runs = {}
    for name, pattern in (("dir", "sample"), ("glob", "sample/*")):
        out = tmp_path / name
        proc = subprocess.run([sys.executable, "-m", "pipeline", "--input", pattern, "--output", str(out),
                               "--pseudonym-key-file", "sample/dev-pseudonym.key", "--as-of", "2026-11-25T00:00:00Z"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "dev-pseudonym.key" in proc.stderr  # the warning names it
        report = json.loads((out / "_report.json").read_text())
        assert [Path(f).name for f in report["inputs"]] == ["telemetry-sample-2.ndjson.gz", "telemetry-sample.ndjson"]
        assert any("dev-pseudonym.key" in w for w in report["input_warnings"])
        runs[name] = report
    assert runs["dir"]["output_records"] == runs["glob"]["output_records"]
    assert runs["dir"]["input_records"] == runs["glob"]["input_records"]
