"""End to end: the CLI on the bundled dirty sample, every output read back and scanned for secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from pipeline.io import SMALL_FILE_ROWS
from pipeline.sample import LEGIT_VALUES, PLANTED_SECRETS
from transforms.pseudonym import key_fingerprint

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = [str(ROOT / "sample" / "telemetry-sample.ndjson"), str(ROOT / "sample" / "telemetry-sample-2.ndjson.gz")]
AS_OF = "2026-11-25T00:00:00Z"


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    proc = cli("--input", SAMPLE[0], "--input", SAMPLE[1], "--output", str(out),
               "--pseudonym-key-file", str(ROOT / "sample" / "dev-pseudonym.key"), "--as-of", AS_OF)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "_report.json").read_text())
    return out, proc, report


def test_report_identity_holds_exactly(sample_run):
    _, _, report = sample_run
    total = (sum(report["output_records"].values()) + sum(report["dropped"].values())
             + sum(report["quarantined"].values()))
    assert report["input_records"] == total
    assert report["identity"]["holds"] and report["identity"]["rows_written_match"]
    raw_lines = sum(1 for _ in open(SAMPLE[0], "rb")) + sum(1 for _ in __import__("gzip").open(SAMPLE[1], "rb"))
    assert report["input_records"] + report["blank_lines"] == raw_lines
    dev_key = (ROOT / "sample" / "dev-pseudonym.key").read_bytes().strip()
    assert report["key"] == {"mode": "development", "linkable_across_runs": True,
                             "fingerprint": key_fingerprint(dev_key)}
    assert report["policy"]["version"] and len(report["policy"]["sha256"]) == 64
    assert report["runner"] == "FnApiRunner"


def test_every_record_type_and_bad_input_kind_shows_up(sample_run):
    _, _, report = sample_run
    assert len(report["output_records"]) >= 12
    for reason in ("invalid_json", "truncated_json", "not_an_object", "unknown_type", "unknown_schema_version",
                   "wrong_type", "invalid_timestamp", "invalid_utf8"):
        assert report["quarantined"].get(reason, 0) > 0, reason
    for reason in ("child_data", "duplicate"):
        assert report["dropped"].get(reason, 0) > 0, reason
    assert any(k.startswith("consent_missing:") for k in report["dropped"])
    assert report["special_category_fields"], "the sample plants special-category fields"


def _all_output_text(out: Path) -> tuple[str, int]:
    chunks, files = [], 0
    for path in sorted(out.rglob("*")):
        if path.suffix == ".parquet":
            files += 1
            table = pq.read_table(path)
            chunks.append(json.dumps(table.to_pylist(), default=str, ensure_ascii=False))
            chunks.append(json.dumps(table.schema.to_string()))
        elif path.is_file():
            chunks.append(path.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(chunks).lower(), files


def test_no_planted_secret_anywhere(sample_run):
    out, proc, _ = sample_run
    text, files = _all_output_text(out)
    assert files > 14
    text += "\n" + (proc.stdout + proc.stderr).lower()
    leaked = sorted({s for s in PLANTED_SECRETS if s.lower() in text})
    assert leaked == [], f"{len(leaked)} planted secrets leaked, e.g. {leaked[:10]}"


def test_legitimate_values_survive(sample_run):
    out, _, _ = sample_run
    visits = ds.dataset(out / "url_visit", format="parquet", partitioning="hive").to_table()
    hosts = set(visits.column("url_host").to_pylist())
    domains = set(visits.column("url_registered_domain").to_pylist())
    assert set(LEGIT_VALUES["host"]) & hosts
    assert set(LEGIT_VALUES["registered_domain"]) & domains
    threats = set(ds.dataset(out / "detection", partitioning="hive").to_table().column("threat_name").to_pylist())
    assert set(LEGIT_VALUES["threat_name"]) & threats
    kinds = set(ds.dataset(out / "os_event", partitioning="hive").to_table().column("event_kind").to_pylist())
    assert set(LEGIT_VALUES["event_kind"]) <= kinds
    security = set(ds.dataset(out / "wifi", partitioning="hive").to_table().column("security").to_pylist())
    assert set(LEGIT_VALUES["wifi_security"]) & security


def test_layout_and_readers(sample_run, policy):
    out, _, report = sample_run
    compressions = set()
    for rtype, n in report["output_records"].items():
        assert (out / rtype).is_dir()
        files = list((out / rtype).rglob("*.parquet"))
        for f in files:
            rel = f.relative_to(out / rtype).parts
            assert rel[0].startswith("user_region=") and rel[1].startswith("event_date=")
            assert pq.read_schema(f).remove_metadata() == policy.file_schema(rtype).remove_metadata()
            meta = pq.ParquetFile(f).metadata
            codec = "ZSTD" if meta.num_rows > SMALL_FILE_ROWS else "UNCOMPRESSED"
            compressions.update(meta.row_group(0).column(i).compression for i in range(meta.num_columns))
            assert {meta.row_group(0).column(i).compression for i in range(meta.num_columns)} == {codec}, f
        table = ds.dataset(out / rtype, format="parquet", partitioning="hive").to_table()
        assert table.num_rows == n
        assert set(table.column("user_region").to_pylist()) <= {"EEA", "UK", "ROW", "UNKNOWN"}
        got = duckdb.sql(f"select count(*) from read_parquet('{out / rtype}/**/*.parquet', hive_partitioning=true)")
        assert got.fetchone()[0] == n
    assert compressions == {"ZSTD", "UNCOMPRESSED"}  # the sample has partitions of both sizes
    quarantine = pq.read_table(out / "_quarantine")
    assert quarantine.num_rows == sum(report["quarantined"].values())
    assert {"source_file", "line_number", "reason", "line_excerpt"} <= set(quarantine.column_names)


def test_no_duplicate_events_in_output(sample_run):
    out, _, report = sample_run
    for rtype in report["output_records"]:
        t = ds.dataset(out / rtype, partitioning="hive").to_table(columns=["device_id_pseudonym", "event_id"])
        pairs = list(zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True))
        assert len(pairs) == len(set(pairs)), rtype


def test_rerun_replaces_output_and_is_identical(sample_run, tmp_path):
    out, _, report = sample_run
    args = ["--input", SAMPLE[0], "--input", SAMPLE[1], "--output", str(tmp_path / "o"),
            "--pseudonym-key-file", str(ROOT / "sample" / "dev-pseudonym.key"), "--as-of", AS_OF]
    assert cli(*args).returncode == 0
    assert cli(*args).returncode == 0  # same slice again: replaced, not appended
    again = json.loads((tmp_path / "o" / "_report.json").read_text())
    assert again["output_records"] == report["output_records"]
    for rtype in report["output_records"]:  # Delta readers: the replaced files stay on disk until a vacuum
        a = DeltaTable(str(out / rtype)).to_pyarrow_table()
        b = DeltaTable(str(tmp_path / "o" / rtype)).to_pyarrow_table()
        key = [("event_id", "ascending"), ("device_id_pseudonym", "ascending")]
        assert a.sort_by(key).equals(b.sort_by(key)), rtype
    assert not [p for p in os.listdir(tmp_path / "o") if p.startswith(".")]


def test_random_key_is_reported_as_unlinkable(tmp_path):
    proc = cli("--input", SAMPLE[1], "--output", str(tmp_path / "o"), "--as-of", AS_OF)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "o" / "_report.json").read_text())
    assert report["key"]["mode"] == "random-per-run" and report["key"]["linkable_across_runs"] is False
    assert len(report["key"]["fingerprint"]) == 16
    assert "NOT linkable" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--input", "/nonexistent/*.ndjson"], "no file matches"),
    (["--input", SAMPLE[1], "--policy", "/nonexistent.toml"], "cannot read policy file"),
    (["--input", SAMPLE[1], "--pseudonym-key-file", "/nonexistent.key"], "cannot read"),
    (["--input", SAMPLE[1], "--as-of", "tomorrow"], "--as-of"),
    (["--input", SAMPLE[1], "--as-of", "0001-01-02T00:00:00Z"], "--as-of"),
])
def test_bad_configuration_exits_2_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "o"
    proc = cli(*args, "--output", str(out))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_malformed_policy_file(tmp_path):
    bad = tmp_path / "policy.toml"
    bad.write_text((ROOT / "schemas" / "policy.toml").read_text().replace('fields.url = "url"', 'fields.url = "raw"'))
    proc = cli("--input", SAMPLE[1], "--output", str(tmp_path / "o"), "--policy", str(bad))
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "unknown transform 'raw'" in proc.stderr


def test_gzip_detected_by_content_and_cut_off_gzip_is_not_lost(tmp_path):
    data = Path(SAMPLE[1]).read_bytes()
    cut = tmp_path / "cut.ndjson.gz"
    cut.write_bytes(data[: len(data) // 2])
    proc = cli("--input", str(cut), "--output", str(tmp_path / "o"), "--as-of", AS_OF)
    assert proc.returncode == 3, proc.stderr[-2000:]  # partial input
    report = json.loads((tmp_path / "o" / "_report.json").read_text())
    assert report["quarantined"].get("unreadable_input") == 1
    assert report["identity"]["holds"] and report["input_complete"] is False
    assert report["input_records"] > 100  # the lines before the cut went through
    assert pa.__version__


def test_corrupt_gzip_quarantines_the_unreadable_rest_and_keeps_the_good_file(tmp_path):
    import gzip
    import random

    good = tmp_path / "good.ndjson"
    good.write_bytes(b"".join(gzip.decompress(Path(SAMPLE[1]).read_bytes()).splitlines(keepends=True)[:200]))
    data = bytearray(Path(SAMPLE[1]).read_bytes())
    rnd = random.Random(23)
    for _ in range(3):
        data[rnd.randrange(len(data) // 4, len(data) // 2)] ^= 0xFF
    (tmp_path / "bad.ndjson.gz").write_bytes(bytes(data))
    proc = cli("--input", str(tmp_path / "*"), "--output", str(tmp_path / "o"), "--as-of", AS_OF)
    assert proc.returncode == 3, proc.stderr[-2000:]  # partial input
    report = json.loads((tmp_path / "o" / "_report.json").read_text())
    assert report["quarantined"].get("unreadable_input") == 1
    assert report["identity"]["holds"] and sum(report["output_records"].values()) > 100


@pytest.mark.parametrize("preset, expected", [(None, "0"), ("250", "250")])
def test_allocator_setting_is_in_place_before_arrow_loads(preset, expected):
    """The CLI sets MIMALLOC_PURGE_DELAY before pyarrow is imported (mimalloc reads it when it
    loads); an explicit setting in the environment is kept."""
    env = {k: v for k, v in os.environ.items() if k != "MIMALLOC_PURGE_DELAY"}
    if preset is not None:
        env["MIMALLOC_PURGE_DELAY"] = preset
    probe = ("import os, sys, pipeline.__main__; "
             "print('pyarrow' in sys.modules, os.environ.get('MIMALLOC_PURGE_DELAY'))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).parent.parent, env=env,
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", expected]
