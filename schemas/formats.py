"""Load and validate the source-format mappings (`schemas/formats/*.toml`) and consent profiles.

A mapping file is the reviewable statement of how one real-world event format (Windows event
logs, ECS, OCSF) becomes the contract's envelope: which source events map onto which record
type, which source field feeds which contract field, and where consent and country come from.
This module only checks the files; `transforms/mapping.py` applies them. Every error names the
file and the key, and stops the run before anything is written (exit 2).
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.iso3166 import ALPHA2
from schemas.policy import CONSENT_FLAGS, Policy

FORMATS_DIR = Path(__file__).with_name("formats")
CONTRACT = "contract"
AUTO = "auto"
# Formats a file exists for, in the order `auto` tries them (after the contract's own shape):
# OCSF's class_uid is unambiguous; a Windows event exported by Winlogbeat is also an ECS
# document, and its own mapping (by channel and event id) is the more exact one.
MAPPED_FORMATS = ("ocsf", "windows-events", "ecs")
INPUT_FORMATS = (CONTRACT, *MAPPED_FORMATS, AUTO)
CONVERTERS = ("int", "str", "lower", "bool", "utc_wall", "epoch_ms", "map", "kv", "first")
ENVELOPE_ROLES = ("event_id", "device_id", "user_id", "ts", "product", "tenant", "device_group", "country")
DATA_PREFIX = "data:"  # a path looked up in the event's data object (see FormatMapping.data_roots)
KEY_PREFIX = "key:"  # the normalised value of one of the format's keys (e.g. the channel's short name)
OTHER = "other"  # a key value the mapping file does not name: how it appears in unmapped_event ids


class FormatError(ValueError):
    """A mapping or consent-profile file that cannot be applied; the message is for the user as is."""


@dataclass(frozen=True)
class Source:
    """One place a value may come from: a path (dotted; `data:` / `key:` prefixes) and a converter."""

    path: str
    convert: str | None = None


@dataclass(frozen=True)
class Spec:
    """How one contract value is got from a source object.

    `sources`: candidates, the first present (not null, not "") wins; `join`: every present part
    of each candidate group, joined by `sep`; `value`: a constant. `convert` applies to the
    result (`map` looks it up in `table`, `kv` takes the `Key = Value` line named `key`)."""

    sources: tuple[Source, ...] = ()
    join: tuple[tuple[Source, ...], ...] = ()
    sep: str = ""
    value: Any = None
    convert: str | None = None
    table: tuple[tuple[str, Any], ...] = ()
    key: str | None = None
    complete: bool = False  # join: MISSING unless every part is present (ids: never a partial one)

    def paths(self) -> list[str]:
        """Every source path this spec may read (for the docs)."""
        return [s.path for s in self.sources] + [s.path for group in self.join for s in group]


@dataclass(frozen=True)
class Key:
    """A value events are matched on (channel, event id, ECS category, OCSF class)."""

    name: str
    sources: tuple[Source, ...]
    convert: str | None  # "int" or None (text, compared case-insensitively)
    aliases: tuple[tuple[str, str], ...] = ()  # lower-cased source value -> short name
    known: frozenset[str] = frozenset()  # text values shown as they are in unmapped ids
    maximum: int | None = None  # int values above it are shown as `other`


@dataclass(frozen=True)
class Event:
    """One source event (or family of events) and the record it becomes."""

    name: str
    when: tuple[tuple[str, tuple[Any, ...]], ...]  # key name or path -> accepted values
    record_type: str
    fields: tuple[tuple[str, Spec], ...]
    envelope: tuple[tuple[str, Spec], ...] = ()  # overrides of the format's envelope specs


@dataclass(frozen=True)
class FormatMapping:
    name: str
    description: str
    source: str  # path of the mapping file
    detect: tuple[str, ...]
    data_roots: tuple[str, ...]
    keys: tuple[Key, ...]
    envelope: tuple[tuple[str, Spec], ...]
    events: tuple[Event, ...]
    references: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class ProfileEntry:
    consent: frozenset[str]
    country: str | None = None
    children: bool = False


@dataclass(frozen=True)
class ConsentProfile:
    """The consent bases a deployment's users accepted, per tenant or device group (`--consent-profile`).

    Real agents do not send the contract's consent object; this file is the only source of
    consent for mapped records. A record whose tenant and device group are both listed gets the
    bases both entries grant (the intersection); one listed in neither gets `[default]`, and
    without a `[default]` no basis at all, so it is dropped as `consent_missing`."""

    source: str
    sha256: str = ""
    tenants: tuple[tuple[str, ProfileEntry], ...] = ()
    groups: tuple[tuple[str, ProfileEntry], ...] = ()
    default: ProfileEntry | None = None
    default_country: str | None = None

    def resolve(self, tenant: str | None, group: str | None) -> tuple[frozenset[str], str | None, bool]:
        """(consent bases, country or None, children) of a record of this tenant and device group."""
        matched = [e for name, e in self.groups if group is not None and name == group.casefold()]
        matched += [e for name, e in self.tenants if tenant is not None and name == tenant.casefold()]
        if not matched:
            matched = [self.default] if self.default is not None else []
        if not matched:
            return frozenset(), self.default_country, False
        bases = frozenset.intersection(*(e.consent for e in matched))
        country = next((e.country for e in matched if e.country), None) or self.default_country
        return bases, country, any(e.children for e in matched)


# ------------------------------------------------------------------ loading


def _read_toml(path: Path, what: str) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: cannot read {what}: {exc.__class__.__name__}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise FormatError(f"{path}: not valid TOML: {exc}") from None


def _source(where: str, item: Any) -> Source:
    if isinstance(item, str):
        return Source(item)
    if isinstance(item, dict) and set(item) <= {"path", "convert"} and isinstance(item.get("path"), str):
        conv = item.get("convert")
        if conv is not None and conv not in CONVERTERS:
            raise FormatError(f"{where}: unknown convert {conv!r} (known: {', '.join(CONVERTERS)})")
        return Source(item["path"], conv)
    raise FormatError(f"{where}: expected a path or {{ path = ..., convert = ... }}")


def _sources(where: str, item: Any) -> tuple[Source, ...]:
    items = item if isinstance(item, list) else [item]
    if not items:
        raise FormatError(f"{where}: no path given")
    return tuple(_source(where, i) for i in items)


def _spec(where: str, item: Any) -> Spec:
    if isinstance(item, (str, list)):
        return Spec(sources=_sources(where, item))
    if not isinstance(item, dict):
        raise FormatError(f"{where}: expected a path, a list of paths or a table")
    unknown = set(item) - {"from", "join", "sep", "value", "convert", "map", "key", "complete"}
    if unknown:
        raise FormatError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                          "(known: from, join, sep, value, convert, map, key, complete)")
    given = [k for k in ("from", "join", "value") if k in item]
    if len(given) != 1:
        raise FormatError(f"{where}: give exactly one of from, join, value")
    conv = item.get("convert")
    if conv is not None and conv not in CONVERTERS:
        raise FormatError(f"{where}: unknown convert {conv!r} (known: {', '.join(CONVERTERS)})")
    if conv == "map" and not isinstance(item.get("map"), dict):
        raise FormatError(f"{where}: convert = \"map\" needs a map table")
    if conv == "kv" and not isinstance(item.get("key"), str):
        raise FormatError(f"{where}: convert = \"kv\" needs key = \"<name>\"")
    join: tuple[tuple[Source, ...], ...] = ()
    if "join" in item:
        if not isinstance(item["join"], list) or not item["join"]:
            raise FormatError(f"{where}.join: expected a list of paths (or lists of candidate paths)")
        join = tuple(_sources(f"{where}.join", part) for part in item["join"])
    table = tuple((str(k).casefold(), v) for k, v in (item.get("map") or {}).items())
    return Spec(sources=_sources(f"{where}.from", item["from"]) if "from" in item else (), join=join,
                sep=str(item.get("sep", "")), value=item.get("value"), convert=conv, table=table, key=item.get("key"),
                complete=item.get("complete") is True)


def _key(where: str, name: str, item: Any) -> Key:
    if not isinstance(item, dict) or "from" not in item:
        raise FormatError(f"{where}: expected a table with from = [paths]")
    unknown = set(item) - {"from", "convert", "values", "max"}
    if unknown:
        raise FormatError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: from, convert, values, max)")
    conv = item.get("convert")
    if conv not in (None, "int"):
        raise FormatError(f"{where}.convert: only \"int\" is allowed for a key")
    values = item.get("values", {})
    if isinstance(values, list):
        values = {v: v for v in values}
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise FormatError(f"{where}.values: expected a list of names or a table source value = short name")
    aliases = tuple((str(k).casefold(), v) for k, v in values.items())
    return Key(name, _sources(f"{where}.from", item["from"]), conv, aliases, frozenset(values.values()),
               item.get("max"))


def load_format(name: str, policy: Policy, directory: Path = FORMATS_DIR) -> FormatMapping:
    """The mapping file `<directory>/<name>.toml`, checked against the policy's types and fields."""
    path = directory / f"{name}.toml"
    doc = _read_toml(path, "mapping file")
    where = str(path)
    if doc.get("format") != name:
        raise FormatError(f"{where}: key 'format' must be {name!r}")
    if doc.get("consent") != "profile":
        raise FormatError(f"{where}: key 'consent' must be \"profile\": consent of mapped records comes only "
                          "from --consent-profile")
    keys = tuple(_key(f"{where}: keys.{k}", k, v) for k, v in (doc.get("keys") or {}).items())
    envelope = doc.get("envelope") or {}
    for role in envelope:
        if role not in ENVELOPE_ROLES:
            raise FormatError(f"{where}: key 'envelope.{role}': unknown (known: {', '.join(ENVELOPE_ROLES)})")
    for role in ("device_id", "ts"):
        if role not in envelope:
            raise FormatError(f"{where}: key 'envelope.{role}' is required")
    env = tuple((role, _spec(f"{where}: envelope.{role}", spec)) for role, spec in envelope.items())
    key_names = {k.name for k in keys}
    events = []
    for i, ev in enumerate(doc.get("events") or []):
        at = f"{where}: events[{i}]"
        rtype = ev.get("type")
        tpol = policy.types.get(rtype or "")
        if tpol is None:
            raise FormatError(f"{at}.type: {rtype!r} is not a record type of the policy")
        fields = ev.get("fields") or {}
        for fname in fields:
            if fname not in tpol.allowed:
                raise FormatError(f"{at}.fields.{fname}: not a field of {rtype} in the policy")
        when = ev.get("when")
        if not isinstance(when, dict) or not when:
            raise FormatError(f"{at}.when: expected a table of key = value(s)")
        for wk in when:
            if wk not in key_names and not isinstance(wk, str):
                raise FormatError(f"{at}.when.{wk}: unknown key")
        ev_env = ev.get("envelope") or {}
        for role in ev_env:
            if role not in ENVELOPE_ROLES:
                raise FormatError(f"{at}.envelope.{role}: unknown (known: {', '.join(ENVELOPE_ROLES)})")
        events.append(Event(
            name=str(ev.get("name") or f"events[{i}]"),
            when=tuple((k, tuple(v if isinstance(v, list) else [v])) for k, v in when.items()),
            record_type=rtype,
            fields=tuple((f, _spec(f"{at}.fields.{f}", s)) for f, s in fields.items()),
            envelope=tuple((r, _spec(f"{at}.envelope.{r}", s)) for r, s in ev_env.items()),
        ))
    if not events:
        raise FormatError(f"{where}: no [[events]]")
    return FormatMapping(
        name=name, description=str(doc.get("description", "")), source=where,
        detect=tuple(doc.get("detect") or ()), data_roots=tuple(doc.get("data_roots") or ("",)),
        keys=keys, envelope=env, events=tuple(events), references=tuple(doc.get("references") or ()),
    )


def load_formats(names: list[str] | tuple[str, ...], policy: Policy,
                 directory: Path = FORMATS_DIR) -> dict[str, FormatMapping]:
    """The mapping of each named format (`auto` needs them all)."""
    wanted = set(names)
    if AUTO in wanted:
        wanted |= set(MAPPED_FORMATS)
    return {n: load_format(n, policy, directory) for n in MAPPED_FORMATS
            if n in names or (n in wanted and (directory / f"{n}.toml").exists())}


def _entry(where: str, item: Any) -> ProfileEntry:
    if not isinstance(item, dict):
        raise FormatError(f"{where}: expected a table with consent = [bases]")
    unknown = set(item) - {"consent", "country", "children"}
    if unknown:
        raise FormatError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: consent, country, children)")
    consent = item.get("consent")
    if not isinstance(consent, list) or not all(isinstance(c, str) for c in consent):
        raise FormatError(f"{where}.consent: expected a list of consent bases ({', '.join(CONSENT_FLAGS)})")
    for flag in consent:
        if flag not in CONSENT_FLAGS:
            raise FormatError(f"{where}.consent: unknown basis {flag!r} (known: {', '.join(CONSENT_FLAGS)})")
    country = item.get("country")
    if country is not None and (not isinstance(country, str) or country.upper() not in ALPHA2):
        raise FormatError(f"{where}.country: {country!r} is not an ISO 3166-1 alpha-2 code")
    children = item.get("children", False)
    if not isinstance(children, bool):
        raise FormatError(f"{where}.children: expected true or false")
    return ProfileEntry(frozenset(consent), country.upper() if country else None, children)


def load_profile(path: str | Path) -> ConsentProfile:
    """A `--consent-profile` file (see ConsentProfile and docs/input-formats.md)."""
    p = Path(path)
    doc = _read_toml(p, "consent profile")
    where = str(p)
    unknown = set(doc) - {"default_country", "default", "tenants", "device_groups"}
    if unknown:
        raise FormatError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                          "(known: default_country, default, tenants, device_groups)")
    country = doc.get("default_country")
    if country is not None and (not isinstance(country, str) or country.upper() not in ALPHA2):
        raise FormatError(f"{where}: default_country {country!r} is not an ISO 3166-1 alpha-2 code")
    groups = []
    for section in ("tenants", "device_groups"):
        table = doc.get(section) or {}
        if not isinstance(table, dict):
            raise FormatError(f"{where}: {section}: expected tables [{section}.\"<name>\"]")
        groups.append(tuple((str(n).casefold(), _entry(f"{where}: {section}.{n}", e)) for n, e in table.items()))
    return ConsentProfile(
        source=where, sha256=hashlib.sha256(p.read_bytes()).hexdigest(), tenants=groups[0], groups=groups[1],
        default=_entry(f"{where}: default", doc["default"]) if "default" in doc else None,
        default_country=country.upper() if country else None,
    )
