"""Argument parsing shared by every subcommand: one-line errors with a suggestion, value checks,
Beam's own option names, and the exit codes.

A misspelt option must never be ignored (a run without `--withdrawals` or with a random key
instead of the key file would look like a success), so every parser here rejects what it
does not know, with exit code 2 and one line naming the option and the closest known one.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

# The exit codes, used by every subcommand (docs/operations.md has the same table).
EXIT_OK = 0           # the command did what it was asked
EXIT_FAILED = 1       # the run failed: an I/O error, a full disk, counts that do not reconcile
EXIT_USAGE = 2        # bad usage or configuration: nothing was written
EXIT_PARTIAL = 3      # partial input: some input could not be read completely (the report says which)
EXIT_NOT_COMMITTED = 4  # the output could not be wholly committed (pipeline.commit.CommitError)
EXIT_INTERRUPTED = 130  # SIGINT / Ctrl-C: nothing of the interrupted run was published

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success"),
    (EXIT_FAILED, "the run failed (I/O error, full disk, counts that do not reconcile, runner error)"),
    (EXIT_USAGE, "bad usage or configuration (unknown option, bad value, policy, key, input glob); nothing written"),
    (EXIT_PARTIAL, "partial input: some input could not be read completely; what was read is published"),
    (EXIT_NOT_COMMITTED, "the output could not be wholly committed (one line naming the table; a re-run completes it)"),
    (EXIT_INTERRUPTED, "interrupted (SIGINT / Ctrl-C); nothing of the interrupted run is published"),
)


def exit_code_table() -> str:
    """The exit codes as a Markdown table (for --help epilogs and the docs)."""
    return "\n".join(["| code | meaning |", "|---|---|", *(f"| {c} | {m} |" for c, m in EXIT_CODES)])


def exit_code_epilog() -> str:
    return "exit codes:\n" + "\n".join(f"  {c:<4} {m}" for c, m in EXIT_CODES)


class UsageError(ValueError):
    """A bad command line: reported as one line, exit code 2."""


def suggest(name: str, known: Iterable[str]) -> str:
    """' (did you mean --x?)' for the closest known spelling of `name`, else a pointer to --help."""
    candidates = sorted(set(known))
    dashed = {c.replace("_", "-") for c in candidates if "-" in c[2:]}
    candidates = [c for c in candidates if "_" not in c or c.replace("_", "-") not in dashed]  # --as-of, not --as_of
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not match:  # e.g. --asof vs --as-of: compare without separators too
        squashed = {c.replace("-", "").replace("_", ""): c for c in candidates}
        hit = difflib.get_close_matches(name.replace("-", "").replace("_", ""), list(squashed), n=1, cutoff=0.6)
        match = [squashed[hit[0]]] if hit else []
    return f" (did you mean {match[0]}?)" if match else " (see --help for the options)"


def unknown_message(extras: Sequence[str], known: Iterable[str]) -> str:
    """One line about the first argument nobody recognised."""
    known = list(known)
    for arg in extras:
        if arg.startswith("-") and arg != "-":
            name = arg.split("=", 1)[0]
            return f"unknown option {name}" + suggest(name, known)
    return f"unexpected argument {extras[0]!r} (see --help)"


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string of a parser and of its subcommands' parsers."""
    found: list[str] = []
    for action in parser._actions:
        found.extend(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.extend(option_strings(sub))
    return found


class Parser(argparse.ArgumentParser):
    """argparse with exact option names only (no abbreviations), unknown options rejected, and
    errors as one line on stderr with exit code 2 instead of a usage block."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        argv = list(sys.argv[1:] if args is None else args)
        known = option_strings(self)
        for arg in argv:  # an unknown option first: it often explains a "required" error
            if arg == "--":
                break
            if arg.startswith("--") and arg.split("=", 1)[0] not in known:
                self.error(unknown_message([arg], known))
        ns, extras = self.parse_known_args(argv, namespace)
        if extras:
            self.error(unknown_message(extras, option_strings(self)))
        return ns


# ------------------------------------------------------------------ value types


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} must be at least {least}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _whole_number(text, 0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a number greater than 0")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a number of at least 0")
    return value


# ------------------------------------------------------------------ Beam's options


def _all_option_classes() -> list[type]:
    from apache_beam.options.pipeline_options import PipelineOptions

    seen: dict[str, type] = {}
    todo: list[type] = list(PipelineOptions.__subclasses__())
    while todo:
        cls = todo.pop(0)
        seen.setdefault(f"{cls.__module__}.{cls.__qualname__}", cls)
        todo.extend(cls.__subclasses__())
    return list(seen.values())


def beam_parser() -> argparse.ArgumentParser:
    """A parser that knows every option of every PipelineOptions subclass loaded (Beam's own,
    this project's, and a runner's once its module is imported), like Beam's get_all_options."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    class _Strict(_BeamArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise UsageError(message)

    parser = _Strict(allow_abbrev=False, add_help=False)
    for cls in _all_option_classes():
        try:
            cls._add_argparse_args(parser)  # type: ignore[attr-defined]
        except argparse.ArgumentError:  # an option class loaded twice under two names
            continue
    return parser


def _load_runner_options(args: Sequence[str]) -> None:
    """Import the Dask runner's options when they are used, so their names are known."""
    if any(a.startswith("--dask") for a in args) or any("dask" in a.lower() for a in args if "runner" in a):
        try:
            import apache_beam.runners.dask.dask_runner  # noqa: F401
        except ImportError:
            pass


def check_beam_args(args: Sequence[str], ours: Iterable[str] = ()) -> argparse.Namespace:
    """Check the options our parser did not take against Beam's option names and values; the
    runner name must be one Beam knows. Raises UsageError with one line."""
    args = list(args)
    _load_runner_options(args)
    parser = beam_parser()
    ns, unknown = parser.parse_known_args(args)
    if unknown:
        raise UsageError(unknown_message(unknown, [*option_strings(parser), *ours]))
    runner = getattr(ns, "runner", None)
    if runner:
        check_runner(runner)
    workers = getattr(ns, "direct_num_workers", None)
    if workers is not None and workers < 0:
        raise UsageError(f"--direct_num_workers {workers}: must be 0 (all cores) or more")
    return ns


def check_runner(name: str) -> None:
    """A runner name Beam can create: one of its known names or an importable class path."""
    from apache_beam.options.pipeline_options import StandardOptions

    known = [*StandardOptions.KNOWN_RUNNER_NAMES, "DaskRunner"]
    lowered = {k.lower(): k for k in known}
    if name.lower() in lowered or name.lower() + "runner" in lowered:
        return
    if "." in name:
        import importlib

        module, _, cls = name.rpartition(".")
        try:
            if hasattr(importlib.import_module(module), cls):
                return
        except ImportError:
            pass
        raise UsageError(f"--runner {name}: cannot import this runner class")
    raise UsageError(f"--runner {name}: unknown runner" + suggest(name, known).replace(" (see --help for the "
                                                                                       "options)", "")
                     + f" (known: {', '.join(sorted(known))})")


def parse_or_code(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace | int:
    """Parsed options, or the exit code argparse chose: 0 after --help, 2 after a usage error
    (already printed as one line), so a subcommand's main can return it without a traceback."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
