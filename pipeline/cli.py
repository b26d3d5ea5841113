"""The `telemetry-sanitizer` command line: subcommands, common options, exit codes.

    telemetry-sanitizer [run] --input GLOB --output DIR [options]   # `run` is the default
    telemetry-sanitizer watch LANDING_DIR --output DIR [options]    # also: --watch LANDING_DIR
    telemetry-sanitizer stream | sample | replay | explain | policy | schema | subject | maintain ...

Every expected failure ends with one line on stderr and an exit code from the table in
pipeline/cliparse.py (0 ok, 1 run failed, 2 bad usage or configuration, 3 partial input,
130 interrupted); `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.cliparse import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    exit_code_epilog,
    suggest,
)
from pipeline.logs import configure_logging, log_error

PROG = "telemetry-sanitizer"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass
class Common:
    """Options every subcommand takes (anywhere on the command line)."""

    debug: bool = False
    quiet: bool = False
    log_level: str | None = None
    log_format: str = "text"
    version: bool = False
    progress_interval: float = 10.0
    rest: list[str] = field(default_factory=list)


_FLAGS = {"--debug": "debug", "--quiet": "quiet", "-q": "quiet", "--version": "version"}
_VALUED = {"--log-level": "log_level", "--log-format": "log_format", "--progress-interval": "progress_interval"}


def split_common(argv: list[str]) -> Common:
    """Take the common options out of argv (before a `--`); the rest goes to the subcommand."""
    common = Common()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            common.rest.extend(argv[i:])
            break
        name, eq, value = arg.partition("=")
        if name in _FLAGS and not eq:
            setattr(common, _FLAGS[name], True)
            i += 1
            continue
        if name in _VALUED:
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError(f"{name}: expected a value")
                value = argv[i + 1]
                i += 1
            i += 1
            if name == "--log-level":
                if value.upper() not in LOG_LEVELS:
                    raise UsageError(f"--log-level {value}: choose from {', '.join(LOG_LEVELS)}")
                common.log_level = value.upper()
            elif name == "--log-format":
                if value not in ("text", "json"):
                    raise UsageError(f"--log-format {value}: choose from text, json")
                common.log_format = value
            else:
                from pipeline.cliparse import positive_float

                try:
                    common.progress_interval = positive_float(value)
                except argparse.ArgumentTypeError as exc:
                    raise UsageError(f"--progress-interval: {exc}") from None
            continue
        common.rest.append(arg)
        i += 1
    return common


def add_common(parser: argparse.ArgumentParser) -> None:
    """The common options, for --help (they are taken out of argv before a subcommand parses)."""
    group = parser.add_argument_group("common options (any subcommand)")
    group.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress and no warnings on stderr")
    group.add_argument("--log-level", choices=LOG_LEVELS, metavar="LEVEL",
                       help="DEBUG, INFO, WARNING (default; also Beam's own logs) or ERROR")
    group.add_argument("--log-format", choices=("text", "json"), default="text",
                       help="text (default) or json: one JSON object per log line on stderr")
    group.add_argument("--progress-interval", metavar="SECONDS", type=float, default=10.0,
                       help="seconds between progress lines when stderr is not a terminal (default 10)")
    group.add_argument("--version", action="store_true", help="print the version and exit")


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(PROG)
    except PackageNotFoundError:
        from pipeline import __version__

        return __version__


# ------------------------------------------------------------------ commands


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    target: str  # "module:function" taking (argv, common) or a module whose main(argv) parses itself


def _commands() -> dict[str, Command]:
    cmds = [
        Command("run", "sanitize NDJSON input into the per-type output tables (the default command)",
                "pipeline.commands:run_command"),
        Command("watch", "continuous local mode: run micro-batches over files landing in a directory",
                "pipeline.commands:watch_command"),
        Command("stream", "streaming job on Pub/Sub or Kafka in fixed windows (Dataflow, Flink)",
                "pipeline.commands:stream_command"),
        Command("sample", "write realistic, dirty synthetic telemetry", "pipeline.sample"),
        Command("replay", "write telemetry into a landing directory at a controlled pace", "pipeline.replay"),
        Command("explain", "show, per record and field, what each rule does", "pipeline.explain"),
        Command("policy", "print the enforced policy as Markdown", "pipeline.policy_doc"),
        Command("formats", "print the Windows / ECS / OCSF input mappings as Markdown", "pipeline.formats_doc"),
        Command("schema", "print each record type's output schema (table, JSON or SQL DDL)", "pipeline.schema_cmd"),
        Command("subject", "data-subject rights on an output: export or erase one subject's rows",
                "pipeline.subject"),
    ]
    if importlib.util.find_spec("pipeline.maintain") is not None:
        cmds.append(Command("maintain", "table maintenance of an output (compaction, vacuum, ...)",
                            "pipeline.maintain"))
    return {c.name: c for c in cmds}


def overview() -> str:
    cmds = _commands()
    width = max(map(len, cmds))
    lines = [
        f"usage: {PROG} [run] --input GLOB --output DIR [options]",
        f"       {PROG} COMMAND [options]      ({PROG} COMMAND --help for its options and an example)",
        "",
        "Sanitizes endpoint-security telemetry (NDJSON) into privacy-safe per-type tables, as the policy says.",
        "",
        "commands:",
        *(f"  {c.name:<{width}}  {c.summary}" for c in cmds.values()),
        "",
        "example:",
        f"  {PROG} --input 'landing/*.ndjson.gz' --output out --pseudonym-key-file /etc/telemetry/pseudonym.key",
        "",
        "common options: --debug, --quiet, --log-level LEVEL, --log-format text|json, --progress-interval S, "
        "--version",
        "",
        exit_code_epilog(),
    ]
    return "\n".join(lines) + "\n"


def _resolve(argv: list[str]) -> tuple[Command, list[str]]:
    cmds = _commands()
    if argv and not argv[0].startswith("-"):
        name = argv[0]
        if name not in cmds:
            raise UsageError(f"unknown command {name!r}" + suggest(name, cmds).replace(
                "see --help for the options", f"commands: {', '.join(cmds)}"))
        return cmds[name], argv[1:]
    if any(a == "--watch" or a.startswith("--watch=") for a in argv):
        return cmds["watch"], argv
    return cmds["run"], argv


def _option_value(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in names:
            return value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    return None


def _check_data_key(argv: list[str]) -> None:
    """subject / maintain with a key: it must be the key the data was written with (exit 2)."""
    if "-h" in argv or "--help" in argv:
        return
    data = _option_value(argv, "--data")
    key_file = _option_value(argv, "--pseudonym-key-file", "--pseudonym_key_file")
    if not data or not key_file or not os.path.isdir(data):
        return
    from pipeline.commands import check_output_key

    check_output_key(data, key_file)


def _call(command: Command, argv: list[str], common: Common) -> int:
    if command.name in ("subject", "maintain"):
        _check_data_key(argv)
    module_name, _, func = command.target.partition(":")
    module = importlib.import_module(module_name)
    if func:
        fn: Callable[[list[str], Common], int] = getattr(module, func)
        return fn(argv, common)
    return module.main(argv)


# ------------------------------------------------------------------ exit handling


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            return f"no space left on device{where}; nothing of this run was published"
        return f"{exc.strerror or exc}{where}"
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0] if text else ''}".rstrip(": ")


def _os_error_in_chain(exc: BaseException) -> OSError | None:
    """Beam wraps a worker's exception; find the OSError (e.g. ENOSPC) it started from."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 20:
        if isinstance(cur, OSError) and not isinstance(cur, BrokenPipeError):
            return cur
        cur = cur.__cause__ or cur.__context__
        seen += 1
    if "No space left on device" in str(exc):
        return OSError(errno.ENOSPC, "No space left on device")
    return None


def _quiet_stdout() -> None:
    """After a reader closed our stdout (`| head -1`): send the rest to /dev/null so that the
    interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


_interrupted: list[bool] = [False]


def _on_sigint(signum: int, frame: object) -> None:
    """SIGINT: remember it (Beam re-wraps the KeyboardInterrupt as a RuntimeError) and silence
    the logs, which would otherwise show each worker's interrupted stack."""
    _interrupted[0] = True
    if not _state["debug"]:
        logging.disable(logging.CRITICAL)
    raise KeyboardInterrupt


_state: dict[str, bool] = {"debug": False}


def interrupted() -> bool:
    """Whether SIGINT arrived during the current command."""
    return _interrupted[0]


def _was_interrupted(exc: BaseException) -> bool:
    if _interrupted[0]:
        return True
    cur: BaseException | None = exc
    for _ in range(20):
        if cur is None:
            return False
        if isinstance(cur, KeyboardInterrupt) or "KeyboardInterrupt" in str(cur).split("\n", 1)[0]:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def main(argv: list[str] | None = None) -> int:
    """Entry point of `telemetry-sanitizer` and `python -m pipeline`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _state["debug"] = "--debug" in argv
    _interrupted[0] = False
    previous = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        return _main(argv, debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        logging.disable(logging.NOTSET)
        from pipeline.logs import JsonLines

        if isinstance(sys.stderr, JsonLines):
            sys.stderr.flush()
            sys.stderr = sys.stderr.stream


def _main(argv: list[str], debug: bool) -> int:
    try:
        common = split_common(argv)
        if common.version:
            print(f"{PROG} {version()}")
            return EXIT_OK
        if not common.rest:
            sys.stderr.write(overview())
            return EXIT_USAGE
        if common.rest[0] in ("-h", "--help", "help"):
            sys.stdout.write(overview())
            return EXIT_OK
        configure_logging(common.log_level, common.log_format, common.quiet, common.debug)
        command, rest = _resolve(common.rest)
        code = _call(command, rest, common)
        sys.stdout.flush()
        return code
    except UsageError as exc:
        log_error(str(exc))
        return EXIT_USAGE
    except SystemExit as exc:  # argparse: --help (0) or a usage error already printed (2)
        status = exc.code
        return status if isinstance(status, int) else (EXIT_OK if status is None else EXIT_USAGE)
    except KeyboardInterrupt:
        if debug:
            raise
        log_error("interrupted; nothing of the interrupted run was published")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()  # the reader has what it wanted (`| head`); not an error
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - one line, exit 1; --debug shows the traceback
        if debug:
            raise
        if _was_interrupted(exc):
            log_error("interrupted; nothing of the interrupted run was published")
            return EXIT_INTERRUPTED
        os_error = _os_error_in_chain(exc)
        log_error(f"run failed: {_one_line(os_error or exc)} (--debug shows the traceback)")
        return EXIT_FAILED


def parser_for(command: str) -> argparse.ArgumentParser:
    """The full parser of a subcommand (used by --help and the tests)."""
    from pipeline import commands

    builders: dict[str, Callable[[], argparse.ArgumentParser]] = {
        "run": commands.run_parser, "watch": commands.watch_parser, "stream": commands.stream_parser,
    }
    if command in builders:
        return builders[command]()
    module = importlib.import_module(_commands()[command].target)
    return module.build_parser()

