"""Map one real-world source event (Windows event log, ECS, OCSF) onto the contract's envelope.

Pure functions over the checked mapping files of `schemas/formats.py`. A mapped event becomes
an envelope dict of the shape INPUT.md defines, serialised again as one JSON line, and goes
through the contract path unchanged: allow-list, free-text rule, pseudonyms, consent, the
children rule, retention, duplicates and quarantine all apply as they do to contract input.

- Source fields the mapping does not read are carried as top-level keys `src.<path>` with a
  null value, so the allow-list removes and counts them and the special-category rule sees
  their names; their values never leave this module.
- An event no mapping entry matches is dropped and counted as `unmapped_event:<format>:<id>`
  (the id is made of the format's keys; values the mapping file does not name show as `other`).
- A line that is not a JSON object, or repeats a key, is passed on as it is: the contract path
  quarantines it with its reason.
- Consent comes only from the consent profile; without one, no basis is given and the record
  is dropped as `consent_missing`. Country: a source field where the format has one, else the
  profile, else none (the UNKNOWN region).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson

from schemas.formats import (
    AUTO,
    CONTRACT,
    DATA_PREFIX,
    KEY_PREFIX,
    MAPPED_FORMATS,
    OTHER,
    ConsentProfile,
    Event,
    FormatMapping,
    Key,
    Source,
    Spec,
)
from transforms.records import BOM, Rejected, Unreadable, parse_line

MISSING: Any = object()
UNMAPPED_PREFIX = "src."  # unmapped source fields: never a contract name (those hold no dot)
_UTC_WALL = re.compile(r"(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(?:\.(\d+))?$")
_HEX = re.compile(r"0[xX][0-9a-fA-F]{1,16}$")
_DEC = re.compile(r"[+-]?\d{1,18}$")


# ------------------------------------------------------------------ paths


def lookup(node: Any, path: str) -> tuple[Any, str]:
    """(value, its dotted path as found) of `path` in a JSON object, MISSING when absent.

    Keys may themselves hold dots (`"event.category": [...]`, as some shippers flatten ECS),
    so at each level the longest literal key first; a list is searched element by element
    (the first element that has the rest of the path wins)."""
    if not path:
        return node, ""
    return _lookup(node, path.split("."), "")


def _lookup(node: Any, parts: list[str], at: str) -> tuple[Any, str]:
    if not parts:
        return node, at
    if type(node) is dict:
        for i in range(len(parts), 0, -1):
            key = ".".join(parts[:i]) if i > 1 else parts[0]
            if key in node:
                found = _lookup(node[key], parts[i:], f"{at}.{key}" if at else key)
                if found[0] is not MISSING:
                    return found
        return MISSING, at
    if type(node) is list:
        for item in node:
            if type(item) is dict:
                found = _lookup(item, parts, at)
                if found[0] is not MISSING:
                    return found
    return MISSING, at


@dataclass
class _View:
    """One source object while it is mapped: where its data lives, its key values, what was read."""

    obj: dict
    data_root: tuple[Any, str]
    keys: dict[str, Any]
    used: set[str]

    def get(self, path: str) -> Any:
        if path.startswith(KEY_PREFIX):
            value = self.keys.get(path[len(KEY_PREFIX):], MISSING)
            return MISSING if value is None else value
        if path.startswith(DATA_PREFIX):
            root, base = self.data_root
            if root is MISSING:
                return MISSING
            value, found = lookup(root, path[len(DATA_PREFIX):])
            if found and base:
                found = f"{base}.{found}"
        else:
            value, found = lookup(self.obj, path)
        if value is not MISSING:
            self.used.add(found)
        return value


_ABSENT = ("", "-")  # Windows writes "-" for an empty value (IpPort of a local logon, a missing domain)


def _present(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip() not in _ABSENT
    return value is not MISSING and value is not None and value != [] and value != {}


# ------------------------------------------------------------------ converters


def convert(value: Any, how: str | None, spec: Spec | None = None) -> Any:
    """A source value in the contract's form. A value that does not convert is passed on as it
    is, so the contract's own type check quarantines it (fail closed) rather than guessing."""
    if how is None or value is MISSING or value is None:
        return value
    if how == "int":
        if type(value) is int:
            return value
        if type(value) is float and value.is_integer():
            return int(value)
        if isinstance(value, str):
            text = value.strip()
            if _DEC.match(text):
                return int(text)
            if _HEX.match(text):
                return int(text, 16)
        return value
    if how == "str":
        return str(value) if type(value) in (int, float) else value
    if how == "lower":
        return value.lower() if isinstance(value, str) else value
    if how == "bool":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return value
    if how == "first":
        return value[0] if type(value) is list and value else value
    if how == "utc_wall":  # Sysmon's UtcTime: "2026-11-20 10:04:05.123", UTC by definition
        m = _UTC_WALL.match(value) if isinstance(value, str) else None
        if not m:
            return value
        frac = f".{m[3][:6]}" if m[3] else ""
        return f"{m[1]}T{m[2]}{frac}Z"
    if how == "epoch_ms":  # OCSF's `time`: milliseconds since the epoch
        if type(value) in (int, float) and not isinstance(value, bool):
            try:
                when = datetime.fromtimestamp(value / 1000, UTC)
            except (OverflowError, OSError, ValueError):
                return value
            return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return value
    if how == "map" and spec is not None:
        if isinstance(value, str):
            key = value.strip().casefold()
            for name, out in spec.table:
                if name == key:
                    return out
        return value
    if how == "kv" and spec is not None:  # PowerShell 4103 ContextInfo: "  Host Application = ..." lines
        if not isinstance(value, str):
            return MISSING
        want = (spec.key or "").casefold()
        for line in value.splitlines():
            name, eq, rest = line.partition("=")
            if eq and name.strip().casefold() == want:
                return rest.strip() or MISSING
        return MISSING
    return value


def _first(view: _View, sources: tuple[Source, ...]) -> Any:
    for src in sources:
        value = convert(view.get(src.path), src.convert)
        if _present(value):
            return value
    return MISSING


def evaluate(view: _View, spec: Spec) -> Any:
    """The value a spec gives for this source object, or MISSING."""
    if spec.value is not None:
        return spec.value
    if spec.join:
        parts = []
        for group in spec.join:
            value = _first(view, group)
            if _present(value):
                parts.append(str(value) if type(value) in (int, float) else value)
            elif spec.complete:
                return MISSING
        if not parts or not all(isinstance(p, str) for p in parts):
            return parts[0] if len(parts) == 1 else MISSING
        value = spec.sep.join(parts)
    else:
        value = _first(view, spec.sources)
    value = convert(value, spec.convert, spec)
    return value if _present(value) else MISSING


# ------------------------------------------------------------------ matching


def _key_value(view: _View, key: Key) -> Any:
    """The normalised value of a key: an int, a short name (text), a list of those, or None."""
    raw = _first(view, key.sources)
    if raw is MISSING:
        return None
    values = raw if type(raw) is list else [raw]
    out = []
    for v in values:
        if key.convert == "int":
            v = convert(v, "int")
            out.append(v if type(v) is int else OTHER)
        elif isinstance(v, str):
            low = v.strip().casefold()
            alias = next((a for src, a in key.aliases if src == low), None)
            out.append(alias if alias is not None else low)
        else:
            out.append(OTHER)
    return out if type(raw) is list else out[0]


def _matches(view: _View, event: Event) -> bool:
    for name, accepted in event.when:
        if name in view.keys:
            value = view.keys[name]
        else:
            value = view.get(name)
            if type(value) is bool:
                value = "true" if value else "false"
            elif isinstance(value, str):
                value = value.strip().casefold()
        values = value if type(value) is list else [value]
        wanted = [a.casefold() if isinstance(a, str) else a for a in accepted]
        if not any(v in wanted for v in values if v is not None and v is not MISSING):
            return False
    return True


def unmapped_id(mapping: FormatMapping, keys: dict[str, Any]) -> str:
    """`<key>/<key>...` of an unmapped event, bounded: values the file does not name show as `other`."""
    parts = []
    for key in mapping.keys:
        value = keys.get(key.name)
        values = value if type(value) is list else [value]
        shown = []
        for v in values:
            if v is None:
                shown.append("none")
            elif type(v) is int:
                shown.append(str(v) if key.maximum is None or 0 <= v <= key.maximum else OTHER)
            else:
                shown.append(v if v in key.known else OTHER)
        parts.append("+".join(sorted(set(shown))) if shown else "none")
    return "/".join(parts)


# ------------------------------------------------------------------ one object


def _unmapped_fields(node: Any, path: str, used: set[str], out: dict[str, None]) -> None:
    if path in used:
        return
    if type(node) is dict:
        for k, v in node.items():
            _unmapped_fields(v, f"{path}.{k}" if path else k, used, out)
    elif type(node) is list and any(type(i) is dict for i in node):
        for item in node:
            _unmapped_fields(item, path, used, out)
    elif path:
        out[UNMAPPED_PREFIX + path] = None


def map_object(obj: dict, mapping: FormatMapping, profile: ConsentProfile | None,
               event_id_fallback: Callable[[], str]) -> tuple[dict | None, str]:
    """(contract envelope, event name) of one source object; (None, unmapped id) when no event of
    the mapping matches. `event_id_fallback` gives an id when the source has none (a keyed
    digest of the line: a retry of the same line gets the same id)."""
    root: tuple[Any, str] = (MISSING, "")
    for candidate in mapping.data_roots:
        found = lookup(obj, candidate)
        if type(found[0]) is dict:
            root = found
            break
    view = _View(obj, root, {}, set())
    view.keys = {key.name: _key_value(view, key) for key in mapping.keys}
    event = next((ev for ev in mapping.events if _matches(view, ev)), None)
    if event is None:
        return None, unmapped_id(mapping, view.keys)

    specs = dict(mapping.envelope)
    specs.update(event.envelope)
    env_values = {role: evaluate(view, spec) for role, spec in specs.items()}
    tenant = _text(env_values.get("tenant"))
    group = _text(env_values.get("device_group"))
    bases, profile_country, children = (profile.resolve(tenant, group) if profile is not None
                                        else (frozenset(), None, False))
    rec: dict[str, Any] = {"schema_version": 1, "type": event.record_type}
    event_id = _text(env_values.get("event_id"))
    rec["event_id"] = event_id if event_id is not None else event_id_fallback()
    for role, name in (("device_id", "device_id"), ("user_id", "user_id"), ("tenant", "tenant_id"),
                       ("product", "product")):
        value = env_values.get(role, MISSING)
        if value is not MISSING:
            rec[name] = _text(value) if type(value) in (int, float) else value
    ts = env_values.get("ts", MISSING)
    if ts is not MISSING:
        rec["ts"] = ts
    country = env_values.get("country", MISSING)
    if country is MISSING and profile_country:
        country = profile_country
    if country is not MISSING:
        rec["country"] = country
    if children:
        rec["is_child"] = True
    rec["consent"] = {flag: True for flag in sorted(bases)}
    data: dict[str, Any] = {}
    for fname, spec in event.fields:
        value = evaluate(view, spec)
        if value is not MISSING:
            data[fname] = value
    rec["data"] = data
    extra: dict[str, None] = {}
    _unmapped_fields(obj, "", view.used, extra)
    rec.update(extra)
    return rec, event.name


def _text(value: Any) -> str | None:
    if value is MISSING or value is None:
        return None
    if type(value) in (int, float):
        return str(value)
    return value if isinstance(value, str) else None


def _line_id(digest: Callable[[bytes], str], raw: bytes) -> str:
    return "line-" + digest(raw)


def detect(obj: dict, mappings: dict[str, FormatMapping]) -> str | None:
    """The format of one object for `auto`: the contract's own shape first (a key only the
    contract has: `schema_version`, `consent`, or `type` with `data`), then each mapped
    format in MAPPED_FORMATS order by its `detect` paths; None when none fits."""
    if "schema_version" in obj or "consent" in obj or ("type" in obj and "data" in obj):
        return CONTRACT  # the contract's shape, even when damaged: its own checks quarantine it
    for name in MAPPED_FORMATS:
        mapping = mappings.get(name)
        if mapping is not None and any(lookup(obj, p)[0] is not MISSING for p in mapping.detect):
            return name
    return None


# ------------------------------------------------------------------ a batch


@dataclass(frozen=True)
class FormatSetup:
    """What the mapping step of a run needs: the format of each input file (by index), the
    mapping files and the consent profile. Plain data, cheap to pickle to workers."""

    formats: tuple[str, ...]
    mappings: dict[str, FormatMapping]
    profile: ConsentProfile | None = None

    def format_of(self, index: int) -> str:
        return self.formats[index] if 0 <= index < len(self.formats) else CONTRACT


def map_lines(setup: FormatSetup, fmt: str, lines: list[tuple[int, bytes | Unreadable]],
              digest: Callable[[bytes], str], max_bytes: int,
              ) -> tuple[list[tuple[int, bytes | Unreadable]], Counter]:
    """Numbered source lines -> numbered contract lines, and the counts of what the mapping
    decided: `dropped/unmapped_event:...` (with their `input_records`) and, for `auto`, the
    format chosen per line (`input_format/<name>`). Lines that are not JSON objects (or repeat
    a key) pass unchanged: the contract path quarantines them with their reason."""
    out: list[tuple[int, bytes | Unreadable]] = []
    stats: Counter = Counter()
    for line_no, raw in lines:
        if isinstance(raw, Unreadable):
            out.append((line_no, raw))
            continue
        text = raw[3:] if raw.startswith(BOM) else raw
        if not text or text.isspace():
            out.append((line_no, raw))
            continue
        try:
            obj = parse_line(text, max_bytes)
        except Rejected:
            obj = None
        if type(obj) is not dict:
            if fmt == AUTO:
                stats["input_format/not_a_json_object"] += 1
            out.append((line_no, raw))
            continue
        name = fmt
        if fmt == AUTO:
            name = detect(obj, setup.mappings) or "unrecognised"
            stats[f"input_format/{name}"] += 1
            if name == CONTRACT:
                out.append((line_no, raw))
                continue
            if name == "unrecognised":
                stats["input_records"] += 1
                stats["dropped/unmapped_event:auto:unrecognised"] += 1
                continue
        try:
            rec, what = map_object(obj, setup.mappings[name], setup.profile, partial(_line_id, digest, text))
        except RecursionError:
            rec, what = None, "too_deep"
        if rec is None:
            stats["input_records"] += 1
            stats[f"dropped/unmapped_event:{name}:{what}"] += 1
            continue
        out.append((line_no, orjson.dumps(rec)))
    return out, stats
