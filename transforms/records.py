"""Sanitize a batch of raw telemetry lines: the whole policy, without Beam.

Every non-blank line ends in exactly one place (POLICY.md promises 9 and 10):
an output row, a drop counted under a named rule, or a quarantine row with its
reason. The order of the gates is fixed and documented in the README:
parse -> envelope and field types -> future clock -> children -> consent ->
consent withdrawn -> retention; duplicates are removed later, when rows of a partition meet.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from schemas.iso3166 import ALPHA2
from schemas.policy import CONSENT_FLAGS, Policy, PolicyError, TypePolicy
from transforms.fields import TIME_PARSERS, FieldEngine, FieldTypeError, check, parse_rfc3339
from transforms.pseudonym import Pseudonymizer
from transforms.quarantine import mask_line
from transforms.special import SpecialCategoryMatcher, words
from transforms.special_text import SpecialText, count_special_values, default_vocabulary
from transforms.text import TextScrubber
from transforms.urls import SECRET_LIKE, UrlSanitizer
from transforms.withdrawals import micros, withdrawn_basis

BOM = b"\xef\xbb\xbf"
NAME_MEMO_ENTRIES = 10_000  # field names as the report shows them, per worker
ORIGIN_LINE_BITS = 40  # _origin = file index << 40 | line number: a total, runner-independent order
STRUCTURAL = frozenset({"schema_version", "type", "ts", "country", "is_child", "consent", "data"})
# Words that may accompany a special-category term in a field name that is reported as is
# ("healthStatus", "political_opinion"); any other name is reported by a keyed digest only.
_GENERIC_WORDS = frozenset("""
status data info information type level score flag value values details detail record group membership member
origin opinion opinions orientation condition conditions history notes note category self declared reported
gegevens daten donnees voorkeur overtuiging meinung einstellung zugehoerigkeit zugehorigkeit appartenance
origine informatie of de van und der die das la le des du het een
""".split())

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source_file", pa.string()),
        pa.field("line_number", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("line_excerpt", pa.string()),
        pa.field("line_bytes", pa.int64()),
        pa.field("line_digest", pa.string()),
    ],
    metadata={"note": "line_excerpt keeps structure and known field names only; values are masked"},
)
HIDDEN_COLUMNS = [pa.field("_key", pa.int64()), pa.field("_origin", pa.int64())]


class Rejected(Exception):
    """A line that cannot be accepted: quarantined with `reason` and a value-free `detail`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class Unreadable(NamedTuple):
    """Stands in a batch, in place of a line, for the part of a file that could not be read:
    where reading stopped (byte offset in the file), how many bytes of the file from there
    were not read, and a value-free reason. Quarantined as `unreadable_input`."""

    offset: int
    lost_bytes: int
    reason: str

    def quarantine_row(self, source: str, line_no: int) -> tuple:
        """The quarantine row (QUARANTINE_SCHEMA order): line_bytes holds the bytes lost."""
        return (source, line_no, "unreadable_input",
                f"{self.reason}; not read from byte {self.offset}: {self.lost_bytes} bytes", "",
                self.lost_bytes, "")

    def count(self, source: str, stats: Counter) -> None:  # type: ignore[override]  # not tuple.count
        stats["input_records"] += 1
        stats["quarantined/unreadable_input"] += 1
        stats[f"unreadable_bytes/{source}"] += self.lost_bytes


class PartitionKey(NamedTuple):
    area: str  # "data" or "locked"
    record_type: str
    user_region: str
    event_date: str


@dataclass
class BatchResult:
    outputs: dict[PartitionKey, pa.Table] = field(default_factory=dict)
    quarantine: pa.Table | None = None
    stats: Counter = field(default_factory=Counter)


@dataclass
class SanitizeContext:
    """Everything a worker needs to sanitize; built once per worker, cheap to pickle."""

    policy: Policy
    key: bytes
    as_of: datetime

    def __post_init__(self) -> None:
        self.pseudonym = Pseudonymizer(self.key)
        self.urls = UrlSanitizer()
        self.special = SpecialCategoryMatcher(self.policy.special_categories)
        self.scrubber = TextScrubber(self.pseudonym, self.urls.reduce)
        self.special_text = SpecialText(self.special, default_vocabulary(self.policy.special_categories))
        self.engine = FieldEngine(self.pseudonym, self.urls, self.scrubber, self.key, self.special_text)
        self.known_keys = frozenset(
            {r.name for r in self.policy.envelope}
            | STRUCTURAL
            | {"eula", "ksn", "marketing", "dumps", "antispam", "antitheft", "child_protection"}
            | {f.name for t in self.policy.types.values() for f in t.fields}
        )
        for name in self.known_keys:
            if self.special.category_of(name):
                raise PolicyError(f"{self.policy.source}: field '{name}' is allowed but names a special category")
        self.special.ordinary.update(self.known_keys)
        self.needed = {t: (*self.policy.base_consent, *p.consent) for t, p in self.policy.types.items()}
        self.allowed_envelope = frozenset({r.name for r in self.policy.envelope} | STRUCTURAL)
        self.future_limit = self.as_of + timedelta(seconds=self.policy.future_tolerance_seconds)
        self.expiry = {t: self.as_of - timedelta(days=p.retention_days) for t, p in self.policy.types.items()}
        self.region_cache: dict[Any, tuple[str | None, str, list[str]]] = {}
        self.masked_keys: dict[str, str] = {}  # quarantine excerpts: key token -> what is shown
        self._reportable: dict[tuple[str, bool], str] = {}  # see reportable_name
        self._keyed_hash = hashlib.blake2b(digest_size=8, key=self.key[:64])
        self.fast_plans = {t: _fast_plan(p) for t, p in self.policy.types.items()}

    def __getstate__(self) -> dict:
        return {"policy": self.policy, "key": self.key, "as_of": self.as_of}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    def region(self, country: Any) -> tuple[str | None, str, list[str]]:
        """(normalised country or None, region name, processing locations), cached per raw value."""
        hit = self.region_cache.get(country)
        if hit is None:
            code = country.strip().upper() if isinstance(country, str) else None
            code = code if code in ALPHA2 else None
            region = self.policy.region_of(code)
            hit = self.region_cache[country] = (code, region.name, list(region.processing_locations))
        return hit

    def dedupe_key(self, device_id: str, event_id: str) -> int:
        """64-bit keyed hash of (device, event): equal for producer retries of one event."""
        h = self._keyed_hash.copy()  # cheaper than keying a new state per record
        h.update(f"{device_id}\x00{event_id}".encode("utf-8", "surrogatepass"))
        return int.from_bytes(h.digest(), "big", signed=True)

    def joined_key(self, joined: bytes) -> int:
        """`dedupe_key` of b"device\\x00event" already joined and encoded (the columnar path)."""
        h = self._keyed_hash.copy()
        h.update(joined)
        return int.from_bytes(h.digest(), "big", signed=True)

    def device_hash(self, device_id: str) -> int:
        """64-bit keyed hash of a raw device id: how withdrawals are matched without holding ids."""
        return self.dedupe_key(device_id, "")

    def reportable_name(self, key: str, special: bool = False) -> str:
        """A field name as the report may show it: a key can itself carry data (an e-mail,
        an API key), so only names the policy knows, or special-category terms with generic
        words, are shown as they are; any other name by a keyed digest that still groups."""
        if key in self.known_keys:
            return key
        memo = self._reportable
        shown = memo.get((key, special))
        if shown is None:
            if len(memo) >= NAME_MEMO_ENTRIES:  # names are the producers' choice: keep the memo bounded
                memo.clear()
            shown = memo[(key, special)] = self._reportable_name(key, special)
        return shown

    def _reportable_name(self, key: str, special: bool) -> str:
        if special and len(key) <= 64:
            ws = words(key)
            if ws and all(w in _GENERIC_WORDS or self.special.category_of(w) for w in ws):
                return key
        digest = hmac.new(self.key, b"name:" + key.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return f"<name #{digest[:8]}>"

    def line_digest(self, raw: bytes) -> str:
        return hmac.new(self.key, b"line:" + raw, hashlib.sha256).hexdigest()[:32]


def _json_reason(exc: orjson.JSONDecodeError, raw: bytes) -> str:
    msg = str(exc).lower()
    if "utf-8" in msg or "surrogate" in msg:
        return "invalid_utf8"
    if "end of data" in msg or "eof" in msg:
        return "truncated_json"
    return "invalid_json"


def parse_line(raw: bytes, max_bytes: int) -> Any:
    """The JSON value of one line; Rejected with the reason when it is too long, not JSON,
    or has an object with a repeated key (INPUT.md: parsers disagree on which copy wins)."""
    if len(raw) > max_bytes:
        raise Rejected("line_too_long", f"{len(raw)} bytes > {max_bytes}")
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Rejected(_json_reason(exc, raw)) from None
    if has_duplicate_key(raw, rec):
        raise Rejected("duplicate_key", "an object repeats a key")
    return rec


_SPACED_KEY_END = re.compile(rb'"[ \t\r\n]+:')  # a key ends with '":', or so with white space between


def _key_count(value: Any) -> int:
    """Keys of every object in `value`, at any depth (repeats already merged by the parser)."""
    count = 0
    stack = [value] if type(value) in _NESTED else []
    pop, push = stack.pop, stack.append
    while stack:  # a loop, not recursion: a line may nest deeper than Python's recursion limit
        node = pop()
        if type(node) is dict:
            count += len(node)
            node = node.values()
        for v in node:
            if type(v) in _NESTED:
                push(v)
    return count


_NESTED = (dict, list)


def _pairs_unique(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


def has_duplicate_key(raw: bytes, rec: Any) -> bool:
    """True when some object of the JSON text `raw` (parsed as `rec`) names a key twice.

    Proof without a second parse: each key in the text ends with `"` and `:` (white space
    between allowed), so when the text has no more such endings than `rec` has keys, no key
    was repeated. Otherwise (a repeat, or a string value holding `":`) the text is parsed
    again keeping every pair, escapes decoded (`"k\u0073n"` is `"ksn"`)."""
    if type(rec) not in (dict, list):
        return False
    keys = _key_count(rec)
    said = raw.count(b'":')
    if said == keys and _SPACED_KEY_END.search(raw) is None:
        return False
    try:
        json.loads(raw, object_pairs_hook=_pairs_unique)
    except Exception:  # noqa: BLE001 - a repeat, or a text json cannot take: fail closed
        return True
    return False


def count_special(ctx: SanitizeContext, rec: Any, stats: Counter) -> None:
    """Count every special-category key in `rec`, at any depth (they are never written)."""
    for _path, key, category in ctx.special.find(rec):
        stats["fields_removed/special_category"] += 1
        stats[f"special_category/{category}/{ctx.reportable_name(key, special=True)}"] += 1


def _require_str(rec: dict, name: str, optional: bool = False) -> str | None:
    value = rec.get(name)
    if value is None:
        if optional:
            return None
        raise Rejected("missing_field", name)
    if not isinstance(value, str):
        raise Rejected("wrong_type", f"{name}: expected a string, got {type(value).__name__}")
    if not value.strip() and not optional:
        raise Rejected("missing_field", name)
    return value


def validate(rec: Any, ctx: SanitizeContext) -> tuple[TypePolicy, datetime]:
    """Check the envelope and the allowed data fields' types; raise Rejected with a reason."""
    if not isinstance(rec, dict):
        raise Rejected("not_an_object", type(rec).__name__)
    version = rec.get("schema_version")
    if version is None:
        raise Rejected("missing_field", "schema_version")
    if type(version) is not int or version != 1:
        raise Rejected("unknown_schema_version", f"schema_version: {type(version).__name__}")
    rtype = _require_str(rec, "type")
    tpol = ctx.policy.types.get(rtype or "")
    if tpol is None:
        raise Rejected("unknown_type", "type")
    _require_str(rec, "event_id")
    if len(rec["event_id"]) > 256:
        raise Rejected("wrong_type", "event_id: longer than 256 characters")
    _require_str(rec, "device_id")
    for name in ("user_id", "tenant_id", "product", "country"):
        _require_str(rec, name, optional=True)
    ts = rec.get("ts")
    if ts is None:
        raise Rejected("missing_field", "ts")
    try:
        event_time = parse_rfc3339(ts)
    except FieldTypeError as exc:
        raise Rejected("invalid_timestamp", f"ts: {exc}") from None
    is_child = rec.get("is_child")
    if is_child is not None and not isinstance(is_child, bool):
        raise Rejected("wrong_type", f"is_child: expected true/false, got {type(is_child).__name__}")
    consent = rec.get("consent")
    if consent is not None:
        if not isinstance(consent, dict):
            raise Rejected("wrong_type", f"consent: expected an object, got {type(consent).__name__}")
        for flag, value in consent.items():
            if value is not None and not isinstance(value, bool):
                name = flag if flag in CONSENT_FLAGS else "<unknown flag>"
                raise Rejected("wrong_type", f"consent.{name}: expected true/false, got {type(value).__name__}")
    data = rec.get("data")
    if data is None:
        raise Rejected("missing_field", "data")
    if not isinstance(data, dict):
        raise Rejected("wrong_type", f"data: expected an object, got {type(data).__name__}")
    for rule in tpol.fields:
        value = data.get(rule.name)
        if value is not None:
            try:
                check(rule, value)
            except FieldTypeError as exc:
                reason = "invalid_timestamp" if rule.transform in TIME_PARSERS else "wrong_type"
                raise Rejected(reason, f"data.{rule.name}: {exc}") from None
    return tpol, event_time


_SIMPLE_TYPES = {  # transforms whose check is a type test alone (see fields.check)
    "text": frozenset({str, int, float}), "pseudonym": frozenset({str, int, float}), "bool": frozenset({bool}),
    "float": frozenset({int, float}),
}
_STRING_CHECKED = frozenset({"enum", "url", "account", "scrub", "email_domain", "digest", "ip", "sha256"})


def _fast_plan(tpol: TypePolicy) -> tuple[tuple[tuple[str, frozenset], ...], tuple]:
    """(fields checked by type alone, fields that need `check`) of one record type."""
    simple, checked = [], []
    for rule in tpol.fields:
        if rule.transform in _SIMPLE_TYPES:
            simple.append((rule.name, _SIMPLE_TYPES[rule.transform]))
        elif rule.transform in _STRING_CHECKED:
            simple.append((rule.name, frozenset({str})))
        else:
            checked.append(rule)
    return tuple(simple), tuple(checked)


def fast_validate(rec: Any, ctx: SanitizeContext) -> tuple[TypePolicy, datetime] | None:
    """`validate` for the common case: the same result when the record is clearly valid,
    None when in any doubt (the caller then runs `validate`, which names the reason).
    It only ever accepts what `validate` accepts; tests compare the two on dirty data."""
    if type(rec) is not dict:
        return None
    get = rec.get
    version = get("schema_version")
    if type(version) is not int or version != 1:
        return None
    rtype = get("type")
    if type(rtype) is not str:
        return None
    tpol = ctx.policy.types.get(rtype)
    if tpol is None:
        return None
    event_id, device_id = get("event_id"), get("device_id")
    if type(event_id) is not str or type(device_id) is not str or len(event_id) > 256:
        return None
    if not event_id.strip() or not device_id.strip():
        return None
    for name in ("user_id", "tenant_id", "product", "country"):
        value = get(name)
        if value is not None and type(value) is not str:
            return None
    ts = get("ts")
    if type(ts) is not str:
        return None
    is_child = get("is_child")
    if is_child is not None and type(is_child) is not bool:
        return None
    consent = get("consent")
    if consent is not None:
        if type(consent) is not dict:
            return None
        for value in consent.values():
            if value is not None and type(value) is not bool:
                return None
    data = get("data")
    if type(data) is not dict:
        return None
    simple, checked = ctx.fast_plans[rtype]
    dget = data.get
    for name, types in simple:
        value = dget(name)
        if value is not None and type(value) not in types:
            return None
    try:
        for rule in checked:
            value = dget(rule.name)
            if value is not None:
                check(rule, value)
        return tpol, parse_rfc3339(ts)
    except FieldTypeError:
        return None


def _removed_fields(rec: dict, tpol: TypePolicy, ctx: SanitizeContext, stats: Counter) -> None:
    """Count fields the allow-list removes (names only when they look like field names)."""
    for path, keys, allowed in (("", rec.keys(), ctx.allowed_envelope), ("data.", rec["data"].keys(), tpol.allowed)):
        if len(keys) <= len(allowed) and allowed.issuperset(keys):
            continue
        for key in keys:
            if key in allowed or ctx.special.category_of(key):
                continue
            stats["fields_removed/not_allowed"] += 1
            name = ctx.reportable_name(key)
            stats[f"removed_field/{tpol.name}/{path}{name}"] += 1


def count_secret_like_urls(policy: Policy, tpol: TypePolicy, table: pa.Table, stats: Counter) -> None:
    """URL values whose host was a token, not a machine name (status `secret_like`): written with
    empty URL columns, and counted in the report as removed fields."""
    for rule in (*policy.envelope, *tpol.fields):
        if rule.transform == "url":
            status = table.column(rule.output_columns()[-1].name)
            n = pc.sum(pc.equal(status, SECRET_LIKE)).as_py()
            if n:
                stats["fields_removed/url_secret_like"] += n


def sanitize_lines(ctx: SanitizeContext, source: str, source_index: int,
                   lines: list[tuple[int, bytes | Unreadable]],
                   withdrawals: dict[int, dict[str, int]] | None = None) -> BatchResult:
    """Sanitize numbered raw lines (without newline) of one file; see module docstring.

    `withdrawals` maps device hashes to withdrawn consent bases (see transforms.withdrawals).
    """
    result = BatchResult()
    stats = result.stats
    quarantine: list[tuple] = []
    accepted: dict[tuple[str, str, str, str], list[tuple[dict, datetime, str | None, list[str], int]]] = \
        defaultdict(list)
    written: Counter = Counter()
    dates: dict = {}
    policy = ctx.policy
    special = ctx.special
    allowed_envelope = ctx.allowed_envelope
    ordinary = special.ordinary
    future_limit = ctx.future_limit
    needs, expiry, region_cache = ctx.needed, ctx.expiry, ctx.region_cache
    records_in = 0

    for line_no, raw in lines:
        if isinstance(raw, Unreadable):  # the reader could not read the rest of the chunk
            raw.count(source, stats)
            quarantine.append(raw.quarantine_row(source, line_no))
            continue
        if raw.startswith(BOM):
            raw = raw[3:]
        if not raw or raw.isspace():
            stats["blank_lines"] += 1
            continue
        records_in += 1
        try:
            rec = parse_line(raw, policy.max_line_bytes)
            checked = fast_validate(rec, ctx)
            plain = False  # every key allowed, so nothing is removed and nothing is special
            if checked is not None:
                tpol, event_time = checked
                consent = rec["consent"] if "consent" in rec else None
                plain = (allowed_envelope.issuperset(rec) and tpol.allowed.issuperset(rec["data"])
                         and (consent is None or ordinary.issuperset(consent))
                         and raw.count(b"{") == (2 if consent is None else 3))  # no deeper object
            if not plain:
                if special.may_contain(rec, raw):
                    count_special(ctx, rec, stats)
                if checked is None:
                    tpol, event_time = validate(rec, ctx)
            if event_time > future_limit:
                raise Rejected("future_timestamp", "ts: later than --as-of plus the tolerance")
        except Exception as exc:  # noqa: BLE001 - one odd line must never stop the run
            rej = exc if isinstance(exc, Rejected) else Rejected("internal_error", exc.__class__.__name__)
            excerpt_src = raw[:2600].decode("utf-8", "replace")
            quarantine.append((source, line_no, rej.reason, rej.detail,
                               mask_line(excerpt_src, ctx.known_keys, ctx.special.category_of, policy.types,
                                         ctx.masked_keys),
                               len(raw), ctx.line_digest(raw)))
            stats[f"quarantined/{rej.reason}"] += 1
            continue

        if rec.get("is_child") and not tpol.children_allowed:
            stats["dropped/child_data"] += 1
            continue
        consent = rec.get("consent") or {}
        needed = needs[tpol.name]
        missing = None
        for flag in needed:
            if consent.get(flag) is not True:
                missing = flag
                break
        if missing:
            stats[f"dropped/consent_missing:{missing}"] += 1
            continue
        if withdrawals and withdrawn_basis(withdrawals.get(ctx.device_hash(rec["device_id"])), needed,
                                           micros(event_time)):
            stats["dropped/consent_withdrawn"] += 1
            continue
        area = "data"
        if event_time < expiry[tpol.name]:
            if tpol.on_expiry == "delete":
                stats["dropped/expired"] += 1
                continue
            stats["dropped/expired_locked"] += 1
            stats[f"locked/{tpol.name}"] += 1
            area = "locked"
        if not plain:
            _removed_fields(rec, tpol, ctx, stats)
        country, region, locations = region_cache.get(rec.get("country")) or ctx.region(rec.get("country"))
        day = event_time.date()
        date_text = dates.get(day) or dates.setdefault(day, day.isoformat())
        accepted[(area, tpol.name, region, date_text)].append(
            (rec, event_time, country, locations, (source_index << ORIGIN_LINE_BITS) | line_no))
        if area == "data":
            written[tpol.name] += 1
    for rtype, n in written.items():
        stats[f"output/{rtype}"] += n
    stats["input_records"] += records_in

    by_type: dict[tuple[str, str], list[tuple[str, str, str, str]]] = defaultdict(list)
    for key in accepted:
        by_type[key[:2]].append(key)
    for (area, rtype), keys in by_type.items():
        rows = [row for k in keys for row in accepted[k]]
        table, failed = _to_table(ctx, policy.types[rtype], rows, stats)
        if failed:  # fail closed: a row a transform could not handle is quarantined, not written
            for i, detail in sorted(failed.items()):
                stats["dropped/expired_locked" if area == "locked" else f"output/{rtype}"] -= 1
                if area == "locked":
                    stats[f"locked/{rtype}"] -= 1
                stats["quarantined/transform_error"] += 1
                origin = rows[i][4]
                quarantine.append((source, origin & ((1 << ORIGIN_LINE_BITS) - 1), "transform_error",
                                   f"{rtype}.{detail}", "", 0, ""))
        offset = 0
        for k in keys:
            n = len(accepted[k])
            # take() copies the rows: a zero-copy slice would keep the whole batch alive
            # for as long as the writer buffers its smallest partition.
            part = table.take(pa.array(range(offset, offset + n), pa.int64())) if len(keys) > 1 else table
            offset += n
            if failed:
                bad = [rows[i][4] for i in failed]
                part = part.filter(pc.invert(pc.is_in(part.column("_origin"), value_set=pa.array(bad, pa.int64()))))
            if part.num_rows:
                count_secret_like_urls(policy, policy.types[rtype], part, stats)
                result.outputs[PartitionKey(*k)] = part
    if quarantine:
        result.quarantine = pa.Table.from_pylist(
            [dict(zip(QUARANTINE_SCHEMA.names, q, strict=True)) for q in quarantine], schema=QUARANTINE_SCHEMA)
    return result


def _to_table(ctx: SanitizeContext, tpol: TypePolicy, rows: list[tuple],
              stats: Counter) -> tuple[pa.Table, dict[int, str]]:
    """Columns of accepted records, in the policy's schema plus the hidden dedupe/order columns;
    and the rows whose transform failed (index -> field and error class). Special-category data
    removed from the values of the other rows is counted in `stats`."""
    schema = ctx.policy.file_schema(tpol.name)
    columns: list[list[Any]] = []
    failed: dict[int, str] = {}
    records = [r[0] for r in rows]
    special: list[tuple[str, dict[int, tuple[str, ...]]]] = []  # (field, row -> categories found in its value)
    for rule in ctx.policy.envelope:
        special.append((rule.name, {}))
        columns.extend(ctx.engine.columns(rule, list(map(dict.get, records, repeat(rule.name))), failed,
                                          special=special[-1][1]))
    columns.append([r[1] for r in rows])
    columns.append([r[2] for r in rows])
    columns.append([r[3] for r in rows])
    datas = list(map(dict.__getitem__, records, repeat("data")))
    for rule in tpol.fields:
        special.append((f"data.{rule.name}", {}))
        columns.extend(ctx.engine.columns(rule, list(map(dict.get, datas, repeat(rule.name))), failed,
                                          special=special[-1][1]))
    for path, found in special:
        for row, categories in found.items():
            if row not in failed:
                count_special_values(stats, path, categories)
    columns.append(list(map(ctx.dedupe_key, map(dict.__getitem__, records, repeat("device_id")),
                            map(dict.__getitem__, records, repeat("event_id")))))
    columns.append([r[4] for r in rows])
    full = pa.schema(list(schema) + HIDDEN_COLUMNS, metadata=schema.metadata)
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, full, strict=True)]
    return pa.Table.from_arrays(arrays, schema=full), failed


def first_copy_mask(keys: pa.Table) -> np.ndarray | None:
    """Which rows of `keys` (`_key`, `_origin`) are the first copy, in input order, of their
    (device, event) key: the copy that is written when a producer retried; None when no key
    repeats (the usual case).

    One sort by (key, order) in numpy: Arrow's hash group-by took about 110 MiB for the
    290,000 rows of the largest partition of a 5M-record run (memory that grows with the
    partition, so with the input), the sort about 10 MiB."""
    key = keys.column("_key").to_numpy()
    order = np.lexsort((keys.column("_origin").to_numpy(), key))
    key = key[order]
    first = np.empty(len(key), dtype=bool)
    first[:1] = True
    np.not_equal(key[1:], key[:-1], out=first[1:])
    if first.all():
        return None
    mask = np.empty(len(key), dtype=bool)
    mask[order] = first
    return mask


def first_copies(keys: pa.Table) -> pa.Array:
    """`_origin` of the first copy of every (device, event) key (see first_copy_mask)."""
    mask = first_copy_mask(keys)
    origin = keys.column("_origin")
    return origin if mask is None else pa.array(origin.to_numpy()[mask])


def keep_copies(table: pa.Table, keep: pa.Array) -> pa.Table:
    """Only the rows whose `_origin` is in `keep` (see first_copies)."""
    return table.filter(pc.is_in(table.column("_origin"), value_set=keep))


def as_written(table: pa.Table) -> pa.Table:
    """Rows as they are written: in input order, hidden columns removed."""
    origin = table.column("_origin").to_numpy()
    if not (origin[1:] >= origin[:-1]).all():  # a partition of one batch is in order already
        table = table.sort_by("_origin")
    return table.drop_columns([f.name for f in HIDDEN_COLUMNS])

