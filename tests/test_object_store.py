"""Outputs on S3, against a real local S3 emulator (moto's server, started here on a free port).

The commands run as real processes with the endpoint and credentials in their environment, as
a user would configure them: a run and its read-back, `subject erase` (every object's bytes
scanned for the subject afterwards), `maintain`, two concurrent runs, an erase while a run
holds its lease, and SIGKILLed runs re-run. The leases are objects under DIR/_leases/
(pipeline/store_lease.py); their TTL is shortened where a test waits for a dead holder's.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from test_leases import wait_stopped

from pipeline import store_lease
from pipeline.commit import KILL_ENV, STOP_ENV
from pipeline.location import Location
from pipeline.sample import generate_lines
from pipeline.subject import candidate_pseudonyms
from pipeline.tables import QUARANTINE, REPORT, REPORTS, list_tables, table_kind

ROOT = Path(__file__).resolve().parent.parent
KEY_FILE = ROOT / "sample" / "dev-pseudonym.key"
AS_OF = "2026-11-25T00:00:00Z"
OPTS = ["--pseudonym-key-file", str(KEY_FILE), "--as-of", AS_OF]
BUCKET = "sanitizer-test"
OPTIONS = {"aws_conditional_put": "etag"}
# A process a test stops (SIGSTOP) for as long as another one runs must not lose its lease meanwhile.
LONG_LEASE = {store_lease.TTL_ENV: "600"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """`env` set in os.environ for the block, the earlier values back after it."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def write_inputs(base: Path) -> dict[str, Path]:
    """Two dirty inputs over two days: `current` (200 lines) and `other` (150)."""
    made = {}
    for name, seed, n in (("current", 1, 200), ("other", 3, 150)):
        path = base / f"{name}.ndjson"
        path.write_bytes(b"\n".join(generate_lines(n, seed=seed, dirty=True, days=2)) + b"\n")
        made[name] = path
    return made


@pytest.fixture(scope="module")
def s3_env():
    """moto's S3 server in a process of its own on a free port (delta-rs holds the GIL while it
    waits for a reply, so a server thread in this process would never answer), one bucket, and
    the environment that points every client (delta-rs, pyarrow, obstore) at it."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
           "AWS_ALLOW_HTTP": "true", "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        with environment(env):
            import boto3
            from botocore.exceptions import EndpointConnectionError

            client = boto3.client("s3")
            for _ in range(600):  # until the server listens (bounded)
                try:
                    client.create_bucket(Bucket=BUCKET)
                    break
                except EndpointConnectionError:
                    assert server.poll() is None, "moto_server exited"
                    time.sleep(0.1)
            yield env
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    return write_inputs(tmp_path_factory.mktemp("s3-inputs"))


def fresh() -> str:
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})


def run_args(path: Path, out: str, *extra: str) -> list[str]:
    return ["--input", str(path), "--output", out, *OPTS, *extra]


def rows(out: str, name: str, version: int | None = None) -> list[str]:
    table = DeltaTable(f"{out}/{name}", version=version, storage_options=OPTIONS).to_pyarrow_table()
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in table.to_pylist())


def contents(out: str) -> dict[str, list]:
    return {name: rows(out, name) for name in list_tables(out, OPTIONS)}


def expected_rows(report: dict, name: str) -> int:
    kind = table_kind(name)
    if kind == "quarantine":
        return sum(report["quarantined"].values())
    if kind == "locked":
        return report["locked_records"].get(name.split("/", 1)[1], 0)
    return report["output_records"].get(name, 0)


def check_output(out: str) -> None:
    """Every table readable; every report names versions holding exactly what it counts."""
    loc = Location(out)
    names = list_tables(out, OPTIONS)
    assert QUARANTINE in names
    reports = [json.loads(loc.read(p)) for p in loc.files(REPORTS)]
    assert reports and json.loads(loc.read(REPORT)) in reports
    for report in reports:
        assert set(report["tables"]) == set(names)
        for name, entry in report["tables"].items():
            assert len(rows(out, name, entry["version"])) == expected_rows(report, name), (report["run_id"], name)


def data_objects(out: str) -> set[str]:
    return {f for f in Location(out).files() if f.endswith(".parquet") and "/_delta_log/" not in f}


def named_objects(out: str) -> set[str]:
    """Every data file the current version of every table names (each must exist)."""
    named = set()
    for name in list_tables(out, OPTIONS):
        for uri in DeltaTable(f"{out}/{name}", storage_options=OPTIONS).file_uris():
            named.add(uri.removeprefix(f"{out}/"))
    return named


def leaks(out: str, needles: list[str]) -> list[str]:
    """Objects under `out` holding a needle in their bytes or in a Parquet file's decoded values."""
    loc = Location(out)
    found = []
    for rel in loc.files():
        data = loc.read(rel)
        text = str(pq.read_table(pa.BufferReader(data)).to_pylist()) if data[:4] == b"PAR1" else ""
        if any(n.encode() in data for n in needles) or any(n in text for n in needles):
            found.append(rel)
    return found


def most_common_device(path: Path) -> str:
    counts: Counter = Counter()
    for line in path.read_bytes().splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # the generator's dirty lines
            continue
        if isinstance(record, dict) and isinstance(record.get("device_id"), str):
            counts[record["device_id"]] += 1
    return counts.most_common(1)[0][0]


@pytest.fixture(scope="module")
def reference(s3_env, inputs) -> dict:
    """An uninterrupted run of `current` into an empty S3 prefix: its location and table contents."""
    out = fresh()
    proc = cli(*run_args(inputs["current"], out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"out": out, "contents": contents(out), "stdout": proc.stdout}


def test_a_run_into_s3_commits_delta_tables_that_read_back_with_a_report_of_their_versions(reference):
    out = reference["out"]
    check_output(out)
    report = json.loads(Location(out).read(REPORT))
    assert report["output_dir"] == out and report["identity"]["holds"]
    assert sum(report["output_records"].values()) > 100
    for name, table_rows in reference["contents"].items():
        assert len(table_rows) == expected_rows(report, name), name
    # Every data object is named by a table (nothing orphaned by an uninterrupted run), and the
    # run released its leases.
    assert data_objects(out) == named_objects(out)
    assert not Location(out).files(store_lease.PREFIX)


def test_an_erase_is_refused_while_a_run_holds_its_lease_and_then_removes_every_byte_of_the_subject(
        s3_env, inputs, tmp_path):
    out = fresh()
    proc = cli(*run_args(inputs["other"], out))  # an earlier run: the output exists, with its report
    assert proc.returncode == 0, proc.stderr[-2000:]
    device = most_common_device(inputs["current"])
    erase = ["subject", "erase", "--id", device, "--data", out, "--pseudonym-key-file", str(KEY_FILE)]
    before = data_objects(out)
    run = start(*run_args(inputs["current"], out), env={STOP_ENV: "written", **LONG_LEASE})
    try:
        wait_stopped(run)  # its files are written into the tables, not committed
        written = data_objects(out)
        assert written - before
        proc = cli(*erase)
        assert proc.returncode == 1, proc.stderr[-2000:]
        [line] = proc.stderr.strip().splitlines()
        assert "is using it" in line and "_leases" in line
        assert data_objects(out) == written  # the refused erase deleted nothing
        os.kill(run.pid, signal.SIGCONT)
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-2000:]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert named_objects(out) <= data_objects(out)  # the run's commits name files that exist
    needles = sorted({p for values in candidate_pseudonyms(KEY_FILE.read_bytes().strip(), device).values()
                      for p in values} | {device})
    assert leaks(out, needles)  # the subject is there before
    exported = tmp_path / "export"
    proc = cli("subject", "export", "--id", device, "--data", out, "--pseudonym-key-file", str(KEY_FILE),
               "--output", str(exported))
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["total_rows"] > 0 and set(manifest["table_versions"]) == set(list_tables(out, OPTIONS))
    proc = cli(*erase)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "removed" in proc.stdout and "_erasures.jsonl" in proc.stdout
    assert leaks(out, needles) == []  # every object: data files, logs, reports, the erasure log
    assert data_objects(out) == named_objects(out)
    assert not Location(out).files(store_lease.PREFIX)
    for name in list_tables(out, OPTIONS):
        DeltaTable(f"{out}/{name}", storage_options=OPTIONS).to_pyarrow_table()


def test_commands_that_read_an_s3_output_exit_cleanly(reference, inputs, tmp_path):
    # Before pipeline/__main__.py ended such commands without the interpreter's teardown, about
    # half of these aborted after their work (exit -6, "terminate called without an active
    # exception"): six clean exits in a row were then a 1.5% chance.
    out = reference["out"]
    device = most_common_device(inputs["current"])
    for attempt in range(6):
        proc = cli("subject", "export", "--id", device, "--data", out, "--pseudonym-key-file", str(KEY_FILE),
                   "--output", str(tmp_path / f"export{attempt}"))
        assert proc.returncode == 0 and "terminate called" not in proc.stderr, (attempt, proc.stderr[-2000:])
        assert json.loads((tmp_path / f"export{attempt}" / "manifest.json").read_text())["total_rows"] > 0


def test_two_concurrent_replacing_runs_one_commits_the_other_exits_4_with_one_line(s3_env, inputs, reference):
    out = fresh()
    first = start(*run_args(inputs["current"], out), env={STOP_ENV: "after_commit:detection", **LONG_LEASE})
    try:
        wait_stopped(first)  # between two of its commits, holding the commit lease
        versions = {n: DeltaTable(f"{out}/{n}", storage_options=OPTIONS).version() for n in list_tables(out, OPTIONS)}
        proc = cli(*run_args(inputs["other"], out))
        assert proc.returncode == 4, proc.stderr[-2000:]
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith("error: --output") and "another run is committing to it" in line
        assert versions == {n: DeltaTable(f"{out}/{n}", storage_options=OPTIONS).version()
                            for n in list_tables(out, OPTIONS)}
        os.kill(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    check_output(out)
    assert contents(out) == reference["contents"]


def test_sigkilled_runs_rerun_to_the_state_of_an_uninterrupted_run_and_maintain_removes_their_orphans(
        s3_env, inputs, reference):
    ttl = 10  # long enough for renewals on a loaded machine, short enough to wait for
    env = {store_lease.TTL_ENV: str(ttl)}
    out = fresh()
    for point in ("written", "after_commit:detection"):  # files written; some tables committed
        proc = cli(*run_args(inputs["current"], out), env={**env, KILL_ENV: point})
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    # The last one died holding the commit lease (a replacing re-run meeting it while it lives
    # exits 4: test_two_concurrent_replacing_runs...); it expires after the TTL.
    assert Location(out).exists(store_lease.COMMIT)
    time.sleep(ttl + 1)
    proc = cli(*run_args(inputs["current"], out), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "already committed by the interrupted run" in proc.stdout
    check_output(out)
    assert contents(out) == reference["contents"]
    orphans = data_objects(out) - named_objects(out)
    assert orphans  # the files of the killed attempts
    proc = cli("maintain", "--data", out, "--as-of", AS_OF, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "vacuum:" in proc.stdout
    assert data_objects(out) == named_objects(out)
    assert contents(out) == reference["contents"]  # nothing within retention was expired
    assert not Location(out).files(store_lease.PREFIX)  # the dead runs' shared leases were removed


def test_a_store_that_ignores_conditional_writes_is_refused(s3_env, monkeypatch):
    """delta-rs's commits and the leases both rely on If-None-Match: * being honoured."""
    import obstore

    real = obstore.put
    monkeypatch.setattr(obstore, "put", lambda store, path, data, **kw: real(store, path, data))
    with pytest.raises(store_lease.LeaseError, match="does not honour conditional writes"):
        store_lease.server_now(store_lease.open_store(fresh()), "s3://x")


def test_leases_expire_are_taken_over_once_and_a_holder_that_was_not_renewed_knows_it(s3_env, monkeypatch):
    """In-process, with a 3 s TTL: live leases exclude each other, dead ones expire."""
    monkeypatch.setenv(store_lease.TTL_ENV, "3")
    out = fresh()

    class Busy(Exception):
        pass

    def take_exclusive():
        return store_lease.exclusive(out, store_lease.EXCLUSIVE, "test", False, None, Busy,
                                     shared=store_lease.SHARED)

    def die(lease: store_lease.Lease) -> None:
        """What a SIGKILL does to a holder: no more renewals, no release."""
        lease._stop.set()
        lease._thread.join()
        store_lease._held.remove(lease)

    writer = store_lease.shared(out, "test", None)
    with pytest.raises(Busy):  # a live shared lease keeps erase/maintain out
        take_exclusive()
    writer._stop.set()  # stopped: its lease is no longer renewed
    writer._thread.join()
    time.sleep(4.5)  # past the TTL; the store dates objects to the second
    with pytest.raises(store_lease.LeaseLost):
        store_lease.check()  # what a run checks before each commit
    store_lease._held.remove(writer)  # and then it dies
    holder = take_exclusive()  # the dead writer's lease expired and is removed
    assert not Location(out).files(store_lease.SHARED)
    with pytest.raises(Busy):
        take_exclusive()  # one exclusive holder at a time
    die(holder)
    time.sleep(4.5)  # past the TTL; the store dates objects to the second
    second = take_exclusive()  # taken over by a conditional put on the dead one's etag
    assert second.etag != holder.etag
    holder.release()  # releasing a lease someone else took over leaves theirs alone
    assert Location(out).exists(store_lease.EXCLUSIVE)
    waited, got = threading.Event(), []
    late = threading.Thread(target=lambda: got.append(store_lease.shared(out, "test", waited.set)))
    late.start()  # a writer that starts during an erase waits for it
    assert waited.wait(60)
    assert not got
    second.release()
    late.join(60)
    [writer] = got
    writer.release()
    assert not Location(out).files(store_lease.PREFIX)
    assert not store_lease._held  # nothing left for later tests of this process to trip on
