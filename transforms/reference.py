"""The policy applied the plain way, one record at a time: the yardstick for the fast path.

`transforms.records.sanitize_lines` is built for speed (pre-checks that fall
back to the full validation, memos shared across batches, whole columns at
once). This module does the same job with none of that: every line is parsed,
walked for special-category keys in full, validated, gated, and every kept
value goes through its rule's transform on its own. Both use the same rule
functions (`validate`, `check`, the transforms), so a difference between them
can only come from the fast path's shortcuts; quarantine excerpts come from the
first, token-by-token version of the masking (`mask_line_reference`), which
checks the faster `mask_line` too. The test suite runs both paths on the dirty
sample and requires identical tables, quarantine and counts.

Not used by the pipeline. The benchmark's per-element peer calls `sanitize_one`:
it is the obvious way to write the policy, one record at a time.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Collection
from typing import Any

import pyarrow as pa

from transforms.quarantine import _TOKEN, _clear_value
from transforms.quarantine import MAX_EXCERPT_CHARS as _MAX
from transforms.records import (
    BOM,
    HIDDEN_COLUMNS,
    ORIGIN_LINE_BITS,
    QUARANTINE_SCHEMA,
    BatchResult,
    PartitionKey,
    Rejected,
    SanitizeContext,
    Unreadable,
    count_special,
    parse_line,
    validate,
)
from transforms.special_text import count_special_values
from transforms.urls import SECRET_LIKE
from transforms.withdrawals import micros, withdrawn_basis


def _count_removed(rec: dict, tpol, ctx: SanitizeContext, stats: Counter) -> None:
    for path, keys, allowed in (("", rec, ctx.allowed_envelope), ("data.", rec["data"], tpol.allowed)):
        for key in keys:
            if key not in allowed and not ctx.special.category_of(key):
                stats["fields_removed/not_allowed"] += 1
                stats[f"removed_field/{tpol.name}/{path}{ctx.reportable_name(key)}"] += 1


def _row(ctx: SanitizeContext, tpol, rec: dict, event_time, country, locations,
         origin) -> tuple[dict, str | None, list[tuple[str, tuple[str, ...]]]]:
    """One output row as a dict, the failing field when a transform raised, and the fields whose
    value held special-category data (field path, categories)."""
    row: dict[str, Any] = {}
    special: list[tuple[str, tuple[str, ...]]] = []

    def apply(rule, value, path: str = "") -> str | None:
        names = [f.name for f in rule.output_columns()]
        if value is None:
            row.update(dict.fromkeys(names))
            return None
        try:
            out = ctx.engine._scalar(rule)(value)
        except Exception as exc:  # noqa: BLE001 - same rule as the fast path: the record is quarantined
            row.update(dict.fromkeys(names))
            return f"{rule.name}: {exc.__class__.__name__}"
        row.update(zip(names, out, strict=True))
        categories = getattr(out, "categories", None)
        if categories:
            special.append((path + rule.name, categories))
        return None

    failed = None
    for rule in ctx.policy.envelope:
        error = apply(rule, rec.get(rule.name))
        failed = failed or error
    row["event_time"] = event_time
    row["country"] = country
    row["processing_locations"] = locations
    for rule in tpol.fields:
        error = apply(rule, rec["data"].get(rule.name), "data.")
        failed = failed or error
    row["_key"] = ctx.dedupe_key(rec["device_id"], rec["event_id"])
    row["_origin"] = origin
    return row, failed, special


ROW, QUARANTINED, DROPPED = "row", "quarantined", "dropped"


def sanitize_one(ctx: SanitizeContext, source: str, source_index: int, line_no: int, raw: bytes | Unreadable,
                 stats: Counter, withdrawals: dict[int, dict[str, int]] | None = None,
                 mask: Callable[..., str] | None = None) -> tuple[str, Any]:
    """One raw line -> (ROW, (PartitionKey, row dict)), (QUARANTINED, quarantine tuple in
    QUARANTINE_SCHEMA order) or (DROPPED, None); counts go to `stats` as in `sanitize_lines`.
    A blank line is (DROPPED, None) counted as blank. `mask` defaults to `mask_line_reference`."""
    policy = ctx.policy
    if isinstance(raw, Unreadable):
        raw.count(source, stats)
        return QUARANTINED, raw.quarantine_row(source, line_no)
    if raw.startswith(BOM):
        raw = raw[3:]
    if not raw.strip():
        stats["blank_lines"] += 1
        return DROPPED, None
    stats["input_records"] += 1
    try:
        rec = parse_line(raw, policy.max_line_bytes)
        count_special(ctx, rec, stats)  # always the full walk
        tpol, event_time = validate(rec, ctx)
        if event_time > ctx.future_limit:
            raise Rejected("future_timestamp", "ts: later than --as-of plus the tolerance")
    except Exception as exc:  # noqa: BLE001
        rej = exc if isinstance(exc, Rejected) else Rejected("internal_error", exc.__class__.__name__)
        stats[f"quarantined/{rej.reason}"] += 1
        excerpt = (mask or mask_line_reference)(raw[:2600].decode("utf-8", "replace"), ctx.known_keys,
                                                ctx.special.category_of, policy.types)
        return QUARANTINED, (source, line_no, rej.reason, rej.detail, excerpt, len(raw), ctx.line_digest(raw))
    if rec.get("is_child") and not tpol.children_allowed:
        stats["dropped/child_data"] += 1
        return DROPPED, None
    consent = rec.get("consent") or {}
    needed = ctx.needed[tpol.name]
    missing = [f for f in needed if consent.get(f) is not True]
    if missing:
        stats[f"dropped/consent_missing:{missing[0]}"] += 1
        return DROPPED, None
    if withdrawals and withdrawn_basis(withdrawals.get(ctx.device_hash(rec["device_id"])), needed,
                                       micros(event_time)):
        stats["dropped/consent_withdrawn"] += 1
        return DROPPED, None
    area = "data"
    if event_time < ctx.expiry[tpol.name]:
        if tpol.on_expiry == "delete":
            stats["dropped/expired"] += 1
            return DROPPED, None
        area = "locked"
    _count_removed(rec, tpol, ctx, stats)
    country, region, locations = ctx.region(rec.get("country"))
    row, failed, special = _row(ctx, tpol, rec, event_time, country, list(locations),
                                (source_index << ORIGIN_LINE_BITS) | line_no)
    if failed:
        stats["quarantined/transform_error"] += 1
        return QUARANTINED, (source, line_no, "transform_error", f"{tpol.name}.{failed}", "", 0, "")
    for path, categories in special:
        count_special_values(stats, path, categories)
    for rule in (*policy.envelope, *tpol.fields):
        if rule.transform == "url" and row[rule.output_columns()[-1].name] == SECRET_LIKE:
            stats["fields_removed/url_secret_like"] += 1
    if area == "locked":
        stats["dropped/expired_locked"] += 1
        stats[f"locked/{tpol.name}"] += 1
    else:
        stats[f"output/{tpol.name}"] += 1
    return ROW, (PartitionKey(area, tpol.name, region, event_time.date().isoformat()), row)


def sanitize_lines_reference(ctx: SanitizeContext, source: str, source_index: int,
                             lines: list[tuple[int, bytes | Unreadable]],
                             withdrawals: dict[int, dict[str, int]] | None = None) -> BatchResult:
    """Same contract as `sanitize_lines`, one `sanitize_one` per line; quarantine rows in line order."""
    result = BatchResult()
    quarantine: list[tuple] = []
    parts: dict[PartitionKey, list[dict]] = defaultdict(list)
    for line_no, raw in lines:
        kind, value = sanitize_one(ctx, source, source_index, line_no, raw, result.stats, withdrawals)
        if kind == ROW:
            parts[value[0]].append(value[1])
        elif kind == QUARANTINED:
            quarantine.append(value)
    for key, rows in parts.items():
        schema = ctx.policy.file_schema(key.record_type)
        full = pa.schema(list(schema) + HIDDEN_COLUMNS, metadata=schema.metadata)
        result.outputs[key] = pa.Table.from_pylist(rows, schema=full)
    if quarantine:
        quarantine.sort(key=lambda q: q[1])
        result.quarantine = pa.Table.from_pylist(
            [dict(zip(QUARANTINE_SCHEMA.names, q, strict=True)) for q in quarantine], schema=QUARANTINE_SCHEMA)
    return result


def mask_line_reference(text: str, known_keys: Collection[str], is_special: Callable[[str], str | None],
              record_types: Collection[str] = ()) -> str:
    """`transforms.quarantine.mask_line` token by token, as first written (the fast one skips
    whitespace in the regex and the colon after a top-level key directly)."""
    out: list[str] = []
    size = 0
    depth = 0
    tokens = [t for t in _TOKEN.findall(text[: _MAX + 500]) if not t.isspace()]
    value_of: str | None = None  # the top-level key whose value comes next, if any
    for i, tok in enumerate(tokens):
        pending, value_of = value_of, None
        if tok.startswith('"'):
            body = tok[1:-1] if len(tok) > 1 and tok.endswith('"') else tok[1:]
            if i + 1 < len(tokens) and tokens[i + 1] == ":":
                if is_special(body):
                    out.append('"<special>"')
                elif body in known_keys:
                    out.append(tok)
                else:
                    out.append(f'"<key:{len(body)}>"')
                if depth == 1:
                    value_of = body
                    out.append(":")
                    tokens[i + 1] = ""  # the colon is written here, so the next token is the value
                continue
            keep = pending is not None and _clear_value(pending, body, record_types)
            out.append(f'"{body}"' if keep else f'"<str:{len(body)}>"')
        elif not tok:
            value_of = pending  # the colon consumed above: the value is still pending
            continue
        elif tok[0] in "-0123456789":
            out.append(tok if pending == "schema_version" and len(tok) < 6 else "<num>")
        elif tok in ("true", "false", "null"):
            out.append(tok)
        elif tok in "{[":
            depth += 1
            out.append(tok)
        elif tok in "}]":
            depth -= 1
            out.append(tok)
        elif tok in ":,":
            out.append(tok)
        else:
            out.append(f"<raw:{len(tok)}>")
        size += len(out[-1])
        if size > _MAX:
            out.append("...")
            break
    return "".join(out)
