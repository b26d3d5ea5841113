"""The hostile corpus is deterministic, plants what its manifest says, and its scanner finds what survives."""

from __future__ import annotations

import json
import os
import random
import sys
from collections import Counter
from functools import cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import hostile_corpus  # noqa: E402
import hostile_scan  # noqa: E402
from hostile_templates import TEMPLATES  # noqa: E402

CONTRACT_TYPES = {"license", "product_usage", "device", "detection", "installed_app", "url_visit", "os_event",
                  "suspicious_file", "wifi", "contact", "dump", "spam_email", "antitheft", "child_protection"}


@cache
def corpus(seed: int) -> tuple[list[bytes], list[dict]]:
    return hostile_corpus.build(seed=seed)


def test_same_seed_same_bytes_other_seed_other_values():
    lines_a, man_a = hostile_corpus.build(seed=3)
    lines_b, man_b = corpus(3)
    assert lines_a == lines_b
    assert json.dumps(man_a) == json.dumps(man_b)
    one = [hostile_corpus.render(t, random.Random(1)) for t in TEMPLATES]
    two = [hostile_corpus.render(t, random.Random(2)) for t in TEMPLATES]
    assert one == [hostile_corpus.render(t, random.Random(1)) for t in TEMPLATES]
    assert sum(a != b for a, b in zip(one, two, strict=True)) > 0.9 * len(TEMPLATES)


def test_manifest_matches_the_planted_values():
    lines, manifest = corpus(3)
    assert [m["line"] for m in manifest] == list(range(1, len(lines) + 1))
    for entry in manifest:
        raw = lines[entry["line"] - 1]
        for core in entry["cores"]:
            assert core["core"] in hostile_corpus.norm(entry["value"]), entry
        if entry["class"] == "parser_trick":
            continue
        rec = json.loads(raw)
        field = entry["field"]
        holder = rec["data"] if field.startswith("data.") else rec
        assert holder[field.removeprefix("data.")] == entry["value"]
        assert rec["type"] == entry["type"] and rec["ts"] == entry["ts"]


def test_plain_records_are_valid_contract_records_with_every_consent():
    lines, manifest = corpus(3)
    seen_types = set()
    for entry in manifest:
        if entry["class"] == "parser_trick":
            continue
        rec = json.loads(lines[entry["line"] - 1])
        seen_types.add(rec["type"])
        assert rec["schema_version"] == 1 and rec["type"] in CONTRACT_TYPES
        assert all(rec["consent"][k] is True for k in ("eula", "ksn", "marketing", "dumps", "antispam",
                                                        "antitheft", "child_protection"))
        assert rec["ts"].startswith("2026-11-2") and rec["ts"].endswith("Z")
        assert isinstance(rec["data"], dict)
    assert seen_types == CONTRACT_TYPES
    # one record per input line: no two plain records share an event time (the scanner's row key)
    times = Counter(json.loads(lines[m["line"] - 1])["ts"] for m in manifest if m["class"] != "parser_trick")
    assert max(times.values()) == 1


def test_every_kept_string_field_gets_every_template():
    _, manifest = corpus(3)
    slots = hostile_corpus.string_slots(os.path.join(ROOT, "schemas", "policy.toml"))
    per_field = Counter((m["type"], m["field"]) for m in manifest if m["class"] != "parser_trick")
    for rtype, fields in slots.items():
        for field in fields:
            assert per_field[(rtype, "data." + field)] == len(TEMPLATES), (rtype, field)
    for field in hostile_corpus.ENVELOPE_TEXT:
        assert sum(n for (_, f), n in per_field.items() if f == field) == len(TEMPLATES)
    assert len(TEMPLATES) >= 150 and len({t[1] for t in TEMPLATES}) == len(TEMPLATES)


def test_scanner_finds_a_core_through_case_width_zero_width_and_percent_encoding():
    plants = [{"line": 1, "ts": "t1", "type": "x", "field": "data.f",
               "cores": [{"kind": "secret", "core": hostile_corpus.norm("Kq7ZmXw4RtPa9LvB")}]},
              {"line": 2, "ts": "t2", "type": "x", "field": "data.f",
               "cores": [{"kind": "identifier", "core": "3811702361-2840012234"}]}]
    index = hostile_scan.Index(plants)
    assert index.search("pw=Kq7ZmXw4RtPa9LvB") == {0: "kq7zmxw4"}
    assert 0 in index.search("ＫＱ７ＺＭＸＷ４")  # fullwidth, other case
    assert 0 in index.search("xx z\u200bm\u200cx\u200dw4RtP")  # zero-width characters inside
    assert 0 in index.search("%5a%6dXw4RtPa")  # percent-encoded
    assert 1 in index.search("S-1-5-21-3811702361-2840")
    assert index.search("Kq7ZmXw") == {} and index.search("S-1-5-21-pz-0123456789abcdef") == {}


def test_a_hit_in_another_planted_row_is_not_counted_for_this_plant():
    plants = [{"line": 1, "ts": "2026-11-20T00:00:01Z", "type": "x", "field": "data.f",
               "cores": [{"kind": "special", "core": "roman catholic"}]},
              {"line": 2, "ts": "2026-11-20T00:00:02Z", "type": "x", "field": "data.f",
               "cores": [{"kind": "special", "core": "roman catholic"}]}]
    index = hostile_scan.Index(plants)
    frag = "roman ca"
    hits = {0: [(("x/part.parquet", "f", "ts=2026-11-20T00:00:02Z"), frag, "religion=Roman Catholic")],
            1: [(("x/part.parquet", "f", "ts=2026-11-20T00:00:02Z"), frag, "religion=Roman Catholic")]}
    leaks, ambiguous = hostile_scan.attribute(hits, plants, index)
    assert set(leaks) == {1} and not ambiguous
    stats = {0: [(("x/part.parquet", "<stats f>", ""), frag, "Roman Catholic")]}
    leaks, ambiguous = hostile_scan.attribute(stats, plants, index)
    assert not leaks and len(ambiguous) == 1


def test_a_report_reads_back_as_the_previous_counts(tmp_path):
    plants = [{"line": n, "ts": f"t{n}", "type": "x", "field": "data.f", "class": cls, "template": "t",
               "cores": [{"kind": "secret", "core": f"core{n}zzzz"}]}
              for n, cls in enumerate(["a_class", "a_class", "b_class"], 1)]
    leaks = {1: [(("x/p.parquet", "f", "ts=t2"), "core2zzz", "core2zzzz")]}
    text = hostile_scan.report(plants, leaks, ["# r"], [], {})
    path = tmp_path / "r.md"
    path.write_text(text, encoding="utf-8")
    previous = hostile_scan.previous_counts(str(path))
    assert previous["a_class"] == "1/2" and previous["b_class"] == "0/1"
