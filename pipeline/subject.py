"""`python -m pipeline subject`: data subjects' rights (POLICY.md promise 8) on a run's output.

    python -m pipeline subject export --id RAW_ID --data DIR --output OUT_DIR --pseudonym-key-file F
    python -m pipeline subject erase  --id RAW_ID --data DIR --pseudonym-key-file F [--dry-run]

The output holds no raw identifiers, only keyed pseudonyms, so the run's key is
needed to find a person's rows: the pseudonyms of RAW_ID are recomputed for
every kind that names a person (device, user, email) and matched against each
output column the policy fills with a pseudonym of that kind.

`export` writes every matching row of every type (the locked archive included)
as JSON Lines, one file per type, plus a manifest. `erase` rewrites each
Parquet file holding a matching row without those rows, atomically: the new
version is written to a hidden temporary file in the same directory, synced,
and renamed over the original, so a reader sees the old or the new file, never
a half-written one. Each erase is appended to DIR/_erasures.jsonl under a keyed
hash of the id (the raw id is never stored).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import reduce
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.io import parquet_compression
from pipeline.run import ConfigError, load_key
from schemas.policy import Policy, PolicyError, load_policy
from transforms.pseudonym import Pseudonymizer

SUBJECT_KINDS = ("device", "user", "email")
ERASURE_LOG = "_erasures.jsonl"
LOCKED_DIR = "_locked"
TEMP_FILE = re.compile(r"^\..+\.tmp-[0-9a-f]+$")  # `.part-x.parquet.tmp-ab12cd34`: ignored by readers


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
class DataFile:
    path: Path
    root: Path  # the type's directory: partition directories below it may be removed when emptied
    record_type: str
    locked: bool
    partition: dict[str, str]


def _is_data_name(name: str) -> bool:
    return not name.startswith((".", "_"))


def iter_data_files(data_dir: Path) -> Iterator[DataFile]:
    """Every Parquet file of every type, the locked archive included; hidden and `_` names skipped
    (as pyarrow.dataset does), so leftover temporary files are never read."""
    roots: list[tuple[Path, str, bool]] = []
    for entry in sorted(data_dir.iterdir()):
        if entry.is_dir() and _is_data_name(entry.name):
            roots.append((entry, entry.name, False))
    locked = data_dir / LOCKED_DIR
    if locked.is_dir():
        for entry in sorted(locked.iterdir()):
            if entry.is_dir() and _is_data_name(entry.name):
                roots.append((entry, entry.name, True))
    for root, type_name, is_locked in roots:
        live = _committed_files(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if _is_data_name(d))
            for name in sorted(filenames):
                if _is_data_name(name) and name.endswith(".parquet"):
                    path = Path(dirpath) / name
                    if live is not None and path not in live:
                        continue  # not (or no longer) part of the Delta table
                    parts = dict(p.split("=", 1) for p in path.relative_to(root).parts[:-1] if "=" in p)
                    yield DataFile(path, root, type_name, is_locked, parts)


def _committed_files(root: Path) -> set[Path] | None:
    """The files a Delta table's current version holds; None when `root` is not a Delta table."""
    if not (root / "_delta_log").is_dir():
        return None
    from deltalake import DeltaTable

    paths = DeltaTable(str(root)).get_add_actions(flatten=True).column("path").to_pylist()
    return {root / p for p in paths}


def _mask(table: pa.Table, columns: dict[str, str], candidates: dict[str, list[str]]) -> pa.Array:
    masks = [pc.is_in(table.column(c), value_set=pa.array(candidates[k], pa.string())) for c, k in columns.items()]
    mask = reduce(pc.or_, masks)
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    return pc.fill_null(mask, False)


def find_rows(df: DataFile, policy: Policy, candidates: dict[str, list[str]],
              full: bool = False) -> tuple[pa.Table | None, pa.Array | None, int]:
    """(table, boolean mask of the subject's rows, count). Only the pseudonym columns are read,
    unless `full` and there is a match; (None, None, 0) when the file has none of the columns."""
    try:
        pf = pq.ParquetFile(df.path)
        present = set(pf.schema_arrow.names)
        columns = {c: k for c, k in subject_columns(policy, df.record_type).items() if c in present}
        if not columns:
            return None, None, 0
        table = pf.read(columns=list(columns))
        mask = _mask(table, columns, candidates)
        n = int(pc.sum(mask).as_py() or 0)
        if n and full:
            table = pf.read()
            mask = _mask(table, columns, candidates)
            n = int(pc.sum(mask).as_py() or 0)
    except (pa.ArrowException, OSError) as exc:
        raise DataFileError(f"{df.path}: cannot read: {exc.__class__.__name__}: {exc}") from None
    return table, mask, n


# ----------------------------------------------------------------- shared setup


@dataclass
class Request:
    policy: Policy
    key: bytes
    raw_id: str
    data_dir: Path
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
    data_dir = Path(args.data)
    if not data_dir.is_dir():
        raise SubjectError(f"--data {data_dir}: not a directory")
    # A replacing run leaves _report.json; runs in append mode (--watch) keep theirs under _reports/.
    report_paths = [data_dir / "_report.json"] if (data_dir / "_report.json").is_file() else sorted(
        (data_dir / "_reports").glob("*.json"))
    if not report_paths:
        raise SubjectError(f"--data {data_dir}: no _report.json, so this is not the output of a pipeline run")
    reports = []
    for path in report_paths:
        try:
            reports.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise SubjectError(f"{path}: cannot read the run report: {exc}") from None
    if any(r.get("key", {}).get("linkable_across_runs") is False for r in reports):
        raise SubjectError(f"--data {data_dir}: written with a random per-run key; its pseudonyms cannot be "
                           "linked to any id")
    report = reports[-1]
    policy = load_policy(args.policy)
    run_sha = report.get("policy", {}).get("sha256")
    if run_sha and run_sha != policy.sha256:
        print(f"note: the run used policy {report['policy'].get('version')} ({run_sha[:12]}), this is "
              f"{policy.version} ({policy.sha256[:12]}); pseudonym columns are taken from the latter",
              file=sys.stderr)
    return Request(policy, key, _read_id(args.id), data_dir, report)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _type_label(df: DataFile) -> str:
    return f"{LOCKED_DIR}/{df.record_type}" if df.locked else df.record_type


# ----------------------------------------------------------------- export


def export(req: Request, out_dir: Path) -> dict[str, Any]:
    """Write OUT_DIR/<type>.jsonl and OUT_DIR/manifest.json; returns the manifest."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise SubjectError(f"--output {out_dir}: exists and is not an empty directory")
    if out_dir.resolve().is_relative_to(req.data_dir.resolve()):
        raise SubjectError(f"--output {out_dir}: must not be inside --data")
    created = not out_dir.exists()
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    counts: Counter = Counter()
    locked_counts: Counter = Counter()
    handles: dict[str, Any] = {}
    done = False
    try:
        for df in iter_data_files(req.data_dir):
            table, mask, n = find_rows(df, req.policy, req.candidates, full=True)
            if not n:
                continue
            rows = table.filter(mask).to_pylist()
            fh = handles.get(df.record_type)
            if fh is None:
                fh = handles[df.record_type] = open(out_dir / f"{df.record_type}.jsonl", "w", encoding="utf-8")
            for row in rows:
                row.update(df.partition)
                row["_locked"] = df.locked
                fh.write(json.dumps(row, default=_jsonable, ensure_ascii=False) + "\n")
            counts[df.record_type] += n
            if df.locked:
                locked_counts[df.record_type] += n
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
        "counts": dict(sorted(counts.items())),
        "locked_counts": dict(sorted(locked_counts.items())),
        "total_rows": sum(counts.values()),
        "files": sorted(f"{t}.jsonl" for t in handles),
        "format": "JSON Lines, one row per line; user_region and event_date come from the partition "
                  "directory; _locked is true for rows in the locked archive",
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


# ----------------------------------------------------------------- erase


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rewrite_without(path: Path, keep: pa.Table) -> None:
    """Replace `path` by `keep` atomically: hidden temp file in the same directory, fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(keep, fh, compression=parquet_compression(keep.num_rows))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _remove_file(path: Path, stop: Path) -> None:
    """Delete a file that has no rows left, then the partition directories it leaves empty."""
    path.unlink()
    _fsync_dir(path.parent)
    parent = path.parent
    while parent != stop and parent.is_relative_to(stop) and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def remove_stale_temp_files(data_dir: Path) -> list[Path]:
    """Temp files an interrupted erase left behind (readers never saw them)."""
    stale = []
    roots = [p for p in data_dir.iterdir() if p.is_dir() and _is_data_name(p.name)]
    if (data_dir / LOCKED_DIR).is_dir():
        roots += [p for p in (data_dir / LOCKED_DIR).iterdir() if p.is_dir()]
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                if TEMP_FILE.match(name):
                    path = Path(dirpath) / name
                    path.unlink(missing_ok=True)
                    stale.append(path)
    return stale


@dataclass
class ErasureResult:
    removed: Counter = field(default_factory=Counter)   # type label -> rows
    rewritten: Counter = field(default_factory=Counter)  # type label -> files
    deleted: Counter = field(default_factory=Counter)    # type label -> files
    stale_temp_files: int = 0

    def entry(self, req: Request, status: str) -> dict[str, Any]:
        return {
            "time": _now(),
            "action": "erase",
            "status": status,
            "subject_id_hash": req.subject,
            "matched_kinds": list(SUBJECT_KINDS),
            "rows_removed": dict(sorted(self.removed.items())),
            "total_rows_removed": sum(self.removed.values()),
            "files_rewritten": sum(self.rewritten.values()),
            "files_deleted": sum(self.deleted.values()),
            "stale_temp_files_removed": self.stale_temp_files,
            "policy_version": req.report.get("policy", {}).get("version"),
            "run_id": req.report.get("run_id"),
        }


def _append_log(fh, entry: dict[str, Any]) -> None:
    fh.write(json.dumps(entry, sort_keys=False) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def erase(req: Request, dry_run: bool = False) -> ErasureResult:
    """Remove the subject's rows from every file; files without a match are not touched."""
    result = ErasureResult()
    if dry_run:
        for df in iter_data_files(req.data_dir):
            table, _, n = find_rows(df, req.policy, req.candidates)
            if n:
                result.removed[_type_label(df)] += n
                (result.rewritten if n < table.num_rows else result.deleted)[_type_label(df)] += 1
        return result
    with open(req.data_dir / ERASURE_LOG, "a", encoding="utf-8") as log:
        try:
            fcntl.flock(log.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SubjectError(f"--data {req.data_dir}: another erase is running on it") from None
        try:
            result.stale_temp_files = len(remove_stale_temp_files(req.data_dir))
            for df in list(iter_data_files(req.data_dir)):
                table, mask, n = find_rows(df, req.policy, req.candidates, full=True)
                if not n:
                    continue
                label = _type_label(df)
                keep = table.filter(pc.invert(mask))
                if keep.num_rows:
                    rewrite_without(df.path, keep)
                    result.rewritten[label] += 1
                else:
                    _remove_file(df.path, df.root)
                    result.deleted[label] += 1
                result.removed[label] += n
        except BaseException:
            _append_log(log, result.entry(req, "interrupted"))
            raise
        _append_log(log, result.entry(req, "completed"))
    return result


def _erase_summary(req: Request, result: ErasureResult, dry_run: bool) -> str:
    verb = "would remove" if dry_run else "removed"
    lines = [f"subject {req.subject} (keyed hash of the id; the id itself is not stored)"]
    labels = sorted(result.removed)
    width = max((len(t) for t in labels), default=0)
    for t in labels:
        files = (f"{result.rewritten[t]} file(s) to rewrite, {result.deleted[t]} to delete" if dry_run else
                 f"{result.rewritten[t]} file(s) rewritten, {result.deleted[t]} deleted")
        lines.append(f"  {t:<{width}}  {verb} {result.removed[t]} row(s)  ({files})")
    total = sum(result.removed.values())
    if dry_run:
        lines.append(f"dry run: {verb} {total} row(s); nothing was changed")
    else:
        lines.append(f"{verb} {total} row(s): {sum(result.rewritten.values())} file(s) rewritten, "
                     f"{sum(result.deleted.values())} deleted, {result.stale_temp_files} stale temp file(s) "
                     f"cleaned up; logged to {req.data_dir / ERASURE_LOG}")
    return "\n".join(lines)


# ----------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline subject",
                                     description="Data subjects' rights on a run's output: export or erase.")
    sub = parser.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--id", required=True,
                        help="raw device id, user id or e-mail address ('-' reads it from stdin)")
    common.add_argument("--data", required=True, help="output directory of a pipeline run")
    common.add_argument("--pseudonym-key-file", "--pseudonym_key_file", dest="pseudonym_key_file", default=None,
                        help="the run's pseudonym key file (required)")
    common.add_argument("--policy", default=None, help="policy TOML file (default: the built-in policy)")
    exp = sub.add_parser("export", parents=[common], help="copy of every row of the subject as JSON Lines")
    exp.add_argument("--output", required=True, help="new or empty directory for <type>.jsonl and manifest.json")
    era = sub.add_parser("erase", parents=[common], help="remove every row of the subject")
    era.add_argument("--dry-run", action="store_true", help="only report what would be removed")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        req = prepare(args)
        if args.action == "export":
            manifest = export(req, Path(args.output))
            counts = ", ".join(f"{t}={n}" for t, n in manifest["counts"].items()) or "no rows"
            print(f"subject {req.subject}: exported {manifest['total_rows']} row(s) ({counts}) to {args.output}")
            return 0
        result = erase(req, dry_run=args.dry_run)
    except (ConfigError, PolicyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, DataFileError) as exc:
        if args.action == "export":
            print(f"error: export failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        else:
            print(f"error: erase interrupted ({exc.__class__.__name__}: {exc}); every file is either its old "
                  "or its new version; run the same command again to finish", file=sys.stderr)
        return 1
    print(_erase_summary(req, result, args.dry_run))
    return 0
