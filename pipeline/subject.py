"""`python -m pipeline subject`: data subjects' rights (POLICY.md promise 8) on a run's output.

    python -m pipeline subject export --id RAW_ID --data DIR --output OUT_DIR --pseudonym-key-file F
    python -m pipeline subject erase  --id RAW_ID --data DIR --pseudonym-key-file F [--dry-run]

The output holds no raw identifiers, only keyed pseudonyms, so the run's key is
needed to find a person's rows: the pseudonyms of RAW_ID are recomputed for
every kind that names a person (device, user, email) and matched against each
output column the policy fills with a pseudonym of that kind.

Both read every Delta table of the output (data, locked, quarantine) at its current
version: files on disk the table log does not name are never read. `export` writes
every matching row as JSON Lines, one file per type, plus a manifest. `erase`
(pipeline/erase.py) rewrites the partitions holding the subject's rows in one commit
per table, vacuums every table and checks its log (docs/erasure-and-maintenance.md).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import operator
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import reduce
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from pipeline.housekeeping import BusyError
from pipeline.location import Location
from pipeline.run import ConfigError, load_key
from pipeline.tables import DELTA_LOG, REPORT, REPORTS, list_tables, record_type_of, refused, table_kind
from schemas.policy import PARTITION_COLUMNS, Policy, PolicyError, load_policy
from transforms.pseudonym import Pseudonymizer

SUBJECT_KINDS = ("device", "user", "email")


class SubjectError(ConfigError):
    """A request that cannot be carried out as given; one line, exit code 2."""


class DataFileError(Exception):
    """A Parquet file of the output cannot be read, so the request cannot be completed; exit code 1."""


# ----------------------------------------------------------------- matching


def id_hash(key: bytes, raw_id: str) -> str:
    """Keyed hash naming the subject in manifests and logs; without the key it cannot be guessed back."""
    return hmac.new(key, b"subject:" + raw_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]


def candidate_pseudonyms(key: bytes, raw_id: str) -> dict[str, list[str]]:
    """Pseudonyms RAW_ID gets per kind, computed exactly as the pipeline does (value as given);
    e-mail addresses are also tried lower-cased."""
    pz = Pseudonymizer(key)
    out = {}
    for kind in SUBJECT_KINDS:
        values = {raw_id, raw_id.lower()} if kind == "email" else {raw_id}
        out[kind] = sorted({pz(kind, v) for v in values})
    return out


def subject_columns(policy: Policy, type_name: str | None) -> dict[str, str]:
    """Output column -> pseudonym kind, for the columns that can name a person in files of a type.

    Types the policy does not know (output of an older policy) are matched on the envelope only.
    """
    rules = list(policy.envelope)
    if type_name in policy.types:
        rules += policy.types[type_name].fields
    cols = {}
    for rule in rules:
        if rule.transform == "pseudonym" and rule.kind in SUBJECT_KINDS:
            cols[rule.output_columns()[0].name] = rule.kind
    return cols


@dataclass(frozen=True)
class TableRef:
    name: str                # 'dns', '_locked/dns', '_quarantine' (pipeline.tables names)
    path: str                # the table's location (a local path or an s3:// or abfss:// URI)
    record_type: str | None  # None for the quarantine
    locked: bool
    storage_options: tuple[tuple[str, str], ...] = ()

    @property
    def options(self) -> dict[str, str] | None:
        return dict(self.storage_options) or None


def iter_tables(data: Location) -> list[TableRef]:
    """Every Delta table of the output: data, locked and quarantine. A type directory without a
    table log is output of an older version (plain Parquet) and stops the request: its rows could
    not be erased with the guarantees of a table."""
    for name in data.dirs():
        if (_is_data_name(name) and not data.is_dir(name, DELTA_LOG)
                and any(f.endswith(".parquet") for f in data.files(name))):
            raise SubjectError(f"--data {data}: {name}/ is not a Delta table (output of an older "
                               "version); re-run the pipeline into a new directory")
    options = tuple(sorted((data.storage_options or {}).items()))
    refs = []
    for name in list_tables(data.location, data.storage_options):
        kind = table_kind(name)
        refs.append(TableRef(name, data.uri(name), record_type_of(name), kind == "locked", options))
    return refs


def _is_data_name(name: str) -> bool:
    return not name.startswith((".", "_"))


def _mask(table: pa.Table, columns: dict[str, str], candidates: dict[str, list[str]]) -> pa.Array:
    masks = [pc.is_in(table.column(c), value_set=pa.array(candidates[k], pa.string())) for c, k in columns.items()]
    mask = reduce(pc.or_, masks)
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    return pc.fill_null(mask, False)


def open_table(ref: TableRef) -> tuple[DeltaTable, pads.Dataset]:
    """The table at its current version, and a dataset of exactly the files that version names
    (files on disk that the log does not name are never read)."""
    try:
        dt = DeltaTable(ref.path, storage_options=ref.options)
        return dt, dt.to_pyarrow_dataset()
    except (DeltaError, pa.ArrowException, OSError) as exc:
        raise DataFileError(f"{ref.path}: cannot read the table: {exc.__class__.__name__}: {exc}") from None


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def partition_predicate(hits: pa.Table) -> tuple[str, pc.Expression]:
    """SQL predicate (for a commit) and dataset expression (for reading) naming exactly the
    partitions of the rows in `hits`: partition columns only, never a row's value."""
    parts = sorted(set(zip(*(hits.column(c).to_pylist() for c in PARTITION_COLUMNS), strict=True)),
                   key=lambda p: tuple("" if v is None else v for v in p))
    sql, exprs = [], []
    for values in parts:
        terms, ex = [], []
        for col, value in zip(PARTITION_COLUMNS, values, strict=True):
            terms.append(f"{col} IS NULL" if value is None else f"{col} = {_quote(value)}")
            ex.append(pc.field(col).is_null() if value is None else pc.field(col) == value)
        sql.append("(" + " AND ".join(terms) + ")")
        exprs.append(reduce(operator.and_, ex))
    return " OR ".join(sql), reduce(operator.or_, exprs)


def find_rows(ref: TableRef, dataset: pads.Dataset, policy: Policy, candidates: dict[str, list[str]],
              columns: list[str] | None = None) -> pa.Table | None:
    """The subject's rows (only `columns` if given); None when the table has no column naming a person.

    The pseudonym and partition columns are read first; whole rows only from the partitions
    holding a match. The match is done in memory: a filter pushed into the dataset is also
    tested against the file statistics the table log may hold, and pyarrow has no kernel for
    some of those types (string_view)."""
    present = set(dataset.schema.names)
    match = {c: k for c, k in subject_columns(policy, ref.record_type).items() if c in present}
    if not match:
        return None
    keys = [c for c in PARTITION_COLUMNS if c in present]
    try:
        narrow = dataset.to_table(columns=list(dict.fromkeys([*match, *keys, *(columns or [])])))
        hits = narrow.filter(_mask(narrow, match, candidates))
        if columns is not None or not hits.num_rows:
            return hits.select(columns) if columns is not None else hits
        full = dataset.to_table(filter=partition_predicate(hits)[1] if len(keys) == len(PARTITION_COLUMNS) else None)
        return full.filter(_mask(full, match, candidates))
    except (pa.ArrowException, OSError) as exc:
        raise DataFileError(f"{ref.path}: cannot read: {exc.__class__.__name__}: {exc}") from None


# ----------------------------------------------------------------- shared setup


@dataclass
class Request:
    policy: Policy
    key: bytes
    raw_id: str
    data: Location
    report: dict[str, Any]
    candidates: dict[str, list[str]] = field(init=False)
    subject: str = field(init=False)

    def __post_init__(self) -> None:
        self.candidates = candidate_pseudonyms(self.key, self.raw_id)
        self.subject = id_hash(self.key, self.raw_id)


def _read_id(value: str) -> str:
    if value == "-":
        value = sys.stdin.readline().rstrip("\r\n")
    if not value.strip():
        raise SubjectError("--id is empty (give the raw device id, user id or e-mail address; '-' reads stdin)")
    return value


def prepare(args: argparse.Namespace) -> Request:
    if not args.pseudonym_key_file:
        raise SubjectError("--pseudonym-key-file is required: without the run's key the pseudonyms of the id "
                           "cannot be recomputed")
    key, _mode = load_key(args.pseudonym_key_file)
    if refused("--data", args.data):
        raise SubjectError(str(refused("--data", args.data)))
    data = Location(args.data)
    try:
        if not data.is_dir():
            raise SubjectError(f"--data {data}: not a directory")
        # A replacing run leaves _report.json; runs in append mode (--watch) keep theirs under _reports/.
        report_paths = [REPORT] if data.exists(REPORT) else [
            p for p in data.files(REPORTS) if p.count("/") == 1 and p.endswith(".json")]
    except OSError as exc:
        raise SubjectError(f"--data {data}: cannot read: {str(exc).strip().splitlines()[0]}") from None
    if not report_paths:
        raise SubjectError(f"--data {data}: no _report.json, so this is not the output of a pipeline run")
    reports = []
    for path in report_paths:
        try:
            reports.append(json.loads(data.read(path).decode("utf-8")))
        except (OSError, ValueError) as exc:
            raise SubjectError(f"{data.uri(path)}: cannot read the run report: {exc}") from None
    if any(r.get("key", {}).get("linkable_across_runs") is False for r in reports):
        raise SubjectError(f"--data {data}: written with a random per-run key; its pseudonyms cannot be "
                           "linked to any id")
    report = reports[-1]
    policy = load_policy(args.policy)
    run_sha = report.get("policy", {}).get("sha256")
    if run_sha and run_sha != policy.sha256:
        print(f"note: the run used policy {report['policy'].get('version')} ({run_sha[:12]}), this is "
              f"{policy.version} ({policy.sha256[:12]}); pseudonym columns are taken from the latter",
              file=sys.stderr)
    return Request(policy, key, _read_id(args.id), data, report)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ----------------------------------------------------------------- export


def export(req: Request, out_dir: Path) -> dict[str, Any]:
    """Write OUT_DIR/<type>.jsonl and OUT_DIR/manifest.json from each table's current version;
    returns the manifest."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise SubjectError(f"--output {out_dir}: exists and is not an empty directory")
    if not req.data.remote and out_dir.resolve().is_relative_to(Path(req.data.location).resolve()):
        raise SubjectError(f"--output {out_dir}: must not be inside --data")
    refs = iter_tables(req.data)
    created = not out_dir.exists()
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    counts: Counter = Counter()
    locked_counts: Counter = Counter()
    versions: dict[str, int] = {}
    handles: dict[str, Any] = {}
    done = False
    try:
        for ref in refs:
            dt, dataset = open_table(ref)
            versions[ref.name] = dt.version()
            rows = find_rows(ref, dataset, req.policy, req.candidates)
            if rows is None or not rows.num_rows or ref.record_type is None:
                continue
            fh = handles.get(ref.record_type)
            if fh is None:
                fh = handles[ref.record_type] = open(out_dir / f"{ref.record_type}.jsonl", "w", encoding="utf-8")
            for row in rows.to_pylist():
                row["_locked"] = ref.locked
                fh.write(json.dumps(row, default=_jsonable, ensure_ascii=False) + "\n")
            counts[ref.record_type] += rows.num_rows
            if ref.locked:
                locked_counts[ref.record_type] += rows.num_rows
        done = True
    finally:
        for fh in handles.values():
            fh.close()
        if not done:  # no partial copy of personal data is left behind
            for name in handles:
                (out_dir / f"{name}.jsonl").unlink(missing_ok=True)
            if created:
                out_dir.rmdir()
    manifest = {
        "subject_id_hash": req.subject,
        "id_hash_method": "HMAC-SHA256 with the run's pseudonym key over 'subject:' + id, 32 hex characters",
        "exported_at": _now(),
        "policy_version": req.report.get("policy", {}).get("version"),
        "run_id": req.report.get("run_id"),
        "matched_kinds": list(SUBJECT_KINDS),
        "table_versions": dict(sorted(versions.items())),
        "counts": dict(sorted(counts.items())),
        "locked_counts": dict(sorted(locked_counts.items())),
        "total_rows": sum(counts.values()),
        "files": sorted(f"{t}.jsonl" for t in handles),
        "format": "JSON Lines, one row per line, read from each table's version in table_versions; "
                  "_locked is true for rows of the locked tables",
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


# ----------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    from pipeline.cli import add_common
    from pipeline.cliparse import Parser

    parser = Parser(prog="telemetry-sanitizer subject",
                    description="Data subjects' rights on a run's output: export or erase.",
                    epilog="examples:\n"
                           "  telemetry-sanitizer subject export --id alice@example.com --data out \\\n"
                           "      --pseudonym-key-file /etc/telemetry/pseudonym.key --output alice-export\n"
                           "  echo DEVICE-ID | telemetry-sanitizer subject erase --id - --data out \\\n"
                           "      --pseudonym-key-file /etc/telemetry/pseudonym.key --dry-run")
    add_common(parser)
    sub = parser.add_subparsers(dest="action", required=True, metavar="{export,erase}")
    common = Parser(add_help=False)
    add_common(common)
    common.add_argument("--id", required=True,
                        help="raw device id, user id or e-mail address ('-' reads it from stdin)")
    common.add_argument("--data", required=True, help="output directory of a pipeline run")
    common.add_argument("--pseudonym-key-file", "--pseudonym_key_file", dest="pseudonym_key_file", required=True,
                        help="the pseudonym key file the data was written with")
    common.add_argument("--policy", default=None, help="policy TOML file (default: the built-in policy)")
    exp = sub.add_parser("export", parents=[common], help="copy of every row of the subject as JSON Lines",
                         prog="telemetry-sanitizer subject export",
                         epilog="example:\n  telemetry-sanitizer subject export --id alice@example.com --data out "
                                "--pseudonym-key-file key --output alice-export")
    exp.add_argument("--output", required=True, help="new or empty directory for <type>.jsonl and manifest.json")
    era = sub.add_parser("erase", parents=[common], help="remove every row of the subject",
                         prog="telemetry-sanitizer subject erase",
                         epilog="example:\n  telemetry-sanitizer subject erase --id alice@example.com --data out "
                                "--pseudonym-key-file key --dry-run")
    era.add_argument("--dry-run", action="store_true", help="only report what would be removed")
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipeline.cliparse import parse_or_code

    args = parse_or_code(build_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        req = prepare(args)
        if args.action == "export":
            manifest = export(req, Path(args.output))
            counts = ", ".join(f"{t}={n}" for t, n in manifest["counts"].items()) or "no rows"
            print(f"subject {req.subject}: exported {manifest['total_rows']} row(s) ({counts}) to {args.output}")
            return 0
        from pipeline.erase import erase, summary

        result = erase(req, dry_run=args.dry_run)
    except (ConfigError, PolicyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BusyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, DataFileError) as exc:
        if args.action == "export":
            print(f"error: export failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        else:
            print(f"error: erase interrupted ({exc.__class__.__name__}: {exc}); every table is at its old "
                  "or its new version; run the same command again to finish", file=sys.stderr)
        return 1
    print(summary(req, result, args.dry_run))
    return 0
