"""The columnar path (`sanitize_columnar`) gives exactly what `sanitize_lines` gives.

It reads plainly well-formed lines with Arrow and hands everything else to
`sanitize_lines`, so every test here compares the two on the same batch: tables
(schema and metadata included), quarantine rows and every count. The crafted
lines below are the places where Arrow's JSON reader and orjson, or Arrow's
kernels and Python, could disagree.
"""

from __future__ import annotations

import copy
import gzip

import orjson
import pyarrow as pa
import pytest
from test_fast_path import SAMPLE, SAMPLE_GZ, assert_same, make_fragile

import transforms.columnar as columnar
from pipeline.sample import generate_lines
from transforms.columnar import sanitize_columnar
from transforms.fields import parse_rfc3339
from transforms.records import SanitizeContext, sanitize_lines
from transforms.reference import sanitize_lines_reference
from transforms.withdrawals import micros

URL_VISIT = {
    "schema_version": 1, "type": "url_visit", "event_id": "e-0", "device_id": "D-1", "user_id": "U-1",
    "ts": "2026-11-20T10:04:05Z", "country": "NL", "product": "KIS 21.3",
    "consent": {"eula": True, "ksn": True},
    "data": {"url": "https://alice:s3cret@bank.example.co.uk:8443/login?token=abc", "browser": "firefox",
             "verdict": "clean", "category": "news"},
}
ANTITHEFT = {
    "schema_version": 1, "type": "antitheft", "event_id": "a-0", "device_id": "D-2", "ts": "2026-11-20T10:04:05Z",
    "country": "DE", "consent": {"eula": True, "antitheft": True},
    "data": {"lat": 52.37, "lon": 4.89, "accuracy_m": 20, "command": "locate"},
}


def good_lines(n: int, start: int = 0) -> list[bytes]:
    """Valid lines of two types, so a batch is big enough for the columnar path."""
    out = []
    for i in range(start, start + n):
        rec = copy.deepcopy(URL_VISIT if i % 2 else ANTITHEFT)
        rec["event_id"] = f"e-{i}"
        out.append(orjson.dumps(rec))
    return out


def fresh(ctx) -> SanitizeContext:
    return SanitizeContext(policy=ctx.policy, key=ctx.key, as_of=ctx.as_of)


def same_as_plain_path(ctx, lines: list[bytes], batch: int, **kw) -> list:
    """Run both paths over the same batches (separate contexts, as separate workers would be)."""
    col_ctx, plain_ctx = fresh(ctx), fresh(ctx)
    results = []
    for start in range(0, len(lines), batch):
        numbered = list(enumerate(lines[start:start + batch], start + 1))
        got = sanitize_columnar(col_ctx, "in.ndjson", 2, numbered, **kw)
        assert_same(got, sanitize_lines(plain_ctx, "in.ndjson", 2, numbered, **kw))
        results.append(got)
    return results


def test_bundled_dirty_samples_are_identical(ctx):
    lines = SAMPLE.read_bytes().split(b"\n") + gzip.decompress(SAMPLE_GZ.read_bytes()).split(b"\n")
    results = same_as_plain_path(ctx, lines, batch=1000)
    assert sum(t.num_rows for r in results for t in r.outputs.values()) > 5000


@pytest.mark.parametrize("seed", [21, 22])
def test_generated_dirty_data_is_identical_to_plain_and_reference(ctx, seed):
    lines = list(generate_lines(6000, seed=seed, dirty=True, days=400))
    same_as_plain_path(ctx, lines, batch=3000)
    col_ctx, ref_ctx = fresh(ctx), fresh(ctx)
    numbered = list(enumerate(lines, 1))
    assert_same(sanitize_columnar(col_ctx, "in.ndjson", 2, numbered),
                sanitize_lines_reference(ref_ctx, "in.ndjson", 2, numbered))


def test_clean_lines_never_reach_the_per_record_path(ctx, monkeypatch):
    """Otherwise the equality tests above would pass with a path that does nothing."""
    seen = spy_on_plain_path(monkeypatch)
    result = sanitize_columnar(fresh(ctx), "in.ndjson", 0, list(enumerate(good_lines(300), 1)))
    assert seen == []
    assert sum(t.num_rows for t in result.outputs.values()) == 300


def test_licence_expiry_dates_stay_on_the_columnar_path(ctx, monkeypatch):
    seen = spy_on_plain_path(monkeypatch)
    lines = [variant(LICENSE, event_id=f"l-{i}", data__expires="2027-01-31" if i % 2 else "2027-01-31T00:00:00Z")
             for i in range(100)]
    result = sanitize_columnar(fresh(ctx), "in.ndjson", 0, list(enumerate(lines, 1)))
    assert seen == []
    assert {r["expires"] for t in result.outputs.values() for r in t.to_pylist()} == {parse_rfc3339(
        "2027-01-31T00:00:00Z")}


def spy_on_plain_path(monkeypatch) -> list:
    """The lines the columnar path hands to sanitize_lines, collected as it runs."""
    seen: list = []
    real = columnar.sanitize_lines

    def spy(ctx, source, index, lines, *args):
        seen.extend(lines)
        return real(ctx, source, index, lines, *args)

    monkeypatch.setattr(columnar, "sanitize_lines", spy)
    return seen


def test_lines_with_removed_or_special_keys_stay_on_the_columnar_path(ctx, monkeypatch):
    """Their allowed fields are read by Arrow; only the counts come from their JSON."""
    seen = spy_on_plain_path(monkeypatch)
    lines = [variant(URL_VISIT, event_id=f"k-{i}", data__local_ip="10.0.0.1", data__religion="x")
             for i in range(100)]
    result = sanitize_columnar(fresh(ctx), "in.ndjson", 0, list(enumerate(lines, 1)))
    assert seen == []
    assert result.stats["fields_removed/special_category"] == 100
    assert result.stats["fields_removed/not_allowed"] == 100


def variant(base: dict, **changes) -> bytes:
    rec = copy.deepcopy(base)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = rec
        for p in parents:
            node = node[p]
        if value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return orjson.dumps(rec)


DELETE = object()
TS = URL_VISIT["ts"]
URL_LINE = orjson.dumps(URL_VISIT)
LICENSE = {
    "schema_version": 1, "type": "license", "event_id": "l-0", "device_id": "D-3", "ts": "2020-01-01T00:00:00Z",
    "consent": {"eula": True},
    "data": {"license_key": "AAAA-BBBB", "product": "KIS", "expires": "2027-01-31T00:00:00Z"},
}
GEO_LINE = orjson.dumps(ANTITHEFT)

CRAFTED = {
    # numbers Arrow reads and orjson does not, or reads differently
    "nan": GEO_LINE.replace(b'"lat":52.37', b'"lat":NaN'),
    "infinity": GEO_LINE.replace(b'"lat":52.37', b'"lat":Infinity'),
    "overflow": GEO_LINE.replace(b'"lat":52.37', b'"lat":1.8e308'),
    "minus zero int": GEO_LINE.replace(b'"lat":52.37', b'"lat":-0'),
    "minus zero float": GEO_LINE.replace(b'"lat":52.37', b'"lat":-0.0'),
    "zero": GEO_LINE.replace(b'"lat":52.37', b'"lat":0'),
    "lat out of range": variant(ANTITHEFT, data__lat=180.5),
    "int as float": variant(ANTITHEFT, data__accuracy_m=20.0),
    "int with fraction": variant(ANTITHEFT, data__accuracy_m=20.5),
    "int exponent": GEO_LINE.replace(b'"accuracy_m":20', b'"accuracy_m":2e1'),
    "int beyond 2**53": variant(ANTITHEFT, data__accuracy_m=2**53 + 1),
    "int beyond int64": GEO_LINE.replace(b'"accuracy_m":20', b'"accuracy_m":9223372036854775808'),
    "int as string": variant(ANTITHEFT, data__accuracy_m="20"),
    "bool as int": variant(URL_VISIT, is_child=1),
    "version 1.0": URL_LINE.replace(b'"schema_version":1', b'"schema_version":1.0'),
    "version string": variant(URL_VISIT, schema_version="1"),
    "version 2": variant(URL_VISIT, schema_version=2),
    "version missing": variant(URL_VISIT, schema_version=DELETE),
    "text as number": variant(URL_VISIT, data__browser=7),
    "text as float": variant(URL_VISIT, product=1.5),
    # keys Arrow could skip or read twice
    "duplicate known key": URL_LINE.replace(b'"browser":"firefox"', b'"browser":"firefox","browser":"edge"'),
    "duplicate consent flag": URL_LINE.replace(b'"ksn":true', b'"ksn":false,"ksn":true'),
    "duplicate consent flag to false": URL_LINE.replace(b'"ksn":true', b'"ksn":true,"ksn":false'),
    "duplicate escaped flag": URL_LINE.replace(b'"ksn":true', b'"ksn":false,"k\\u0073n":true'),
    "duplicate is_child": URL_LINE.replace(b'"ts":', b'"is_child":true,"is_child":false,"ts":'),
    "duplicate consent object": URL_LINE.replace(b'"data":', b'"consent":{"eula":false},"consent":{"eula":true,'
                                                 b'"ksn":true},"data":'),
    "duplicate unknown key": URL_LINE.replace(b'"browser":', b'"zz":1,"zz":2,"browser":'),
    "duplicate deep key": URL_LINE.replace(b'"browser":', b'"zz":[{"a":{"b":1,"b":2}}],"browser":'),
    "duplicate spaced key": URL_LINE.replace(b'"ksn":true', b'"ksn":false,"ksn" :true'),
    "unknown key": variant(URL_VISIT, data__local_ip="192.168.1.4"),
    "special key": variant(URL_VISIT, data__religion="x"),
    "special key after space": URL_LINE.replace(b'"browser":', b'"religion" :"x","browser":'),
    "special key after tab": URL_LINE.replace(b'"browser":', b'"religion"\t:"x","browser":'),
    "key of another type": variant(URL_VISIT, data__pid=5),
    "nested unknown object": variant(URL_VISIT, data__extra={"url": 5, "health": "y"}),
    "nested unknown same kind": variant(URL_VISIT, data__extra={"url": "https://a:b@c.example/", "religion": "z"}),
    "unknown key NaN": URL_LINE.replace(b'"browser":', b'"extra":NaN,"browser":'),
    "unknown key bad number": URL_LINE.replace(b'"browser":', b'"extra":01,"browser":'),
    "unknown top-level key": variant(URL_VISIT, religion="x", email="a@b.example"),
    "unknown key and child": variant(URL_VISIT, is_child=True, data__health="x"),
    "unknown key and no consent": variant(URL_VISIT, consent__ksn=False, data__health="x"),
    "unknown key and expired": variant(URL_VISIT, ts="2020-01-01T00:00:00Z", data__health="x"),
    "unknown key on locked licence": variant(LICENSE, data__religion="x", data__seats=5),
    "unknown consent flag": variant(URL_VISIT, consent__foo=True),
    "unknown consent flag non-bool": variant(URL_VISIT, consent__foo=1),
    "consent null flag": variant(URL_VISIT, consent__marketing=None),
    "null known": variant(URL_VISIT, data__referrer=None),
    "null consent": variant(URL_VISIT, consent=None),
    "null data": variant(URL_VISIT, data=None),
    "null is_child": variant(URL_VISIT, is_child=None),
    "null user id": variant(URL_VISIT, user_id=None),
    "null event id": variant(URL_VISIT, event_id=None),
    "null ts": variant(URL_VISIT, ts=None),
    "null type": variant(URL_VISIT, type=None),
    "null version": variant(URL_VISIT, schema_version=None),
    "null int": variant(ANTITHEFT, data__accuracy_m=None),
    "null and unknown": variant(URL_VISIT, data__referrer=None, data__health=None),
    "quoted path then space": variant(URL_VISIT, data__category='"C:\\Program Files\\x.exe" --flag'),
    "key then two spaces": URL_LINE.replace(b'"browser":', b'"religion"  :"x","browser":'),
    "consent key then space": URL_LINE.replace(b'"ksn":', b'"ksn" :'),
    "null unknown": variant(URL_VISIT, data__whatever=None),
    "escaped key": URL_LINE.replace(b'"browser":', b'"brows\\u0065r":'),
    "escaped special key": URL_LINE.replace(b'"browser":', b'"r\\u0065ligion":"x","browser":'),
    "quote in key": URL_LINE.replace(b'"browser":', b'"a\\"b":1,"browser":'),
    "colon after quote in value": variant(URL_VISIT, data__category='say "x": y'),
    "empty consent": variant(URL_VISIT, consent={}),
    "empty data": variant(URL_VISIT, data={}),
    "data array": variant(URL_VISIT, data=[1]),
    "consent array": variant(URL_VISIT, consent=["eula"]),
    "array value": variant(URL_VISIT, data__browser=["x"]),
    "two documents": URL_LINE + URL_LINE,
    "two documents spaced": URL_LINE + b" " + URL_LINE,
    "trailing garbage": URL_LINE + b"x",
    "truncated": URL_LINE[:-5],
    "cut off after an inner object": URL_LINE[:URL_LINE.index(b',"data"')],
    "crlf": URL_LINE + b"\r",
    "bom": b"\xef\xbb\xbf" + URL_LINE,
    "invalid utf-8": URL_LINE.replace(b"firefox", b"fire\xfffox"),
    "lone surrogate": URL_LINE.replace(b"firefox", b"fire\\ud800fox"),
    "escaped value": URL_LINE.replace(b"firefox", b"fire\\u00e9fox\\n"),
    "invalid escape": URL_LINE.replace(b"firefox", b"fire\\xfox"),
    "control character": URL_LINE.replace(b"firefox", b"fire\x01fox"),
    "not an object": b'"just a string"',
    "unknown type": variant(URL_VISIT, type="telepathy"),
    # envelope values
    "blank event id": variant(URL_VISIT, event_id="   "),
    "em-space event id": variant(URL_VISIT, event_id="\u2003"),
    "nbsp device id": variant(URL_VISIT, device_id="\u00a0"),
    "vertical tab device id": variant(URL_VISIT, device_id="\x0b"),
    "event id 256": variant(URL_VISIT, event_id="e" * 256),
    "event id 257": variant(URL_VISIT, event_id="e" * 257),
    "country lower": variant(URL_VISIT, country="gb"),
    "country unknown": variant(URL_VISIT, country="XX"),
    "child": variant(URL_VISIT, is_child=True),
    "no ksn": variant(URL_VISIT, consent__ksn=False),
    "no consent": variant(URL_VISIT, consent=DELETE),
    "kelvin sign": variant(URL_VISIT, data__category="\u212aey=1"),
    "non-ascii text": variant(URL_VISIT, data__category="Über"),
    "trigger text": variant(URL_VISIT, data__category="password=hunter2"),
    "sha256 upper": variant(URL_VISIT, type="detection", data={"sha256": "AB" * 32, "threat_name": "x"}),
    "sha256 short": variant(URL_VISIT, type="detection", data={"sha256": "ab" * 31, "threat_name": "x"}),
    "sha256 non-hex": variant(URL_VISIT, type="detection", data={"sha256": "zz" * 32, "threat_name": "x"}),
    "sha256 newline": variant(URL_VISIT, type="detection", data={"sha256": "ab" * 32 + "\n", "threat_name": "x"}),
    # timestamps (the 2020 licence is past retention: it is written to the locked area)
    "licence": variant(LICENSE),
    "licence expiry 31 June": variant(LICENSE, data__expires="2027-06-31T00:00:00Z"),
    "licence expiry without offset": variant(LICENSE, data__expires="2027-06-30T00:00:00"),
    "licence expiry number": variant(LICENSE, data__expires=1),
    # a plain date is allowed for the licence expiry (INPUT.md), in its extended form only
    "licence expiry date": variant(LICENSE, data__expires="2027-01-31"),
    "licence expiry date 29 February": variant(LICENSE, data__expires="2028-02-29"),
    "licence expiry date 29 February of a common year": variant(LICENSE, data__expires="2027-02-29"),
    "licence expiry date 31 June": variant(LICENSE, data__expires="2027-06-31"),
    "licence expiry date month 13": variant(LICENSE, data__expires="2027-13-01"),
    "licence expiry date far year": variant(LICENSE, data__expires="0999-01-01"),
    "licence expiry basic date": variant(LICENSE, data__expires="20270131"),
    "licence expiry week date": variant(LICENSE, data__expires="2027-W05-1"),
    "licence expiry date and space": variant(LICENSE, data__expires="2027-01-31 "),
    "licence expiry date with slashes": variant(LICENSE, data__expires="2027/01/31"),
    **{f"ts {ts}": variant(URL_VISIT, ts=ts) for ts in [
        "2026-02-30T00:00:00Z", "2026-04-31T00:00:00Z", "2024-02-29T00:00:00Z", "2026-02-29T00:00:00Z",
        "2000-02-29T12:00:00Z", "1900-02-29T12:00:00Z", "2026-11-20T24:00:00Z", "2026-11-20T23:59:60Z",
        "2026-11-20t10:04:05z", "2026-11-20 10:04:05Z", "2026-11-20T10:04:05.1234567Z", "2026-11-20T10:04:05.5Z",
        "2026-11-20T10:04:05.123456+05:30", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
        "2026-11-20T10:04:05+23:59", "2026-11-20T10:04:05-00:00", "2026-11-20T10:04:05+24:00",
        "2026-11-20T10:04:05", "2099-01-01T00:00:00Z", "2020-01-01T00:00:00Z", "2026-13-01T00:00:00Z",
    ]},
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_line_among_good_ones_is_identical(ctx, name):
    """The crafted line sits in the middle of a batch of good lines: the good ones must
    still be written, the crafted one treated exactly as sanitize_lines treats it."""
    lines = good_lines(100) + [CRAFTED[name]] + good_lines(100, start=100)
    [result] = same_as_plain_path(ctx, lines, batch=len(lines))
    assert sum(t.num_rows for t in result.outputs.values()) >= 200


def test_all_crafted_lines_in_one_batch(ctx):
    lines = [line for name in sorted(CRAFTED) for line in (CRAFTED[name], *good_lines(3))]
    [result] = same_as_plain_path(ctx, lines, batch=len(lines))
    numbered = list(enumerate(lines, 1))
    assert_same(result, sanitize_lines_reference(fresh(ctx), "in.ndjson", 2, numbered))
    duplicates = [name for name in CRAFTED if name.startswith("duplicate")]
    assert result.stats["quarantined/duplicate_key"] == len(duplicates) == 9


def test_lines_arrow_cannot_read_are_isolated_without_losing_good_ones(ctx, monkeypatch):
    """Lines that pass the screen but fail Arrow's reader split their block until isolated."""
    bad = [CRAFTED["invalid escape"], CRAFTED["invalid utf-8"], CRAFTED["control character"]]
    lines = good_lines(500)
    for i, line in zip((3, 250, 499), bad, strict=True):
        lines[i] = line
    seen = spy_on_plain_path(monkeypatch)
    [result] = same_as_plain_path(ctx, lines, batch=len(lines))
    assert sorted(raw for _, raw in seen) == sorted(bad)  # only the bad lines took the plain path
    assert result.stats["quarantined/invalid_json"] + result.stats["quarantined/invalid_utf8"] == 3


def test_a_failing_transform_is_quarantined_as_on_the_plain_path(ctx, monkeypatch):
    col_ctx, plain_ctx = fresh(ctx), fresh(ctx)
    make_fragile(monkeypatch, col_ctx.urls.__class__, "sanitize")
    lines = good_lines(150)
    # a space: not the common spelling `_url` reduces by authority, so the value goes to sanitize()
    lines[10] = variant(URL_VISIT, event_id="x-1", data__url="https://boom.example/a b")
    lines[90] = variant(URL_VISIT, event_id="x-2", data__url="https://boom.example/a b")
    for _ in range(2):  # the second batch meets the failure in the memo
        numbered = list(enumerate(lines, 1))
        got = sanitize_columnar(col_ctx, "in.ndjson", 0, numbered)
        assert_same(got, sanitize_lines(plain_ctx, "in.ndjson", 0, numbered))
        assert got.stats["quarantined/transform_error"] == 2


def test_small_batches_take_the_plain_path(ctx, monkeypatch):
    seen = spy_on_plain_path(monkeypatch)
    same_as_plain_path(ctx, good_lines(10), batch=10)
    assert len(seen) == 10


def test_withdrawals_are_applied_on_the_columnar_path_as_on_the_plain_path(ctx, monkeypatch):
    """Each of 40 devices withdraws one basis at the time of one of its own events (the
    instant itself counts as withdrawn), so drops fall on both sides of the boundary."""
    lines = list(generate_lines(4000, seed=23, dirty=True))
    first_seen: dict[str, str] = {}
    for line in lines:
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("device_id"), str) and isinstance(rec.get("ts"), str):
            first_seen.setdefault(rec["device_id"], rec["ts"])
    hashed = fresh(ctx)
    withdrawals: dict = {}
    for i, (device, ts) in enumerate(sorted(first_seen.items())[:40]):
        try:
            at = micros(parse_rfc3339(ts))
        except ValueError:
            continue
        withdrawals[hashed.device_hash(device)] = {("ksn", "eula", "marketing", "antitheft")[i % 4]: at}
    seen = spy_on_plain_path(monkeypatch)
    results = same_as_plain_path(ctx, lines, batch=2000, withdrawals=withdrawals)
    assert sum(r.stats["dropped/consent_withdrawn"] for r in results) > 50
    assert len(seen) < len(lines) / 5  # the columnar path did the work


def test_micros_is_exact_before_the_epoch_too():
    """Withdrawal times and event times are compared in microseconds; the columnar path takes
    them from Arrow's timestamp[us], so both must count the same on either side of 1970."""
    from datetime import UTC, datetime

    from schemas.policy import TIMESTAMP

    times = [datetime(1969, 12, 31, 23, 59, 58, 500000, tzinfo=UTC), datetime(1901, 2, 3, 4, 5, 6, 7, tzinfo=UTC),
             datetime(1970, 1, 1, tzinfo=UTC), datetime(2026, 11, 20, 10, 4, 5, 123456, tzinfo=UTC)]
    assert [micros(t) for t in times] == pa.array(times, TIMESTAMP).cast(pa.int64()).to_pylist()
    assert micros(times[0]) == -1_500_000


def test_lines_cut_off_after_an_inner_object_never_reach_arrow(ctx, monkeypatch):
    """They end in '}' like a whole line, and Arrow would fail the block they are read in
    (each such line cost about a dozen failed reads while its block was halved)."""
    failures = []
    real = columnar.pj.read_json

    def counting(*args, **kwargs):
        try:
            return real(*args, **kwargs)
        except Exception:
            failures.append(1)
            raise

    monkeypatch.setattr(columnar.pj, "read_json", counting)
    lines = good_lines(300)
    lines[7] = lines[200] = CRAFTED["cut off after an inner object"]
    [result] = same_as_plain_path(ctx, lines, batch=len(lines))
    assert failures == []
    assert result.quarantine.num_rows == 2, result.stats


TRICKY_URLS = [
    "https://alice:s3cret@bank.example.co.uk:8443/login?token=abc", "HTTP://Example.COM", "https://a@b@c.example/x",
    "https://h.example?x@y.example", "https://h.example#@evil.example", "https:\\\\host.example\\path",
    "http:/\\host.example/", "https:host.example/p", "https:", "https://", "https://:443/", "https://@/",
    "https://u:p@", "ftp://files.example:21/pub", "ftp://files.example:2121/", "wss://chat.example:443/s",
    "ws://chat.example:80", "https://[::1]:8443/", "https://[2001:db8::1]/", "https://[::1", "https://[zz]/",
    "https://host.example:99999/", "https://host.example:0x50/", "https://host.example:/", "https://0x7f.1/",
    "http://127.0.0.1:8080/admin", "http://3232235777/", "http://0300.0250.1.1/", "https://%65vil.example/",
    "https://ex%00ample.com/", "https://xn--bcher-kva.de/", "https://host.example./", "https://a..b/",
    "https://-.example/", "https://" + "a" * 70 + ".example/", "https://under_score.example/",
    "https+x://host.example/", "httpsx://host.example/", "htTpS://MiXeD.Example.ORG/Path", "https://host.example\\@evil.example/",
    "https://bücher.de/", "https://host.example/a b", " https://host.example/", "https://host.example/\t",
    "https://例え.jp/", "javascript://%0aalert(1)", "file:///C:/Users/x/a.html", "//cdn.example/x.js",
    "user:pw@host.example/x", "localhost:8080/x", "not a url", "", "mailto:a@b.example", "chrome://settings/",
    "C:\\Users\\x", "data:text/html,hi", "https://a.b.c.d.e.f.g.example.co.uk/", "https://localhost/",
    "https://x.example:0443/", "http://x.example:00080/", "https://x.example:443:1/", "https://x.example?",
    # what only the printable-ASCII test keeps from the per-authority way: text `_parse` trims or
    # deletes first, a letter RE2's case folding reads as another, a space (the key's separator)
    "httpſ://a.example/", "http://a.exa\tmple/", "http:\t//a.example/", "https://a.example/\n", "\x00https://a.example/",
    "https://a b.example/", "https://a.example/\x7f", "HTTPS://A.EXAMPLE/",
]


def url_values(ctx) -> list:
    """The tricky URLs plus every URL field of generated dirty telemetry."""
    values = list(TRICKY_URLS) + [None]
    names = {r.name for t in ctx.policy.types.values() for r in t.fields if r.transform == "url"}
    for line in generate_lines(3000, seed=5, dirty=True):
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        data = rec.get("data") if isinstance(rec, dict) else None
        if isinstance(data, dict):
            values += [v for k, v in data.items() if k in names and isinstance(v, str)]
    return values


def test_urls_reduced_by_authority_equal_value_by_value(ctx, monkeypatch):
    rule = next(r for r in ctx.policy.types["url_visit"].fields if r.name == "url")
    values = url_values(ctx)
    expected = fresh(ctx).engine.columns(rule, values, {})
    calls = []
    real = ctx.urls.__class__.sanitize
    monkeypatch.setattr(ctx.urls.__class__, "sanitize", lambda self, v: calls.append(v) or real(self, v))
    failed: list = []
    got = columnar._url(fresh(ctx), rule, pa.array(values, pa.string()), failed)
    assert [c.to_pylist() for c in got] == expected
    assert failed == []
    # most values took the per-authority way, or the comparison above says little
    assert len(values) > 1000 and len(calls) < len(values) / 5
    assert "https://alice:s3cret@bank.example.co.uk:8443/login?token=abc" not in calls
    assert "https://bücher.de/" in calls and "https://host.example/a b" in calls


def test_a_failing_host_lookup_gives_the_same_on_both_ways(ctx, monkeypatch):
    """`authority` and `sanitize` share the host code and both turn its failure into `invalid`."""
    real = ctx.urls.__class__._host_port

    def fragile(self, scheme, auth):
        if "boom" in auth:
            raise RuntimeError("rule bug")
        return real(self, scheme, auth)

    monkeypatch.setattr(ctx.urls.__class__, "_host_port", fragile)
    rule = next(r for r in ctx.policy.types["url_visit"].fields if r.name == "url")
    values = ["https://u:p@boom.example/x", "https://boom.example:8443/", "https://fine.example/"] * 3
    expected = fresh(ctx).engine.columns(rule, values, {})
    got = columnar._url(fresh(ctx), rule, pa.array(values, pa.string()), [])
    assert [c.to_pylist() for c in got] == expected
    assert expected[-1] == ["invalid", "invalid", "ok"] * 3  # the status column


def test_a_token_where_the_host_goes_is_emptied_and_counted_on_every_path(ctx):
    """A url whose "host" is a bare token (`https://AKIA.../`) is written with empty URL columns and
    status secret_like, and counted as a removed field, the same on all three paths."""
    tokens = ["AKIAZQ7D3F5H2J4K6L8M", "ghp_Zq01234567890abcdefABCDEFghijklmnopq",
              "xoxb-123456789012-1234567890123-ZqAbCdEfGhIjKlMnOpQrStUv", "S-1-5-21-1234567-2345678-3456789-1001"]
    lines = good_lines(200)
    for i, token in enumerate(tokens):
        lines[4 * i + 1] = variant(URL_VISIT, event_id=f"t-{i}", data__url=f"https://{token}/x")
        lines[4 * i + 3] = variant(URL_VISIT, event_id=f"r-{i}", data__url=token)
    numbered = list(enumerate(lines, 1))
    got = sanitize_columnar(fresh(ctx), "in.ndjson", 2, numbered)
    assert_same(got, sanitize_lines(fresh(ctx), "in.ndjson", 2, numbered))
    assert_same(got, sanitize_lines_reference(fresh(ctx), "in.ndjson", 2, numbered))
    assert got.stats["fields_removed/url_secret_like"] == 2 * len(tokens)
    rows = [r for t in got.outputs.values() for r in t.to_pylist() if r["event_id"][:2] in ("t-", "r-")]
    assert len(rows) == 2 * len(tokens)
    assert {(r["url_host"], r["url_registered_domain"], r["url_status"]) for r in rows} == {(None, None, "secret_like")}
    blob = str([t.to_pylist() for t in got.outputs.values()])
    assert not any(token[4:].lower() in blob.lower() for token in tokens)
