"""Load and validate the policy file (`policy.toml`) into typed, immutable objects.

The TOML file is the reviewable statement of what the pipeline does; this
module only checks it and derives the Arrow schemas from it. Every error names
the file, the line where it can be found, the key and what is wrong.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa

from schemas.iso3166 import ALPHA2

DEFAULT_POLICY_PATH = Path(__file__).with_name("policy.toml")

CONSENT_FLAGS = ("eula", "ksn", "marketing", "dumps", "antispam", "antitheft", "child_protection")
ON_EXPIRY = ("delete", "lock")

# transform name -> (allowed parameters, required parameters)
TRANSFORMS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "text": (frozenset(), frozenset()),
    "int": (frozenset(), frozenset()),
    "float": (frozenset(), frozenset()),
    "bool": (frozenset(), frozenset()),
    "enum": (frozenset({"values"}), frozenset({"values"})),
    "timestamp": (frozenset(), frozenset()),
    "date_or_timestamp": (frozenset(), frozenset()),
    "url": (frozenset(), frozenset()),
    "pseudonym": (frozenset({"kind"}), frozenset({"kind"})),
    "account": (frozenset(), frozenset()),
    "scrub": (frozenset(), frozenset()),
    "email_domain": (frozenset(), frozenset()),
    "digest": (frozenset(), frozenset()),
    "coarse_coordinate": (frozenset({"decimals"}), frozenset({"decimals"})),
    "ip": (frozenset(), frozenset()),
    "sha256": (frozenset(), frozenset()),
}

TIMESTAMP = pa.timestamp("us", tz="UTC")
URL_PARTS = ("scheme", "host", "port", "registered_domain", "suffix", "status")
PARTITION_COLUMNS = ("user_region", "event_date")


class PolicyError(ValueError):
    """A policy file that cannot be enforced; the message is meant for the user as is."""


@dataclass(frozen=True)
class FieldRule:
    """One allowed input field and how it is transformed on the way out."""

    name: str
    transform: str
    kind: str | None = None
    values: tuple[str, ...] = ()
    decimals: int | None = None
    column: str | None = None  # output name when the field name would clash with another column

    def output_columns(self) -> list[pa.Field]:
        """The output columns this field becomes (names make the transform visible)."""
        n, t = self.column or self.name, self.transform
        if t == "url":
            types = (pa.string(), pa.string(), pa.int32(), pa.string(), pa.string(), pa.string())
            return [pa.field(f"{n}_{part}", typ) for part, typ in zip(URL_PARTS, types, strict=True)]
        if t == "pseudonym":
            return [pa.field(f"{n}_pseudonym", pa.string())]
        if t == "email_domain":
            return [pa.field(f"{n}_domain", pa.string())]
        if t == "digest":
            return [pa.field(f"{n}_digest", pa.string()), pa.field(f"{n}_length", pa.int32())]
        typ = {
            "int": pa.int64(),
            "float": pa.float64(),
            "bool": pa.bool_(),
            "timestamp": TIMESTAMP,
            "date_or_timestamp": TIMESTAMP,
            "coarse_coordinate": pa.float64(),
        }.get(t, pa.string())
        return [pa.field(n, typ)]

    def describe(self) -> str:
        """Human wording of the transform, for the policy table."""
        text = self._wording()
        return f"{text} (column `{self.column}`)" if self.column else text

    def _wording(self) -> str:
        if self.transform == "enum":
            return "kept if one of " + ", ".join(self.values)
        if self.transform == "pseudonym":
            return f"keyed pseudonym ({self.kind})"
        if self.transform == "coarse_coordinate":
            return f"rounded to {self.decimals} decimals"
        return TRANSFORM_WORDING[self.transform]


TRANSFORM_WORDING = {
    "text": "kept (URLs, e-mails, credentials scrubbed)",
    "int": "kept (integer)",
    "float": "kept (number)",
    "bool": "kept (boolean)",
    "timestamp": "kept (UTC timestamp)",
    "date_or_timestamp": "kept (UTC timestamp; a date YYYY-MM-DD as 00:00 UTC of that day)",
    "url": "scheme, host/IP, non-default port, registered domain, suffix only",
    "account": "account name pseudonymised, domain kept",
    "scrub": "credentials removed, URLs cut to host, profile names/SIDs/e-mails pseudonymised",
    "email_domain": "domain only",
    "digest": "keyed digest and length only",
    "ip": "kept if a valid IP literal",
    "sha256": "kept if a valid SHA-256",
}


@dataclass(frozen=True)
class Region:
    name: str
    countries: frozenset[str] | None  # None: every valid country not claimed by another region
    processing_locations: tuple[str, ...]


@dataclass(frozen=True)
class TypePolicy:
    name: str
    category: str
    purpose: str
    consent: tuple[str, ...]
    retention_days: int
    on_expiry: str
    children_allowed: bool
    fields: tuple[FieldRule, ...]

    @cached_property
    def allowed(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields)


ENVELOPE_TAIL = [
    pa.field("event_time", TIMESTAMP),
    pa.field("country", pa.string()),
    pa.field("processing_locations", pa.list_(pa.string())),
]


@dataclass(frozen=True)
class Policy:
    version: str
    sha256: str
    source: str
    future_tolerance_seconds: int
    max_line_bytes: int
    base_consent: tuple[str, ...]
    envelope: tuple[FieldRule, ...]
    regions: tuple[Region, ...]
    special_categories: dict[str, tuple[str, ...]]
    types: dict[str, TypePolicy]

    def file_schema(self, type_name: str) -> pa.Schema:
        """Schema of every Parquet file of a type (partition columns live in the path)."""
        cols: list[pa.Field] = []
        for rule in self.envelope:
            cols.extend(rule.output_columns())
        cols.extend(ENVELOPE_TAIL)
        for rule in self.types[type_name].fields:
            cols.extend(rule.output_columns())
        return pa.schema(cols, metadata={"policy_version": self.version, "record_type": type_name})

    def dataset_schema(self, type_name: str) -> pa.Schema:
        """Schema a reader sees for a whole type, partition columns included."""
        schema = self.file_schema(type_name)
        for name in PARTITION_COLUMNS:
            schema = schema.append(pa.field(name, pa.string()))
        return schema

    def region_of(self, country: str | None) -> Region:
        """The region a (normalised) country belongs to; UNKNOWN when absent or invalid."""
        return self._region_index().get(country or "", self._unknown_region())

    def _unknown_region(self) -> Region:
        return next(r for r in self.regions if r.name == "UNKNOWN")

    def _region_index(self) -> dict[str, Region]:
        cached = self.__dict__.get("_index")
        if cached is None:
            cached = {}
            rest = next((r for r in self.regions if r.countries is None), None)
            for region in self.regions:
                for c in region.countries or ():
                    cached[c] = region
            if rest is not None:
                for c in ALPHA2:
                    cached.setdefault(c, rest)
            object.__setattr__(self, "_index", cached)
        return cached


# --------------------------------------------------------------------- loading


class _Checker:
    """Collects the location of keys in the TOML text so errors can name a line."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, *keys: str) -> int | None:
        """Best-effort line of a key path: the header or dotted key that mentions the last parts."""
        wanted = [k for k in keys if k]
        for depth in range(len(wanted), 0, -1):
            parts = wanted[:depth]
            last = re.escape(parts[-1])
            section = ".".join(parts[:-1])
            pat = re.compile(rf"^\s*(\[+\s*{re.escape('.'.join(parts))}\s*\]+|([\w.]*\.)?\"?{last}\"?\s*=)")
            in_section = not section
            for no, line in enumerate(self.lines, 1):
                stripped = line.strip()
                if stripped.startswith("["):
                    inner = stripped.strip("[] ")
                    in_section = not section or inner == section or section.startswith(inner + ".")
                    if inner == ".".join(parts):
                        return no
                    continue
                if pat.match(line) and (in_section or ".".join(parts[-2:]) in line):
                    return no
        return None

    def fail(self, keys: tuple[str, ...], problem: str) -> PolicyError:
        line = self.line_of(*keys)
        where = f"{self.path}:{line}" if line else self.path
        return PolicyError(f"{where}: key '{'.'.join(keys)}': {problem}")


def _require(chk: _Checker, table: dict, key: str, typ: type | tuple, keys: tuple[str, ...]) -> Any:
    if key not in table:
        raise chk.fail(keys + (key,), "missing")
    value = table[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        want = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise chk.fail(keys + (key,), f"must be {want}, got {type(value).__name__}")
    return value


def _unknown_keys(chk: _Checker, table: dict, allowed: set[str], keys: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            raise chk.fail(keys + (key,), f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _field_rule(chk: _Checker, name: str, spec: Any, keys: tuple[str, ...]) -> FieldRule:
    where = keys + (name,)
    if isinstance(spec, str):
        spec = {"transform": spec}
    if not isinstance(spec, dict):
        raise chk.fail(where, "must be a transform name or a table with 'transform'")
    transform = _require(chk, spec, "transform", str, where)
    if transform not in TRANSFORMS:
        raise chk.fail(where, f"unknown transform '{transform}' (known: {', '.join(TRANSFORMS)})")
    allowed, required = TRANSFORMS[transform]
    _unknown_keys(chk, spec, set(allowed) | {"transform", "column"}, where)
    for param in required:
        if param not in spec:
            raise chk.fail(where, f"transform '{transform}' needs '{param}'")
    values = spec.get("values", ())
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise chk.fail(where + ("values",), "must be a list of strings")
    kind = spec.get("kind")
    if kind is not None and (not isinstance(kind, str) or not re.fullmatch(r"[a-z_]+", kind)):
        raise chk.fail(where + ("kind",), "must be a lower-case word")
    decimals = spec.get("decimals")
    if decimals is not None and (not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 2):
        raise chk.fail(where + ("decimals",), "must be an integer from 0 to 2 (2 decimals is about 1 km)")
    column = spec.get("column")
    for ident in (name, column):
        if ident is not None and not (isinstance(ident, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", ident)):
            raise chk.fail(where, "field and column names must be identifiers")
    return FieldRule(name=name, transform=transform, kind=kind, values=tuple(values), decimals=decimals,
                     column=column)


def _consent_list(chk: _Checker, table: dict, key: str, keys: tuple[str, ...]) -> tuple[str, ...]:
    flags = _require(chk, table, key, list, keys)
    for flag in flags:
        if flag not in CONSENT_FLAGS:
            raise chk.fail(keys + (key,), f"unknown consent flag '{flag}' (known: {', '.join(CONSENT_FLAGS)})")
    return tuple(flags)


def parse_policy(text: str, source: str) -> Policy:
    """Validate a policy text; raises PolicyError naming file, line and key."""
    chk = _Checker(source, text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    top = ("version", "future_tolerance_seconds", "max_line_bytes", "base_consent", "envelope", "regions",
           "special_categories", "types")
    _unknown_keys(chk, doc, set(top), ())
    version = _require(chk, doc, "version", str, ())
    tolerance = _require(chk, doc, "future_tolerance_seconds", int, ())
    max_line = _require(chk, doc, "max_line_bytes", int, ())
    if tolerance < 0 or max_line < 1024:
        raise chk.fail(("max_line_bytes",), "tolerance must be >= 0 and max_line_bytes >= 1024")
    base_consent = _consent_list(chk, doc, "base_consent", ())

    env_table = _require(chk, doc, "envelope", dict, ())
    structural = {"ts", "country", "consent", "is_child", "schema_version", "type", "data"}
    for name in env_table:
        if name in structural:
            raise chk.fail(("envelope", name), "is consumed by the gates and cannot be listed")
    envelope = tuple(_field_rule(chk, n, s, ("envelope",)) for n, s in env_table.items())
    if not any(r.name == "device_id" for r in envelope):
        raise chk.fail(("envelope",), "must list device_id (records are linked and deduplicated by device)")

    regions: list[Region] = []
    seen: dict[str, str] = {}
    for name, spec in _require(chk, doc, "regions", dict, ()).items():
        keys = ("regions", name)
        if not isinstance(spec, dict):
            raise chk.fail(keys, "must be a table with countries and processing_locations")
        _unknown_keys(chk, spec, {"countries", "processing_locations"}, keys)
        countries = _require(chk, spec, "countries", (list, str), keys)
        if isinstance(countries, str) and countries != "*":
            raise chk.fail(keys + ("countries",), 'must be a list of ISO codes or "*"')
        locations = _require(chk, spec, "processing_locations", list, keys)
        for code in (countries if isinstance(countries, list) else []) + locations:
            if code not in ALPHA2:
                raise chk.fail(keys, f"'{code}' is not an ISO 3166-1 alpha-2 code")
        for code in countries if isinstance(countries, list) else []:
            if code in seen:
                raise chk.fail(keys + ("countries",), f"'{code}' is already in region {seen[code]}")
            seen[code] = name
        regions.append(Region(name, None if countries == "*" else frozenset(countries), tuple(locations)))
    if not any(r.name == "UNKNOWN" for r in regions):
        raise chk.fail(("regions",), "must define UNKNOWN (records without a valid country)")

    special: dict[str, tuple[str, ...]] = {}
    for cat, terms in _require(chk, doc, "special_categories", dict, ()).items():
        if not isinstance(terms, list) or not terms or not all(isinstance(t, str) and t for t in terms):
            raise chk.fail(("special_categories", cat), "must be a non-empty list of names")
        special[cat] = tuple(terms)

    types: dict[str, TypePolicy] = {}
    type_keys = {"category", "purpose", "consent", "retention_days", "on_expiry", "children_allowed", "fields"}
    for tname, spec in _require(chk, doc, "types", dict, ()).items():
        keys = ("types", tname)
        if not isinstance(spec, dict):
            raise chk.fail(keys, "must be a table")
        _unknown_keys(chk, spec, type_keys, keys)
        retention = _require(chk, spec, "retention_days", int, keys)
        if retention <= 0:
            raise chk.fail(keys + ("retention_days",), "must be a positive number of days")
        on_expiry = _require(chk, spec, "on_expiry", str, keys)
        if on_expiry not in ON_EXPIRY:
            raise chk.fail(keys + ("on_expiry",), f"must be one of {', '.join(ON_EXPIRY)}")
        children = spec.get("children_allowed", False)
        if not isinstance(children, bool):
            raise chk.fail(keys + ("children_allowed",), "must be true or false")
        fields = _require(chk, spec, "fields", dict, keys)
        if not fields:
            raise chk.fail(keys + ("fields",), "must allow at least one field")
        types[tname] = TypePolicy(
            name=tname,
            category=_require(chk, spec, "category", str, keys),
            purpose=_require(chk, spec, "purpose", str, keys),
            consent=_consent_list(chk, spec, "consent", keys),
            retention_days=retention,
            on_expiry=on_expiry,
            children_allowed=children,
            fields=tuple(_field_rule(chk, n, s, keys + ("fields",)) for n, s in fields.items()),
        )
    if not types:
        raise chk.fail(("types",), "no record types defined")
    policy = Policy(
        version=version,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        source=source,
        future_tolerance_seconds=tolerance,
        max_line_bytes=max_line,
        base_consent=base_consent,
        envelope=envelope,
        regions=tuple(regions),
        special_categories=special,
        types=types,
    )
    for tname in types:
        names = policy.dataset_schema(tname).names + ["_key", "_origin"]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise chk.fail(("types", tname, "fields", clash[0]),
                           f"output column '{clash[0]}' is produced twice; give one a different 'column'")
    return policy


def load_policy(path: str | Path | None = None) -> Policy:
    """Load the built-in policy, or the file given by `--policy`."""
    p = Path(path) if path else DEFAULT_POLICY_PATH
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{p}: cannot read policy file: {exc.__class__.__name__}: {exc}") from None
    return parse_policy(text, str(p))
