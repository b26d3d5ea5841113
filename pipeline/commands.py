"""The Beam-backed subcommands (run, watch, stream): full parsers for --help and validation.

These commands hand their argv to Beam's PipelineOptions, which silently drops what it does
not know. So the whole command line is checked here first: this project's options by their
parser (with value checks), everything else against the option names of every loaded
PipelineOptions class. Only then does the command start, so a typo never writes anything.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pipeline.cliparse import (
    Parser,
    UsageError,
    check_beam_args,
    exit_code_epilog,
    option_strings,
)

if TYPE_CHECKING:
    from pipeline.cli import Common

PROG = "telemetry-sanitizer"

BEAM_HELP = """\
Beam options (any option of Beam's PipelineOptions is accepted; a misspelt one is an error):
  --runner NAME          FnApiRunner (in-process, default), DirectRunner, DaskRunner, DataflowRunner, ...
  --direct_num_workers N / --direct_running_mode in_memory|multi_threading|multi_processing
                         parallelism of the local runner (see docs/performance.md for the default)
"""


def _epilog(example: str, beam: bool = True) -> str:
    return "example:\n" + example + "\n\n" + (BEAM_HELP + "\n" if beam else "") + exit_code_epilog()


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    from pipeline.options import SanitizerOptions

    group = parser.add_argument_group("run options")
    SanitizerOptions._add_argparse_args(group)


def run_parser() -> argparse.ArgumentParser:
    from pipeline.cli import add_common

    parser = Parser(
        prog=f"{PROG} run",
        description="Sanitize NDJSON telemetry into one output table per record type, a quarantine and a "
                    "run report (DIR/_report.json). `run` is the default command: "
                    f"`{PROG} --input ...` is the same as `{PROG} run --input ...`.",
        epilog=_epilog(f"  {PROG} run --input 'sample/*.ndjson' --input 'sample/*.ndjson.gz' --output out \\\n"
                       "      --pseudonym-key-file sample/dev-pseudonym.key --as-of 2026-11-25T00:00:00Z"))
    _add_run_options(parser)
    add_common(parser)
    return parser


def watch_parser() -> argparse.ArgumentParser:
    from pipeline.cli import add_common
    from pipeline.watch import add_watch_arguments

    parser = Parser(
        prog=f"{PROG} watch",
        conflict_handler="resolve",
        description="Continuous local mode: claim closed files that land in LANDING_DIR and run them as "
                    "micro-batches appended to --output; runs until SIGINT/SIGTERM or --idle-timeout. "
                    f"`{PROG} --watch LANDING_DIR ...` is the same command. Any run option applies to "
                    "every batch.",
        epilog=_epilog(f"  {PROG} watch /data/landing --output /data/out \\\n"
                       "      --pseudonym-key-file /etc/telemetry/pseudonym.key --idle-timeout 60"))
    _add_run_options(parser)
    group = parser.add_argument_group("watch options")
    add_watch_arguments(group)
    add_common(parser)
    return parser


def stream_parser() -> argparse.ArgumentParser:
    from pipeline.cli import add_common
    from pipeline.streaming import StreamingOptions

    parser = Parser(
        prog=f"{PROG} stream",
        description="Streaming job: the same sanitizing over Pub/Sub or Kafka, in fixed windows, on a runner "
                    "that fires windows while the source runs (Dataflow, Flink).",
        epilog=_epilog(f"  {PROG} stream --kafka-bootstrap broker:9092 --kafka-topic telemetry \\\n"
                       "      --output /mnt/telemetry-clean --pseudonym-key-file key --runner FlinkRunner"))
    _add_run_options(parser)
    StreamingOptions._add_argparse_args(parser.add_argument_group("stream options"))
    add_common(parser)
    return parser


def validate(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, argparse.Namespace]:
    """(our options, Beam's options); a bad or unknown option raises UsageError (one line)."""
    ns, rest = parser.parse_known_args(argv)
    return ns, check_beam_args(rest, option_strings(parser))


@contextlib.contextmanager
def cleaned_up_on_failure(output: str | None) -> Iterator[list[int]]:
    """After a failed or interrupted run: remove the staging directory it left (a SIGINT can land
    between its creation and the run's own clean-up) and the output directory when this command
    created it and it is empty again."""
    existed = output is None or os.path.lexists(output)
    staged_before = _staging_dirs(output)
    result: list[int] = []
    try:
        yield result
    except BaseException:
        _remove_leftovers(output, existed, staged_before)
        raise
    if result and result[0] != 0:
        _remove_leftovers(output, existed, staged_before)


def _staging_dirs(output: str | None) -> set[str]:
    if output is None or not os.path.isdir(output):
        return set()
    return {n for n in os.listdir(output) if n.startswith(".staging-")}


def _remove_leftovers(output: str | None, existed: bool, staged_before: set[str]) -> None:
    if output is None:
        return
    import shutil

    for name in _staging_dirs(output) - staged_before:
        shutil.rmtree(os.path.join(output, name), ignore_errors=True)
    if not existed:
        from pipeline.lease import COMMIT_LOCK, LEASE_FILE

        with contextlib.suppress(OSError):
            if set(os.listdir(output)) <= {LEASE_FILE, COMMIT_LOCK}:  # the run's own lock files only
                for name in os.listdir(output):
                    os.remove(os.path.join(output, name))
            os.rmdir(output)


def run_command(argv: list[str], common: Common) -> int:
    """`telemetry-sanitizer [run] ...`."""
    ns, beam_ns = validate(run_parser(), argv)
    files = _inputs(ns.input)
    if ns.output and os.path.isdir(ns.output):
        check_output_key(ns.output, ns.pseudonym_key_file)
    argv = [*argv, *machine_defaults(argv, files)]
    beam_ns = check_beam_args(_beam_part(argv), option_strings(run_parser()))
    from pipeline.progress import Progress
    from pipeline.run import run

    with cleaned_up_on_failure(ns.output) as result, quiet_workers(beam_ns, common), \
            Progress(files, _progress_dir(), common.progress_interval, enabled=not common.quiet and bool(files),
                     json_lines=common.log_format == "json"):
        result.append(run(argv))
    return result[0]


def _beam_part(argv: list[str]) -> list[str]:
    _, rest = run_parser().parse_known_args(argv)
    return rest


def _progress_dir() -> str:
    import tempfile

    return tempfile.gettempdir()


def _inputs(patterns: list[str] | None) -> list[str]:
    """The input files, or [] when the globs are bad (the run then says so, exit 2)."""
    from pipeline.files import InputError, expand_inputs

    try:
        return expand_inputs(patterns) if patterns else []
    except InputError:
        return []


def check_output_key(output: str, key_file: str | None) -> None:
    """Refuse a key that is not the one the existing output was written with (exit 2)."""
    from pipeline.keycheck import KeyMismatchError, check_key
    from pipeline.run import ConfigError, load_key

    try:
        key = load_key(key_file)[0] if key_file else None
    except ConfigError:
        return  # the run reports an unreadable key file itself
    try:
        check_key(output, key)
    except KeyMismatchError as exc:
        raise UsageError(str(exc)) from None


LOCAL_RUNNER_OPTIONS = ("--runner", "--direct_num_workers", "--direct_running_mode")


def machine_defaults(argv: list[str], files: list[str]) -> list[str]:
    """Options that make the default run use every core (docs/performance.md has the numbers):
    multi-processing with one worker per core, when nothing about the runner was given and the
    input is at least two chunks' worth (64 MB) in at least two chunks; in-process otherwise
    (starting the workers costs a few seconds, more than a small input takes in-process)."""
    from pipeline.reading import CHUNK_BYTES

    if any(a.split("=", 1)[0] in LOCAL_RUNNER_OPTIONS for a in argv):
        return []
    if _total_bytes(files) < 2 * CHUNK_BYTES:
        return []
    workers = min(os.cpu_count() or 1, _chunks(files))
    if workers < 2:
        return []
    return [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]


def _total_bytes(files: list[str]) -> int:
    total = 0
    for path in files:
        try:
            total += os.path.getsize(path)
        except OSError:
            continue
    return total


def _chunks(files: list[str]) -> int:
    """Chunks the reader can spread over workers: plain files are cut every CHUNK_BYTES, a
    gzip file (by its name: the input is not read here) is one chunk."""
    from pipeline.reading import CHUNK_BYTES

    count = 0
    for path in files:
        try:
            count += 1 if path.endswith(".gz") else max(1, -(-os.path.getsize(path) // CHUNK_BYTES))
        except OSError:
            count += 1
    return count


def quiet_workers(beam_ns: argparse.Namespace, common: Common) -> contextlib.AbstractContextManager:
    """Filter the stderr of Beam's worker processes when the run has any (see worker_logs)."""
    runner = str(getattr(beam_ns, "runner", None) or "")
    if getattr(beam_ns, "direct_running_mode", None) != "multi_processing" and "dask" not in runner.lower():
        return contextlib.nullcontext()
    from pipeline import cli
    from pipeline.worker_logs import filtered_stderr

    verbose = common.log_level in ("DEBUG", "INFO")
    return filtered_stderr(verbose, lambda: cli.interrupted() and not common.debug,
                           json_lines=common.log_format == "json")


def watch_command(argv: list[str], common: Common) -> int:
    """`telemetry-sanitizer watch LANDING_DIR ...` (or `--watch LANDING_DIR`)."""
    if argv and not argv[0].startswith("-"):
        argv = ["--watch", argv[0], *argv[1:]]
    parser = watch_parser()
    ns, _ = validate(parser, argv)
    if ns.idle_timeout is not None and ns.idle_timeout < 0:
        raise UsageError(f"--idle-timeout {ns.idle_timeout}: must be >= 0")
    if ns.output and os.path.isdir(ns.output):
        check_output_key(ns.output, ns.pseudonym_key_file)
    from pipeline.watch import main as watch_main

    return watch_main(argv)


def stream_command(argv: list[str], common: Common) -> int:
    """`telemetry-sanitizer stream ...`."""
    ns, _ = validate(stream_parser(), argv)
    if ns.input_format or ns.consent_profile:  # accepted by the shared run options, never silently ignored
        raise UsageError("stream reads the contract's format only; --input-format and --consent-profile "
                         "apply to run and watch")
    from pipeline.streaming import main as stream_main

    return stream_main(argv)
