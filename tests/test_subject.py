"""`python -m pipeline subject export|erase` on the output of a real run of the bundled sample."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline.subject import main as subject_main
from schemas.policy import load_policy
from transforms.pseudonym import Pseudonymizer
from transforms.records import SanitizeContext, sanitize_lines

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_GZ = ROOT / "sample" / "telemetry-sample-2.ndjson.gz"
KEY_FILE = ROOT / "sample" / "dev-pseudonym.key"
KEY = KEY_FILE.read_bytes().strip()
AS_OF = "2026-11-25T00:00:00Z"
SUBJECT_COLUMNS = {"device_id_pseudonym": "device", "user_id_pseudonym": "user", "email_pseudonym": "email"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("subject") / "out"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--input", str(SAMPLE_GZ), "--output", str(out),
                           "--pseudonym-key-file", str(KEY_FILE), "--as-of", AS_OF],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def accepted() -> list[dict]:
    """Records of the sample input that the pipeline writes (checked with the pipeline's own code)."""
    ctx = SanitizeContext(policy=load_policy(), key=KEY, as_of=datetime(2026, 11, 25, tzinfo=UTC))
    with gzip.open(SAMPLE_GZ, "rb") as fh:
        lines = [ln.rstrip(b"\n").removesuffix(b"\r").removeprefix(b"\xef\xbb\xbf") for ln in fh]
    batch = sanitize_lines(ctx, "sample", 0, list(enumerate(lines, 1)))
    written = {o for table in batch.outputs.values() for o in table.column("_origin").to_pylist()}
    return [orjson.loads(lines[n - 1]) for n in sorted(written)]


@pytest.fixture(scope="module")
def device_id(accepted) -> str:
    """The raw device id with the most written url_visit records: it has rows in several types and files."""
    counts = Counter(r["device_id"] for r in accepted if r["type"] == "url_visit")
    return counts.most_common(1)[0][0]


@pytest.fixture
def data(dataset, tmp_path) -> Path:
    """A private copy of the run's output (mtimes preserved) for tests that change it."""
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    return copy


def type_dirs(root: Path) -> list[Path]:
    dirs = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith((".", "_"))]
    if (root / "_locked").is_dir():
        dirs += sorted(p for p in (root / "_locked").iterdir() if p.is_dir())
    return dirs


def expected_id_hash(raw_id: str) -> str:
    return hmac.new(KEY, b"subject:" + raw_id.encode(), hashlib.sha256).hexdigest()[:32]


def pseudonyms(raw_id: str) -> dict[str, set[str]]:
    pz = Pseudonymizer(KEY)
    return {"device": {pz("device", raw_id)}, "user": {pz("user", raw_id)},
            "email": {pz("email", raw_id), pz("email", raw_id.lower())}}


def direct_rows(root: Path, raw_id: str) -> dict[str, list[dict]]:
    """The subject's rows per type, found with a plain pyarrow.dataset filter (independent of pipeline.subject)."""
    wanted = pseudonyms(raw_id)
    out: dict[str, list[dict]] = {}
    for tdir in type_dirs(root):
        dataset = ds.dataset(tdir, format="parquet", partitioning="hive")
        expr = None
        for col, kind in SUBJECT_COLUMNS.items():
            if col in dataset.schema.names:
                e = ds.field(col).isin(sorted(wanted[kind]))
                expr = e if expr is None else expr | e
        rows = dataset.to_table(filter=expr).to_pylist()
        if rows:
            out.setdefault(tdir.name, []).extend(rows)
    return out


def total_rows(root: Path) -> dict[str, int]:
    return {str(t.relative_to(root)): ds.dataset(t, format="parquet", partitioning="hive").count_rows()
            for t in type_dirs(root)}


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file below the data directories: (mtime_ns, sha256), hidden files included."""
    out = {}
    for tdir in type_dirs(root):
        for path in tdir.rglob("*"):
            if path.is_file():
                out[str(path.relative_to(root))] = (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).digest())
    return out


def normalise(rows: list[dict]) -> list[str]:
    """Rows as sorted JSON texts; timestamps as ISO 8601, the way an export writes them."""
    return sorted(json.dumps(r, default=lambda v: v.isoformat(), sort_keys=True) for r in rows)


def run_subject(capsys, *args: str) -> tuple[int, str, str]:
    code = subject_main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def erase_args(root: Path, raw_id: str, *extra: str) -> list[str]:
    return ["erase", "--id", raw_id, "--data", str(root), "--pseudonym-key-file", str(KEY_FILE), *extra]


# ----------------------------------------------------------------- export


def test_export_round_trip(dataset, device_id, tmp_path, capsys):
    out = tmp_path / "export"
    code, stdout, _ = run_subject(capsys, "export", "--id", device_id, "--data", str(dataset), "--output", str(out),
                                  "--pseudonym-key-file", str(KEY_FILE))
    assert code == 0
    expected = direct_rows(dataset, device_id)
    assert len(expected) >= 3, "the chosen device should have rows in several types"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {t: len(rows) for t, rows in sorted(expected.items())}
    assert manifest["total_rows"] == sum(len(r) for r in expected.values()) > 0
    assert manifest["policy_version"] == json.loads((dataset / "_report.json").read_text())["policy"]["version"]
    assert manifest["subject_id_hash"] == expected_id_hash(device_id)
    assert datetime.fromisoformat(manifest["exported_at"]).tzinfo is not None
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.json", *(f"{t}.jsonl" for t in expected)])
    for rtype, rows in expected.items():
        exported = [json.loads(line) for line in (out / f"{rtype}.jsonl").read_text().splitlines()]
        assert all(r.pop("_locked") is False for r in exported)
        assert normalise(exported) == normalise(rows)
        for row in exported:  # ISO 8601 timestamps, partition values from the path
            assert datetime.fromisoformat(row["event_time"]).tzinfo is not None
            assert row["user_region"] and row["event_date"] == row["event_time"][:10]
    # The raw id appears nowhere in the export or on stdout.
    everything = "".join(p.read_text() for p in out.iterdir()) + stdout
    assert device_id not in everything


def test_export_matches_user_and_email_pseudonyms(dataset, accepted, tmp_path, capsys):
    contact = next(r for r in accepted if r["type"] == "contact" and r["data"].get("email") and r.get("user_id"))
    email, user_id = contact["data"]["email"], contact["user_id"]
    for raw_id, column in ((email.upper(), "email_pseudonym"), (user_id, "user_id_pseudonym")):
        out = tmp_path / column
        assert subject_main(["export", "--id", raw_id, "--data", str(dataset), "--output", str(out),
                             "--pseudonym-key-file", str(KEY_FILE)]) == 0
        rows = [json.loads(line) for line in (out / "contact.jsonl").read_text().splitlines()]
        assert any(r["event_id"] == contact["event_id"] for r in rows)
        assert all(r[column] in pseudonyms(raw_id)[SUBJECT_COLUMNS[column]] for r in rows)
    capsys.readouterr()


def test_export_refuses_a_non_empty_output_dir(dataset, device_id, tmp_path, capsys):
    (tmp_path / "old.txt").write_text("x")
    code, _, err = run_subject(capsys, "export", "--id", device_id, "--data", str(dataset), "--output",
                               str(tmp_path), "--pseudonym-key-file", str(KEY_FILE))
    assert code == 2 and "not an empty directory" in err


# ----------------------------------------------------------------- erase


def test_erase_removes_exactly_the_subjects_rows(data, device_id, tmp_path, capsys):
    matches = direct_rows(data, device_id)
    before_totals, before_files = total_rows(data), snapshot(data)
    touched = files_with_subject(data, device_id)
    n_subject = {t: len(r) for t, r in matches.items()}

    code, stdout, _ = run_subject(capsys, *erase_args(data, device_id, "--dry-run"))
    assert code == 0 and f"would remove {sum(n_subject.values())} row(s)" in stdout
    assert snapshot(data) == before_files and not (data / "_erasures.jsonl").exists()

    code, stdout, _ = run_subject(capsys, *erase_args(data, device_id))
    assert code == 0
    assert f"removed {sum(n_subject.values())} row(s)" in stdout
    for rtype, n in n_subject.items():
        assert f"removed {n} row(s)" in next(ln for ln in stdout.splitlines() if ln.strip().startswith(rtype))
    assert direct_rows(data, device_id) == {}
    after_totals = total_rows(data)
    assert after_totals == {t: n - n_subject.get(t, 0) for t, n in before_totals.items()}

    after_files = snapshot(data)
    changed = {f for f in before_files if after_files.get(f) != before_files[f]}
    assert changed == touched and changed, "exactly the files holding the subject's rows are rewritten or deleted"
    assert set(after_files) <= set(before_files), "no new (temporary) files are left behind"
    assert not any(".tmp-" in f for f in after_files)

    [entry] = [json.loads(x) for x in (data / "_erasures.jsonl").read_text().splitlines()]
    assert entry["status"] == "completed" and entry["rows_removed"] == dict(sorted(n_subject.items()))
    assert entry["subject_id_hash"] == expected_id_hash(device_id)
    assert device_id not in (data / "_erasures.jsonl").read_text() and device_id not in stdout

    # A second erase is a no-op (logged, nothing touched); an export afterwards finds nothing.
    code, stdout, _ = run_subject(capsys, *erase_args(data, device_id))
    assert code == 0 and "removed 0 row(s)" in stdout
    assert snapshot(data) == after_files
    entries = [json.loads(x) for x in (data / "_erasures.jsonl").read_text().splitlines()]
    assert len(entries) == 2 and entries[1]["total_rows_removed"] == 0
    out = tmp_path / "export"
    assert subject_main(["export", "--id", device_id, "--data", str(data), "--output", str(out),
                         "--pseudonym-key-file", str(KEY_FILE)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["total_rows"] == 0 and manifest["files"] == []
    capsys.readouterr()


def files_with_subject(root: Path, raw_id: str) -> set[str]:
    """Parquet files (relative paths) holding at least one of the subject's rows."""
    wanted = pseudonyms(raw_id)
    hits = set()
    for path in root.rglob("*.parquet"):
        rel = str(path.relative_to(root))
        if rel.startswith("_quarantine") or path.name.startswith("."):
            continue
        table = pq.ParquetFile(path).read()
        if any(col in table.column_names and set(table.column(col).to_pylist()) & wanted[kind]
               for col, kind in SUBJECT_COLUMNS.items()):
            hits.add(rel)
    return hits


def test_erase_moves_nothing_for_an_unknown_id(data, capsys):
    before = snapshot(data)
    code, stdout, _ = run_subject(capsys, *erase_args(data, "D-nobody-at-all"))
    assert code == 0 and "removed 0 row(s)" in stdout
    assert snapshot(data) == before


def test_missing_key_or_output_dir_is_a_config_error(dataset, tmp_path, capsys):
    code, out, err = run_subject(capsys, "erase", "--id", "D-x", "--data", str(dataset))
    assert code == 2 and err.count("\n") == 1 and "--pseudonym-key-file is required" in err and not out
    code, _, err = run_subject(capsys, "export", "--id", "D-x", "--data", str(dataset), "--output",
                               str(tmp_path / "o"), "--pseudonym-key-file", str(tmp_path / "missing.key"))
    assert code == 2 and err.count("\n") == 1 and "cannot read" in err
    code, _, err = run_subject(capsys, *erase_args(tmp_path, "D-x"))
    assert code == 2 and "no _report.json" in err
    assert not (tmp_path / "o").exists()


def test_a_run_with_a_random_key_cannot_be_searched(data, capsys):
    report = json.loads((data / "_report.json").read_text())
    report["key"] = {"mode": "random-per-run", "linkable_across_runs": False}
    (data / "_report.json").write_text(json.dumps(report))
    code, _, err = run_subject(capsys, *erase_args(data, "D-x"))
    assert code == 2 and "random per-run key" in err


# ----------------------------------------------------------------- interrupted erase


def _old_or_new(root: Path, before: dict, after: dict, raw_id: str) -> Counter:
    """Check every original file is its old bytes, or the complete new version (old minus the subject's rows),
    or gone because every row was the subject's. Returns how many files are in each state."""
    wanted = pseudonyms(raw_id)
    states: Counter = Counter()
    for rel, (_mtime, digest) in before.items():
        if not rel.endswith(".parquet"):
            continue
        if rel in after and after[rel][1] == digest:
            states["old"] += 1
            continue
        if rel not in after:
            states["deleted"] += 1
            continue
        table = pq.ParquetFile(root / rel).read()  # complete and readable
        for col, kind in SUBJECT_COLUMNS.items():
            if col in table.column_names:
                assert not set(table.column(col).to_pylist()) & wanted[kind]
        states["new"] += 1
    return states


def test_interrupted_erase_leaves_old_or_new_files_and_a_rerun_finishes(data, device_id, monkeypatch, capsys):
    expected = {t: len(r) for t, r in direct_rows(data, device_id).items()}
    before, totals = snapshot(data), total_rows(data)
    real_replace, calls = os.replace, []

    def crash_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            assert Path(src).name.startswith(".") and Path(src).stat().st_size > 0  # temp file fully written
            raise OSError(5, "simulated crash during rename")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_second)
    code, _, err = run_subject(capsys, *erase_args(data, device_id))
    monkeypatch.setattr(os, "replace", real_replace)
    assert code == 1 and "run the same command again" in err and len(calls) == 2

    after = snapshot(data)
    states = _old_or_new(data, before, after, device_id)
    assert states["new"] == 1 and states["old"] > 0
    for tdir in type_dirs(data):  # every type still reads as a dataset; no visible temp file
        ds.dataset(tdir, format="parquet", partitioning="hive").to_table()
    assert not [f for f in after if ".tmp-" in f]
    [entry] = [json.loads(x) for x in (data / "_erasures.jsonl").read_text().splitlines()]
    assert entry["status"] == "interrupted" and entry["files_rewritten"] == 1

    code, stdout, _ = run_subject(capsys, *erase_args(data, device_id))
    assert code == 0
    assert direct_rows(data, device_id) == {}
    entries = [json.loads(x) for x in (data / "_erasures.jsonl").read_text().splitlines()]
    removed = Counter(entries[0]["rows_removed"]) + Counter(entries[1]["rows_removed"])
    assert entries[1]["status"] == "completed" and removed == Counter(expected)
    assert total_rows(data) == {t: n - expected.get(t, 0) for t, n in totals.items()}


def test_killed_erase_leaves_a_hidden_temp_file_that_readers_ignore_and_a_rerun_removes(data, device_id, capsys):
    expected = {t: len(r) for t, r in direct_rows(data, device_id).items()}
    before, totals = snapshot(data), total_rows(data)
    driver = (
        "import os, sys\n"
        "real, calls = os.replace, []\n"
        "def replace(src, dst):\n"
        "    calls.append(dst)\n"
        "    if len(calls) == 2:\n"
        "        os._exit(9)  # the process dies between writing the temp file and the rename\n"
        "    real(src, dst)\n"
        "os.replace = replace\n"
        "from pipeline.subject import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", driver, *erase_args(data, device_id)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr

    after = snapshot(data)
    stale = [f for f in after if ".tmp-" in f]
    assert len(stale) == 1 and Path(stale[0]).name.startswith(".part-")
    states = _old_or_new(data, before, {f: v for f, v in after.items() if f not in stale}, device_id)
    assert states["new"] == 1 and states["old"] > 0
    # Readers skip the hidden temp file: a dataset counts exactly the rows of the visible files.
    assert pq.ParquetFile(data / stale[0]).metadata.num_rows > 0
    partial = total_rows(data)
    for tdir in type_dirs(data):
        visible = [p for p in tdir.rglob("*.parquet") if not p.name.startswith(".")]
        assert partial[str(tdir.relative_to(data))] == sum(pq.ParquetFile(p).metadata.num_rows for p in visible)
    assert sum(partial.values()) > sum(totals.values()) - sum(expected.values())

    code, stdout, _ = run_subject(capsys, *erase_args(data, device_id))
    assert code == 0 and "1 stale temp file(s) cleaned up" in stdout
    assert not [f for f in snapshot(data) if ".tmp-" in f]
    assert direct_rows(data, device_id) == {}
    assert total_rows(data) == {t: n - expected.get(t, 0) for t, n in totals.items()}


def test_append_mode_reports_are_accepted(data, device_id, tmp_path, capsys):
    (data / "_reports").mkdir(exist_ok=True)
    (data / "_report.json").rename(data / "_reports" / "20261125T000000Z-abcdef12.json")
    out = tmp_path / "export"
    code, stdout, _ = run_subject(capsys, "export", "--id", device_id, "--data", str(data), "--output", str(out),
                                  "--pseudonym-key-file", str(KEY_FILE))
    assert code == 0 and json.loads((out / "manifest.json").read_text())["total_rows"] > 0
    code, _, err = run_subject(capsys, "export", "--id", device_id, "--data", str(data), "--output",
                               str(data / "inside"), "--pseudonym-key-file", str(KEY_FILE))
    assert code == 2 and "inside --data" in err


def test_an_unreadable_file_stops_the_request_loudly(data, device_id, tmp_path, capsys):
    victim = sorted((data / "wifi").rglob("*.parquet"))[0]
    victim.write_bytes(b"not parquet")
    out = tmp_path / "export"
    code, _, err = run_subject(capsys, "export", "--id", device_id, "--data", str(data), "--output", str(out),
                               "--pseudonym-key-file", str(KEY_FILE))
    assert code == 1 and "cannot read" in err and not out.exists()
    code, _, err = run_subject(capsys, *erase_args(data, device_id))
    assert code == 1 and str(victim) in err
    [entry] = [json.loads(x) for x in (data / "_erasures.jsonl").read_text().splitlines()]
    assert entry["status"] == "interrupted"
