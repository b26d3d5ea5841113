"""`subject erase` on the Delta tables: the subject's rows go from every table, physically.

Per table (data, locked, quarantine), one after the other:
1. find the partitions holding the subject's rows in the current version;
2. rewrite those partitions without the rows: one overwrite commit restricted to them by a
   predicate on the partition columns only (`user_region`, `event_date`), so the commit
   records the partitions, never a pseudonym (a Delta DELETE would record its predicate,
   i.e. the pseudonym, in commitInfo forever). The commit carries a keyed hash of the id, the
   row count and the policy in its metadata: the table history is the audit log;
3. VACUUM with zero retention (tombstoned files and orphans of killed runs);
4. check the table log for the pseudonyms; if an older commit holds one (a table created
   without the statistics configuration, a DELETE run by hand), checkpoint and expire the log
   below the checkpoint, and check again: a value that still remains stops the erase.

A commit is atomic, so a killed erase leaves each table at its old version or its new one;
files written but not committed, and removed files not yet vacuumed, are what the next erase
(which always vacuums every table) removes.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from pipeline.housekeeping import exclusive, expire_log, log_files_holding, vacuum
from pipeline.subject import (
    SUBJECT_KINDS,
    DataFileError,
    Request,
    TableRef,
    _mask,
    _now,
    find_rows,
    iter_tables,
    open_table,
    partition_predicate,
    subject_columns,
)
from schemas.policy import PARTITION_COLUMNS
from transforms.pseudonym import key_fingerprint

ERASURE_LOG = "_erasures.jsonl"
WRITER = WriterProperties(compression="ZSTD")


@dataclass
class ErasureResult:
    removed: Counter = field(default_factory=Counter)    # table -> rows
    versions: dict[str, tuple[int, int]] = field(default_factory=dict)  # table -> (before, after)
    vacuumed: Counter = field(default_factory=Counter)   # table -> files deleted
    log_expired: Counter = field(default_factory=Counter)  # table -> log files deleted
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def entry(self, req: Request, status: str) -> dict[str, Any]:
        return {
            "time": _now(),
            "action": "erase",
            "status": status,
            "subject_id_hash": req.subject,
            "matched_kinds": list(SUBJECT_KINDS),
            "rows_removed": dict(sorted(self.removed.items())),
            "total_rows_removed": sum(self.removed.values()),
            "table_versions": {t: {"before": a, "after": b} for t, (a, b) in sorted(self.versions.items())},
            "files_vacuumed": sum(self.vacuumed.values()),
            "log_files_expired": sum(self.log_expired.values()),
            "policy_version": req.report.get("policy", {}).get("version"),
            "run_id": req.report.get("run_id"),
        }


def _needles(req: Request) -> list[str]:
    return sorted({p for values in req.candidates.values() for p in values} | {req.raw_id})


def _rewrite(req: Request, ref: TableRef, dt: DeltaTable, dataset, hits: pa.Table) -> None:
    """One commit replacing the partitions in `hits` by their rows minus the subject's."""
    present = set(dataset.schema.names)
    columns = {c: k for c, k in subject_columns(req.policy, ref.record_type).items() if c in present}
    if all(c in present for c in PARTITION_COLUMNS) and dt.metadata().partition_columns:
        predicate, expr = partition_predicate(hits)
        full = dataset.to_table(filter=expr)
    else:
        predicate, full = None, dataset.to_table()
    keep = full.filter(pc.invert(_mask(full, columns, req.candidates)))
    meta = {"erasure": "subject", "subject_id_hash": req.subject, "rows_removed": str(full.num_rows - keep.num_rows),
            "policy_version": req.policy.version, "policy_sha256": req.policy.sha256,
            "key_fingerprint": key_fingerprint(req.key)}
    write_deltalake(dt, keep, mode="overwrite", predicate=predicate, writer_properties=WRITER,
                    commit_properties=CommitProperties(custom_metadata=meta))


def _erase_table(req: Request, ref: TableRef, result: ErasureResult, dry_run: bool) -> None:
    dt, dataset = open_table(ref)
    before = dt.version()
    present = set(dataset.schema.names)
    hits = find_rows(ref, dataset, req.policy, req.candidates,
                     columns=[c for c in PARTITION_COLUMNS if c in present])
    n = 0 if hits is None else hits.num_rows
    if n:
        result.removed[ref.name] += n
    if dry_run:
        return
    try:
        if n:
            _rewrite(req, ref, dt, dataset, hits)
        dt = DeltaTable(ref.path, storage_options=req.data.storage_options)
        result.vacuumed[ref.name] += vacuum(dt, req.data, ref.name)
        if log_files_holding(req.data, ref.name, _needles(req)):
            result.log_expired[ref.name] += expire_log(dt, req.data, ref.name)
            left = log_files_holding(req.data, ref.name, _needles(req))
            if left:
                raise DataFileError(f"{ref.path}: the table log still holds the subject's pseudonym in "
                                    f"{', '.join(p.rsplit('/', 1)[-1] for p in left)}")
    except CommitFailedError as exc:
        raise DataFileError(f"{ref.path}: another writer committed to the table meanwhile ({exc})") from None
    except (DeltaError, pa.ArrowException) as exc:
        raise DataFileError(f"{ref.path}: {exc.__class__.__name__}: {exc}") from None
    after = dt.version()
    if after != before or n:
        result.versions[ref.name] = (before, after)
        result.history[ref.name] = [h for h in dt.history() if h.get("version", -1) > before]


def _append_log(req: Request, entry: dict[str, Any]) -> None:
    """One line per erase. An object cannot be appended to: on S3 it is read and written back
    whole, which is safe because only the holder of the exclusive lease writes it."""
    line = json.dumps(entry) + "\n"
    if req.data.remote:
        before = req.data.read(ERASURE_LOG) if req.data.exists(ERASURE_LOG) else b""
        req.data.write(before + line.encode(), ERASURE_LOG)
        return
    with open(req.data.path(ERASURE_LOG), "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def erase(req: Request, dry_run: bool = False) -> ErasureResult:
    """Remove the subject's rows from every table and vacuum every table (see the module doc)."""
    result = ErasureResult()
    refs = iter_tables(req.data)
    if dry_run:
        for ref in refs:
            _erase_table(req, ref, result, dry_run=True)
        return result
    with exclusive(req.data):
        try:
            for ref in refs:
                _erase_table(req, ref, result, dry_run=False)
        except BaseException:
            _append_log(req, result.entry(req, "interrupted"))
            raise
        _append_log(req, result.entry(req, "completed"))
    return result


def _history_line(name: str, h: dict[str, Any]) -> str:
    when = h.get("timestamp")
    from datetime import UTC, datetime

    stamp = datetime.fromtimestamp(when / 1000, UTC).isoformat(timespec="seconds") if when else "?"
    metrics = h.get("operationMetrics") or {}
    what = h.get("operation", "?")
    if h.get("erasure") == "subject":
        what = (f"WRITE erasure of subject {h.get('subject_id_hash')}: {h.get('rows_removed')} row(s), "
                f"{metrics.get('num_removed_files', '?')} file(s) replaced by {metrics.get('num_added_files', '?')}")
    elif what.startswith("VACUUM END"):
        what = f"VACUUM END: {metrics.get('numDeletedFiles', '?')} file(s) deleted"
    elif what.startswith("VACUUM START"):
        what = f"VACUUM START: {metrics.get('numFilesToDelete', '?')} file(s) to delete"
    return f"  {name} v{h.get('version')} {stamp} {what}"


def summary(req: Request, result: ErasureResult, dry_run: bool) -> str:
    verb = "would remove" if dry_run else "removed"
    lines = [f"subject {req.subject} (keyed hash of the id; the id itself is not stored)"]
    labels = sorted(set(result.removed) | set(result.versions))
    width = max((len(t) for t in labels), default=0)
    for t in labels:
        detail = "" if dry_run else (f"  (version {result.versions[t][0]} -> {result.versions[t][1]}, "
                                     f"{result.vacuumed[t]} file(s) vacuumed)" if t in result.versions else "")
        lines.append(f"  {t:<{width}}  {verb} {result.removed[t]} row(s){detail}")
    total = sum(result.removed.values())
    if dry_run:
        lines.append(f"dry run: {verb} {total} row(s); nothing was changed")
        return "\n".join(lines)
    if result.history:
        lines.append("table history of this erasure (the audit log; `DeltaTable(path).history()` shows it all):")
        for t in sorted(result.history):
            lines += [_history_line(t, h) for h in sorted(result.history[t], key=lambda h: h.get("version", 0))]
    expired = sum(result.log_expired.values())
    lines.append(f"{verb} {total} row(s) from {sum(1 for v in result.removed.values() if v)} table(s); "
                 f"{sum(result.vacuumed.values())} file(s) vacuumed"
                 + (f"; {expired} old log file(s) holding the pseudonyms expired" if expired else "")
                 + f"; logged to {req.data.uri(ERASURE_LOG)}")
    return "\n".join(lines)
