"""The telemetry generator: deterministic, realistic, dirty, and honest about what it plants."""

from __future__ import annotations

import collections
import gzip
import random
import re
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

from pipeline import sample
from pipeline.sample import LEGIT_VALUES, PLANTED_SECRETS, RECORD_TYPES, generate_lines, main, write_sample

ROOT = Path(__file__).resolve().parents[1]
BOM = b"\xef\xbb\xbf"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
URL_FIELDS = ("url", "referrer", "source_url", "blocked_url")
INT_FIELDS = ("duration_ms", "pid", "parent_pid", "remote_port", "size", "signal_dbm", "accuracy_m")
BOOL_FIELDS = ("captive_portal", "is_executable")
# Spellings the brief asks for; the generator may plant more.
REQUIRED_SPECIAL_KEYS = {
    "religion", "healthStatus", "political_opinion", "sexualOrientation", "ethnicity", "trade_union",
    "biometric", "genetic", "godsdienst", "gezondheid", "seksuele_geaardheid", "politieke_voorkeur",
    "Religion", "Gesundheit", "sexuelle_Orientierung", "Gewerkschaft", "santé", "orientation_sexuelle",
    "origine_ethnique",
}
SPECIAL_KEYS = {key for _, key in sample._SPECIAL_KEY_LIST}
# Secrets without the "zq" marker: MAC/BSSID, coordinates, Windows SIDs, NTLM hashes.
UNMARKED = re.compile(
    r"^([0-9a-fA-F]{2}([:-])([0-9a-fA-F]{2}\2){4}[0-9a-fA-F]{2}|[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}"
    r"|-?\d{1,3}\.\d{6}|S-1-5-21-\d+-\d+-\d+-\d+|[0-9a-f]{32})$")


def _ts_ok(value: object) -> bool:
    if not isinstance(value, str) or not RFC3339.match(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def parse(line: bytes, first: bool = False) -> dict | None:
    """The record a line carries when it follows the input contract, else None."""
    if first and line.startswith(BOM):
        line = line[len(BOM):]
    line = line.rstrip(b"\r")
    if not line.strip():
        return None
    try:
        line.decode("utf-8")
        rec = orjson.loads(line)
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        return None
    if not isinstance(rec, dict):
        return None
    sv = rec.get("schema_version")
    if type(sv) is not int or sv != 1 or rec.get("type") not in RECORD_TYPES:
        return None
    for key in ("event_id", "device_id", "product"):
        if not isinstance(rec.get(key), str) or not rec[key]:
            return None
    for key in ("user_id", "tenant_id", "country"):
        if key in rec and not isinstance(rec[key], str):
            return None
    if "is_child" in rec and not isinstance(rec["is_child"], bool):
        return None
    consent, data = rec.get("consent"), rec.get("data")
    if not isinstance(consent, dict) or not all(isinstance(v, bool) for v in consent.values()):
        return None
    if not isinstance(data, dict) or not _ts_ok(rec.get("ts")):
        return None
    for key in INT_FIELDS:
        v = data.get(key)
        if v is not None and (type(v) is not int):
            return None
    for key in BOOL_FIELDS:
        if data.get(key) is not None and not isinstance(data[key], bool):
            return None
    for key in ("lat", "lon"):
        if key in data and (isinstance(data[key], bool) or not isinstance(data[key], (int, float))):
            return None
    return rec


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:      # a broken IP literal: the generator plants a few on purpose
        return ""


def _has_special(node: object) -> bool:
    if isinstance(node, dict):
        for k, v in node.items():
            if k in SPECIAL_KEYS or _has_special(v):
                return True
    elif isinstance(node, list):
        return any(_has_special(v) for v in node)
    return False


@pytest.fixture(scope="module")
def dirty5k() -> list[bytes]:
    return list(generate_lines(5000))


@pytest.fixture(scope="module")
def records5k(dirty5k) -> list[dict]:
    out = [parse(line, i == 0) for i, line in enumerate(dirty5k)]
    return [r for r in out if r is not None]


def test_public_api_shapes():
    assert isinstance(PLANTED_SECRETS, tuple) and 1000 < len(PLANTED_SECRETS) < 6000
    assert all(isinstance(s, str) and s for s in PLANTED_SECRETS)
    assert set(LEGIT_VALUES) == {"host", "registered_domain", "threat_name", "event_kind", "wifi_security"}
    kinds = {"process_start", "network_connect", "file_write", "registry_set"}
    assert set(LEGIT_VALUES["event_kind"]) == kinds
    assert set(LEGIT_VALUES["wifi_security"]) == {"OPEN", "WEP", "WPA", "WPA2", "WPA3"}
    assert "bank.example.co.uk" in LEGIT_VALUES["host"]
    assert len(RECORD_TYPES) == 14


def test_secrets_are_recognisable_and_legit_values_are_not_secret():
    marker = re.compile(r"zq[A-Za-z0-9]{6}")
    for secret in PLANTED_SECRETS:
        assert marker.search(secret) or UNMARKED.match(secret), secret
    lowered = [s.lower() for s in PLANTED_SECRETS]
    for kind, values in LEGIT_VALUES.items():
        for value in values:
            assert "zq" not in value.lower(), (kind, value)
            assert not any(value.lower() == s for s in lowered), (kind, value)


def test_deterministic_per_seed():
    a = list(generate_lines(2500, seed=7))
    assert a == list(generate_lines(2500, seed=7))
    assert a != list(generate_lines(2500, seed=8))
    assert list(generate_lines(300, seed=7, dirty=False)) == list(generate_lines(300, seed=7, dirty=False))


def test_line_count_and_framing(dirty5k):
    assert len(dirty5k) == 5000
    assert all(isinstance(line, bytes) and b"\n" not in line for line in dirty5k)
    assert all(b"\r" not in line[:-1] or not line.startswith(b"{") for line in dirty5k)
    assert dirty5k[0].startswith(BOM)
    assert not any(line.startswith(BOM) for line in dirty5k[1:])
    assert 10 <= sum(line.endswith(b"\r") for line in dirty5k) <= 200
    assert any(not line.strip() for line in dirty5k)
    assert list(generate_lines(0)) == []


def test_every_type_appears_with_the_intended_mix(records5k):
    counts = collections.Counter(r["type"] for r in records5k)
    assert set(counts) == set(RECORD_TYPES)
    share = {t: c / len(records5k) for t, c in counts.items()}
    assert 0.35 < share["url_visit"] < 0.45
    assert 0.12 < share["os_event"] < 0.18
    assert 0.08 < share["detection"] < 0.12
    assert 0.05 < share["wifi"] < 0.09 and 0.05 < share["installed_app"] < 0.09
    assert 0.04 < share["product_usage"] < 0.08
    assert all(share[t] > 0.004 for t in RECORD_TYPES)


def test_dirty_fraction_and_kinds(dirty5k):
    bad = [line for i, line in enumerate(dirty5k) if parse(line, i == 0) is None]
    assert 0.025 <= len(bad) / len(dirty5k) <= 0.065
    kinds = collections.Counter()
    for line in bad:
        try:
            obj = orjson.loads(line.rstrip(b"\r"))
        except orjson.JSONDecodeError:
            try:
                line.decode("utf-8")
                kinds["not json" if line.strip() else "blank"] += 1
            except UnicodeDecodeError:
                kinds["invalid utf-8"] += 1
            continue
        kinds["json object, invalid" if isinstance(obj, dict) else "json, not an object"] += 1
    assert set(kinds) == {"not json", "blank", "invalid utf-8", "json object, invalid", "json, not an object"}
    huge = [line for line in dirty5k if len(line) > 1 << 20]
    assert len(huge) == 1
    assert sum(len(line) for line in dirty5k) < 5_000_000


def test_huge_lines_are_rare():
    assert not any(len(line) > 1 << 20 for line in generate_lines(4999, seed=3))
    assert not any(len(line) > 1 << 20 for line in generate_lines(5000, seed=3, dirty=False))
    assert sum(len(line) > 1 << 20 for line in generate_lines(20_000, seed=3)) <= 4


def test_clean_mode_is_contract_valid():
    lines = list(generate_lines(5000, seed=11, dirty=False))
    assert len(lines) == 5000
    for line in lines:
        assert not line.startswith(BOM) and not line.endswith(b"\r") and line.strip()
        rec = orjson.loads(line)
        assert isinstance(rec, dict)
        assert parse(line) is not None, line[:300]


def test_realistic_envelope(records5k):
    ts = [r["ts"] for r in records5k]
    assert any(t.endswith("Z") for t in ts) and any(t.endswith("+02:00") for t in ts)
    when = [datetime.fromisoformat(t).timestamp() for t in ts]
    start = datetime.fromisoformat("2026-11-20T00:00:00+00:00").timestamp()
    inside = sum(start - 3600 <= w <= start + 3 * 86400 + 3600 for w in when)
    assert inside / len(when) > 0.95
    assert any(w < start - 366 * 86400 for w in when), "no record older than a year"
    assert any(w > start + 30 * 86400 for w in when), "no record far in the future"
    countries = collections.Counter(r.get("country") for r in records5k)
    for c in ("NL", "DE", "FR", "GB", "US", "RU", None):
        assert countries[c] > 0, c
    assert any(c in countries for c in ("nl", "XX", "UK"))
    ksn_off = sum(r["consent"].get("ksn") is not True for r in records5k) / len(records5k)
    assert 0.02 < ksn_off < 0.15
    assert sum(r["consent"].get("marketing") is False for r in records5k) / len(records5k) > 0.15
    child = [r for r in records5k if r.get("is_child") is True]
    assert {r["type"] for r in child} >= {"child_protection", "url_visit"}
    keys = collections.Counter((r["device_id"], r["event_id"]) for r in records5k)
    dup = sum(c - 1 for c in keys.values())
    assert 0.003 < dup / len(records5k) < 0.03
    devices = collections.Counter(r["device_id"] for r in records5k)
    assert devices.most_common(1)[0][1] > 20 * len(records5k) / len(devices), "devices are not skewed"


def test_special_categories_and_extra_fields(records5k):
    assert REQUIRED_SPECIAL_KEYS <= SPECIAL_KEYS
    special = sum(_has_special(r) for r in records5k) / len(records5k)
    assert 0.015 < special < 0.06
    assert any("extra_debug" in r or "os_build" in r for r in records5k)
    placed = collections.Counter()
    for r in records5k:
        if any(_has_special({k: v}) for k, v in r.items() if k not in ("data",) and not isinstance(v, dict)):
            placed["top"] += 1
        if any(_has_special({k: v}) for k, v in r["data"].items() if not isinstance(v, (dict, list))):
            placed["data"] += 1
        if any(isinstance(v, (dict, list)) and _has_special(v) for v in [*r.values(), *r["data"].values()]):
            placed["nested"] += 1
    assert set(placed) == {"top", "data", "nested"}


def test_url_hosts_never_carry_the_marker(records5k):
    hosts = collections.Counter()
    cred = 0
    for r in records5k:
        for field in URL_FIELDS:
            url = r["data"].get(field)
            if not isinstance(url, str):
                continue
            host = _host(url)
            assert "zq" not in host.lower(), url
            hosts[host] += 1
            if field == "url" and "zq" in url.lower():
                cred += 1
    assert all("zq" not in h.lower() for h in sample._HOSTS)
    visits = sum(r["type"] == "url_visit" for r in records5k)
    assert 0.25 < cred / visits < 0.42
    assert any(":" in h for h in hosts), "no IPv6 literal"
    assert any(re.match(r"^\d+\.\d+\.\d+\.\d+$", h) for h in hosts), "no IPv4 literal"
    assert any(not h.isascii() for h in hosts), "no IDN host"


def test_legit_values_appear(records5k):
    hosts = set()
    for r in records5k:
        for field in URL_FIELDS:
            url = r["data"].get(field)
            if isinstance(url, str):
                hosts.add(_host(url))
    for host in LEGIT_VALUES["host"]:
        assert host in hosts, host
    for domain in LEGIT_VALUES["registered_domain"]:
        assert any(h and (h == domain or h.endswith("." + domain)) for h in hosts), domain
    data = [r["data"] for r in records5k]
    assert set(LEGIT_VALUES["threat_name"]) <= {d.get("threat_name") for d in data}
    assert set(LEGIT_VALUES["event_kind"]) <= {d.get("event_kind") for d in data}
    assert set(LEGIT_VALUES["wifi_security"]) <= {d.get("security") for d in data}


def test_planted_secrets_occur_in_output():
    text = b"\n".join(generate_lines(20_000, seed=7)).decode("utf-8", "replace").lower()
    rng = random.Random(1)
    picked = rng.sample(PLANTED_SECRETS, 150)
    found = [s for s in picked if s.lower() in text]
    assert len(found) / len(picked) > 0.8, sorted(set(picked) - set(found))[:20]
    families = {
        "device_id": r"^(D-zqdev\d{6}|zq[0-9a-f]{6}-)", "user_id": r"^U-zq\d{7}$", "tenant": r"^tnt-zq",
        "special": r"^zq[A-Z]+-[a-z0-9]+-\d{4}$", "coordinate": r"^-?\d{1,3}\.\d{6}$",
        "mac": r"^[0-9a-fA-F]{2}[:-]|^[0-9a-f]{4}\.", "sid": r"^S-1-5-21-", "license": r"^zq[A-Z0-9]{6}-",
        "ssid": r"iPhone|Galaxy S23|hotspot|^Ziggo-zq", "email": r"^zq[a-z]+\d\d@",
    }
    for family, pattern in families.items():
        members = [s for s in PLANTED_SECRETS if re.search(pattern, s)]
        assert members, family
        hit = sum(s.lower() in text for s in members[:40])
        assert hit >= min(len(members), 40) // 2, family


def test_write_sample_plain_and_gzip(tmp_path):
    plain, packed = tmp_path / "t.ndjson", tmp_path / "t.ndjson.gz"
    assert write_sample(str(plain), 400, seed=5) == 400
    assert write_sample(str(packed), 400, seed=5) == 400
    expected = b"".join(line + b"\n" for line in generate_lines(400, seed=5))
    assert plain.read_bytes() == expected
    assert gzip.decompress(packed.read_bytes()) == expected
    first = packed.read_bytes()
    write_sample(str(packed), 400, seed=5)
    assert packed.read_bytes() == first, "gzip output is not byte-for-byte reproducible"


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli.ndjson"
    assert main(["--records", "250", "--output", str(out), "--seed", "3", "--clean"]) == 0
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 251
    assert all(isinstance(orjson.loads(line), dict) for line in lines[:-1])
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "250" in printed[0]


def test_bundled_samples_match_the_generator():
    first = ROOT / "sample" / "telemetry-sample.ndjson"
    second = ROOT / "sample" / "telemetry-sample-2.ndjson.gz"
    assert first.stat().st_size + second.stat().st_size < 6_000_000
    assert first.read_bytes() == b"".join(line + b"\n" for line in generate_lines(5000, seed=7))
    expected = b"".join(line + b"\n" for line in generate_lines(1500, seed=8, start="2026-11-21T00:00:00Z"))
    assert gzip.decompress(second.read_bytes()) == expected


def test_start_days_and_uniform_mode():
    lines = list(generate_lines(2000, seed=4, dirty=False, start="2027-03-01T00:00:00Z", days=1, skew=False))
    recs = [parse(line) for line in lines]
    assert all(recs)
    start = datetime.fromisoformat("2027-03-01T00:00:00+00:00").timestamp()
    when = [datetime.fromisoformat(r["ts"]).timestamp() for r in recs]
    assert sum(start - 3600 <= w <= start + 86400 + 3600 for w in when) / len(when) > 0.95
    devices = collections.Counter(r["device_id"] for r in recs)
    assert devices.most_common(1)[0][1] < 15, "uniform mode still skewed"


def test_sample_command_creates_missing_directories(tmp_path):
    from pipeline.sample import main

    target = tmp_path / "new" / "dir" / "t.ndjson.gz"
    assert main(["--records", "50", "--output", str(target)]) == 0
    assert target.exists()
