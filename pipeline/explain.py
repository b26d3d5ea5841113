"""`python -m pipeline explain`: show, per record, what the pipeline does with it and with each field.

    python -m pipeline explain '{"schema_version": 1, "type": "url_visit", ...}' [...]
    zcat sample.ndjson.gz | head -20 | python -m pipeline explain --format json

A local debugging tool for the engineer's own sample records. The outcome and
the output row come from the pipeline itself (`sanitize_lines` on a batch of
one line), so the explanation can never disagree with a run; the per-field
lines are read off the same policy the run enforces (allow-lists, envelope,
gates, special categories).

Each record is looked at alone: duplicates (same device_id and event_id) are
removed only when a run writes a partition, so explain never reports them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from typing import Any

import orjson

from pipeline.run import ConfigError, load_key, parse_as_of
from schemas.policy import FieldRule, PolicyError, TypePolicy, load_policy
from transforms.records import BOM, HIDDEN_COLUMNS, STRUCTURAL, SanitizeContext, sanitize_lines

SOURCE = "<explain>"
# Used when no key file is given: pseudonyms are stable between explain calls but match no real run.
EXPLAIN_KEY = b"pipeline-explain-fixed-key-matches-no-real-run"
# Transforms that pass a valid value through unchanged (anything else rewrites it).
_PASS_THROUGH = frozenset({"text", "int", "float", "bool", "enum", "ip", "sha256"})
_GATES = {
    "schema_version": "schema_version",
    "type": "record type",
    "ts": "ts -> event_time, event_date; future clock, retention",
    "is_child": "children",
    "country": "region -> country, user_region, processing_locations",
}
_MAX_PATH_WIDTH = 44


# ----------------------------------------------------------------- explaining


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _entry(path: str, action: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"path": path, "action": action, "text": text, **extra}


def _rule_entry(path: str, rule: FieldRule, value: Any, output: dict[str, Any] | None) -> dict[str, Any]:
    """kept / transformed for an allowed field; `output` is the written row (None when nothing was written)."""
    columns = [f.name for f in rule.output_columns()]
    extra = {"transform": rule.transform, "columns": columns, "policy": rule.describe()}
    if rule.kind:
        extra["kind"] = rule.kind
    if rule.transform in _PASS_THROUGH and len(columns) == 1:
        unchanged = output is None or output.get(columns[0]) == value
        if unchanged:
            text = "kept" if columns[0] == rule.name else f"kept as {columns[0]}"
            return _entry(path, "kept", text, **extra)
    label = f"{rule.transform} ({rule.kind})" if rule.kind else rule.transform
    return _entry(path, "transformed", f"transformed by {label} -> {', '.join(columns)}", **extra)


def _removed(ctx: SanitizeContext, path: str, key: Any, value: Any, why: str) -> Iterator[dict[str, Any]]:
    """A field off the allow-list, and everything below it (special-category names win at any depth)."""
    category = ctx.special.category_of(key) if isinstance(key, str) else None
    if category:
        yield _entry(path, "removed", f"removed: special category {category}", reason="special_category",
                     category=category)
        return
    children: Iterable[tuple[Any, Any, str]] = ()
    if isinstance(value, dict) and value:
        children = ((k, v, f"{path}.{k}") for k, v in value.items())
    elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        children = ((None, v, f"{path}[{i}]") for i, v in enumerate(value))
    else:
        yield _entry(path, "removed", f"removed: {why}", reason="not_allowed")
        return
    for child_key, child, child_path in children:
        yield from _removed(ctx, child_path, child_key, child, why)


def explain_fields(ctx: SanitizeContext, rec: dict, tpol: TypePolicy,
                   output: dict[str, Any] | None) -> list[dict[str, Any]]:
    """What the policy does with every field of a parsed record, envelope and data, at any depth."""
    policy = ctx.policy
    envelope = {r.name: r for r in policy.envelope}
    required = set(policy.base_consent) | set(tpol.consent)
    not_allowed = "not on the allow-list"
    out: list[dict[str, Any]] = []
    for key, value in rec.items():
        if key in envelope:
            out.append(_rule_entry(key, envelope[key], value, output))
        elif key == "consent" and isinstance(value, dict):
            for flag in value:
                need = f"required for {tpol.name}" if flag in required else f"not required for {tpol.name}"
                out.append(_entry(f"consent.{flag}", "consumed", f"consumed by gate (consent: {need})",
                                  gate="consent"))
            if not value:
                out.append(_entry("consent", "consumed", "consumed by gate (consent: empty)", gate="consent"))
        elif key == "data" and isinstance(value, dict):
            rules = {r.name: r for r in tpol.fields}
            for dkey, dvalue in value.items():
                path = f"data.{dkey}"
                if dkey in rules:
                    out.append(_rule_entry(path, rules[dkey], dvalue, output))
                else:
                    out.extend(_removed(ctx, path, dkey, dvalue, f"{not_allowed} of {tpol.name}"))
        elif key in STRUCTURAL:
            gate = _GATES.get(key, key)
            if key == "is_child":
                gate += f": {'allowed' if tpol.children_allowed else 'dropped'} for {tpol.name}"
            out.append(_entry(key, "consumed", f"consumed by gate ({gate})", gate=key))
        else:
            out.extend(_removed(ctx, key, key, value, not_allowed))
    return out


def _outcome(result, quarantine: dict | None) -> dict[str, Any]:
    if result.outputs:
        [(key, _table)] = result.outputs.items()
        base = key.record_type if key.area == "data" else f"_locked/{key.record_type}"
        path = f"{base}/user_region={key.user_region}/event_date={key.event_date}"
        if key.area == "data":
            return {"status": "written", "path": path, "text": f"written to {path}"}
        return {"status": "locked", "path": path,
                "text": f"locked (retention expired, kept for {key.record_type}'s on_expiry=lock): written to {path}"}
    if quarantine is not None:
        text = f"quarantined: {quarantine['reason']}" + (f" ({quarantine['detail']})" if quarantine["detail"] else "")
        return {"status": "quarantined", "reason": quarantine["reason"], "detail": quarantine["detail"], "text": text}
    dropped = [k.split("/", 1)[1] for k, v in result.stats.items() if k.startswith("dropped/") and v > 0]
    if dropped:
        return {"status": "dropped", "rule": dropped[0], "text": f"dropped: {dropped[0]}"}
    return {"status": "blank", "text": "skipped: blank line (not a record)"}


def explain_line(ctx: SanitizeContext, raw: bytes) -> dict[str, Any]:
    """The pipeline's verdict on one raw line, with the output row and per-field explanations."""
    result = sanitize_lines(ctx, SOURCE, 0, [(1, raw)])
    quarantine = result.quarantine.to_pylist()[0] if result.quarantine is not None else None
    outcome = _outcome(result, quarantine)
    output = None
    if result.outputs:
        [(key, table)] = result.outputs.items()
        row = table.drop_columns([f.name for f in HIDDEN_COLUMNS]).to_pylist()[0]
        output = {**row, "user_region": key.user_region, "event_date": key.event_date}
    fields: list[dict[str, Any]] = []
    if outcome["status"] in ("written", "locked", "dropped"):
        body = raw[3:] if raw.startswith(BOM) else raw
        rec = orjson.loads(body)  # accepted by the gates, so it parses
        fields = explain_fields(ctx, rec, ctx.policy.types[rec["type"]], output)
    if quarantine is not None:
        quarantine = {k: quarantine[k] for k in ("reason", "detail", "line_excerpt")}
    return {
        "input": raw.decode("utf-8", "replace"),
        "outcome": outcome,
        "output": output,
        "quarantine": quarantine,
        "fields": fields,
        "removed_counts": {k: v for k, v in sorted(result.stats.items())
                           if v and k.startswith(("fields_removed/", "special_category/"))},
    }


# ----------------------------------------------------------------- rendering


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    return json.dumps(value, default=_jsonable, ensure_ascii=False)


def render_text(n: int, item: dict[str, Any], show_input: bool) -> str:
    lines = [f"record {n}"]
    if show_input:
        lines.append(f"  input:    {item['input']}")
    lines.append(f"  outcome:  {item['outcome']['text']}")
    status = item["outcome"]["status"]
    if item["output"] is not None:
        width = min(max(len(k) for k in item["output"]), _MAX_PATH_WIDTH)
        lines.append("  output row:")
        for name, value in item["output"].items():
            suffix = "  (partition directory)" if name in ("user_region", "event_date") else ""
            lines.append(f"    {name:<{width}}  {_show(value)}{suffix}")
    if item["quarantine"] is not None:
        lines.append("  stored in _quarantine (values masked):")
        lines.append(f"    {item['quarantine']['line_excerpt']}")
        lines.append("  fields:   not processed: a quarantined line is not split into fields")
    elif item["fields"]:
        note = "" if status in ("written", "locked") else "  (what the policy does with each; nothing was written)"
        lines.append("  fields:" + note)
        width = min(max(len(f["path"]) for f in item["fields"]), _MAX_PATH_WIDTH)
        for f in item["fields"]:
            lines.append(f"    {f['path']:<{width}}  {f['text']}")
    return "\n".join(lines)


def _read_stdin_lines(stream) -> Iterator[bytes]:
    for line in stream:
        line = line.rstrip(b"\n")
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip():
            yield line


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return _run(args)


def build_parser() -> argparse.ArgumentParser:
    from pipeline.cli import add_common
    from pipeline.cliparse import Parser

    parser = Parser(
        prog="telemetry-sanitizer explain",
        epilog="examples:\n"
               "  telemetry-sanitizer explain '{\"schema_version\":1,\"type\":\"url_visit\",...}'\n"
               "  head -3 sample/day1.ndjson | telemetry-sanitizer explain --format json --as-of 2026-11-25T00:00:00Z",
        description="Show what the pipeline does with each record and each of its fields. Records are JSON "
                    "arguments, or NDJSON lines on stdin when no argument is given.")
    parser.add_argument("records", nargs="*", metavar="RECORD_JSON", help="one record per argument")
    parser.add_argument("--policy", default=None, help="policy TOML file (default: the built-in policy)")
    parser.add_argument("--pseudonym-key-file", "--pseudonym_key_file", dest="pseudonym_key_file", default=None,
                        help="the run's key, so pseudonyms match its output (default: a fixed explain key)")
    parser.add_argument("--as-of", "--as_of", dest="as_of", default=None,
                        help="RFC 3339 time retention and clock checks are measured against (default: now)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--no-input", dest="show_input", action="store_false",
                        help="do not echo the input records (e.g. when pasting the explanation somewhere)")
    add_common(parser)
    return parser


def _run(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.policy)
        if args.pseudonym_key_file:
            key, mode = load_key(args.pseudonym_key_file)
        else:
            key, mode = EXPLAIN_KEY, "explain"
        as_of = parse_as_of(args.as_of)
        ctx = SanitizeContext(policy=policy, key=key, as_of=as_of)
    except (ConfigError, PolicyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    notes = []
    if mode == "explain":
        notes.append("no --pseudonym-key-file: pseudonyms use a fixed explain key and do not match a real run's "
                     "output")
    elif mode == "development":
        notes.append("the bundled development key is public; never use it for real data")
    if not args.as_of:
        notes.append("no --as-of: retention and the future-clock check are measured against now")
    notes.append("records are explained one at a time; duplicates (same device_id and event_id) are removed "
                 "only when a run writes a partition")

    if args.records:
        raws: Iterable[bytes] = (r.encode("utf-8", "surrogateescape") for r in args.records)
    else:
        raws = _read_stdin_lines(sys.stdin.buffer)
    header = {"policy": {"version": policy.version, "sha256": policy.sha256, "source": policy.source},
              "as_of": as_of.isoformat(), "key": mode, "notes": notes}

    if args.format == "json":
        items = []
        for raw in raws:
            item = explain_line(ctx, raw)
            if not args.show_input:
                item.pop("input")
            items.append(item)
        doc = {**header, "records": items}
        sys.stdout.write(json.dumps(doc, default=_jsonable, ensure_ascii=False, indent=2) + "\n")
        return 0

    out = sys.stdout
    for note in notes:
        out.write(f"note: {note}\n")
    out.write(f"policy {policy.version} (sha256 {policy.sha256[:12]}), as of {as_of.isoformat()}\n")
    count = 0
    for raw in raws:
        count += 1
        out.write("\n" + render_text(count, explain_line(ctx, raw), args.show_input) + "\n")
    if not count:
        out.write("\nno records given (pass JSON arguments or NDJSON on stdin)\n")
    return 0
