"""Command-line options of a sanitizing run, as a Beam PipelineOptions subclass."""

from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.cliparse import positive_int, suggest

DEFAULT_RUNNER = "FnApiRunner"  # in-process; never tries to download a runner binary


class SanitizerOptions(PipelineOptions):
    """--input/--output/--policy/--pseudonym-key-file/--as-of; any other Beam option passes through."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--input", action="append", default=None,
                            help="glob of .ndjson / .ndjson.gz files; repeat for several")
        parser.add_argument("--output", default=None,
                            help="output directory of Delta tables (local, or a mounted file system)")
        parser.add_argument("--policy", default=None, help="policy TOML file (default: the built-in policy)")
        parser.add_argument("--pseudonym-key-file", "--pseudonym_key_file", dest="pseudonym_key_file",
                            default=None, help="secret key for pseudonyms; without it a random per-run key is used")
        parser.add_argument("--as-of", "--as_of", dest="as_of", default=None,
                            help="RFC 3339 time retention and clock checks are measured against (default: now)")
        parser.add_argument("--withdrawals", default=None,
                            help="consent withdrawals: NDJSON or CSV with device_id, basis, withdrawn_at")
        parser.add_argument("--append", action="store_true", default=False,
                            help="add this run's files to --output instead of replacing it (used by --watch)")
        parser.add_argument("--slice-dates", "--slice_dates", dest="slice_dates", default=None,
                            help="replace only this event_date range of the output: FROM..TO or one day "
                                 "(YYYY-MM-DD); rows outside it fail the run")
        parser.add_argument("--replace-empty", "--replace_empty", dest="replace_empty", action="store_true",
                            default=False, help="let a run with no input records replace the output (or slice) "
                                                "with nothing; without it such a run commits nothing")
        parser.add_argument("--allow-partial-input", "--allow_partial_input", dest="allow_partial_input",
                            action="store_true", default=False,
                            help="exit 0 even when part of the input could not be read (damaged or unreadable "
                                 "files); the summary and the report still say so. Without it such a run exits 3")
        parser.add_argument("--input-format", "--input_format", dest="input_format", type=input_format,
                            default=None, metavar="FORMAT",
                            help="format of the --input options after it: contract (default), windows-events, "
                                 "ecs, ocsf, or auto (detected per line); see docs/input-formats.md")
        parser.add_argument("--consent-profile", "--consent_profile", dest="consent_profile", default=None,
                            metavar="FILE", help="TOML: the consent bases users accepted, per tenant or device "
                                                 "group, for records of a mapped --input-format (without it they "
                                                 "are dropped as consent_missing)")
        parser.add_argument("--batch-lines", "--batch_lines", dest="batch_lines", type=positive_int, default=20000,
                            help="lines per Beam element")


def parallelism(options: PipelineOptions) -> dict:
    """How a run is spread, for the report and summary: the local runner's mode and workers, or the
    Dask cluster; {} for remote runners (their own console says)."""
    import os

    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    runner = str(options.view_as(StandardOptions).runner or DEFAULT_RUNNER)
    if runner.endswith("DaskRunner"):
        from apache_beam.runners.dask.dask_runner import DaskOptions

        dask = options.view_as(DaskOptions)
        where = dask.address or dask.scheduler_file
        return {"mode": "dask", "cluster": where if where and not str(where).startswith("tcp://127.0.0.1")
                else "LocalCluster", "workers": os.cpu_count() if not dask.scheduler_file else None}
    if runner.rsplit(".", 1)[-1] in ("FnApiRunner", "DirectRunner", "SwitchingDirectRunner"):
        direct = options.view_as(DirectOptions)
        mode = direct.direct_running_mode or "in_memory"
        workers = 1 if mode == "in_memory" else (direct.direct_num_workers or os.cpu_count() or 1)
        return {"mode": mode, "workers": workers}
    return {}


def describe_parallelism(par: dict) -> str:
    """' (multi_processing, 2 workers)' for the summary line; '' when unknown."""
    if not par:
        return ""
    mode = "in-process" if par.get("mode") == "in_memory" else par.get("mode")
    if par.get("mode") == "dask":
        mode = f"Dask {par.get('cluster')}"
    workers = par.get("workers")
    return f" ({mode}, {workers} worker{'s' if workers != 1 else ''})" if workers else f" ({mode})"


def input_format(text: str) -> str:
    """argparse type of --input-format: one of the known formats (a near miss is named)."""
    from schemas.formats import INPUT_FORMATS

    if text in INPUT_FORMATS:
        return text
    hint = suggest(text, INPUT_FORMATS).replace(" (see --help for the options)", "")
    raise argparse.ArgumentTypeError(f"unknown input format {text!r}{hint} (known: {', '.join(INPUT_FORMATS)})")


_INPUT = ("--input",)
_FORMAT = ("--input-format", "--input_format")


def input_formats(argv: list[str]) -> list[str]:
    """The format of each --input of a command line, in order: the value of the nearest
    --input-format before it (contract when there is none). argparse keeps only the last
    value of an option, so the order is read from argv itself. A --input-format that no
    --input follows is refused: it would apply to nothing."""
    current, formats, pending = "contract", [], False
    i = 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if argv[i] == "--":
            break
        if name in _FORMAT or name in _INPUT:
            if not eq:
                value = argv[i + 1] if i + 1 < len(argv) else ""
                i += 1
            if name in _FORMAT:
                current, pending = value, True
            else:
                formats.append(current)
                pending = False
        i += 1
    if pending:
        raise ValueError("--input-format applies to the --input options after it; none follows the last one")
    return formats
