"""One sanitizing run: check the configuration, run the Beam graph, publish, report.

Configuration problems (policy, key file, inputs) stop the run before anything
is written, with one line naming the problem and exit code 2. Output is built in
a staging directory and swapped into place only when the run succeeded.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import secrets
import shutil
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from pipeline.files import InputError, changed_since, expand_inputs, snapshot
from pipeline.graph import build_pipeline
from pipeline.options import DEFAULT_RUNNER, SanitizerOptions
from pipeline.reading import CHUNK_BYTES
from pipeline.report import build_report, summary
from schemas.policy import PolicyError, load_policy
from transforms.fields import FieldTypeError, parse_rfc3339
from transforms.records import QUARANTINE_SCHEMA, SanitizeContext
from transforms.withdrawals import WithdrawalsError, load_withdrawals

DEV_KEY_PATH = Path(__file__).resolve().parent.parent / "sample" / "dev-pseudonym.key"
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"  # Beam does not register the short name
MANAGED_PREFIXES = ("_quarantine", "_locked", "_report.json", "_reports")


class ConfigError(ValueError):
    """Bad configuration: reported as one line, exit code 2."""


def load_key(path: str | None) -> tuple[bytes, str]:
    """(key, mode): a key file's content, or a random key that lives for this run only."""
    if not path:
        return secrets.token_bytes(32), "random-per-run"
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"--pseudonym-key-file {path}: cannot read: {exc.strerror or exc}") from None
    if len(key) < 16:
        raise ConfigError(f"--pseudonym-key-file {path}: key must be at least 16 bytes, found {len(key)}")
    dev = DEV_KEY_PATH.read_bytes().strip() if DEV_KEY_PATH.exists() else None
    return key, "development" if key == dev else "key-file"


def parse_as_of(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    try:
        return parse_rfc3339(value)
    except FieldTypeError as exc:
        raise ConfigError(f"--as-of {value!r}: {exc} (example: 2026-11-25T00:00:00Z)") from None


def publish(final_dir: str, out: str, managed: set[str], run_id: str, append: bool = False) -> None:
    """Put this run's output in place.

    Replace mode (default): the previous run's output is swapped out one
    top-level directory at a time (old out, new in, back to back); each rename
    is atomic, so a reader sees the old or the new files of a type, never a
    mix (between the two renames of a type, for an instant, neither). A failure
    part-way puts back the old directories that have no replacement yet. Files
    in `out` the pipeline does not manage stay.
    Append mode (`--append`, used by --watch): this run's files, whose names
    carry the run id, are moved next to the existing ones; each run's report
    is kept under _reports/.
    """
    if append:
        for root, _, files in os.walk(final_dir):
            rel = os.path.relpath(root, final_dir)
            os.makedirs(os.path.join(out, rel), exist_ok=True)
            for name in files:
                target = os.path.join(out, rel, name)
                if name == "_report.json":
                    os.makedirs(os.path.join(out, "_reports"), exist_ok=True)
                    os.replace(os.path.join(root, name), os.path.join(out, "_reports", f"{run_id}.json"))
                    continue
                os.replace(os.path.join(root, name), target)
        return
    trash = os.path.join(out, f".old-{run_id}")
    os.makedirs(trash)
    new = set(os.listdir(final_dir))
    old = {name for name in os.listdir(out) if name in managed}
    moved: list[str] = []
    try:
        for name in sorted(old | new):  # per name: old out, new in, back to back
            if name in old:
                os.rename(os.path.join(out, name), os.path.join(trash, name))
                moved.append(name)
            if name in new:
                os.rename(os.path.join(final_dir, name), os.path.join(out, name))
    except OSError:
        for name in moved:  # put back what has no replacement yet
            if not os.path.exists(os.path.join(out, name)):
                os.rename(os.path.join(trash, name), os.path.join(out, name))
        raise
    shutil.rmtree(trash)


def grouped_in_process(options: PipelineOptions) -> bool:
    """Whether the runner keeps grouped elements in this process: Beam's FnApiRunner (or the
    DirectRunner running it) in its in_memory mode. Small partition pieces then travel
    inside the elements instead of as staging files (see io.WriteMinimizedParquet)."""
    runner = options.view_as(StandardOptions).runner or DEFAULT_RUNNER
    return (runner in ("FnApiRunner", "DirectRunner")
            and options.view_as(DirectOptions).direct_running_mode == "in_memory")


def one_worker(options: PipelineOptions) -> bool:
    """Whether one in-process worker reads everything: then each input file is one chunk
    (nothing to spread, and the newline scan that numbers chunks is skipped)."""
    return grouped_in_process(options) and options.view_as(DirectOptions).direct_num_workers == 1


def run(argv: list[str]) -> int:
    """Entry point of `python -m pipeline --input ... --output ...`."""
    started = time.time()
    options = PipelineOptions(argv)
    opts = options.view_as(SanitizerOptions)
    try:
        if not opts.input:
            raise ConfigError("--input is required (a glob of .ndjson or .ndjson.gz files)")
        if not opts.output:
            raise ConfigError("--output is required (a directory)")
        policy = load_policy(opts.policy)
        key, key_mode = load_key(opts.pseudonym_key_file)
        as_of = parse_as_of(opts.as_of)
        never = {path: what for path, what in ((opts.pseudonym_key_file, "the --pseudonym-key-file"),
                                                  (opts.withdrawals, "the --withdrawals file")) if path}
        input_warnings: list[str] = []
        files = expand_inputs(opts.input, never=never, warn=lambda m: (input_warnings.append(m),
                                                                        print(f"warning: {m}", file=sys.stderr)))
        before = snapshot(files)
        try:
            ctx = SanitizeContext(policy=policy, key=key, as_of=as_of)
        except OverflowError:
            raise ConfigError(f"--as-of {opts.as_of!r}: too close to the limits of the calendar for the "
                              "retention periods") from None
        withdrawals = None
        if opts.withdrawals:
            withdrawals = os.path.abspath(opts.withdrawals)
            n_devices = len(load_withdrawals(withdrawals, ctx.device_hash))  # validate before anything is written
        out = os.path.abspath(opts.output)
        if os.path.exists(out) and not os.path.isdir(out):
            raise ConfigError(f"--output {out}: exists and is not a directory")
        existing = out
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"--output {out}: {existing} is not writable")
    except (ConfigError, PolicyError, InputError, WithdrawalsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = DEFAULT_RUNNER
    if standard.runner == "DaskRunner":
        standard.runner = DASK_RUNNER
    on_dask = standard.runner == DASK_RUNNER
    if on_dask and importlib.util.find_spec("distributed") is None:
        print("error: --runner DaskRunner needs dask[distributed]: pip install 'telemetry-sanitizer[dask]'",
              file=sys.stderr)
        return 2
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
    staging = os.path.join(out, f".staging-{run_id}")
    try:
        os.makedirs(os.path.join(staging, "final"))
    except OSError as exc:
        print(f"error: --output {out}: cannot create: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        with dask_cluster(options) if on_dask else contextlib.nullcontext():
            p = beam.Pipeline(options=options)
            build_pipeline(p, files, staging, ctx, batch_lines=opts.batch_lines, file_prefix=run_id,
                           withdrawals_path=withdrawals, flush_each=on_dask,
                           inline_small=grouped_in_process(options),
                           chunk_bytes=None if one_worker(options) else CHUNK_BYTES)
            result = p.run()
            try:
                result.wait_until_finish()
            finally:
                client = getattr(result, "client", None)  # DaskRunner leaves its distributed.Client open
                if client is not None:
                    client.close()
        changed = changed_since(before)
        if changed:  # before anything is published: what was read may not be what the file holds
            for line in changed:
                print(f"error: --input {line}; nothing was written for this run (run it again once the "
                      "file is complete)", file=sys.stderr)
            return 1
        with open(os.path.join(staging, "_stats.json"), encoding="utf-8") as fh:
            stats = Counter(json.load(fh))
        final = os.path.join(staging, "final")
        if not os.path.exists(os.path.join(final, "_quarantine")):
            os.makedirs(os.path.join(final, "_quarantine"))
            pq.write_table(QUARANTINE_SCHEMA.empty_table(),
                           os.path.join(final, "_quarantine", f"part-{run_id}-00000.parquet"))
            stats["files_written"] += 1
        meta = {
            "run_id": run_id,
            "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
            "duration_seconds": round(time.time() - started, 3),
            "runner": str(standard.runner),
            "as_of": as_of.isoformat(),
            "inputs": files,
            "input_warnings": input_warnings,
            "output_dir": out,
            "policy": {"version": policy.version, "sha256": policy.sha256, "source": policy.source},
            "report_path": f"_reports/{run_id}.json" if opts.append else "_report.json",
            "key": {"mode": key_mode, "linkable_across_runs": key_mode != "random-per-run"},
            "withdrawals": {"file": withdrawals, "devices": n_devices} if withdrawals else None,
        }
        report = build_report(stats, meta)
        with open(os.path.join(final, "_report.json"), "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2, sort_keys=False)
        managed = set(policy.types) | set(MANAGED_PREFIXES)
        publish(final, out, managed, run_id, append=opts.append)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(summary(report))
    return exit_code(report, opts.allow_partial_input)


def exit_code(report: dict, allow_partial_input: bool = False) -> int:
    """1: the counts do not reconcile; 3: part of the input could not be read (the output holds
    what could be, the report says what was not), unless allowed; 0 otherwise."""
    if not report["identity"]["holds"]:
        return 1
    if not report.get("input_complete", True) and not allow_partial_input:
        return 3
    return 0


@contextlib.contextmanager
def dask_cluster(options: PipelineOptions):
    """For DaskRunner: the cluster named by --dask_client_address / --dask_scheduler_file or, without
    one, a LocalCluster for this run only (a single-threaded worker process per core), closed when the
    run ends. Beam would otherwise start a LocalCluster itself (distributed.Client() without an
    address) and never close it."""
    from apache_beam.runners.dask.dask_runner import DaskOptions
    from distributed import LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)  # its INFO lines would reach our stderr
    dask_options = options.view_as(DaskOptions)
    if dask_options.address or dask_options.scheduler_file:
        yield
        return
    with LocalCluster(processes=True, threads_per_worker=1, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        dask_options.address = cluster.scheduler_address
        yield


def run_files(files: list[str], output: str, extra: list[str] | None = None) -> int:
    """Programmatic entry (watch mode, scheduled jobs): one run over an explicit list of files."""
    argv = [arg for f in files for arg in ("--input", glob_escape(f))] + ["--output", output] + list(extra or [])
    return run(argv)


def glob_escape(path: str) -> str:
    import glob

    return glob.escape(path)
