"""Outputs on Azure Blob Storage, against Azurite (Azure's own Blob emulator, the one delta-rs's
integration tests use), started here on a free port.

Azurite is an npm package: the first run installs the pinned version with `npm install` into
.cache/ under the checkout (about 45 s; later runs reuse it). Without `npm`, or when the npm
registry cannot be reached, these tests skip with the reason; everything else is configured the
way a user would, through the AZURE_* environment that delta-rs, obstore and the pipeline's
pyarrow file system all read (pipeline/location.py). The S3 twins of these tests are in
tests/test_object_store.py; the commands run as real processes here too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from deltalake import DeltaTable
from test_leases import wait_stopped
from test_object_store import (
    cli,
    data_objects,
    environment,
    expected_rows,
    free_port,
    leaks,
    most_common_device,
    run_args,
    start,
    write_inputs,
)

from pipeline import store_lease
from pipeline.commit import KILL_ENV, STOP_ENV
from pipeline.location import Location
from pipeline.subject import candidate_pseudonyms
from pipeline.tables import QUARANTINE, REPORT, REPORTS, list_tables

ROOT = Path(__file__).resolve().parent.parent
KEY_FILE = ROOT / "sample" / "dev-pseudonym.key"
AS_OF = "2026-11-25T00:00:00Z"
AZURITE_VERSION = "3.37.0"
AZURITE_DIR = ROOT / ".cache" / f"azurite-{AZURITE_VERSION}"
CONTAINER = "sanitizer-test"
# Azurite's one built-in account and its published development key (not a secret: the same in
# every Azurite; https://learn.microsoft.com/azure/storage/common/storage-use-azurite).
ACCOUNT = "devstoreaccount1"
EMULATOR_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
LONG_LEASE = {store_lease.TTL_ENV: "600"}


def azurite_bin() -> Path:
    """The pinned Azurite's blob service, installed once with npm (or a skip saying why not)."""
    binary = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("Azure tests need Azurite, an npm package, and npm/node are not installed")
    staging = AZURITE_DIR.with_name(f"{AZURITE_DIR.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    proc = subprocess.run([npm, "install", "--prefix", str(staging), "--no-audit", "--no-fund", "--no-save",
                           f"azurite@{AZURITE_VERSION}"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"Azure tests need Azurite and `npm install azurite@{AZURITE_VERSION}` failed: {last}")
    try:
        staging.rename(AZURITE_DIR)  # whole or not at all
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another process installed it meanwhile
    return binary


@pytest.fixture(scope="module")
def azure_env(tmp_path_factory):
    """Azurite's blob service on a free port, one container, and the environment pointing every
    client at it, as a user would set it for the emulator."""
    binary = azurite_bin()
    port = free_port()
    server = subprocess.Popen([str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
                               "--silent", "--disableTelemetry"], cwd=tmp_path_factory.mktemp("azurite"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": f"http://127.0.0.1:{port}",
           "AZURE_STORAGE_ACCOUNT_NAME": ACCOUNT, "AZURE_STORAGE_ACCOUNT_KEY": EMULATOR_KEY}
    try:
        with environment(env):
            # object_store cannot create a container (a user creates it first, like a bucket); pyarrow can
            fs = pafs.AzureFileSystem(ACCOUNT, account_key=EMULATOR_KEY, blob_storage_authority=f"127.0.0.1:{port}",
                                      dfs_storage_authority=f"127.0.0.1:{port}", blob_storage_scheme="http",
                                      dfs_storage_scheme="http")
            for attempt in range(600):  # until the server listens (bounded)
                try:
                    fs.create_dir(CONTAINER)
                    break
                except OSError:
                    assert server.poll() is None and attempt < 599, "azurite exited or never listened"
                    time.sleep(0.1)
            yield env
    finally:
        server.kill()  # in memory, nothing to flush (a SIGTERM waits for this process's idle connections)
        server.wait(30)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    return write_inputs(tmp_path_factory.mktemp("azure-inputs"))


def fresh() -> str:
    """A new prefix, in the ADLS Gen2 form a user gives (the account is Azurite's)."""
    return f"abfss://{CONTAINER}@{ACCOUNT}.dfs.core.windows.net/{uuid.uuid4().hex[:10]}"


def rows(out: str, name: str, version: int | None = None) -> list[str]:
    table = DeltaTable(f"{out}/{name}", version=version).to_pyarrow_table()
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in table.to_pylist())


def contents(out: str) -> dict[str, list]:
    return {name: rows(out, name) for name in list_tables(out)}


def named_objects(out: str) -> set[str]:
    return {uri.removeprefix(f"{out}/") for name in list_tables(out) for uri in DeltaTable(f"{out}/{name}").file_uris()}


def check_output(out: str) -> None:
    """Every table readable; every report names versions holding exactly what it counts."""
    loc = Location(out)
    names = list_tables(out)
    assert QUARANTINE in names
    reports = [json.loads(loc.read(p)) for p in loc.files(REPORTS)]
    assert reports and json.loads(loc.read(REPORT)) in reports
    for report in reports:
        assert set(report["tables"]) == set(names)
        for name, entry in report["tables"].items():
            assert len(rows(out, name, entry["version"])) == expected_rows(report, name), (report["run_id"], name)


@pytest.fixture(scope="module")
def reference(azure_env, inputs) -> dict:
    """An uninterrupted run of `current` into an empty prefix: its location and table contents."""
    out = fresh()
    proc = cli(*run_args(inputs["current"], out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"out": out, "contents": contents(out)}


def test_azure_a_run_commits_delta_tables_that_read_back_with_a_report_of_their_versions(reference):
    out = reference["out"]
    check_output(out)
    report = json.loads(Location(out).read(REPORT))
    assert report["output_dir"] == out and report["identity"]["holds"]
    assert sum(report["output_records"].values()) > 100
    for name, table_rows in reference["contents"].items():
        assert len(table_rows) == expected_rows(report, name), name
    assert data_objects(out) == named_objects(out)  # nothing orphaned
    assert not Location(out).files(store_lease.PREFIX)  # leases released
    # The same blobs under the short form (account from AZURE_STORAGE_ACCOUNT_NAME), as delta-rs reads them.
    short = out.replace(f"abfss://{CONTAINER}@{ACCOUNT}.dfs.core.windows.net", f"az://{CONTAINER}")
    assert contents(short) == reference["contents"]


def test_azure_an_erase_is_refused_while_a_run_holds_its_lease_and_then_removes_every_byte_of_the_subject(
        azure_env, inputs, tmp_path):
    out = fresh()
    proc = cli(*run_args(inputs["other"], out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    device = most_common_device(inputs["current"])
    erase = ["subject", "erase", "--id", device, "--data", out, "--pseudonym-key-file", str(KEY_FILE)]
    run = start(*run_args(inputs["current"], out), env={STOP_ENV: "written", **LONG_LEASE})
    try:
        wait_stopped(run)  # its files are written into the tables, not committed
        written = data_objects(out)
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
    needles = sorted({p for values in candidate_pseudonyms(KEY_FILE.read_bytes().strip(), device).values()
                      for p in values} | {device})
    assert leaks(out, needles)  # the subject is there before
    proc = cli("subject", "export", "--id", device, "--data", out, "--pseudonym-key-file", str(KEY_FILE),
               "--output", str(tmp_path / "export"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "export" / "manifest.json").read_text())["total_rows"] > 0
    proc = cli(*erase)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "removed" in proc.stdout and "_erasures.jsonl" in proc.stdout
    assert leaks(out, needles) == []  # every blob: data files, logs, reports, the erasure log
    assert data_objects(out) == named_objects(out)
    assert not Location(out).files(store_lease.PREFIX)
    for name in list_tables(out):
        DeltaTable(f"{out}/{name}").to_pyarrow_table()


def test_azure_two_concurrent_replacing_runs_one_commits_the_other_exits_4_with_one_line(azure_env, inputs, reference):
    out = fresh()
    first = start(*run_args(inputs["current"], out), env={STOP_ENV: "after_commit:detection", **LONG_LEASE})
    try:
        wait_stopped(first)  # between two of its commits, holding the commit lease
        versions = {n: DeltaTable(f"{out}/{n}").version() for n in list_tables(out)}
        proc = cli(*run_args(inputs["other"], out))
        assert proc.returncode == 4, proc.stderr[-2000:]
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith("error: --output") and "another run is committing to it" in line
        assert versions == {n: DeltaTable(f"{out}/{n}").version() for n in list_tables(out)}
        os.kill(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    check_output(out)
    assert contents(out) == reference["contents"]


def test_azure_a_sigkilled_run_reruns_to_the_state_of_an_uninterrupted_run_and_maintain_removes_its_orphans(
        azure_env, inputs, reference):
    ttl = 10  # long enough for renewals on a loaded machine, short enough to wait for
    env = {store_lease.TTL_ENV: str(ttl)}
    out = fresh()
    proc = cli(*run_args(inputs["current"], out), env={**env, KILL_ENV: "after_commit:detection"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert Location(out).exists(store_lease.COMMIT)  # died holding the commit lease: it expires after the TTL
    time.sleep(ttl + 1)
    proc = cli(*run_args(inputs["current"], out), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "already committed by the interrupted run" in proc.stdout
    check_output(out)
    assert contents(out) == reference["contents"]
    assert data_objects(out) - named_objects(out)  # the killed attempt's files
    proc = cli("maintain", "--data", out, "--as-of", AS_OF, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert data_objects(out) == named_objects(out)
    assert contents(out) == reference["contents"]
    assert not Location(out).files(store_lease.PREFIX)


def test_azure_a_store_that_ignores_conditional_writes_is_refused(azure_env, monkeypatch):
    """The same probe as on S3: the second create of one blob must fail."""
    import obstore

    real = obstore.put
    monkeypatch.setattr(obstore, "put", lambda store, path, data, **kw: real(store, path, data))
    with pytest.raises(store_lease.LeaseError, match="does not honour conditional writes"):
        store_lease.server_now(store_lease.open_store(fresh()), "abfss://x")
    monkeypatch.setattr(obstore, "put", real)
    store_lease.server_now(store_lease.open_store(fresh()), "abfss://x")  # and Azurite itself honours them
