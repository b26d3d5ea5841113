"""Real-world input formats (transforms/mapping.py, schemas/formats/*.toml): Windows event logs,
ECS and OCSF mapped onto the contract, then through the unchanged contract path.

The samples (tests/format_samples.py) are written for these tests from the public field
references; each free-text field carries planted secrets, an account name, host names and SIDs.
"""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import orjson
import pytest
from format_samples import (
    ACCOUNT,
    PLANTED,
    SHAPES,
    SID,
    ecs_events,
    ecs_unmapped,
    many,
    ocsf_events,
    ocsf_unmapped,
    windows_events,
    windows_unmapped,
)
from test_fast_path import assert_same

from schemas.formats import (
    INPUT_FORMATS,
    MAPPED_FORMATS,
    ConsentProfile,
    FormatError,
    ProfileEntry,
    load_format,
    load_formats,
    load_profile,
)
from transforms.columnar import sanitize_columnar
from transforms.mapping import MISSING, FormatSetup, lookup, map_lines, map_object
from transforms.records import SanitizeContext, sanitize_lines

PROFILE = ConsentProfile("test", default=ProfileEntry(frozenset({"eula", "ksn"})), default_country="NL")

SAMPLES = {"windows-events": windows_events, "ecs": ecs_events, "ocsf": ocsf_events}
SOURCE_COUNTRY = {"ocsf": "FR"}
UNMAPPED = {"windows-events": windows_unmapped, "ecs": ecs_unmapped, "ocsf": ocsf_unmapped}


@pytest.fixture(scope="module")
def mappings(policy):
    return load_formats(["auto"], policy)


def setup_for(mappings, fmt: str, profile: ConsentProfile | None = PROFILE) -> FormatSetup:
    return FormatSetup((fmt,), mappings, profile)


def lines_of(objs: list[dict]) -> list[tuple[int, bytes]]:
    return [(i, orjson.dumps(o)) for i, o in enumerate(objs, 1)]


def run_both(ctx, setup: FormatSetup, fmt: str, numbered: list[tuple[int, bytes]]):
    """Map, then sanitize record by record and columnar (fresh contexts): both results and the mapping's counts."""
    mapped, counts = map_lines(setup, fmt, numbered, ctx.line_digest, ctx.policy.max_line_bytes)
    plain = sanitize_lines(SanitizeContext(ctx.policy, ctx.key, ctx.as_of), "in.ndjson", 0, mapped)
    columnar = sanitize_columnar(SanitizeContext(ctx.policy, ctx.key, ctx.as_of), "in.ndjson", 0, mapped)
    plain.stats.update(counts)
    columnar.stats.update(counts)
    return plain, columnar


def all_text(result) -> str:
    """Every value of every output table, the quarantine and the counters' names, as one string."""
    parts = []
    for table in [*result.outputs.values(), *([result.quarantine] if result.quarantine is not None else [])]:
        for column in table.columns:
            parts.extend(str(v) for v in column.to_pylist())
    parts.extend(result.stats)
    return "\n".join(parts)


def rows(result, rtype: str) -> list[dict]:
    """The rows of one type, with their partition's region."""
    return [{**r, "user_region": k.user_region} for k, t in result.outputs.items() if k.record_type == rtype
            for r in t.to_pylist()]


def identity_holds(stats: Counter) -> bool:
    accounted = sum(v for k, v in stats.items() if k.startswith(("output/", "dropped/", "quarantined/")))
    return accounted == stats["input_records"]


# ------------------------------------------------------------------ the mapping files


def test_every_mapping_file_loads_and_names_only_policy_fields(policy):
    assert sorted(p.stem for p in Path("schemas/formats").glob("*.toml")) == sorted(MAPPED_FORMATS)
    for name in MAPPED_FORMATS:
        mapping = load_format(name, policy)
        assert mapping.events
        for ev in mapping.events:
            assert set(dict(ev.fields)) <= policy.types[ev.record_type].allowed


def test_a_mapping_onto_a_field_the_policy_does_not_allow_is_refused(policy, tmp_path):
    text = Path("schemas/formats/windows-events.toml").read_text(encoding="utf-8")
    (tmp_path / "windows-events.toml").write_text(
        text.replace('fields.query_name = "data:QueryName"', 'fields.query_results = "data:QueryResults"'),
        encoding="utf-8")
    with pytest.raises(FormatError, match="query_results: not a field of os_event"):
        load_format("windows-events", policy, tmp_path)


def test_a_mapping_must_take_consent_from_the_profile(policy, tmp_path):
    text = Path("schemas/formats/windows-events.toml").read_text(encoding="utf-8")
    (tmp_path / "windows-events.toml").write_text(text.replace('consent = "profile"', 'consent = "source"'),
                                                  encoding="utf-8")
    with pytest.raises(FormatError, match="consent"):
        load_format("windows-events", policy, tmp_path)


def test_lookup_reads_nested_and_dotted_keys_and_lists():
    obj = {"event": {"category": ["process"]}, "host.geo": {"country_iso_code": "DE"},
           "device": {"groups": [{"uid": "1"}, {"name": "lab"}]}}
    assert lookup(obj, "event.category")[0] == ["process"]
    assert lookup(obj, "host.geo.country_iso_code") == ("DE", "host.geo.country_iso_code")
    assert lookup(obj, "device.groups.name")[0] == "lab"
    assert lookup(obj, "event.kind")[0] is MISSING


# ------------------------------------------------------------------ coverage and round trips


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_every_sample_event_is_mapped_and_round_trips(ctx, mappings, fmt):
    """Each sample maps onto its record type; the written row says what the source said."""
    samples = SAMPLES[fmt]()
    plain, columnar = run_both(ctx, setup_for(mappings, fmt), fmt, lines_of([s for _, s, _ in samples]))
    assert_same(columnar, plain)
    stats = plain.stats
    assert identity_holds(stats)
    assert not [k for k in stats if k.startswith(("quarantined/", "dropped/"))], dict(stats)
    written = {t: rows(plain, t) for t in ("os_event", "wifi", "detection", "url_visit")}
    assert sum(map(len, written.values())) == len(samples)
    by_event = {}
    for rtype, rs in written.items():
        for r in rs:
            by_event[r["event_id"]] = (rtype, r)
    for name, source, expected in samples:
        rec, _ = map_object(source, mappings[fmt], PROFILE, lambda: "x")
        rtype, row = by_event[rec["event_id"]]
        assert rtype == rec["type"], name
        for field, value in expected.items():
            assert row[field] == value, (name, field)
        assert row["device_id_pseudonym"] == ctx.pseudonym("device", rec["device_id"]), name
        # the source's country where the format has one (OCSF's samples: FR), else the profile's
        assert row["country"] == expected.get("country", SOURCE_COUNTRY.get(fmt, "NL")), name
        assert row["user_region"] == "EEA", name
        assert str(row["event_time"]).startswith("2026-11-20 10:04:05.123"), name


def test_windows_coverage_by_event(ctx, mappings):
    """Sysmon 1/3/11/12/13/14/22, Security 4688/4624/5156/5158, PowerShell 4103/4104 and 800, WLAN 8001/8003
    and Defender 1116/1117, in each export shape."""
    names = Counter()
    for name, source, _ in windows_events():
        rec, event = map_object(source, mappings["windows-events"], PROFILE, lambda: "x")
        assert rec is not None, name
        names[name.split(":", 1)[1]] += 1
    wanted = {"sysmon/1", "sysmon/3", "sysmon/11", "sysmon/12", "sysmon/13", "sysmon/14", "sysmon/22",
              "security/4688", "security/4624", "security/5156", "security/5158", "powershell/4103",
              "powershell/4104", "powershell_classic/800", "wlan/8001", "wlan/8003", "defender/1116",
              "defender/1117"}
    assert set(names) == wanted
    assert set(names.values()) == {len(SHAPES)}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_each_windows_shape_gives_the_same_data(mappings, shape):
    """Winlogbeat, Logstash, NXLog and evtx_dump exports of one event map onto the same data fields."""
    by_shape: dict[str, dict] = {}
    for name, source, _ in windows_events():
        s, event = name.split(":", 1)
        rec, _ = map_object(source, mappings["windows-events"], PROFILE, lambda: "x")
        if s == shape:
            by_shape[event] = rec["data"]
    reference = {}
    for name, source, _ in windows_events():
        s, event = name.split(":", 1)
        if s == "winlogbeat":
            reference[event] = map_object(source, mappings["windows-events"], PROFILE, lambda: "x")[0]["data"]
    assert by_shape == reference


def test_new_event_kinds_are_kept_by_the_policy(ctx, mappings):
    """dns_query, logon, firewall_connection, registry_key/rename, script_block and command_invocation
    pass the policy's enum (an unknown kind would be written as null)."""
    plain, _ = run_both(ctx, setup_for(mappings, "windows-events"), "windows-events",
                        lines_of([s for _, s, _ in windows_events()]))
    kinds = {r["event_kind"] for r in rows(plain, "os_event")}
    assert {"dns_query", "logon", "firewall_connection", "registry_key", "registry_rename", "script_block",
            "command_invocation", "process_start", "network_connect", "file_write", "registry_set"} == kinds
    assert None not in kinds


# ------------------------------------------------------------------ nothing leaks


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_no_planted_secret_account_or_host_survives(ctx, mappings, fmt):
    samples = [s for _, s, _ in SAMPLES[fmt]()] + [s for _, s in UNMAPPED[fmt]()]
    plain, columnar = run_both(ctx, setup_for(mappings, fmt), fmt, lines_of(samples))
    for result in (plain, columnar):
        text = all_text(result)
        for planted in PLANTED:
            assert planted.lower() not in text.lower(), planted
    assert ACCOUNT not in all_text(plain) and SID not in all_text(plain)


def test_planted_secret_in_an_encoded_powershell_payload_is_removed(ctx, mappings):
    from format_samples import ENC_PW

    wanted = ("powershell/4104", "powershell/4103", "powershell_classic/800")
    samples = [s for n, s, _ in windows_events() if n.endswith(wanted)]
    plain, _ = run_both(ctx, setup_for(mappings, "windows-events"), "windows-events", lines_of(samples))
    import base64
    import re

    for r in rows(plain, "os_event"):
        for value in (r["command_line"], r["image"]):
            for payload in re.findall(r"-(?:enc|EncodedCommand)\s+([A-Za-z0-9+/=]+)", value or "", re.I):
                assert ENC_PW not in base64.b64decode(payload).decode("utf-16-le")
    assert len(rows(plain, "os_event")) == len(samples)


# ------------------------------------------------------------------ what is not mapped


@pytest.mark.parametrize("fmt", sorted(UNMAPPED))
def test_unmapped_events_are_dropped_and_counted_never_quarantined(ctx, mappings, fmt):
    unmapped = UNMAPPED[fmt]()
    plain, columnar = run_both(ctx, setup_for(mappings, fmt), fmt, lines_of([s for _, s in unmapped]))
    assert_same(columnar, plain)
    dropped = {k: v for k, v in plain.stats.items() if k.startswith("dropped/")}
    assert dropped == {f"dropped/unmapped_event:{fmt}:{name}": 1 for name, _ in unmapped}
    assert plain.quarantine is None and identity_holds(plain.stats)


def test_unmapped_id_never_shows_a_value_the_mapping_does_not_name(mappings):
    event = copy.deepcopy(windows_unmapped()[0][1])
    event["winlog"]["channel"] = f"Custom/{ACCOUNT}"
    event["winlog"]["event_id"] = "123456789"
    _, what = map_object(event, mappings["windows-events"], PROFILE, lambda: "x")
    assert what == "other/other"


def test_source_fields_without_a_mapping_are_counted_by_the_allow_list(ctx, mappings):
    name, source, _ = windows_events()[0]
    source["winlog"]["event_data"]["religion"] = "planted"
    plain, _ = run_both(ctx, setup_for(mappings, "windows-events"), "windows-events", lines_of([source]))
    rec, _ = map_object(source, mappings["windows-events"], PROFILE, lambda: "x")
    unmapped = [k for k in rec if k.startswith("src.")]
    assert plain.stats["fields_removed/not_allowed"] == len(unmapped) - 1
    assert plain.stats["fields_removed/special_category"] == 1
    assert "src.winlog.event_data.ParentCommandLine" in unmapped and "src.winlog.event_data.CommandLine" not in unmapped
    assert all(rec[k] is None for k in unmapped)  # values never travel on


def test_bad_json_and_repeated_keys_are_still_quarantined(ctx, mappings):
    good = orjson.dumps(windows_events()[0][1])
    lines = [(1, good[:-20]), (2, b'{"winlog": {"channel": "Security", "channel": "x"}}'), (3, b"[1, 2]"),
             (4, b"\xff\xfe garbage"), (5, b""), (6, good)]
    plain, columnar = run_both(ctx, setup_for(mappings, "windows-events"), "windows-events", lines)
    assert_same(columnar, plain)
    q = {k: v for k, v in plain.stats.items() if k.startswith("quarantined/")}
    assert q == {"quarantined/truncated_json": 1, "quarantined/duplicate_key": 1, "quarantined/not_an_object": 1,
                 "quarantined/invalid_utf8": 1}
    assert plain.stats["output/os_event"] == 1 and plain.stats["blank_lines"] == 1
    assert identity_holds(plain.stats)


def test_a_local_time_without_offset_is_quarantined_not_guessed(ctx, mappings):
    event = next(s for n, s, _ in windows_events() if n == "nxlog:security/4688")
    event["EventTime"] = "2026-11-20 11:04:05"
    plain, _ = run_both(ctx, setup_for(mappings, "windows-events"), "windows-events", lines_of([event]))
    assert plain.stats["quarantined/invalid_timestamp"] == 1


def test_a_value_that_does_not_convert_is_quarantined(ctx, mappings):
    event = copy.deepcopy(windows_events()[0][1])
    event["winlog"]["event_data"]["ProcessId"] = "12ab"
    plain, _ = run_both(ctx, setup_for(mappings, "windows-events"), "windows-events", lines_of([event]))
    assert plain.stats["quarantined/wrong_type"] == 1


def test_an_event_without_record_number_gets_a_keyed_digest_id(ctx, mappings):
    event = copy.deepcopy(windows_events()[0][1])
    del event["winlog"]["record_id"]
    setup = setup_for(mappings, "windows-events")
    mapped, _ = map_lines(setup, "windows-events", lines_of([event, event]), ctx.line_digest, 1 << 20)
    ids = {orjson.loads(raw)["event_id"] for _, raw in mapped}
    assert len(ids) == 1 and next(iter(ids)).startswith("line-")  # a retry of the line is a duplicate


# ------------------------------------------------------------------ consent and country


def test_without_a_profile_mapped_records_fail_closed(ctx, mappings):
    samples = [s for _, s, _ in windows_events()]
    plain, columnar = run_both(ctx, setup_for(mappings, "windows-events", None), "windows-events",
                               lines_of(samples))
    assert_same(columnar, plain)
    assert plain.stats["dropped/consent_missing:eula"] == len(samples)
    assert not plain.outputs


def test_profile_by_tenant_and_device_group(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("""
default_country = "NL"
[default]
consent = ["eula"]
[tenants."Acme"]
consent = ["eula", "ksn"]
country = "DE"
[device_groups."kids"]
consent = ["eula", "ksn", "child_protection"]
children = true
""", encoding="utf-8")
    profile = load_profile(path)
    assert profile.resolve("acme", None) == (frozenset({"eula", "ksn"}), "DE", False)
    assert profile.resolve("ACME", "kids") == (frozenset({"eula", "ksn"}), "DE", True)  # both: the intersection
    assert profile.resolve("other", None) == (frozenset({"eula"}), "NL", False)
    assert profile.resolve(None, None) == (frozenset({"eula"}), "NL", False)


@pytest.mark.parametrize("text, problem", [
    ('[default]\nconsent = ["eula", "kns"]', "unknown basis 'kns'"),
    ('default_country = "XX"', "not an ISO 3166-1"),
    ('[default]\nconsent = ["eula"]\nkids = true', "unknown key"),
    ("[default", "not valid TOML"),
])
def test_a_bad_profile_is_a_configuration_error(tmp_path, text, problem):
    path = tmp_path / "p.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FormatError, match=problem):
        load_profile(path)


def test_a_device_group_of_children_drops_its_records(ctx, mappings):
    profile = ConsentProfile("p", groups=(("kids", ProfileEntry(frozenset({"eula", "ksn"}), children=True)),))
    event = copy.deepcopy(windows_events()[0][1])
    event["labels"] = {"device_group": "Kids"}
    plain, _ = run_both(ctx, setup_for(mappings, "windows-events", profile), "windows-events", lines_of([event]))
    assert plain.stats["dropped/child_data"] == 1


def test_country_from_the_profile_else_unknown(ctx, mappings):
    event = windows_events()[0][1]
    profile = ConsentProfile("p", default=ProfileEntry(frozenset({"eula", "ksn"})))
    plain, _ = run_both(ctx, setup_for(mappings, "windows-events", profile), "windows-events", lines_of([event]))
    row = rows(plain, "os_event")[0]
    assert row["country"] is None and row["user_region"] == "UNKNOWN"


# ------------------------------------------------------------------ auto


def test_auto_detects_per_line_and_counts_the_choice(ctx, mappings):
    contract = {"schema_version": 1, "type": "url_visit", "event_id": "e-1", "device_id": "D-1",
                "ts": "2026-11-20T10:04:05Z", "country": "NL", "consent": {"eula": True, "ksn": True},
                "data": {"url": "https://example.com/"}}
    lines = lines_of([windows_events()[0][1], contract, {"hello": "world"}]) + [(4, b"not json")]
    setup = FormatSetup(("auto",), mappings, PROFILE)
    plain, columnar = run_both(ctx, setup, "auto", lines)
    assert_same(columnar, plain)
    assert plain.stats["input_format/windows-events"] == 1
    assert plain.stats["input_format/contract"] == 1
    assert plain.stats["input_format/unrecognised"] == 1
    assert plain.stats["dropped/unmapped_event:auto:unrecognised"] == 1
    assert plain.stats["quarantined/invalid_json"] == 1
    assert plain.stats["output/os_event"] == 1 and plain.stats["output/url_visit"] == 1
    assert identity_holds(plain.stats)


def test_input_formats_are_the_documented_ones():
    assert INPUT_FORMATS == ("contract", "ocsf", "windows-events", "ecs", "auto")


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_columnar_record_and_reference_paths_agree(ctx, mappings, fmt, monkeypatch):
    """Enough lines for the columnar path (and proof it took them), compared with the
    record-by-record path and the plain reference on the same mapped batch."""
    import transforms.columnar as columnar
    from transforms.reference import sanitize_lines_reference

    numbered_lines = lines_of(many(fmt, 300))
    mapped, counts = map_lines(setup_for(mappings, fmt), fmt, numbered_lines, ctx.line_digest, 1 << 20)
    handed_on = []
    real = columnar.sanitize_lines

    def spy(c, source, index, lines, withdrawals=None):
        handed_on.append(len(lines))
        return real(c, source, index, lines, withdrawals)

    monkeypatch.setattr(columnar, "sanitize_lines", spy)
    fast = sanitize_columnar(SanitizeContext(ctx.policy, ctx.key, ctx.as_of), "in.ndjson", 0, mapped)
    assert sum(handed_on) < len(mapped) // 2  # most mapped lines went through Arrow
    plain = sanitize_lines(SanitizeContext(ctx.policy, ctx.key, ctx.as_of), "in.ndjson", 0, mapped)
    reference = sanitize_lines_reference(SanitizeContext(ctx.policy, ctx.key, ctx.as_of), "in.ndjson", 0, mapped)
    assert_same(fast, plain)
    assert_same(plain, reference)
    plain.stats.update(counts)
    assert identity_holds(plain.stats) and plain.stats["input_records"] == 300
