"""The commit step of a run: the files the workers wrote become visible, one Delta commit per table.

Why Delta commits and not renames: a commit is atomic per table, Delta's optimistic
concurrency rejects a second replace of the same data, and each commit carries an app
transaction naming the run, so a re-run of a killed run completes exactly the tables the
killed one had not committed (docs/tables.md).

- Run identity: `run_key` hashes what determines a run's output (inputs by path, size and
  modification time; policy hash; key fingerprint; --as-of when given; withdrawals; mode
  and slice). Every commit carries the app transaction `telemetry-sanitizer/run/<key>`
  with the execution number as version. Append: a table holding the transaction is never
  committed again. Replace: when some tables hold execution E and others do not, the run
  is resuming E; otherwise it starts E+1. Either way, a killed execution on which another
  run's replace landed in a table it had committed is not resumed (that would leave the
  output half one run, half the other): it is run again as a whole as E+1.
- Replaces also carry `telemetry-sanitizer/replace/<slice>`: two replaces of the same slice
  that overlap in time meet as a conflict on that app id, and the later one fails.
- Tables are opened (or created) when the run starts and committed against that snapshot;
  before the first commit a replacing run checks that no table moved meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.tables import (
    APP_ID_PREFIX,
    QUARANTINE,
    REPORTS,
    WrittenFile,
    file_stats,
    is_remote,
    join,
    partition_by,
    table_config,
    table_kind,
    table_names,
    table_schema,
)
from schemas.policy import Policy

KILL_ENV = "TELEMETRY_SANITIZER_KILL_AT"  # fault tests: SIGKILL this process at a named point
STOP_ENV = "TELEMETRY_SANITIZER_STOP_AT"  # fault tests: SIGSTOP it there (another process resumes it)
HISTORY_LOOKBACK = 200  # commits searched for the version a resumed run's table was committed at


class CommitError(RuntimeError):
    """The output could not be (wholly) committed: one line for the user, exit code 4."""


class SchemaMismatch(ValueError):
    """A table holds a column with another type than this run's policy gives it: one line, exit
    code 2, found before anything is written."""


def schema_change(name: str, current, wanted) -> list[str]:
    """Columns the policy adds to an existing table (Delta schemas). A column whose type differs
    stops the run: files of two types under one column cannot be read as one table. Columns the
    policy dropped stay in the table (null in new files) unless a whole replace drops them."""
    from deltalake.schema import PrimitiveType

    def type_name(t) -> str:
        return str(t.type) if isinstance(t, PrimitiveType) else str(t)  # PrimitiveType("string") -> string

    have = {f.name: type_name(f.type) for f in current.fields}
    added = []
    for f in wanted.fields:
        if f.name not in have:
            added.append(f.name)
        elif have[f.name] != type_name(f.type):
            raise SchemaMismatch(f"table {name}: column {f.name} is {have[f.name]} in the table but "
                                 f"{type_name(f.type)} under this policy; write this policy's output to a new "
                                 "location")
    return added


def kill_point(name: str) -> None:
    """SIGKILL (or SIGSTOP) this process when the fault tests ask for it at `name` (no-op otherwise)."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(STOP_ENV) == name:
        os.kill(os.getpid(), signal.SIGSTOP)


@dataclass(frozen=True)
class Slice:
    """The part of the output a replacing run replaces: everything, or an event_date range."""

    first: str | None = None
    last: str | None = None

    @property
    def whole(self) -> bool:
        return self.first is None

    @property
    def tag(self) -> str:
        return "all" if self.whole else hashlib.sha256(f"{self.first}..{self.last}".encode()).hexdigest()[:12]

    def describe(self) -> str:
        return "the whole output" if self.whole else f"event_date {self.first}..{self.last}"

    def filters(self) -> list[tuple[str, str, str]] | None:
        if self.whole:
            return None
        return [("event_date", ">=", str(self.first)), ("event_date", "<=", str(self.last))]

    def holds(self, event_date: str | None) -> bool:
        return self.whole or (event_date is not None and str(self.first) <= event_date <= str(self.last))


def run_key(files: list[str], policy: Policy, key_fingerprint: str, as_of: str | None,
            withdrawals: str | None, mode: str) -> str:
    """Identity of a run's output (see module docstring); 16 hex characters."""
    def ident(path: str) -> list:
        try:
            st = os.stat(path)
        except OSError:
            return [path]
        return [path, st.st_size, st.st_mtime_ns]

    doc = {"inputs": [ident(f) for f in files], "policy": policy.sha256, "key": key_fingerprint,
           "as_of": as_of, "withdrawals": ident(withdrawals) if withdrawals else None, "mode": mode}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Plan:
    """What this run commits: `execution` of its app transaction, the tables still to do, and
    for the others the version and rows of the earlier commit of the same execution."""

    app_id: str
    execution: int
    todo: list[str]
    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    superseded: str | None = None  # a table where another replace landed on the killed execution

    @property
    def run_id(self) -> str | None:
        """Run id of the execution being resumed: a resuming run goes on under it, so its report
        (`_reports/<run_id>.json`) marks the execution as complete."""
        ids = [d["committed_by"] for d in self.done.values() if d.get("committed_by")]
        return ids[0] if ids else None


class Output:
    """The Delta tables of one output location, as one run sees them."""

    def __init__(self, location: str, policy: Policy, storage_options: dict[str, str] | None = None) -> None:
        self.location = location
        self.policy = policy
        self.storage_options = storage_options
        self.names = table_names(policy)
        self.tables: dict[str, Any] = {}
        self.snapshot: dict[str, int] = {}
        self.added: dict[str, list[str]] = {}  # columns this run's policy adds to an existing table

    def uri(self, name: str) -> str:
        return join(self.location, name)

    def open(self) -> None:
        """Open every existing table and remember its version (-1: not there yet): commits are
        made against this snapshot. Missing tables are created at commit time, so a run that
        stops earlier leaves nothing behind."""
        from deltalake import DeltaTable

        for name in self.names:
            uri = self.uri(name)
            table = None
            if DeltaTable.is_deltatable(uri, self.storage_options):
                table = DeltaTable(uri, storage_options=self.storage_options)
                self.added[name] = schema_change(name, table.schema(), self.wanted(name))
            self.tables[name] = table
            self.snapshot[name] = table.version() if table is not None else -1

    def wanted(self, name: str):
        """The Delta schema this run's policy gives a table."""
        from deltalake import Schema

        return Schema.from_arrow(table_schema(self.policy, name))

    def _commit_schema(self, name: str, table, mode: str, part: Slice, props_meta: dict[str, str]):
        """The schema a commit declares. Unchanged: the table's. Columns added by the policy: a whole
        replace declares the policy's schema (its overwrite rewrites the table's metadata in the same
        commit); a slice replace the table's plus the new columns (same commit); an append cannot
        change the schema in its commit, so the columns are added by a commit of their own just
        before (nullable: rows written earlier read them as null)."""
        from deltalake import CommitProperties, Field, Schema

        added = self.added.get(name) or []
        if mode == "overwrite" and part.whole and added:
            return self.wanted(name)
        if not added:
            return table.schema()
        new = [f for f in self.wanted(name).fields if f.name in added]
        if mode == "overwrite":
            return Schema([*table.schema().fields, *new])
        table.update_incremental()  # another appending run may have added them since this run opened it
        have = {f.name for f in table.schema().fields}
        missing = [f for f in new if f.name not in have]
        if missing:
            table.alter.add_columns([Field(f.name, f.type, nullable=True) for f in missing],
                                    commit_properties=CommitProperties(custom_metadata={
                                        **props_meta, "schema_change": "added " + ",".join(f.name for f in missing)}))
        return table.schema()

    def _current_version(self, name: str) -> int:
        from deltalake import DeltaTable

        uri = self.uri(name)
        if not DeltaTable.is_deltatable(uri, self.storage_options):
            return -1
        return DeltaTable(uri, storage_options=self.storage_options).version()

    def _create(self, name: str, append: bool):
        """Create a table the run is the first to commit to (empty, with the table configuration).
        If another run created it meanwhile: an appending run appends to it, a replacing run fails."""
        from deltalake import DeltaTable

        try:
            table = DeltaTable.create(self.uri(name), table_schema(self.policy, name), mode="error",
                                      partition_by=partition_by(name), configuration=table_config(name),
                                      storage_options=self.storage_options)
        except Exception:  # noqa: BLE001 - created by another process since open(); any other problem shows below
            if not append:
                raise CommitError(f"--output {self.location}: table {name} was created by another run while this "
                                  "run ran; nothing more of this run was committed: run it again") from None
            table = DeltaTable(self.uri(name), storage_options=self.storage_options)
        self.tables[name] = table
        return table

    def plan(self, key: str, append: bool) -> Plan:
        """Which tables this run still has to commit (see module docstring)."""
        app_id = f"{APP_ID_PREFIX}/run/{key}"
        versions = {name: self.tables[name].transaction_version(app_id) if self.tables[name] is not None else None
                    for name in self.names}
        latest = max((v for v in versions.values() if v is not None), default=0)
        superseded = None
        if append:
            execution = latest or 1  # a table holding it is never appended to again
            if latest and any(v != latest for v in versions.values()):  # killed part-way
                superseded = self._superseded(app_id, latest, [n for n in self.names if versions[n] == latest])
                if superseded is not None:
                    execution = latest + 1  # a replace wiped what it had appended: append it everywhere
        elif latest and any(v != latest for v in versions.values()):
            execution = latest  # a killed run of this identity: finish it
        elif latest and not self._reported(app_id, latest):
            execution = latest  # killed after its last commit, before its report: only the report is left
        else:
            execution = latest + 1
        if not append and execution == latest:
            superseded = self._superseded(app_id, latest, [n for n in self.names if versions[n] == latest])
            if superseded is not None:
                execution = latest + 1  # finishing it would mix two runs: replace everything again
        todo = [name for name in self.names if versions[name] != execution]
        done = {name: self._committed(name, app_id, execution) for name in self.names if name not in todo}
        return Plan(app_id, execution, todo, done, superseded)

    def _superseded(self, app_id: str, execution: int, names: list[str]) -> str | None:
        """The first table in which another run's replace was committed on top of `execution`'s
        commit (that run's data now stands there; completing the killed execution in the other
        tables would leave the output half one run, half the other). A table whose commit of
        `execution` is beyond the history searched counts as superseded too (fail closed)."""
        for name in names:
            later = []
            for entry in self.tables[name].history(HISTORY_LOOKBACK):
                if entry.get("run_app") == app_id and str(entry.get("execution")) == str(execution):
                    break
                later.append(entry)
            else:
                return name
            if any(e.get("run_app") not in (None, app_id) and str(e.get("mode", "")).startswith("replace")
                   for e in later):
                return name
        return None

    def _reported(self, app_id: str, execution: int) -> bool:
        """Whether the run that committed `execution` wrote its report (the last step of a run)."""
        run_id = self._committed(self.names[0], app_id, execution)["committed_by"]
        if run_id is None:
            return True  # unknown (history expired): start a new execution rather than guess
        path = join(self.location, REPORTS, f"{run_id}.json")
        if not is_remote(self.location):
            return os.path.exists(path)
        import pyarrow.fs as pafs

        from pipeline.location import filesystem

        fs, root = filesystem(path)
        return fs.get_file_info(root).type == pafs.FileType.File

    def _committed(self, name: str, app_id: str, execution: int) -> dict[str, Any]:
        if self.tables[name] is None:
            return {"version": None, "rows_added": None, "committed_by": None}
        for entry in self.tables[name].history(HISTORY_LOOKBACK):
            if entry.get("run_app") == app_id and str(entry.get("execution")) == str(execution):
                return {"version": entry["version"], "rows_added": int(entry.get("rows_added", 0)),
                        "committed_by": entry.get("run_id")}
        return {"version": None, "rows_added": None, "committed_by": None}

    def check_unchanged(self) -> None:
        """Fail, before anything is committed, when another process committed to a table since
        this run opened it: two replacing runs never mix."""
        for name in self.names:
            now = self._current_version(name)
            if now != self.snapshot[name]:
                raise CommitError(f"--output {self.location}: table {name} changed while this run ran (version "
                                  f"{self.snapshot[name]} -> {now}, another run or maintenance); nothing of this "
                                  "run was committed: run it again")

    def commit(self, plan: Plan, files: list[WrittenFile], meta: dict[str, str], append: bool,
               part: Slice, quarantine_tag: str | None = None) -> dict[str, dict[str, Any]]:
        """One commit per table still to do; returns {table: {version, rows_added}} for every table."""
        from deltalake import CommitProperties, Transaction
        from deltalake.exceptions import CommitFailedError, DeltaError

        by_table: dict[str, list[WrittenFile]] = {name: [] for name in self.names}
        for written in files:
            by_table[written.table].append(written)
        sizes = self._sizes(files)
        now_ms = int(time.time() * 1000)
        result: dict[str, dict[str, Any]] = {}
        replace_app = f"{APP_ID_PREFIX}/replace/{part.tag}"
        for name in self.names:
            if name not in plan.todo:
                result[name] = plan.done[name]
                continue
            table = self.tables[name]
            if table is None:
                kill_point(f"before_create:{name}")
                table = self._create(name, append)
            rows = sum(w.rows for w in by_table[name])
            txns = [Transaction(plan.app_id, plan.execution)]
            if not append:
                txns.append(Transaction(replace_app, (table.transaction_version(replace_app) or 0) + 1))
            props = CommitProperties(custom_metadata={**meta, "run_app": plan.app_id,
                                                      "execution": str(plan.execution), "rows_added": str(rows),
                                                      "mode": "append" if append else f"replace {part.describe()}"},
                                     app_transactions=txns)
            actions: list = [_add_action(w, sizes[(w.table, w.path)], now_ms) for w in by_table[name]]
            mode, filters = ("append", None) if append else ("overwrite", part.filters())
            if not append and table_kind(name) == "quarantine" and not part.whole:
                mode, filters = "append", None  # unpartitioned: earlier rows of this slice removed by file
                actions.extend(self._quarantine_removes(table, quarantine_tag, now_ms))
            kill_point(f"before_commit:{name}")
            self._check_lease(result, plan)
            try:
                schema = self._commit_schema(name, table, mode, part, meta)
                table.create_write_transaction(actions, mode, schema, partition_by=partition_by(name),
                                               partition_filters=filters, commit_properties=props)
            except (CommitFailedError, DeltaError, OSError) as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
                committed = [n for n in result if n not in plan.done]
                raise CommitError(f"--output {self.location}: commit of table {name} failed: {reason} "
                                  f"({len(committed)} table(s) of this run committed before it; run it again "
                                  "to complete the rest)") from None
            kill_point(f"after_commit:{name}")
            result[name] = {"version": self._version_of(table, plan, meta["run_id"]), "rows_added": rows}
        return result

    def _check_lease(self, result: dict[str, dict[str, Any]], plan: Plan) -> None:
        """A run that lost its lease on an object store (stopped or cut off for longer than the
        lease allows: an erase may have vacuumed its files) commits nothing more."""
        from pipeline.lease import check_held
        from pipeline.store_lease import LeaseLost

        try:
            check_held()
        except LeaseLost as exc:
            committed = [n for n in result if n not in plan.done]
            raise CommitError(f"--output {self.location}: this run {exc} ({len(committed)} table(s) of this run "
                              "committed before)") from None

    def append_once(self, name: str, files: list[WrittenFile], meta: dict[str, str], app_id: str,
                    version: int) -> dict[str, Any]:
        """Append `files` to one table unless its log already holds (app_id, version or later): the
        exactly-once commit of a streaming window pane. Returns {version, rows_added, committed}."""
        from deltalake import CommitProperties, DeltaTable, Transaction

        if DeltaTable.is_deltatable(self.uri(name), self.storage_options):
            table = DeltaTable(self.uri(name), storage_options=self.storage_options)
            self.added[name] = schema_change(name, table.schema(), self.wanted(name))
        else:
            table = self._create(name, append=True)
        rows = sum(w.rows for w in files)
        held = table.transaction_version(app_id)
        if held is not None and held >= version:
            return {"version": table.version(), "rows_added": 0, "committed": False}
        schema = self._commit_schema(name, table, "append", Slice(), meta)
        sizes = self._sizes(files)
        now_ms = int(time.time() * 1000)
        props = CommitProperties(custom_metadata={**meta, "run_app": app_id, "execution": str(version),
                                                  "rows_added": str(rows), "mode": "append"},
                                 app_transactions=[Transaction(app_id, version)])
        table.create_write_transaction([_add_action(w, sizes[(w.table, w.path)], now_ms) for w in files], "append",
                                       schema, partition_by=partition_by(name), commit_properties=props)
        plan = Plan(app_id, version, [name])
        return {"version": self._version_of(table, plan, meta["run_id"]), "rows_added": rows, "committed": True}

    @staticmethod
    def _version_of(table, plan: Plan, run_id: str) -> int:
        """The version this run's commit got (the table object does not move with its own commit)."""
        read = table.version()
        table.update_incremental()
        for entry in table.history(max(1, table.version() - read)):
            if entry.get("run_app") == plan.app_id and entry.get("run_id") == run_id:
                return entry["version"]
        raise CommitError(f"table {table.table_uri}: the commit of run {run_id} is not in its log")

    def _quarantine_removes(self, table, tag: str | None, now_ms: int) -> list:
        """Remove actions for the quarantine files an earlier run of the same slice added."""
        from deltalake.transaction import RemoveAction

        if not tag:
            return []
        import pyarrow as pa

        adds = pa.table(table.get_add_actions(flatten=True)).to_pydict()
        return [RemoveAction(path, True, now_ms, size) for path, size in zip(adds["path"], adds["size_bytes"],
                                                                             strict=True)
                if f"-{tag}-" in os.path.basename(path)]

    def _sizes(self, files: list[WrittenFile]) -> dict[tuple[str, str], int]:
        """Size of every written file (a file that is missing fails the commit: fail closed)."""
        sizes = {}
        if not is_remote(self.location):
            for w in files:
                try:
                    sizes[(w.table, w.path)] = os.stat(os.path.join(self.location, w.table, w.path)).st_size
                except OSError as exc:
                    raise CommitError(f"--output {self.location}: written file {w.table}/{w.path} is "
                                      f"missing: {exc.strerror or exc}") from None
            return sizes
        import pyarrow.fs as pafs

        from pipeline.location import filesystem

        fs, root = filesystem(self.location)
        infos = fs.get_file_info([f"{root.rstrip('/')}/{w.table}/{w.path}" for w in files])
        for w, info in zip(files, infos, strict=True):
            if info.type != pafs.FileType.File:
                raise CommitError(f"--output {self.location}: written file {w.table}/{w.path} is missing")
            sizes[(w.table, w.path)] = info.size
        return sizes

    def remove_attempt(self, prefix: str) -> None:
        """After the Beam run itself failed (no list of written files exists): delete the files whose
        names carry this attempt's prefix, so no uncommitted file stays visible to plain Parquet
        readers. Local outputs only; on object stores they are unreferenced and vacuum removes them."""
        if is_remote(self.location):
            return
        mark = f"part-{prefix}-"
        for name in self.names:
            for root, _, files in os.walk(os.path.join(self.location, name)):
                if "_delta_log" in root.split(os.sep):
                    continue
                for file in files:
                    if file.startswith(mark):
                        with contextlib.suppress(OSError):
                            os.remove(os.path.join(root, file))
                _prune(root, self.location)

    def remove_files(self, files: list[WrittenFile], keep: set[str]) -> None:
        """Delete the files this run wrote for tables it did not commit (best effort: what remains
        is unreferenced, and vacuum removes it)."""
        doomed = [w for w in files if w.table not in keep]
        if not doomed:
            return
        if not is_remote(self.location):
            for w in doomed:
                path = os.path.join(self.location, w.table, w.path)
                try:
                    os.remove(path)
                except OSError:
                    continue
                _prune(os.path.dirname(path), self.location)
            return
        from pipeline.location import filesystem

        fs, root = filesystem(self.location)
        for w in doomed:
            try:
                fs.delete_file(f"{root.rstrip('/')}/{w.table}/{w.path}")
            except OSError:
                pass


def _prune(directory: str, stop: str) -> None:
    """Remove `directory` and its parents up to (not including) `stop` while they are empty."""
    stop = os.path.abspath(stop)
    while os.path.abspath(directory).startswith(stop + os.sep):
        try:
            os.rmdir(directory)
        except OSError:
            return
        directory = os.path.dirname(directory)


def _add_action(written: WrittenFile, size: int, now_ms: int):
    from deltalake.transaction import AddAction

    values = {} if written.table == QUARANTINE else {"user_region": written.user_region,
                                                      "event_date": written.event_date}
    return AddAction(written.path, size, values, now_ms, True, file_stats(written))
