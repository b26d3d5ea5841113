"""Columnar path: the same policy as `records.sanitize_lines`, a record type at a time.

Lines that look well-formed (one compact JSON object whose known keys hold values of
the right JSON kind) are read by Arrow's JSON reader with a narrow, typed schema per
record type, then checked, gated and transformed with kernels over whole columns;
transforms run once per distinct value. A line with keys the policy does not allow
(removed fields, special categories) stays on this path: its JSON is parsed once more
only to count those keys. Any line this path has the slightest doubt about (a parse
error, a value the schema does not take, an odd timestamp, a failing transform) is
handed to `sanitize_lines`, which names the reason. So the output is exactly what
`sanitize_lines` gives for the whole batch: tests compare the two on dirty data and
on crafted lines where Arrow and orjson could disagree.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Container
from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from schemas.policy import CONSENT_FLAGS, TIMESTAMP, FieldRule, Policy, TypePolicy, load_policy
from transforms.fields import TIME_PARSERS, parse_rfc3339
from transforms.records import (
    HIDDEN_COLUMNS,
    ORIGIN_LINE_BITS,
    BatchResult,
    PartitionKey,
    SanitizeContext,
    Unreadable,
    _removed_fields,
    count_secret_like_urls,
    count_special,
    fast_validate,
    has_duplicate_key,
    sanitize_lines,
)
from transforms.special_text import count_special_values
from transforms.urls import AUTHORITY_PATTERN, AUTHORITY_PRINTABLE
from transforms.withdrawals import earliest_withdrawal

MIN_LINES = 64  # smaller batches are not worth Arrow's per-call cost: they go to sanitize_lines whole
_TYPE_TAG = b'"type":"'
_ALNUM = "[0-9A-Za-z]"  # a value holding one of these is surely not blank (str.strip knows more spaces)
# RFC 3339 as both Python's fromisoformat and Arrow's cast read it the same way; any other
# spelling (lower-case t/z, a space, 7-9 fraction digits, far years) is left to sanitize_lines.
_TS = (r"^(19|20|21)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d"
       r"(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$")
_DATE = r"^(19|20|21)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$"  # where a plain date is allowed
# Integers are read as doubles: Arrow's int64 reader fails a whole block on "5.0", which the
# contract takes as 5; rows whose value is not an integer below 2**53 go to the plain path.
_PARSED_TYPES = {"int": pa.float64(), "float": pa.float64(), "bool": pa.bool_(), "coarse_coordinate": pa.float64()}
_EXACT = float(2**53)
# Blocks of 512 KiB parsed on Arrow's thread pool: 1.77 -> 0.98 us per line on two cores.
_READ_OPTIONS = pj.ReadOptions(use_threads=True, block_size=1 << 19)
_CONSENT = pa.struct([pa.field(flag, pa.bool_()) for flag in CONSENT_FLAGS])


@dataclass(frozen=True)
class _TypePlan:
    """How one record type is read: the Arrow schema and what must be checked after."""

    tpol: TypePolicy
    options: pj.ParseOptions
    data_fields: tuple[str, ...]
    floats: tuple[str, ...]  # parsed as doubles: must be finite (Arrow reads NaN, orjson does not)
    ints: tuple[str, ...]
    coordinates: tuple[str, ...]
    timestamps: tuple[str, ...]
    dates: tuple[str, ...]  # timestamps that may be a plain date instead


def _plan(policy: Policy, tpol: TypePolicy) -> _TypePlan:
    envelope = [pa.field(rule.name, pa.string()) for rule in policy.envelope]
    data = pa.struct([pa.field(r.name, _PARSED_TYPES.get(r.transform, pa.string())) for r in tpol.fields])
    schema = pa.schema(envelope + [
        pa.field("schema_version", pa.float64()),  # written as 1, nothing else (see _screen)
        pa.field("type", pa.string()), pa.field("ts", pa.string()),
        pa.field("country", pa.string()), pa.field("is_child", pa.bool_()), pa.field("consent", _CONSENT),
        pa.field("data", data),
    ])
    # Keys outside this schema are skipped by Arrow ("ignore") rather than failing the block;
    # the key count in `_checked` finds the lines that have them (see `_extra_keys`).
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    return _TypePlan(
        tpol=tpol, options=options, data_fields=tuple(r.name for r in tpol.fields),
        floats=tuple(r.name for r in tpol.fields if r.transform in ("float", "coarse_coordinate")),
        ints=tuple(r.name for r in tpol.fields if r.transform == "int"),
        coordinates=tuple(r.name for r in tpol.fields if r.transform == "coarse_coordinate"),
        timestamps=tuple(r.name for r in tpol.fields if r.transform in TIME_PARSERS),
        dates=tuple(r.name for r in tpol.fields if r.transform == "date_or_timestamp"),
    )


def _screen(plans: dict[bytes, _TypePlan]) -> str:
    """One RE2 pattern that finds, in a single pass over a line, what would make Arrow fail
    a whole block or read a line differently from the contract: a known key followed by a
    value of another JSON kind (null is let through: Arrow reads it as absent, so the key
    count in `_checked` no longer matches and the line's own JSON decides), a key followed
    by white space (that key count counts '":'), a schema_version other than 1, two
    documents on one line (Arrow would read both)."""
    kinds: dict[str, set[str]] = {}
    for plan in plans.values():
        for f in [*plan.options.explicit_schema, *plan.options.explicit_schema.field("data").type]:
            kind = ("object" if pa.types.is_struct(f.type) else "string" if pa.types.is_string(f.type)
                    else "number" if pa.types.is_floating(f.type) else "bool")
            kinds.setdefault(f.name, set()).add(kind)
    for flag in CONSENT_FLAGS:
        kinds.setdefault(flag, set()).add("bool")
    first = {"string": '[^"n]', "number": "[^-0-9n]", "bool": "[^tfn]", "object": "[^{n]"}  # n: null
    by_kind: dict[str, list[str]] = {}
    for name, found in sorted(kinds.items()):
        if len(found) == 1 and name != "schema_version":  # a name of two kinds: Arrow itself will say
            by_kind.setdefault(found.pop(), []).append(re.escape(name))
    guards = [f'"(?:{"|".join(names)})":{first[kind]}' for kind, names in by_kind.items()]
    return "|".join(['"[ \t\r]+:', '"schema_version":(?:[^1]|1[^,}])', '}[ \t\r]*{', *guards])


def _plans(ctx: SanitizeContext) -> tuple[dict[bytes, _TypePlan], str]:
    cached = ctx.__dict__.get("_columnar_plans")
    if cached is None:
        plans = {name.encode(): _plan(ctx.policy, tpol) for name, tpol in ctx.policy.types.items()}
        cached = ctx.__dict__["_columnar_plans"] = (plans, _screen(plans))
    return cached


def reading_plan(policy: Policy | None = None) -> tuple[dict[bytes, pj.ParseOptions], str]:
    """(Arrow's parse options per record type, keyed by the `type` tag as bytes; the screen pattern):
    how this path reads lines. For bench/upper_bound.py, which reads alike and applies no policy."""
    policy = policy or load_policy()
    plans = {name.encode(): _plan(policy, tpol) for name, tpol in policy.types.items()}
    return {name: plan.options for name, plan in plans.items()}, _screen(plans)


Group = tuple[list[int], list[bytes], list[int]]  # line numbers, lines, '":' per line


def route_lines(known: Container[bytes], screen: str, max_bytes: int, lines: list[tuple[int, bytes | Unreadable]],
                ) -> tuple[dict[bytes, Group], list[tuple[int, bytes | Unreadable]]]:
    """({record type: its plainly well-formed lines}, every other line): the byte tests, one
    pass of the `screen` pattern and the `type` tag route each line; types not in `known`,
    and any line in doubt, go to the second list (for the per-record path; not in order)."""
    slow: list[tuple[int, bytes | Unreadable]] = []
    candidates: list[tuple[int, bytes | Unreadable]] = []
    raws: list[bytes] = []
    keep, drop, add = candidates.append, slow.append, raws.append
    for item in lines:
        raw = item[1]
        if (type(raw) is bytes and raw[:2] == b'{"' and len(raw) <= max_bytes
                and (raw[-1] == 125 or raw.endswith(b"}\r"))  # 125: "}"
                and raw.count(b"{") == raw.count(b"}")  # most lines cut off after an inner object
                and (raw.isascii() or _utf8(raw))):  # Arrow does not check UTF-8 in strings
            keep(item)
            add(raw)
        else:
            drop(item)
    groups: dict[bytes, Group] = {}
    if not raws:
        return groups, slow
    flagged = pc.match_substring_regex(pa.array(raws, pa.binary()), screen)
    suspects = set(np.flatnonzero(flagged.to_numpy(zero_copy_only=False)).tolist()) if pc.any(flagged).as_py() else ()
    get = groups.get
    for i, raw in enumerate(raws):
        at = raw.find(_TYPE_TAG) + 8
        if at < 8 or i in suspects:
            drop(candidates[i])
            continue
        name = raw[at:raw.find(b'"', at)]
        group = get(name)
        if group is None:
            if name not in known:
                drop(candidates[i])
                continue
            group = groups[name] = ([], [], [])
        group[0].append(candidates[i][0])
        group[1].append(raw)
        group[2].append(raw.count(b'":'))  # each key of a compact line is one '":' (see _checked)
    return groups, slow


def sanitize_columnar(ctx: SanitizeContext, source: str, source_index: int,
                      lines: list[tuple[int, bytes | Unreadable]],
                      withdrawals: dict[int, dict[str, int]] | None = None) -> BatchResult:
    """`sanitize_lines`, with the plainly well-formed lines done a record type at a time."""
    if len(lines) < MIN_LINES:
        return sanitize_lines(ctx, source, source_index, lines, withdrawals)
    plans, screen = _plans(ctx)
    groups, slow = route_lines(plans, screen, ctx.policy.max_line_bytes, lines)

    result = BatchResult()
    stats = result.stats
    fast_records = 0
    for name, (numbers, raws, said) in groups.items():
        done, rerouted = _sanitize_type(ctx, plans[name], source_index, numbers, raws, said, result, withdrawals)
        fast_records += done
        slow.extend(zip((numbers[i] for i in rerouted), (raws[i] for i in rerouted), strict=True))
    stats["input_records"] += fast_records
    if slow:
        slow.sort(key=lambda item: item[0])
        _merge(result, sanitize_lines(ctx, source, source_index, slow, withdrawals))
    return result


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _merge(result: BatchResult, other: BatchResult) -> None:
    result.stats.update(other.stats)
    result.quarantine = other.quarantine
    for key, table in other.outputs.items():
        mine = result.outputs.get(key)
        result.outputs[key] = table if mine is None else pa.concat_tables([mine, table]).sort_by("_origin")


def read_typed(options: pj.ParseOptions, raws: list[bytes]) -> tuple[list[tuple[int, pa.Table]], list[int]]:
    """Parse `raws` with Arrow: ([(first index, table)] in order, indexes of lines it could not take).
    A failing range is split in halves until the bad lines are isolated; the good ones are kept.
    (The row an Arrow error names is not the line's index, so it is not used.)"""
    tables: list[tuple[int, pa.Table]] = []
    bad: list[int] = []
    buffer = pa.py_buffer(b"\n".join(raws))  # one copy; ranges are zero-copy slices of it
    offsets = [0]
    for raw in raws:
        offsets.append(offsets[-1] + len(raw) + 1)
    todo = [(0, len(raws))]
    while todo:
        lo, hi = todo.pop()
        if lo >= hi:
            continue
        size = offsets[hi] - offsets[lo] - 1
        try:
            table = pj.read_json(pa.BufferReader(buffer.slice(offsets[lo], size)), parse_options=options,
                                 read_options=_READ_OPTIONS)
            if table.num_rows == hi - lo:
                tables.append((lo, table))
                continue
            # more rows than lines: some line held two documents
        except Exception:  # noqa: BLE001, S110 - a failure only sends lines to the plain path
            pass
        if hi - lo == 1:
            bad.append(lo)
        else:
            mid = (lo + hi) // 2
            todo += [(mid, hi), (lo, mid)]
    tables.sort(key=lambda item: item[0])
    return tables, bad


def _all(masks: list[pa.Array]) -> pa.Array:
    ok = masks[0]
    for mask in masks[1:]:
        ok = pc.and_kleene(ok, mask)
    return pc.fill_null(ok, False)


_MONTH_DAYS = pa.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], pa.int32())
_LEAP_YEARS = pa.array([y for y in range(1900, 2200) if y % 4 == 0 and (y % 100 or y % 400 == 0)], pa.int32())


def _real_dates(values: pa.Array) -> pa.Array:
    """Values (matching `_TS`) whose day exists in their month: 31 April fails Arrow's cast
    for the whole column, so it is found first."""
    part = {name: pc.cast(pc.utf8_slice_codeunits(values, a, b), pa.int32())
            for name, a, b in (("year", 0, 4), ("month", 5, 7), ("day", 8, 10))}
    short_february = pc.and_(pc.equal(part["month"], 2), pc.invert(pc.is_in(part["year"], value_set=_LEAP_YEARS)))
    limit = pc.subtract(pc.take(_MONTH_DAYS, part["month"]), pc.cast(short_february, pa.int32()))
    return pc.less_equal(part["day"], limit)


def _timestamps(values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(UTC timestamps, mask of values that parsed); values already match `_TS`."""
    real = pc.fill_null(_real_dates(values), False)
    values = pc.if_else(real, values, pa.scalar(None, pa.string()))
    try:
        return pc.cast(values, TIMESTAMP), real
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. 30 February: value by value
        parsed, ok = [], []
        for value in values.to_pylist():
            try:
                parsed.append(None if value is None else parse_rfc3339(value))
                ok.append(value is not None)
            except ValueError:
                parsed.append(None)
                ok.append(False)
        return pa.array(parsed, TIMESTAMP), pa.array(ok, pa.bool_())


def _checked(plan: _TypePlan, table: pa.Table, said: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(rows whose allowed fields `fast_validate` would accept, rows that have no other key).
    The others keys of a row (removed fields, special categories) are only counted, from
    the row's JSON (see `_extra_keys`)."""
    consent, data = table.column("consent"), table.column("data")
    present = [pc.cast(pc.is_valid(table.column(i)), pa.int32()) for i in range(table.num_columns)]
    present += [pc.cast(pc.is_valid(pc.struct_field(consent, flag)), pa.int32()) for flag in CONSENT_FLAGS]
    present += [pc.cast(pc.is_valid(pc.struct_field(data, name)), pa.int32()) for name in plan.data_fields]
    keys = present[0]
    for p in present[1:]:
        keys = pc.add(keys, p)
    # `said`: the '":' in the line. Every key is one; one inside a value only makes them differ.
    event_id, device_id, ts = table.column("event_id"), table.column("device_id"), table.column("ts")
    masks = [
        pc.equal(table.column("schema_version"), 1),
        pc.equal(table.column("type"), plan.tpol.name),
        pc.match_substring_regex(event_id, _ALNUM), pc.less_equal(pc.utf8_length(event_id), 256),
        pc.match_substring_regex(device_id, _ALNUM),
        pc.match_substring_regex(ts, _TS),
        pc.is_valid(data),
    ]
    for name in plan.floats:  # NaN, infinities and -0 (orjson reads "-0" as the integer 0)
        col = pc.struct_field(data, name)
        masks.append(pc.or_kleene(pc.is_null(col), pc.and_(pc.is_finite(col), pc.not_equal(col, 0.0))))
    for name in plan.ints:
        col = pc.struct_field(data, name)
        masks.append(pc.or_kleene(pc.is_null(col), pc.and_(pc.less(pc.abs(col), _EXACT),
                                                            pc.equal(pc.floor(col), col))))
    for name in plan.coordinates:
        col = pc.struct_field(data, name)
        masks.append(pc.or_kleene(pc.is_null(col), pc.and_(pc.greater_equal(col, -180.0),
                                                            pc.less_equal(col, 180.0))))
    for name in plan.timestamps:
        col = pc.struct_field(data, name)
        form = pc.match_substring_regex(col, _TS)
        if name in plan.dates:
            form = pc.or_(form, pc.match_substring_regex(col, _DATE))
        masks.append(pc.or_kleene(pc.is_null(col), form))
    return _all(masks), pc.equal(keys, said)


def _sanitize_type(ctx: SanitizeContext, plan: _TypePlan, source_index: int, numbers: list[int],
                   raws: list[bytes], said: list[int], result: BatchResult,
                   withdrawals: dict[int, dict[str, int]] | None = None) -> tuple[int, list[int]]:
    """Sanitize one record type's candidate lines into `result`; returns (records done,
    indexes of lines for the plain path)."""
    tables, rerouted = read_typed(plan.options, raws)
    if not tables:
        return 0, rerouted
    rows = np.concatenate([np.arange(lo, lo + t.num_rows) for lo, t in tables])  # index in raws of each row
    table = pa.concat_tables([t for _, t in tables]).combine_chunks()
    checked, only_allowed = _checked(plan, table, pa.array(np.asarray(said, dtype=np.int32)[rows]))
    table = table.append_column("_plain", only_allowed)
    # Timestamps are parsed on every row, those `_checked` refused masked out (`_timestamps` takes
    # only values of the checked form), so the rows are filtered once, not once per check.
    unset = pa.scalar(None, pa.string())
    event_time, parsed = _timestamps(pc.if_else(checked, table.column("ts").combine_chunks(), unset))
    limit = pa.scalar(ctx.future_limit, TIMESTAMP)
    ok = pc.fill_null(pc.and_(checked, pc.and_(parsed, pc.less_equal(event_time, limit))), False)
    for name in plan.timestamps:  # data timestamps (license expiry) must parse too
        col = pc.if_else(checked, pc.struct_field(table.column("data"), name).combine_chunks(), unset)
        if name in plan.dates:  # a date is 00:00 UTC of that day (fields.parse_date_or_rfc3339)
            col = pc.if_else(pc.equal(pc.utf8_length(col), 10), pc.utf8_replace_slice(col, 10, 10, "T00:00:00Z"),
                             col)
        _, good = _timestamps(col)
        ok = pc.and_(ok, pc.or_kleene(pc.is_null(col), good))
    # The rows the checks refused, and those `_extra_keys` refuses, go to the plain path; they are
    # left out by the gates' one filter (a filter copies every column of the table).
    alive = ok.to_numpy(zero_copy_only=False)
    table = table.append_column("event_time", event_time)
    extra = _extra_keys(ctx, table, rows, raws, alive)
    if extra is not None and extra.rerouted:
        alive &= ~np.isin(rows, extra.rerouted)
    rerouted.extend(rows[~alive].tolist())
    done = int(alive.sum())
    if not done:
        return 0, rerouted
    gated, rows, area_locked = _gates(ctx, plan.tpol, table, rows, result.stats, withdrawals, alive)
    failed = []
    if len(rows):
        failed = _write(ctx, plan.tpol, gated, rows, numbers, source_index, area_locked, result)
        rerouted.extend(failed)
        done -= len(failed)
    if extra is not None:
        extra.count(ctx, plan.tpol, rows, failed, result.stats)
    return done, rerouted


@dataclass
class _ExtraKeys:
    """Rows with keys the policy does not allow: what `sanitize_lines` counts for them."""

    records: dict[int, dict]  # row -> parsed JSON
    special: dict[int, Counter]  # row -> its special-category counts
    rerouted: list[int]  # rows whose JSON fast_validate does not take (unknown consent flags...)

    def count(self, ctx: SanitizeContext, tpol: TypePolicy, kept: np.ndarray, failed: list[int],
              stats: Counter) -> None:
        """Special categories of every row that was not rerouted (as sanitize_lines counts
        them before any gate), removed fields of rows kept by the gates (counted after them)."""
        failed_rows = set(failed)
        kept_rows = set(kept.tolist()) - failed_rows
        for row, counts in self.special.items():
            if row not in failed_rows:
                stats.update(counts)
        for row, rec in self.records.items():
            if row in kept_rows:
                _removed_fields(rec, tpol, ctx, stats)


def _extra_keys(ctx: SanitizeContext, table: pa.Table, rows: np.ndarray, raws: list[bytes],
                alive: np.ndarray) -> _ExtraKeys | None:
    """What `_ExtraKeys` holds, for the `alive` rows that have keys besides the allowed ones."""
    other = ~table.column("_plain").to_numpy() & alive
    if not other.any():
        return None
    extra = _ExtraKeys({}, {}, [])
    for row in rows[other].tolist():
        raw = raws[row]
        try:  # Arrow skipped the other keys' values; orjson may not take them (NaN, say)
            rec = orjson.loads(raw)
        except orjson.JSONDecodeError:
            rec = None
        if rec is None or has_duplicate_key(raw, rec) or fast_validate(rec, ctx) is None:
            extra.rerouted.append(row)
            continue
        extra.records[row] = rec
        if ctx.special.may_contain(rec, raw):
            counts: Counter = Counter()
            count_special(ctx, rec, counts)
            extra.special[row] = counts
    return extra


def _gates(ctx: SanitizeContext, tpol: TypePolicy, table: pa.Table, rows: np.ndarray, stats: Counter,
           withdrawals: dict[int, dict[str, int]] | None, alive: np.ndarray,
           ) -> tuple[pa.Table, np.ndarray, pa.Array]:
    """Children, consent, withdrawals, retention, in the order of `sanitize_lines`; drops are counted.
    Rows not `alive` (taken by the plain path) are left out and not counted."""
    n = table.num_rows
    live = pa.array(alive)
    dropped = pc.invert(live)
    if not tpol.children_allowed:
        child = pc.and_(pc.fill_null(table.column("is_child"), False).combine_chunks(), live)
        stats["dropped/child_data"] += pc.sum(child).as_py() or 0
        dropped = pc.or_(dropped, child)
    consent = table.column("consent")
    for flag in ctx.needed[tpol.name]:
        missing = pc.and_(pc.invert(dropped), pc.invert(pc.fill_null(pc.struct_field(consent, flag), False)))
        count = pc.sum(missing).as_py() or 0
        if count:
            stats[f"dropped/consent_missing:{flag}"] += count
            dropped = pc.or_(dropped, missing)
    if withdrawals:
        withdrawn = pc.and_(pc.invert(dropped), _withdrawn(ctx, ctx.needed[tpol.name], table, withdrawals))
        count = pc.sum(withdrawn).as_py() or 0
        if count:
            stats["dropped/consent_withdrawn"] += count
            dropped = pc.or_(dropped, withdrawn)
    expired = pc.and_(pc.invert(dropped), pc.fill_null(
        pc.less(table.column("event_time"), pa.scalar(ctx.expiry[tpol.name], TIMESTAMP)), False))
    locked = pa.array(np.zeros(n, dtype=bool))
    count = pc.sum(expired).as_py() or 0
    if count:
        if tpol.on_expiry == "delete":
            stats["dropped/expired"] += count
            dropped = pc.or_(dropped, expired)
        else:
            stats["dropped/expired_locked"] += count
            stats[f"locked/{tpol.name}"] += count
            locked = expired
    keep = pc.invert(dropped)
    if pc.all(keep).as_py():
        return table, rows, locked
    return table.filter(keep), rows[keep.to_numpy(zero_copy_only=False)], locked.filter(keep)


def _withdrawn(ctx: SanitizeContext, needed: tuple[str, ...], table: pa.Table,
               withdrawals: dict[int, dict[str, int]]) -> pa.Array:
    """Rows dated at or after their device withdrew a basis the type needs (`withdrawn_basis`):
    per distinct device, the earliest such withdrawal is looked up once."""
    devices = pc.dictionary_encode(table.column("device_id").combine_chunks())
    earliest = [earliest_withdrawal(withdrawals.get(ctx.device_hash(device)), needed)
                for device in devices.dictionary.to_pylist()]
    since = pa.array(earliest, pa.int64()).take(devices.indices)
    event = pc.cast(table.column("event_time").combine_chunks(), pa.int64())  # microseconds, as `micros`
    return pc.fill_null(pc.greater_equal(event, since), False)


# Rows whose value of a field held special-category data: (field path, row mask, categories).
_SpecialRows = list[tuple[str, pa.Array, tuple[str, ...]]]


def _distinct(ctx: SanitizeContext, rule: FieldRule, values: pa.Array,
              failed_rows: list[pa.Array], special: _SpecialRows | None = None, path: str = "") -> list[pa.Array]:
    """Output columns of `rule`, its transform computed once per distinct value; rows whose value
    held special-category data are added to `special` (under `path`), to be counted."""
    encoded = pc.dictionary_encode(values)
    failed: dict[int, str] = {}
    found: dict[int, tuple[str, ...]] = {}
    outputs = ctx.engine.columns(rule, encoded.dictionary.to_pylist(), failed, distinct=True, special=found)
    if failed:
        failed_rows.append(pc.fill_null(pc.is_in(encoded.indices, value_set=pa.array(list(failed), pa.int32())),
                                        False))
    if found and special is not None:
        _special_rows(encoded.indices, found, special, path)
    return [pa.array(col, type=f.type).take(encoded.indices)
            for col, f in zip(outputs, rule.output_columns(), strict=True)]


def _text(ctx: SanitizeContext, rule: FieldRule, values: pa.Array, failed_rows: list[pa.Array],
          special: _SpecialRows, path: str) -> pa.Array:
    """`text`: values the free-text rule provably leaves unchanged (FieldEngine.clean_mask, RE2
    kernels over the whole column) are kept as they are; the others go value by value. A column
    whose values repeat (product names, verdicts) is proven clean per distinct value: one hash
    pass instead of the regex kernels on every row."""
    values = values.cast(pa.string())
    repeats = ctx.__dict__.setdefault("_text_repeats", {})
    if repeats.get(id(rule), True):
        encoded = pc.dictionary_encode(values)
        repeats[id(rule)] = len(encoded.dictionary) <= _REPEATS * len(values)
        return _text_distinct(ctx, rule, encoded, failed_rows, special, path)
    needs = pc.and_(pc.is_valid(values), pc.invert(ctx.engine.clean_mask(values)))
    if not pc.any(needs).as_py():
        return values
    subset = pc.if_else(needs, values, pa.scalar(None, pa.string()))
    [scrubbed] = _distinct(ctx, rule, subset, failed_rows, special, path)
    return pc.if_else(needs, scrubbed, values)


_REPEATS = 0.5  # a text column with at most this share of distinct values is done per distinct value


def _text_distinct(ctx: SanitizeContext, rule: FieldRule, encoded: pa.DictionaryArray,
                   failed_rows: list[pa.Array], special: _SpecialRows, path: str) -> pa.Array:
    """`_text` over a dictionary-encoded column: the clean mask and the rule per distinct value."""
    words = encoded.dictionary
    needs = pc.invert(ctx.engine.clean_mask(words))
    if pc.any(needs).as_py():
        todo = np.flatnonzero(needs.to_numpy(zero_copy_only=False))
        failed: dict[int, str] = {}
        found: dict[int, tuple[str, ...]] = {}
        [out] = ctx.engine.columns(rule, words.take(pa.array(todo)).to_pylist(), failed, distinct=True,
                                   special=found)
        words = pc.replace_with_mask(words, needs, pa.array(out, pa.string()))
        if failed:
            bad = pa.array(todo[list(failed)], pa.int32())
            failed_rows.append(pc.fill_null(pc.is_in(encoded.indices, value_set=bad), False))
        if found:
            _special_rows(encoded.indices, {int(todo[i]): c for i, c in found.items()}, special, path)
    return words.take(encoded.indices)


def _special_rows(indices: pa.Array, found: dict[int, tuple[str, ...]], special: _SpecialRows, path: str) -> None:
    """Add to `special` the rows (a mask over `indices`) whose dictionary entry held special-category
    data, one mask per set of categories."""
    by_categories: dict[tuple[str, ...], list[int]] = {}
    for index, categories in found.items():
        by_categories.setdefault(categories, []).append(index)
    for categories, entries in by_categories.items():
        mask = pc.fill_null(pc.is_in(indices, value_set=pa.array(entries, pa.int32())), False)
        special.append((path, mask, categories))


def _url(ctx: SanitizeContext, rule: FieldRule, values: pa.Array, failed_rows: list[pa.Array]) -> list[pa.Array]:
    """`url`: URLs of the common spelling are reduced once per distinct (scheme, authority),
    found by one regex kernel; nearly every visited URL is distinct, its host is not.
    The others go value by value through `_distinct`."""
    parts = pc.extract_regex(values, AUTHORITY_PATTERN)
    simple = pc.fill_null(pc.and_(pc.is_valid(parts), pc.match_substring_regex(values, AUTHORITY_PRINTABLE)), False)
    if not pc.any(simple).as_py():
        return _distinct(ctx, rule, values, failed_rows)
    keys = pc.binary_join_element_wise(pc.ascii_lower(pc.struct_field(parts, "scheme")),
                                       pc.struct_field(parts, "authority"), " ")  # no space in either
    encoded = pc.dictionary_encode(pc.if_else(simple, keys, pa.scalar(None, pa.string())))
    reduced = [ctx.urls.authority(*key.split(" ", 1)) for key in encoded.dictionary.to_pylist()]
    columns = [pa.array(col, type=f.type).take(encoded.indices)
               for col, f in zip(zip(*reduced, strict=True), rule.output_columns(), strict=True)]
    if pc.all(simple).as_py():
        return columns
    others = _distinct(ctx, rule, pc.if_else(simple, pa.scalar(None, pa.string()), values), failed_rows)
    return [pc.if_else(simple, mine, other) for mine, other in zip(columns, others, strict=True)]


def _column(ctx: SanitizeContext, rule: FieldRule, values: pa.Array, failed_rows: list[pa.Array],
            special: _SpecialRows, path: str) -> list[pa.Array]:
    t = rule.transform
    if t == "url":
        return _url(ctx, rule, values, failed_rows)
    if t in ("bool", "int", "float"):  # checked by the schema and _checked: written as they are
        return [values.cast(rule.output_columns()[0].type)]
    if t == "text":
        return [_text(ctx, rule, values, failed_rows, special, path)]
    if t == "sha256":  # FieldEngine: lower-cased when 64 hex digits, else null; values never repeat
        return [pc.if_else(pc.match_substring_regex(values, "^[0-9a-fA-F]{64}$"), pc.ascii_lower(values),
                           pa.scalar(None, pa.string()))]
    return _distinct(ctx, rule, values, failed_rows, special, path)


def _write(ctx: SanitizeContext, tpol: TypePolicy, table: pa.Table, rows: np.ndarray, numbers: list[int],
           source_index: int, locked: pa.Array, result: BatchResult) -> list[int]:
    """Transform accepted rows and add them to `result` by partition; returns the rows whose
    transform failed (not written here: the plain path quarantines them with the reason)."""
    failed_rows: list[pa.Array] = []
    special: _SpecialRows = []
    columns: list[pa.Array] = []
    for rule in ctx.policy.envelope:
        columns.extend(_column(ctx, rule, table.column(rule.name).combine_chunks(), failed_rows, special, rule.name))
    columns.append(table.column("event_time").combine_chunks())
    encoded = pc.dictionary_encode(table.column("country").combine_chunks(), null_encoding="encode")
    regions = [ctx.region(c) for c in encoded.dictionary.to_pylist()]
    columns.append(pa.array([r[0] for r in regions], pa.string()).take(encoded.indices))
    columns.append(pa.array([r[2] for r in regions], pa.list_(pa.string())).take(encoded.indices))
    region_names = sorted({r[1] for r in regions})
    region_code = pa.array([region_names.index(r[1]) for r in regions], pa.int64()).take(encoded.indices)
    data = table.column("data").combine_chunks()
    for rule in tpol.fields:
        columns.extend(_column(ctx, rule, pc.struct_field(data, rule.name), failed_rows, special, f"data.{rule.name}"))
    joined = pc.binary_join_element_wise(table.column("device_id"), table.column("event_id"), "\x00")
    columns.append(pa.array(list(map(ctx.joined_key, joined.cast(pa.binary()).to_pylist())), pa.int64()))
    base = source_index << ORIGIN_LINE_BITS
    columns.append(pa.array(np.bitwise_or(np.asarray(numbers, dtype=np.int64)[rows], base)))
    schema = ctx.policy.file_schema(tpol.name)
    full = pa.schema(list(schema) + HIDDEN_COLUMNS, metadata=schema.metadata)
    out = pa.Table.from_arrays(columns, schema=full)

    failed: list[int] = []
    keep = None
    if failed_rows:
        bad = failed_rows[0]
        for mask in failed_rows[1:]:
            bad = pc.or_(bad, mask)
        if pc.any(bad).as_py():
            failed = rows[bad.to_numpy(zero_copy_only=False)].tolist()
            keep = pc.invert(bad)
    for path, mask, categories in special:  # rows that fail are counted by the plain path, which takes them
        count_special_values(result.stats, path, categories, pc.sum(mask if keep is None else pc.and_(mask, keep))
                             .as_py() or 0)
    if keep is not None:
        out, locked, region_code = out.filter(keep), locked.filter(keep), region_code.filter(keep)
        if not out.num_rows:
            return failed
    written = out.num_rows - (pc.sum(locked).as_py() or 0)
    if written:
        result.stats[f"output/{tpol.name}"] += written
    count_secret_like_urls(ctx.policy, tpol, out, result.stats)

    # One integer per row for its partition (area, region, day), sorted together with the
    # input order: each partition is then one run of the sorted rows, in input order.
    days = pc.dictionary_encode(pc.cast(out.column("event_time"), pa.date32()).combine_chunks())
    day_names = [d.isoformat() for d in days.dictionary.to_pylist()]
    n_days = len(day_names)
    code = pc.add(pc.multiply(pc.add(pc.multiply(pc.cast(locked, pa.int64()), len(region_names)), region_code),
                              n_days), pc.cast(days.indices, pa.int64()))
    codes = code.to_numpy()
    order = np.lexsort((out.column("_origin").to_numpy(), codes))
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for start, end in zip(starts, ends, strict=True):
        c = int(sorted_codes[start])
        area = "locked" if c >= len(region_names) * n_days else "data"
        region = region_names[(c // n_days) % len(region_names)]
        # take() copies the rows: a zero-copy slice would keep the whole batch alive
        result.outputs[PartitionKey(area, tpol.name, region, day_names[c % n_days])] = out.take(
            pa.array(order[start:end]))
    return failed
