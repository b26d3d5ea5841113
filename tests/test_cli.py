"""The command line: help, unknown options, value checks, exit codes, interrupts, broken pipes, full disk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = sorted(str(p) for p in (ROOT / "sample").glob("*.ndjson"))
KEY = str(ROOT / "sample" / "dev-pseudonym.key")
AS_OF = "2026-11-25T00:00:00Z"
COMMANDS = list(cli._commands())


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, **kwargs)


def call(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_every_option_and_an_example(command, capsys):
    code, out, _ = call(capsys, command, "--help")
    assert code == 0
    parser = cli.parser_for(command)
    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    assert options
    for option in options:
        assert option in out, f"{command} --help does not mention {option}"
    for common in ("--debug", "--quiet", "--log-level", "--log-format", "--version"):
        assert common in out
    assert "example" in out and "telemetry-sanitizer" in out


def test_overview_names_every_command_and_the_exit_codes(capsys):
    code, out, _ = call(capsys, "--help")
    assert code == 0
    for command in COMMANDS:
        assert f"  {command} " in out
    for exit_code in ("0", "1", "2", "3", "4", "130"):
        assert f"  {exit_code} " in out


@pytest.mark.parametrize(("argv", "hint"), [
    (["--input", "x", "--output", "o", "--withdrawal", "w.csv"], "--withdrawals"),
    (["run", "--input", "x", "--output", "o", "--pseudonym-key-flie", "k"], "--pseudonym-key-file"),
    (["--input", "x", "--output", "o", "--asof", "2026-01-01T00:00:00Z"], "--as-of"),
    (["--input", "x", "--output", "o", "--direct_num_worker=2"], "--direct_num_workers"),
    (["--input", "x", "--output", "o", "--runer", "FnApiRunner"], "--runner"),
    (["watch", "landing", "--output", "o", "--idle-timout", "3"], "--idle-timeout"),
    (["--watch", "landing", "--output", "o", "--pol-interval", "3"], "--poll-interval"),
    (["stream", "--output", "o", "--windw-seconds", "3"], "--window-seconds"),
    (["sample", "--recrds", "3", "--output", "x"], "--records"),
    (["replay", "--frm", "x", "--into", "l"], "--from"),
    (["explain", "--frmat", "json"], "--format"),
    (["policy", "--polcy", "p.toml"], "--policy"),
    (["schema", "--frmat", "sql"], "--format"),
    (["subject", "export", "--id", "x", "--data", "d", "--output", "o", "--pseudonym-key-flie", "k"],
     "--pseudonym-key-file"),
    (["maintain", "--dat", "x"], "--data"),
    (["polcy"], "policy"),
])
def test_a_misspelt_option_exits_2_with_one_line_and_a_suggestion(argv, hint, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = call(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and f"did you mean {hint}?" in err, err
    assert not out and not list(tmp_path.iterdir())


def test_a_misspelt_option_in_a_real_process_writes_nothing(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--input", SAMPLE[0], "--output", str(out), "--withdrawal", "w.csv")
    assert proc.returncode == 2 and "did you mean --withdrawals?" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("argv", [
    ["--input", "x", "--output", "o", "--batch-lines", "0"],
    ["--input", "x", "--output", "o", "--batch-lines", "-5"],
    ["--input", "x", "--output", "o", "--direct_num_workers", "-1"],
    ["watch", "l", "--output", "o", "--poll-interval", "0"],
    ["sample", "--records", "3", "--output", "x", "--days", "0"],
    ["--input", "x", "--output", "o", "--log-level", "LOUD"],
    ["--input", "x", "--output", "o", "--progress-interval", "0"],
    ["stream", "--output", "o", "--window-seconds", "0"],
    ["stream", "--output", "o", "--shards", "0"],
    ["maintain", "--data", "d", "--target-file-size-mb", "0"],
])
def test_bad_values_exit_2_with_one_line(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = call(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error:"), err
    assert not list(tmp_path.iterdir())


def test_an_unknown_runner_exits_2_without_a_traceback_or_an_output_directory(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--input", SAMPLE[0], "--output", str(out), "--runner=Bogus")
    assert proc.returncode == 2, proc.stderr
    assert "--runner Bogus: unknown runner" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert not out.exists()


def test_version(tmp_path):
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("telemetry-sanitizer ")
    assert proc.stdout.split()[1][0].isdigit()


def test_beam_options_pass_and_the_summary_names_runner_and_parallelism(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = call(capsys, "run", "--input", SAMPLE[0], "--output", str(out), "--pseudonym-key-file", KEY,
                             "--as-of", AS_OF, "--runner", "FnApiRunner", "--direct_num_workers=1",
                             "--direct_running_mode", "in_memory")
    assert code == 0, err
    assert "on FnApiRunner (in-process, 1 worker)" in stdout
    report = json.loads((out / "_report.json").read_text())
    assert report["parallelism"] == {"mode": "in_memory", "workers": 1}


def test_multi_process_run_keeps_beam_worker_logs_off_stderr(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--input", SAMPLE[0], "--output", str(out), "--as-of", AS_OF, "--pseudonym-key-file", KEY,
                   "--direct_num_workers=2", "--direct_running_mode=multi_processing")
    assert proc.returncode == 0, proc.stderr
    assert "on FnApiRunner (multi_processing, 2 workers)" in proc.stdout
    assert "INFO" not in proc.stderr and "semi_persistent" not in proc.stderr and "apitools" not in proc.stderr


def _big_input(tmp_path: Path, copies: int = 30) -> Path:
    big = tmp_path / "big.ndjson"
    data = b"".join(Path(p).read_bytes() for p in SAMPLE)
    with open(big, "wb") as fh:
        for _ in range(copies):
            fh.write(data)
    return big


@pytest.mark.parametrize("extra", [[], ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]],
                         ids=["in-process", "multi-process"])
def test_sigint_exits_130_and_leaves_nothing_behind(tmp_path, extra):
    big = _big_input(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--input", str(big), "--output", str(out),
                             "--as-of", AS_OF, *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    # wait until the run has started writing (its staging directory exists), then interrupt it
    while proc.poll() is None and not (out.exists() and any(p.name.startswith(".staging-") for p in out.iterdir())):
        pass
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip() == "error: interrupted; nothing of the interrupted run " \
                                                          "was published", stderr
    assert not out.exists(), list(out.iterdir())


def test_sigint_into_an_existing_output_keeps_the_previous_run(tmp_path):
    out = tmp_path / "out"
    assert run_cli("--input", SAMPLE[0], "--output", str(out), "--as-of", AS_OF, "--pseudonym-key-file",
                   KEY).returncode == 0
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    big = _big_input(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--input", str(big), "--output", str(out),
                             "--as-of", AS_OF, "--pseudonym-key-file", KEY], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not any(p.name.startswith(".staging-") for p in out.iterdir()):
        pass
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before


def test_configuration_errors_stay_one_line_with_debug(tmp_path):
    proc = run_cli("--debug", "--input", SAMPLE[0], "--output", str(tmp_path / "out"), "--as-of", AS_OF,
                   "--policy", str(tmp_path / "missing.toml"))
    assert proc.returncode == 2  # configuration errors stay one line, also with --debug
    target = tmp_path / "file"
    target.write_text("x")
    proc = run_cli("--debug", "sample", "--records", "5", "--output", str(target / "below"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_a_closed_stdout_is_not_an_error():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written, like `| head -0`
    proc = subprocess.run([sys.executable, "-m", "pipeline", "policy"], cwd=ROOT, stdout=write_end,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write_end)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_a_full_disk_is_one_line_and_exit_1(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        proc = run_cli("--input", SAMPLE[0], "--output", str(mnt / "out"), "--as-of", AS_OF,
                       "--pseudonym-key-file", KEY)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("error: run failed: no space left on device")
        leftovers = [p for p in (mnt / "out").rglob("*") if p.is_file()] if (mnt / "out").exists() else []
        assert leftovers == []
        debug = run_cli("--debug", "--input", SAMPLE[0], "--output", str(mnt / "out"), "--as-of", AS_OF,
                        "--pseudonym-key-file", KEY)
        assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
        assert "No space left on device" in debug.stderr
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_json_log_format_makes_errors_json(capsys, tmp_path):
    code, _, err = call(capsys, "--log-format", "json", "--input", str(tmp_path / "none*.ndjson"), "--output",
                        str(tmp_path / "o"), "--runner", "Nope")
    assert code == 2
    doc = json.loads(err.strip())
    assert doc["level"] == "error" and "--runner Nope" in doc["message"]


def test_json_log_format_turns_every_stderr_line_into_json(tmp_path):
    proc = run_cli("--log-format", "json", "--input", SAMPLE[0], "--output", str(tmp_path / "o"),
                   "--policy", str(tmp_path / "missing.toml"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["level"] == "error" and "missing.toml" in doc["message"]


def test_json_log_format_covers_the_beam_workers_stderr(tmp_path):
    # INFO lets the workers' own start-up lines through the filter, so there is something to convert
    proc = run_cli("--log-format", "json", "--log-level", "INFO", "--input", SAMPLE[0], "--output",
                   str(tmp_path / "o"), "--as-of", AS_OF, "--pseudonym-key-file", KEY, "--direct_num_workers=2",
                   "--direct_running_mode=multi_processing")
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert any(d["logger"].startswith("apache_beam") for d in docs), proc.stderr[-2000:]
    assert all({"time", "level", "logger", "message"} <= d.keys() for d in docs)


def test_worker_lines_become_json_objects_with_their_level():
    from pipeline.worker_logs import as_json_line

    doc = json.loads(as_json_line(b"WARNING:apache_beam.runners.worker:slow bundle\n"))
    assert (doc["level"], doc["logger"], doc["message"]) == ("warning", "apache_beam.runners.worker", "slow bundle")
    doc = json.loads(as_json_line(b"  File \"x.py\", line 3, in f\n"))
    assert doc["level"] == "error" and doc["message"] == '  File "x.py", line 3, in f'
    already = b'{"level": "info", "message": "m"}\n'
    assert as_json_line(already) == already


def test_schema_as_table_json_and_sql_covers_every_column(capsys):
    from schemas.policy import load_policy

    policy = load_policy()
    columns = [f.name for f in policy.dataset_schema("url_visit")]
    code, table, _ = call(capsys, "schema", "--type", "url_visit")
    assert code == 0 and all(f"  {c} " in table for c in columns)
    code, text, _ = call(capsys, "schema", "--type", "url_visit", "--format", "json")
    assert code == 0 and [c["name"] for c in json.loads(text)["url_visit"]["columns"]] == columns
    code, sql, _ = call(capsys, "schema", "--format", "sql")
    assert code == 0 and sql.count("CREATE TABLE") == len(policy.types) + 1  # and the quarantine
    assert "PARTITIONED BY (user_region, event_date)" in sql and "`event_time` TIMESTAMP" in sql
    code, _, err = call(capsys, "schema", "--type", "url_visits")
    assert code == 2 and "unknown record type" in err


@pytest.mark.parametrize("argv, message", [
    (["--input", "IN", "--output", "s3://bucket/out"], "cannot use the store"),
    (["--input", "IN", "--output", "abfss://container@acct.dfs.core.windows.net/out"], "cannot use the store"),
    (["--input", "IN", "--output", "gs://bucket/out", "--append"], "gs:// outputs are not supported"),
    (["--input", "IN", "--output", "az://container/out"], "set AZURE_STORAGE_ACCOUNT_NAME"),
    (["--input", "IN", "--output", "abfs://Container@acct.dfs.core.windows.net/out"], "is not a container name"),
    (["--input", "IN", "--output", "file:///tmp/out"], "give the local path itself (/tmp/out)"),
    (["--input", "IN", "--output", "s3://"], "name a bucket"),
    (["watch", "landing", "--output", "s3://bucket/out"], "only a local directory"),
    (["stream", "--kafka-bootstrap", "b:9092", "--kafka-topic", "t", "--output", "s3://bucket/out"],
     "only a local directory"),
    (["maintain", "--data", "abfss://container@example.com/out"], "an account host ending in .dfs.core.windows.net"),
    (["subject", "erase", "--id", "x", "--data", "gs://bucket/out"], "gs:// outputs are not supported"),
    (["subject", "export", "--id", "x", "--data", "gs://bucket/out", "--output", "exported"],
     "gs:// outputs are not supported"),
], ids=["run-s3-unreachable", "run-abfs-unreachable", "append-gs", "run-az-no-account", "run-abfs-bad-container",
        "run-file-uri", "run-s3-no-bucket", "watch", "stream", "maintain", "erase", "export"])
def test_an_unsupported_or_unreachable_output_exits_2_with_one_line_and_writes_nothing(argv, message, capsys,
                                                                                       tmp_path, monkeypatch):
    """Local directories, s3:// and abfs[s]:// are accepted (docs/tables.md, Locations); gs://,
    file:// and Azure URIs without an account or with a malformed container are refused, and
    watch/stream take local directories only, before anything is created. An S3 or Azure store
    that cannot be reached (here: a closed local port) fails when the run takes its lease, also
    with one line."""
    monkeypatch.chdir(tmp_path)
    for name, value in (("AWS_ENDPOINT_URL", "http://127.0.0.1:9"), ("AWS_ALLOW_HTTP", "true"),
                        ("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "x"), ("AWS_REGION", "us-east-1"),
                        ("AZURE_STORAGE_USE_EMULATOR", "true"), ("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:9")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    (tmp_path / "in.ndjson").write_text('{"type": "url_visit"}\n')
    argv = [a if a != "IN" else str(tmp_path / "in.ndjson") for a in argv]
    argv += [] if argv[0] == "maintain" else ["--pseudonym-key-file", KEY]
    code, out, err = call(capsys, *argv)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: --") and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ndjson"]
