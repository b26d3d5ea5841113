"""`python -m pipeline subject export|erase` on the Delta output of a real run of the bundled sample."""

from __future__ import annotations

import fcntl
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
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from delta_util import leaks, to_delta
from deltalake import DeltaTable, write_deltalake

from pipeline.subject import main as subject_main
from pipeline.tables import list_tables
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
    to_delta(out)
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
    """A private copy of the run's output for tests that change it."""
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    return copy


def expected_id_hash(raw_id: str) -> str:
    return hmac.new(KEY, b"subject:" + raw_id.encode(), hashlib.sha256).hexdigest()[:32]


def pseudonyms(raw_id: str) -> dict[str, set[str]]:
    pz = Pseudonymizer(KEY)
    return {"device": {pz("device", raw_id)}, "user": {pz("user", raw_id)},
            "email": {pz("email", raw_id), pz("email", raw_id.lower())}}


def needles(raw_id: str) -> list[str]:
    """What must not survive an erasure anywhere under the output: every pseudonym of the id, and the id."""
    return sorted(set().union(*pseudonyms(raw_id).values()) | {raw_id})


def table_rows(root: Path) -> dict[str, pa.Table]:
    """Every table at its current version, read with deltalake (independent of pipeline.subject)."""
    return {name: DeltaTable(str(root / name)).to_pyarrow_table() for name in list_tables(str(root))}


def direct_rows(root: Path, raw_id: str) -> dict[str, list[dict]]:
    wanted = pseudonyms(raw_id)
    out: dict[str, list[dict]] = {}
    for name, table in table_rows(root).items():
        mask = pa.array([False] * table.num_rows, pa.bool_())  # typed: a table may be empty
        for col, kind in SUBJECT_COLUMNS.items():
            if col in table.column_names:
                mask = pc.or_(mask, pc.fill_null(pc.is_in(table.column(col), pa.array(sorted(wanted[kind]))), False))
        rows = table.filter(mask).to_pylist()
        if rows:
            out[name] = rows
    return out


def total_rows(root: Path) -> dict[str, int]:
    return {name: t.num_rows for name, t in table_rows(root).items()}


def versions(root: Path) -> dict[str, int]:
    return {name: DeltaTable(str(root / name)).version() for name in list_tables(str(root))}


def normalise(rows: list[dict]) -> list[str]:
    """Rows as sorted JSON texts; timestamps as ISO 8601, the way an export writes them."""
    return sorted(json.dumps(r, default=lambda v: v.isoformat(), sort_keys=True) for r in rows)


def run_subject(capsys, *args: str) -> tuple[int, str, str]:
    code = subject_main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def erase_args(root: Path, raw_id: str, *extra: str) -> list[str]:
    return ["erase", "--id", raw_id, "--data", str(root), "--pseudonym-key-file", str(KEY_FILE), *extra]


def stray_copy(root: Path, table: str, rows: list[dict]) -> Path:
    """A Parquet file in a partition directory that no commit names (a killed run's leftover)."""
    schema = DeltaTable(str(root / table)).schema().to_arrow()
    data = pa.Table.from_pylist(rows, schema=pa.schema(schema)).drop(["user_region", "event_date"])
    part = root / table / f"user_region={rows[0]['user_region']}" / f"event_date={rows[0]['event_date']}"
    path = part / "part-20261101T000000Z-killed-00000.parquet"
    pq.write_table(data, path)
    return path


# ----------------------------------------------------------------- export


def test_export_round_trip_reads_the_current_version_only(data, device_id, tmp_path, capsys):
    expected = direct_rows(data, device_id)
    assert len(expected) >= 3, "the chosen device should have rows in several types"
    stray_copy(data, "url_visit", expected["url_visit"])  # on disk, not in the table: not exported
    out = tmp_path / "export"
    code, stdout, _ = run_subject(capsys, "export", "--id", device_id, "--data", str(data), "--output", str(out),
                                  "--pseudonym-key-file", str(KEY_FILE))
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {t: len(rows) for t, rows in sorted(expected.items())}
    assert manifest["total_rows"] == sum(len(r) for r in expected.values()) > 0
    assert manifest["table_versions"] == versions(data)
    assert manifest["policy_version"] == json.loads((data / "_report.json").read_text())["policy"]["version"]
    assert manifest["subject_id_hash"] == expected_id_hash(device_id)
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.json", *(f"{t}.jsonl" for t in expected)])
    for rtype, rows in expected.items():
        exported = [json.loads(line) for line in (out / f"{rtype}.jsonl").read_text().splitlines()]
        assert all(r.pop("_locked") is False for r in exported)
        assert normalise(exported) == normalise(rows)
        for row in exported:
            assert datetime.fromisoformat(row["event_time"]).tzinfo is not None
            assert row["user_region"] and row["event_date"] == row["event_time"][:10]
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


def test_export_refuses_a_non_empty_or_inner_output_dir(dataset, device_id, tmp_path, capsys):
    (tmp_path / "old.txt").write_text("x")
    code, _, err = run_subject(capsys, "export", "--id", device_id, "--data", str(dataset), "--output",
                               str(tmp_path), "--pseudonym-key-file", str(KEY_FILE))
    assert code == 2 and "not an empty directory" in err
    code, _, err = run_subject(capsys, "export", "--id", device_id, "--data", str(dataset), "--output",
                               str(dataset / "inside"), "--pseudonym-key-file", str(KEY_FILE))
    assert code == 2 and "inside --data" in err


# ----------------------------------------------------------------- erase


def test_erase_removes_the_subjects_rows_physically_and_prints_the_history(data, device_id, tmp_path, capsys):
    matches = direct_rows(data, device_id)
    n_subject = {t: len(r) for t, r in matches.items()}
    before_totals, before_versions = total_rows(data), versions(data)
    assert leaks(data, needles(device_id)), "the scan finds the pseudonyms before the erasure"
    stray = stray_copy(data, "url_visit", matches["url_visit"])

    code, stdout, _ = run_subject(capsys, *erase_args(data, device_id, "--dry-run"))
    assert code == 0 and f"would remove {sum(n_subject.values())} row(s)" in stdout
    assert versions(data) == before_versions and stray.exists() and not (data / "_erasures.jsonl").exists()

    code, stdout, _ = run_subject(capsys, *erase_args(data, device_id))
    assert code == 0
    assert f"removed {sum(n_subject.values())} row(s) from {len(n_subject)} table(s)" in stdout
    for rtype, n in n_subject.items():
        assert f"removed {n} row(s)" in next(ln for ln in stdout.splitlines() if ln.strip().startswith(rtype + " "))
    assert direct_rows(data, device_id) == {}
    assert total_rows(data) == {t: n - n_subject.get(t, 0) for t, n in before_totals.items()}
    # Nothing of the subject in any byte under the output: data files (orphans included), logs, reports.
    assert leaks(data, needles(device_id)) == []
    assert not stray.exists()
    # One erasure commit per table holding rows, with the keyed hash, never the pseudonym; printed.
    for name, n in n_subject.items():
        [commit] = [h for h in DeltaTable(str(data / name)).history() if h.get("erasure") == "subject"]
        assert commit["subject_id_hash"] == expected_id_hash(device_id) and commit["rows_removed"] == str(n)
        assert f"{name} v{commit['version']} " in stdout and "erasure of subject" in stdout
    changed = {t for t, v in versions(data).items() if v != before_versions[t]}
    assert changed == set(n_subject), "tables without the subject get no commit"

    [entry] = [json.loads(x) for x in (data / "_erasures.jsonl").read_text().splitlines()]
    assert entry["status"] == "completed" and entry["rows_removed"] == dict(sorted(n_subject.items()))
    assert entry["subject_id_hash"] == expected_id_hash(device_id)
    assert device_id not in stdout

    # A second erase changes nothing; an export afterwards finds nothing.
    after = versions(data)
    code, stdout, _ = run_subject(capsys, *erase_args(data, device_id))
    assert code == 0 and "removed 0 row(s)" in stdout and versions(data) == after
    out = tmp_path / "export"
    assert subject_main(["export", "--id", device_id, "--data", str(data), "--output", str(out),
                         "--pseudonym-key-file", str(KEY_FILE)]) == 0
    assert json.loads((out / "manifest.json").read_text())["total_rows"] == 0
    capsys.readouterr()


def test_erase_expires_old_log_entries_that_hold_the_pseudonym(data, device_id, capsys):
    """A table created without the statistics configuration (min/max of the pseudonym columns in
    its log), on which someone ran a DELETE by hand (the pseudonym in the commit's predicate)."""
    rows = direct_rows(data, device_id)["url_visit"]
    table = DeltaTable(str(data / "url_visit")).to_pyarrow_table()
    shutil.rmtree(data / "url_visit")
    write_deltalake(str(data / "url_visit"), table, partition_by=["user_region", "event_date"])
    pz = rows[0]["device_id_pseudonym"]
    DeltaTable(str(data / "url_visit")).delete(f"device_id_pseudonym = '{pz}' AND event_id = '{rows[0]['event_id']}'")
    log = data / "url_visit" / "_delta_log"
    assert leaks(log, [pz])

    code, stdout, err = run_subject(capsys, *erase_args(data, device_id))
    assert code == 0 and "old log file(s) holding the pseudonyms expired" in stdout, err
    assert leaks(data, needles(device_id)) == []
    assert DeltaTable(str(data / "url_visit")).to_pyarrow_table().num_rows == table.num_rows - len(rows)


def test_erase_waits_for_a_live_run_and_removes_a_dead_runs_staging(data, device_id, capsys):
    rows = direct_rows(data, device_id)["url_visit"]
    live, dead = data / ".staging-live", data / ".staging-dead"
    for d in (live, dead):
        d.mkdir()
        (d / ".lock").touch()
        pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(DeltaTable(str(data / "url_visit")).schema()
                                                                    .to_arrow())), d / "staged.parquet")
    fd = os.open(live / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a run holds its staging lock while it lives
    before = versions(data)
    code, _, err = run_subject(capsys, *erase_args(data, device_id))
    assert code == 1 and "a run is writing into it (.staging-live)" in err and err.count("\n") == 1
    assert versions(data) == before
    os.close(fd)  # the run ended (killed): its staging directory is garbage holding pseudonyms
    code, _, err = run_subject(capsys, *erase_args(data, device_id))
    assert code == 0, err
    assert not live.exists() and not dead.exists()
    assert leaks(data, needles(device_id)) == []


def test_erase_moves_nothing_for_an_unknown_id(data, capsys):
    before = versions(data)
    code, stdout, _ = run_subject(capsys, *erase_args(data, "D-nobody-at-all"))
    assert code == 0 and "removed 0 row(s)" in stdout
    assert versions(data) == before


def test_missing_key_output_or_tables_is_a_config_error(dataset, tmp_path, capsys):
    code, out, err = run_subject(capsys, "erase", "--id", "D-x", "--data", str(dataset))
    assert code == 2 and err.count("\n") == 1 and "--pseudonym-key-file is required" in err and not out
    code, _, err = run_subject(capsys, "export", "--id", "D-x", "--data", str(dataset), "--output",
                               str(tmp_path / "o"), "--pseudonym-key-file", str(tmp_path / "missing.key"))
    assert code == 2 and err.count("\n") == 1 and "cannot read" in err
    code, _, err = run_subject(capsys, *erase_args(tmp_path, "D-x"))
    assert code == 2 and "no _report.json" in err
    assert not (tmp_path / "o").exists()
    old = tmp_path / "old"  # plain Parquet output of an older version
    (old / "dns" / "user_region=EEA").mkdir(parents=True)
    pq.write_table(pa.table({"a": [1]}), old / "dns" / "user_region=EEA" / "part-0.parquet")
    shutil.copy(dataset / "_report.json", old / "_report.json")
    code, _, err = run_subject(capsys, *erase_args(old, "D-x"))
    assert code == 2 and "dns/ is not a Delta table" in err and err.count("\n") == 1


def test_a_run_with_a_random_key_cannot_be_searched(data, capsys):
    report = json.loads((data / "_report.json").read_text())
    report["key"] = {"mode": "random-per-run", "linkable_across_runs": False}
    (data / "_report.json").write_text(json.dumps(report))
    code, _, err = run_subject(capsys, *erase_args(data, "D-x"))
    assert code == 2 and "random per-run key" in err


def test_append_mode_reports_are_accepted(data, device_id, tmp_path, capsys):
    (data / "_reports").mkdir(exist_ok=True)
    (data / "_report.json").rename(data / "_reports" / "20261125T000000Z-abcdef12.json")
    out = tmp_path / "export"
    code, _, _ = run_subject(capsys, "export", "--id", device_id, "--data", str(data), "--output", str(out),
                             "--pseudonym-key-file", str(KEY_FILE))
    assert code == 0 and json.loads((out / "manifest.json").read_text())["total_rows"] > 0


def test_an_unreadable_table_stops_the_request_loudly(data, device_id, tmp_path, capsys):
    victim = next((data / "url_visit").rglob("*.parquet"))
    victim.write_bytes(b"not parquet")
    out = tmp_path / "export"
    code, _, err = run_subject(capsys, "export", "--id", device_id, "--data", str(data), "--output", str(out),
                               "--pseudonym-key-file", str(KEY_FILE))
    assert code == 1 and "url_visit" in err and not out.exists()
    code, _, err = run_subject(capsys, *erase_args(data, device_id))
    assert code == 1 and "url_visit" in err and "run the same command again" in err
    [entry] = [json.loads(x) for x in (data / "_erasures.jsonl").read_text().splitlines()]
    assert entry["status"] == "interrupted"
