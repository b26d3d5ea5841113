"""The whole policy on a batch of lines, without Beam: gates, reasons, columns, accounting."""

from __future__ import annotations

import copy

import orjson
import pytest

from transforms.records import sanitize_lines

BASE = {
    "schema_version": 1, "type": "url_visit", "event_id": "e-1", "device_id": "D-zqdevice01",
    "user_id": "U-zquser01", "ts": "2026-11-20T10:04:05Z", "country": "NL", "product": "KIS 21.3",
    "consent": {"eula": True, "ksn": True},
    "data": {"url": "https://alice:zqS3cret@bank.example.co.uk:8443/login?token=zqTok1#top", "browser": "firefox",
             "verdict": "clean"},
}


def rec(**changes) -> dict:
    r = copy.deepcopy(BASE)
    for k, v in changes.items():
        if k.startswith("data_"):
            r["data"][k[5:]] = v
        elif v is ...:
            r.pop(k, None)
        else:
            r[k] = v
    return r


def run(ctx, *records, raw: list[bytes] | None = None):
    lines = [orjson.dumps(r) for r in records] + (raw or [])
    return sanitize_lines(ctx, "test.ndjson", 0, list(enumerate(lines, 1)))


def rows(result, rtype="url_visit"):
    out = []
    for key, table in result.outputs.items():
        if key.record_type == rtype and key.area == "data":
            out.extend(table.to_pylist())
    return out


def accounted(stats) -> int:
    return sum(v for k, v in stats.items() if k.split("/")[0] in ("output", "dropped", "quarantined"))


def test_url_visit_keeps_host_and_domain_and_nothing_secret(ctx):
    result = run(ctx, rec())
    [row] = rows(result)
    assert row["url_host"] == "bank.example.co.uk"
    assert row["url_registered_domain"] == "example.co.uk"
    assert row["url_suffix"] == "co.uk"
    assert row["url_port"] == 8443 and row["url_scheme"] == "https"
    assert row["browser"] == "firefox" and row["country"] == "NL"
    assert row["processing_locations"] == ["DE", "NL", "FR", "GB", "RU"]
    text = repr(row)
    for secret in ("zqS3cret", "alice", "zqTok1", "login", "D-zqdevice01", "U-zquser01"):
        assert secret not in text
    assert row["device_id_pseudonym"] == ctx.pseudonym("device", "D-zqdevice01")
    [key] = result.outputs
    assert (key.user_region, key.event_date) == ("EEA", "2026-11-20")
    assert result.stats["output/url_visit"] == 1 == accounted(result.stats) == result.stats["input_records"]


@pytest.mark.parametrize("line, reason", [
    (b"not json at all", "invalid_json"),
    (b'{"schema_version":1,"type":"url_visit","data":{"url":"https://a:zqpw@x.com', "truncated_json"),
    (b"[1,2,3]", "not_an_object"),
    (b'"just a string"', "not_an_object"),
    (b'{"schema_version":1,"type":"url_\xff\xfe"}', "invalid_utf8"),
])
def test_unparseable_lines_are_quarantined_with_reason(ctx, line, reason):
    result = run(ctx, raw=[line])
    assert result.stats[f"quarantined/{reason}"] == 1
    q = result.quarantine.to_pylist()[0]
    assert q["reason"] == reason and q["line_number"] == 1 and q["source_file"] == "test.ndjson"
    assert "zqpw" not in repr(q)


@pytest.mark.parametrize("record, reason, detail", [
    (rec(type="telepathy"), "unknown_type", "type"),
    (rec(schema_version=2), "unknown_schema_version", ""),
    (rec(schema_version="1"), "unknown_schema_version", ""),
    (rec(schema_version=...), "missing_field", "schema_version"),
    (rec(device_id=...), "missing_field", "device_id"),
    (rec(device_id=12345), "wrong_type", "device_id"),
    (rec(event_id=""), "missing_field", "event_id"),
    (rec(ts="yesterday"), "invalid_timestamp", "ts"),
    (rec(ts="2026-13-45T99:00:00Z"), "invalid_timestamp", "ts"),
    (rec(ts="2026-11-20T10:04:05"), "invalid_timestamp", "time zone"),
    (rec(ts=12345), "invalid_timestamp", "ts"),
    (rec(ts="2027-01-01T00:00:00Z"), "future_timestamp", "ts"),
    (rec(consent="yes"), "wrong_type", "consent"),
    (rec(consent={"eula": True, "ksn": "true"}), "wrong_type", "consent.ksn"),
    (rec(is_child="no"), "wrong_type", "is_child"),
    (rec(data=[1]), "wrong_type", "data"),
    (rec(data=...), "missing_field", "data"),
    (rec(data_url=["https://x"]), "wrong_type", "data.url"),
    (rec(type="product_usage", data={"duration_ms": "abc"}), "wrong_type", "data.duration_ms"),
    (rec(type="wifi", data={"signal_dbm": "strong"}), "wrong_type", "data.signal_dbm"),
    (rec(type="license", data={"expires": "soon"}), "invalid_timestamp", "data.expires"),
    (rec(type="license", data={"expires": "2027-02-30"}), "invalid_timestamp", "data.expires"),
    (rec(type="license", data={"expires": "20270101"}), "invalid_timestamp", "data.expires"),
    (rec(type="license", data={"expires": "2027-W01-1"}), "invalid_timestamp", "data.expires"),
    (rec(type="url_visit", ts="2026-11-20"), "invalid_timestamp", "ts"),  # the event time needs a time
])
def test_invalid_records_are_quarantined_with_reason(ctx, record, reason, detail):
    result = run(ctx, record)
    assert result.stats[f"quarantined/{reason}"] == 1, dict(result.stats)
    q = result.quarantine.to_pylist()[0]
    assert q["reason"] == reason and detail in q["detail"]
    for secret in ("zqS3cret", "zqTok1", "zqdevice01", "zquser01"):
        assert secret not in repr(q)
    assert accounted(result.stats) == 1


_LINE = orjson.dumps(BASE)
_DUPLICATES = {
    "consent flag false then true": _LINE.replace(b'"eula":true', b'"eula":false,"ksn":true,"eula":true'),
    "is_child true then false": _LINE.replace(b'"ts":', b'"is_child":true,"is_child":false,"ts":'),
    "consent object twice": _LINE.replace(b'"data":', b'"consent":{"eula":false},"consent":{"eula":true,"ksn":true},'
                                          b'"data":'),
    "ksn null then true": _LINE.replace(b'"ksn":true', b'"ksn":null,"ksn":true'),
    "escaped repeat": _LINE.replace(b'"ksn":true', b'"ksn":false,"k\\u0073n":true'),
    "spaced repeat": _LINE.replace(b'"ksn":true', b'"ksn":false, "ksn" : true'),
    "deep repeat": _LINE.replace(b'"verdict":', b'"x":[{"a":{"b":1,"b":2}}],"verdict":'),
    "unknown key repeated": _LINE.replace(b'"verdict":', b'"zz":1,"zz":1,"verdict":'),
}


@pytest.mark.parametrize("name", sorted(_DUPLICATES))
def test_a_repeated_key_at_any_depth_is_quarantined(ctx, name):
    """INPUT.md: a repeated key makes the line malformed; neither copy may open a gate."""
    line = _DUPLICATES[name]
    assert orjson.loads(line)  # valid JSON for a last-wins parser
    result = run(ctx, raw=[line])
    assert result.stats["quarantined/duplicate_key"] == 1 == accounted(result.stats), dict(result.stats)
    assert not result.outputs


@pytest.mark.parametrize("value", ['say "x": y', '{"a":1,"b":{"a":2}}', '"k" : v'])
def test_key_like_text_inside_values_is_not_a_repeat(ctx, value):
    result = run(ctx, rec(data_browser=value))
    assert result.stats["output/url_visit"] == 1, dict(result.stats)


def test_oversized_line_is_quarantined(ctx):
    big = orjson.dumps(rec(data_browser="x" * (ctx.policy.max_line_bytes + 10)))
    result = run(ctx, raw=[big])
    assert result.stats["quarantined/line_too_long"] == 1


def test_blank_lines_bom_and_crlf_are_not_records(ctx):
    good = orjson.dumps(rec())
    result = sanitize_lines(ctx, "f", 0, [(1, b"\xef\xbb\xbf" + good), (2, b""), (3, b"   "), (4, good)])
    assert result.stats["input_records"] == 2 and result.stats["blank_lines"] == 2
    assert result.stats["output/url_visit"] == 2


def test_children_are_dropped_except_child_protection(ctx):
    child_cp = rec(type="child_protection", is_child=True,
                   consent={"eula": True, "child_protection": True},
                   data={"lat": 52.370216, "lon": 4.895168, "blocked_url": "https://bad.example.com/x?u=zqkid"})
    result = run(ctx, rec(is_child=True), child_cp)
    assert result.stats["dropped/child_data"] == 1
    [row] = rows(result, "child_protection")
    assert (row["lat"], row["lon"]) == (52.37, 4.9)
    assert row["blocked_url_host"] == "bad.example.com"


@pytest.mark.parametrize("consent, reason", [
    ({"ksn": True}, "consent_missing:eula"),
    ({"eula": True}, "consent_missing:ksn"),
    ({"eula": True, "ksn": False}, "consent_missing:ksn"),
    ({"eula": True, "ksn": None}, "consent_missing:ksn"),
    (..., "consent_missing:eula"),
])
def test_missing_or_withdrawn_consent_drops(ctx, consent, reason):
    result = run(ctx, rec(consent=consent))
    assert result.stats[f"dropped/{reason}"] == 1 and not result.outputs


def test_each_type_needs_its_own_basis(ctx):
    result = run(ctx,
                 rec(type="dump", consent={"eula": True, "ksn": True}, data={"module": "a.dll"}),
                 rec(type="spam_email", consent={"eula": True, "ksn": True}, data={"verdict": "spam"}),
                 rec(type="product_usage", consent={"eula": True, "ksn": True}, data={"feature": "scan"}))
    assert result.stats["dropped/consent_missing:dumps"] == 1
    assert result.stats["dropped/consent_missing:antispam"] == 1
    assert result.stats["dropped/consent_missing:marketing"] == 1


def test_retention_deletes_or_locks(ctx):
    old = "2025-01-01T00:00:00Z"
    lic = rec(type="license", ts="2022-01-01T00:00:00Z", data={"license_key": "ZQKEY-11111-22222"})
    result = run(ctx, rec(ts=old), lic)
    assert result.stats["dropped/expired"] == 1
    assert result.stats["dropped/expired_locked"] == 1 and result.stats["locked/license"] == 1
    [key] = result.outputs
    assert key.area == "locked"
    assert "ZQKEY" not in repr(result.outputs[key].to_pylist())


def test_special_categories_and_unknown_fields_never_reach_output(ctx):
    r = rec(religion="zqFaith1", data_healthStatus="zqDiabetes", data_extra_debug={"santé": "zqX", "k": 1},
            os_build="19045")
    result = run(ctx, r)
    [row] = rows(result)
    assert not {"religion", "healthStatus", "extra_debug", "os_build"} & set(row)
    assert "zq" not in repr({k: v for k, v in row.items() if k != "event_id"})
    s = result.stats
    assert s["special_category/religion/religion"] == 1
    assert s["special_category/health/healthStatus"] == 1
    assert s["special_category/health/santé"] == 1
    assert s[f"removed_field/url_visit/{ctx.reportable_name('os_build')}"] == 1
    assert s[f"removed_field/url_visit/data.{ctx.reportable_name('extra_debug')}"] == 1


def test_field_names_that_carry_data_are_not_reported_verbatim(ctx):
    r = rec(data_url="https://example.com/", consent={"eula": True, "ksn": True})
    r["data"]["health of zqalice@example.com pw=zqHunter2"] = 1
    r["data"]["sk_live_zqLEAK2abcdef1234567890"] = 1
    r["AKIAZQLEAK3EXAMPLE7777"] = 1
    result = run(ctx, r, rec(consent={"eula": True, "ksn": True, "sk_live_zqLEAKQ5": "yes"}))
    text = repr(dict(result.stats)) + repr(result.quarantine.to_pylist())
    assert "zq" not in text.lower()
    assert result.stats["fields_removed/not_allowed"] == 2
    assert result.stats["fields_removed/special_category"] == 1
    assert ctx.reportable_name("healthStatus", special=True) == "healthStatus"
    assert ctx.reportable_name("url") == "url"
    assert ctx.reportable_name("x") == ctx.reportable_name("x") != ctx.reportable_name("y")


def test_region_tags(ctx):
    result = run(ctx, rec(country="gb"), rec(country="US", event_id="2"), rec(country=..., event_id="3"),
                 rec(country="XX", event_id="4"))
    regions = sorted(k.user_region for k in result.outputs)
    assert regions == ["ROW", "UK", "UNKNOWN"]
    unknown = [r for k, t in result.outputs.items() if k.user_region == "UNKNOWN" for r in t.to_pylist()]
    assert [r["country"] for r in unknown] == [None, None]


def test_every_type_produces_its_schema(ctx):
    samples = {
        "license": {"license_key": "AAAAA-zqlic", "product": "KIS", "product_version": "21",
                    "expires": "2027-01-01T00:00:00Z"},
        "product_usage": {"feature": "scan", "duration_ms": 1200, "scan_type": "quick", "result": "ok"},
        "device": {"device_type": "laptop", "os_name": "Windows", "os_version": "11", "hostname": "DESKTOP-ZQALICE",
                   "mac_address": "AA-BB-CC-DD-EE-FF"},
        "detection": {"threat_name": "HEUR:Trojan.Win32.Generic", "file_path": "C:\\Users\\zqalice\\evil.exe",
                      "sha256": "A" * 64, "action": "deleted", "source_url": "http://u:zqpw@evil.example.com/x"},
        "installed_app": {"name": "7-Zip", "version": "23", "publisher": "Igor", "install_path": "/home/zqalice/7z"},
        "os_event": {"event_kind": "process_start", "image": "C:\\Windows\\System32\\net.exe",
                     "command_line": "net use \\\\srv\\share zqPass1 /user:CORP\\zqbob", "user": "CORP\\zqbob",
                     "pid": 4, "parent_pid": 1, "remote_ip": "8.8.8.8", "remote_port": 443},
        "suspicious_file": {"file_name": "a.exe", "file_path": "/Users/zqcarol/a.exe", "sha256": "b" * 64,
                            "size": 10, "is_executable": True},
        "wifi": {"ssid": "zqAlice's iPhone", "bssid": "aa:bb:cc:dd:ee:ff", "security": "WPA2", "signal_dbm": -40,
                 "captive_portal": False},
        "contact": {"email": "zqalice@mail.example", "nickname": "zqally"},
        "dump": {"module": "a.dll", "exception_code": "0xC0000005", "stack_hash": "abc",
                 "dump_path": "C:\\Users\\zqalice\\x.dmp"},
        "spam_email": {"sender": "Spammer <zqspam@spam.example.com>", "subject": "zqSubject", "body": "zqBody text",
                       "verdict": "spam"},
        "antitheft": {"lat": 52.370216, "lon": 4.895168, "accuracy_m": 5, "command": "locate"},
        "child_protection": {"lat": 52.370216, "lon": 4.895168, "blocked_url": "https://x.example.org/",
                             "app_name": "TikTok"},
    }
    consent = {k: True for k in ("eula", "ksn", "marketing", "dumps", "antispam", "antitheft", "child_protection")}
    records = [rec(type=t, data=d, consent=consent, event_id=t) for t, d in samples.items()]
    result = run(ctx, *records)
    assert sum(v for k, v in result.stats.items() if k.startswith("output/")) == len(samples)
    for key, table in result.outputs.items():
        expected = ctx.policy.file_schema(key.record_type)
        assert table.schema.remove_metadata().names[: len(expected)] == expected.names
        for name in expected.names:
            assert table.schema.field(name).type == expected.field(name).type
        text = repr(table.drop_columns(["event_id"]).to_pylist())
        assert "zq" not in text.lower(), (key.record_type, text)
    wifi = rows(result, "wifi")[0]
    assert wifi["security"] == "WPA2" and wifi["signal_dbm"] == -40
    assert wifi["bssid_pseudonym"] == ctx.pseudonym("mac", "AA-BB-CC-DD-EE-FF")  # same MAC, any spelling
    spam = rows(result, "spam_email")[0]
    assert spam["sender_domain"] == "spam.example.com" and spam["subject_length"] == 9
    assert rows(result, "detection")[0]["sha256"] == "a" * 64
    assert rows(result, "os_event")[0]["remote_ip"] == "8.8.8.8"


def test_quarantine_excerpt_keeps_shape_not_values(ctx):
    bad = rec(ts="nope", data_url="https://alice:zqS3cret@bank.example.co.uk/")
    bad["data"]["zqweird@key"] = "x"
    result = run(ctx, bad)
    q = result.quarantine.to_pylist()[0]
    assert '"type":"url_visit"' in q["line_excerpt"]
    assert '"url":"<str:' in q["line_excerpt"]
    assert "zq" not in q["line_excerpt"].lower() and "alice" not in q["line_excerpt"]
    assert len(q["line_digest"]) == 32


def test_counts_reconcile_on_a_mixed_batch(ctx):
    records = [rec(event_id=str(i)) for i in range(20)] + [rec(is_child=True), rec(consent={})]
    result = run(ctx, *records, raw=[b"{", b"", b"[]"])
    s = result.stats
    assert s["input_records"] == 24 and s["blank_lines"] == 1
    assert accounted(s) == 24


def test_a_failing_transform_quarantines_the_record_not_the_run(ctx, monkeypatch):
    class Boom:
        def __call__(self, text):
            if "zqBOOM" in text:
                raise ValueError(f"cannot handle {text}")  # the message holds the value: it must not travel
            return text, 0

    monkeypatch.setattr(ctx.engine, "scrubber", Boom())
    ok = rec(type="installed_app", data={"name": "a", "install_path": "C:\\ok"}, consent={"eula": True, "ksn": True})
    bad = rec(type="installed_app", event_id="2", data={"name": "b", "install_path": "C:\\zqBOOM"},
              consent={"eula": True, "ksn": True})
    result = run(ctx, ok, bad)
    assert result.stats["output/installed_app"] == 1
    assert result.stats["quarantined/transform_error"] == 1
    assert [r["name"] for r in rows(result, "installed_app")] == ["a"]
    q = result.quarantine.to_pylist()[0]
    assert q["line_number"] == 2 and q["detail"] == "installed_app.install_path: ValueError"
    assert accounted(result.stats) == 2


def test_kept_text_fields_still_lose_credentials(ctx):
    r = rec(type="detection", consent={"eula": True, "ksn": True}, product="KIS token=zqTok7b",
            data={"threat_name": "http://bob:zqLEAK9pw@evil.com/x", "action": "password=zqLEAK8b"})
    [row] = rows(run(ctx, r), "detection")
    assert "zq" not in repr(row).lower()
    assert row["threat_name"] == "http://evil.com"
    plain = rows(run(ctx, rec(data_browser="firefox", event_id="e-81f2")))[0]
    assert plain["browser"] == "firefox" and plain["event_id"] == "e-81f2"


def test_reportable_names_are_memoised_within_a_bound(ctx, monkeypatch):
    """Names repeat on every record, so the digest is computed once per name; producers
    choose names freely, so the memo is cleared when full rather than growing."""
    from transforms import records

    fresh = records.SanitizeContext(policy=ctx.policy, key=ctx.key, as_of=ctx.as_of)
    first = fresh.reportable_name("customer_email_address")
    assert first.startswith("<name #") and fresh.reportable_name("customer_email_address") == first
    assert fresh.reportable_name("religion_status", special=True) == "religion_status"
    assert fresh.reportable_name("alice@example.com", special=True).startswith("<name #")
    monkeypatch.setattr(records, "NAME_MEMO_ENTRIES", 5)
    for i in range(12):
        fresh.reportable_name(f"field_{i}")
        assert len(fresh._reportable) <= 5
    assert fresh.reportable_name("customer_email_address") == first  # same answer after a clear


def test_first_copies_keeps_the_earliest_of_each_key_and_all_rows_without_retries():
    import pyarrow as pa

    from transforms.records import first_copies, keep_copies

    retried = pa.table({"_key": [7, 3, 7, 9, 3], "_origin": [50, 10, 20, 40, 30], "v": list("abcde")})
    kept = keep_copies(retried, first_copies(retried))
    assert sorted(kept.column("v").to_pylist()) == ["b", "c", "d"]  # 7 -> origin 20, 3 -> 10, 9 -> 40
    unique = pa.table({"_key": [1, 2, 3], "_origin": [30, 10, 20]})
    assert sorted(first_copies(unique).to_pylist()) == [10, 20, 30]


def test_as_written_puts_rows_in_input_order_and_drops_hidden_columns():
    import pyarrow as pa

    from transforms.records import as_written

    shuffled = pa.table({"v": list("cab"), "_key": [1, 2, 3], "_origin": [30, 10, 20]})
    assert as_written(shuffled).to_pydict() == {"v": ["a", "b", "c"]}
    in_order = pa.concat_tables([pa.table({"v": ["a"], "_key": [1], "_origin": [10]}),
                                 pa.table({"v": ["b", "c"], "_key": [2, 3], "_origin": [10, 40]})])
    assert as_written(in_order).to_pydict() == {"v": ["a", "b", "c"]}
    assert as_written(in_order.slice(0, 0)).num_rows == 0


def test_licence_expiry_as_a_plain_date_is_written_on_every_path(ctx):
    """INPUT.md: `license.expires` is a date YYYY-MM-DD or an RFC 3339 timestamp. A date is
    00:00 UTC of that day, the same value as the timestamp spelling, on the per-record,
    columnar and reference paths (on main the record was quarantined as invalid_timestamp)."""
    from datetime import UTC, datetime

    from transforms.columnar import sanitize_columnar
    from transforms.records import SanitizeContext
    from transforms.reference import sanitize_lines_reference

    def licence(i: int, expires: str) -> bytes:
        return orjson.dumps({"schema_version": 1, "type": "license", "event_id": f"l-{i}", "device_id": f"D-{i}",
                             "ts": "2026-11-20T10:04:05Z", "country": "NL", "consent": {"eula": True},
                             "data": {"license_key": "AAAA", "product": "KIS", "expires": expires}})

    lines = [licence(i, "2027-01-31" if i % 2 else "2027-01-31T00:00:00Z") for i in range(100)]
    numbered = list(enumerate(lines, 1))
    for sanitize in (sanitize_lines, sanitize_columnar, sanitize_lines_reference):
        fresh = SanitizeContext(policy=ctx.policy, key=ctx.key, as_of=ctx.as_of)
        result = sanitize(fresh, "t.ndjson", 0, numbered)
        assert not result.stats.get("quarantined/invalid_timestamp"), (sanitize.__name__, dict(result.stats))
        assert result.stats["output/license"] == 100, sanitize.__name__
        written = [r["expires"] for t in result.outputs.values() for r in t.to_pylist()]
        assert written == [datetime(2027, 1, 31, tzinfo=UTC)] * 100, sanitize.__name__
