"""One sanitizing run: check the configuration, run the Beam graph, commit, report.

Configuration problems (policy, key file, inputs) stop the run before anything
is written, with one line naming the problem and exit code 2. Workers write the
data files into the Delta tables of the output; one commit per table makes them
visible (pipeline/commit.py), and the report, written last, names each table's
committed version. An output that could not be committed: one line, exit code 4.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import logging
import os
import secrets
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from pipeline import lease
from pipeline.commit import CommitError, Output, SchemaMismatch, Slice, kill_point, run_key
from pipeline.dedupe import committed_partition_files
from pipeline.files import InputError, changed_since, expand_inputs, snapshot
from pipeline.graph import build_pipeline, read_results
from pipeline.location import storage_options
from pipeline.options import DEFAULT_RUNNER, SanitizerOptions, input_formats, parallelism
from pipeline.reading import CHUNK_BYTES
from pipeline.report import build_report, summary
from pipeline.staging import make_staging
from pipeline.store_lease import LeaseError
from pipeline.tables import QUARANTINE, REPORT, REPORTS, commit_metadata, is_remote, join, refused
from schemas.formats import FormatError, load_formats, load_profile
from schemas.policy import PolicyError, load_policy
from transforms.fields import FieldTypeError, parse_rfc3339
from transforms.mapping import FormatSetup
from transforms.pseudonym import key_fingerprint
from transforms.records import SanitizeContext
from transforms.withdrawals import WithdrawalsError, load_withdrawals

DEV_KEY_PATH = Path(__file__).resolve().parent.parent / "sample" / "dev-pseudonym.key"
COMMIT_FAILED = 4  # the output could not be (wholly) committed; a re-run completes it
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"  # Beam does not register the short name


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


def parse_slice(value: str | None) -> Slice:
    """--slice-dates FROM..TO (or one day) -> Slice; the whole output without it."""
    if not value:
        return Slice()
    first, _, last = value.partition("..")
    last = last or first
    for day in (first, last):
        try:
            datetime.strptime(day, "%Y-%m-%d")
        except ValueError:
            raise ConfigError(f"--slice-dates {value!r}: expected YYYY-MM-DD or FROM..TO "
                              "(example: 2026-11-24..2026-11-25)") from None
    if first > last:
        raise ConfigError(f"--slice-dates {value!r}: {first} is after {last}")
    return Slice(first, last)


def check_output(out: str) -> None:
    """A local output must be a writable (or creatable) directory; of URIs s3:// and abfs[s]:// are accepted
    (pipeline/location.py); the store itself is checked when the run takes its lease."""
    why = refused("--output", out)
    if why:
        raise ConfigError(why)
    if is_remote(out):
        return
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--output {out}: exists and is not a directory")
    existing = out
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--output {out}: {existing} is not writable")


def run(argv: list[str]) -> int:
    """Entry point of `python -m pipeline --input ... --output ...`."""
    started = time.time()
    options = PipelineOptions(argv)
    opts = options.view_as(SanitizerOptions)
    try:
        if not opts.input:
            raise ConfigError("--input is required (a glob of .ndjson or .ndjson.gz files)")
        if not opts.output:
            raise ConfigError("--output is required (a local directory)")
        policy = load_policy(opts.policy)
        key, key_mode = load_key(opts.pseudonym_key_file)
        as_of = parse_as_of(opts.as_of)
        part = parse_slice(opts.slice_dates)
        if opts.append and not part.whole:
            raise ConfigError("--slice-dates replaces a slice; it cannot be combined with --append")
        never = {path: what for path, what in ((opts.pseudonym_key_file, "the --pseudonym-key-file"),
                                                  (opts.withdrawals, "the --withdrawals file")) if path}
        input_warnings: list[str] = []
        def warn(message: str) -> None:
            input_warnings.append(message)
            print(f"warning: {message}", file=sys.stderr)

        files, setup = input_setup(argv, opts.input, opts.consent_profile, policy, never, warn)
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
        out = opts.output if is_remote(opts.output) else os.path.abspath(opts.output)
        check_output(out)
    except (ConfigError, PolicyError, InputError, WithdrawalsError, FormatError) as exc:
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
    attempt = uuid.uuid4().hex[:6]  # file names of this attempt never meet those of a killed one
    fingerprint = key_fingerprint(key)
    mode = "append" if opts.append else f"replace:{part.tag}"
    if setup is not None:  # another format or consent profile is another run
        mode += f";formats={','.join(setup.formats)};profile={setup.profile.sha256 if setup.profile else None}"
    # A random per-run key is not part of the identity: a re-run of a killed run then completes
    # it instead of adding its committed tables again under another (unlinkable) key.
    identity = run_key(files, policy, fingerprint if key_mode != "random-per-run" else "random",
                       opts.as_of, withdrawals, mode)
    leases = contextlib.ExitStack()  # pipeline/lease.py: erase/maintain and other runs' commits
    try:
        leases.enter_context(lease.writer(out, on_wait=lambda: print(
            f"note: --output {out}: a `subject erase` or `maintain` is running on it; waiting for it to end",
            file=sys.stderr)))
        staging = make_staging(out, run_id)
    except OSError as exc:
        leases.close()
        print(f"error: --output {out}: cannot create: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except LeaseError as exc:  # an object store that cannot hold a lease
        leases.close()
        print(f"error: --output {exc}", file=sys.stderr)
        return 2
    output = Output(out, policy, storage_options(out))
    try:
        opened = time.time()
        try:
            output.open()
        except SchemaMismatch as exc:
            print(f"error: --output {out}: {exc}; nothing was written", file=sys.stderr)
            return 2
        except Exception as exc:  # storage errors of delta-rs / pyarrow: one line
            raise CommitError(f"--output {out}: cannot open or create its tables: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from None
        plan = output.plan(identity, opts.append)
        open_seconds = time.time() - opened
        if plan.run_id:
            run_id = plan.run_id  # resuming a killed run: its report completes it
        if plan.superseded:
            again = "appends the input to every table again" if opts.append else f"replaces {part.describe()} again"
            print(f"note: --output {out}: an interrupted earlier run of this input was replaced by another run "
                  f"meanwhile (table {plan.superseded}); this run {again}, as a whole", file=sys.stderr)
        kill_point("opened")
        quarantine_tag = None if part.whole else f"s{part.tag}"
        with dask_cluster(options) if on_dask else contextlib.nullcontext():
            p = beam.Pipeline(options=options)
            build_pipeline(p, files, staging.path, ctx, batch_lines=opts.batch_lines,
                           file_prefix=f"{run_id}-{attempt}", withdrawals_path=withdrawals, flush_each=on_dask,
                           inline_small=grouped_in_process(options),
                           chunk_bytes=None if one_worker(options) else CHUNK_BYTES, output=out,
                           quarantine_prefix=f"{run_id}-{attempt}-{quarantine_tag}" if quarantine_tag else None,
                           committed=committed_partition_files(output, plan.done) if opts.append else None,
                           formats=setup)
            try:
                result = p.run()
                try:
                    result.wait_until_finish()
                finally:
                    client = getattr(result, "client", None)  # DaskRunner leaves its distributed.Client open
                    if client is not None:
                        client.close()
            except BaseException:
                output.remove_attempt(f"{run_id}-{attempt}")
                # Writer threads of an interrupted in-process run can still finish a file after this;
                # they are joined when the interpreter exits, before atexit callbacks: look again then.
                atexit.register(output.remove_attempt, f"{run_id}-{attempt}")
                raise
        stats, written = read_results(os.path.join(staging.path, "_stats.json"))
        changed = changed_since(before)
        if changed:  # before anything is committed: what was read may not be what the file holds
            output.remove_files(written, keep=set())
            for line in changed:
                print(f"error: --input {line}; nothing was written for this run (run it again once the "
                      "file is complete)", file=sys.stderr)
            return 1
        kill_point("written")
        meta = {
            "run_id": run_id,
            "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
            "duration_seconds": round(time.time() - started, 3),
            "runner": str(standard.runner),
            "parallelism": parallelism(options),
            "as_of": as_of.isoformat(),
            "inputs": files,
            "input_warnings": input_warnings,
            "input_files": {path: {"size": size, "mtime_ns": mtime} for path, (_, size, mtime) in before.items()},
            "output_dir": out,
            "input_formats": ({path: fmt for path, fmt in zip(files, setup.formats, strict=True) if fmt != "contract"}
                              if setup is not None else {}),
            "consent_profile": setup.profile.source if setup is not None and setup.profile else None,
            "policy": {"version": policy.version, "sha256": policy.sha256, "source": policy.source},
            "report_path": f"{REPORTS}/{run_id}.json",
            "key": {"mode": key_mode, "linkable_across_runs": key_mode != "random-per-run",
                    "fingerprint": fingerprint},
            "key_fingerprint": fingerprint,
            "withdrawals": {"file": withdrawals, "devices": n_devices} if withdrawals else None,
            "mode": "append" if opts.append else "replace",
            "slice": None if part.whole else {"first": part.first, "last": part.last},
            "run_key": identity,
            "execution": plan.execution,
            "superseded_table": plan.superseded,
        }
        report = build_report(stats, meta)
        try:
            enter_commit_phase(leases, out, opts.append)
        except CommitError:
            output.remove_files(written, keep=set())
            raise
        empty = stats.get("input_records", 0) == 0 and not opts.append and not opts.replace_empty
        outside = sorted({w.event_date or "" for w in written
                          if w.table != QUARANTINE and not part.holds(w.event_date)})
        if outside:
            output.remove_files(written, keep=set())
            raise CommitError(f"--slice-dates {opts.slice_dates}: {len(outside)} event date(s) of the input lie "
                              f"outside the slice ({outside[0]}{' ...' if len(outside) > 1 else ''}); nothing "
                              "was committed: widen the slice or run without it")
        if empty:
            report["tables"] = {name: {"version": output.snapshot[name] if output.snapshot[name] >= 0 else None,
                                       "rows_added": 0, "committed": False}
                                for name in output.names}
            report["nothing_replaced"] = "empty input: nothing replaced (--replace-empty replaces with nothing)"
            output.remove_files(written, keep=set())
        else:
            committing = time.time()
            if not opts.append and plan.todo:
                output.check_unchanged()
            commit_meta = commit_metadata(run_id, policy, fingerprint)
            try:
                report["tables"] = output.commit(plan, written, commit_meta, opts.append, part, quarantine_tag)
            except CommitError:
                output.remove_files(written, keep=committed_names(output, plan))
                raise
            output.remove_files(written, keep=set(plan.todo))
            report["resumed"] = sorted(plan.done) if plan.done else []
            # What the Delta step costs: opening the tables at start, and the commits at the end.
            report["commit_seconds"] = {"open": round(open_seconds, 3), "commit": round(time.time() - committing, 3)}
        kill_point("committed")
        write_report(out, report, latest=not opts.append and not empty)
        kill_point("reported")
    except CommitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return COMMIT_FAILED
    finally:
        staging.close()
        leases.close()
    print(summary(report))
    return exit_code(report, opts.allow_partial_input)


def input_setup(argv: list[str], patterns: list[str], profile_path: str | None, policy, never: dict,
                warn) -> tuple[list[str], FormatSetup | None]:
    """(input files, their formats, mappings and consent profile; None when every input is in
    the contract's format). A file named by two --input options of different formats is an error."""
    try:
        formats = input_formats(argv)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if len(formats) != len(patterns):  # e.g. an abbreviated option name: never guess the pairing
        raise ConfigError("--input / --input-format: spell the options out in full")
    by_file: dict[str, str] = {}
    for pattern, fmt in zip(patterns, formats, strict=True):
        for path in expand_inputs([pattern], never=never, warn=warn):
            if by_file.setdefault(path, fmt) != fmt:
                raise ConfigError(f"--input {path}: named with two formats ({by_file[path]}, {fmt})")
    files = list(by_file)
    if all(f == "contract" for f in formats):
        if profile_path:
            warn(f"--consent-profile {profile_path}: not used: every --input is in the contract's format, "
                 "which carries its own consent")
        return files, None
    profile = load_profile(profile_path) if profile_path else None
    mappings = load_formats(sorted(set(formats)), policy)
    return files, FormatSetup(tuple(by_file[f] for f in files), mappings, profile)


def enter_commit_phase(leases: contextlib.ExitStack, out: str, append: bool) -> None:
    """Hold DIR/_commit.lock until the run ends, so two runs' commits never interleave table by
    table: a replacing run that finds it held fails (its check that no table moved would fail
    anyway), an appending run waits."""
    try:
        leases.enter_context(lease.committing(out, wait=append, on_wait=lambda: print(
            f"note: --output {out}: another run is committing to it; waiting for it to end", file=sys.stderr)))
    except lease.LeaseBusy:
        raise CommitError(f"--output {out}: another run is committing to it right now; nothing of this run was "
                          "committed: run it again") from None
    except LeaseError as exc:
        raise CommitError(f"--output {exc}; nothing of this run was committed: run it again") from None


def exit_code(report: dict, allow_partial_input: bool = False) -> int:
    """1: the counts do not reconcile; 3: part of the input could not be read (the output holds
    what could be, the report says what was not), unless allowed; 0 otherwise."""
    if not report["identity"]["holds"]:
        return 1
    if not report.get("input_complete", True) and not allow_partial_input:
        return 3
    return 0


def committed_names(output: Output, plan) -> set[str]:
    """Tables whose commit of this execution landed (checked in the log, not assumed)."""
    from deltalake import DeltaTable

    done = set()
    for name in plan.todo:
        if not DeltaTable.is_deltatable(output.uri(name), output.storage_options):
            continue  # not even created
        if DeltaTable(output.uri(name), storage_options=output.storage_options).transaction_version(
                plan.app_id) == plan.execution:
            done.add(name)
    return done


def write_report(out: str, report: dict, latest: bool) -> None:
    """_reports/<run_id>.json, then (replacing runs) _report.json: after the commits, so a report
    only ever names versions that exist. Each file appears whole (temporary name + replace locally;
    a single PUT on object stores)."""
    text = json.dumps(report, indent=2, sort_keys=False)
    targets = [join(out, REPORTS, f"{report['run_id']}.json")] + ([join(out, REPORT)] if latest else [])
    for target in targets:
        if is_remote(out):
            from pipeline.location import filesystem

            fs, path = filesystem(target)
            with fs.open_output_stream(path) as fh:
                fh.write(text.encode())
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{target}.tmp-{report['run_id']}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)


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
    # `extra` first: an --input-format in it applies to the --input options after it
    argv = list(extra or []) + [arg for f in files for arg in ("--input", glob_escape(f))] + ["--output", output]
    return run(argv)


def glob_escape(path: str) -> str:
    import glob

    return glob.escape(path)
