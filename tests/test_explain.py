"""`python -m pipeline explain`: per-record outcome and per-field explanations, agreeing with the pipeline."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from pipeline.explain import EXPLAIN_KEY, explain_line
from pipeline.explain import main as explain_main
from transforms.pseudonym import Pseudonymizer
from transforms.records import SanitizeContext, sanitize_lines

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_GZ = ROOT / "sample" / "telemetry-sample-2.ndjson.gz"
DEV_KEY = ROOT / "sample" / "dev-pseudonym.key"
AS_OF = "2026-11-25T00:00:00Z"
SECRETS = ("zqalice", "zqS3cretPw", "zqTok123")


def record(**over) -> dict:
    rec = {
        "schema_version": 1, "type": "url_visit", "event_id": "e-explain-1", "device_id": "D-zqdevice01",
        "user_id": "U-zquser01", "ts": "2026-11-20T10:00:00Z", "country": "NL", "product": "KIS 21.3",
        "is_child": False, "consent": {"eula": True, "ksn": True},
        "data": {"url": "https://zqalice:zqS3cretPw@shop.example.com/login?token=zqTok123#top",
                 "browser": "firefox", "verdict": "clean"},
    }
    for k, v in over.items():
        if k.startswith("data_"):
            rec["data"][k[5:]] = v
        else:
            rec[k] = v
    return rec


def explain(capsys, *records, args=()) -> str:
    argv = [r if isinstance(r, str) else json.dumps(r) for r in records]
    assert explain_main([*argv, "--as-of", AS_OF, *args]) == 0
    return capsys.readouterr().out


def explain_json(capsys, *records, args=()) -> dict:
    return json.loads(explain(capsys, *records, args=("--format", "json", *args)))


def field_lines(out: str) -> dict[str, str]:
    """`    path   text` lines of the text format's fields section, by path."""
    lines = out.split("  fields:", 1)[1].splitlines()[1:]
    return {ln.split()[0]: " ".join(ln.split()[1:]) for ln in lines if ln.startswith("    ")}


def test_credentials_in_url_are_shown_transformed_and_never_echoed(capsys):
    out = explain(capsys, record(), args=("--no-input",))
    assert "outcome:  written to url_visit/user_region=EEA/event_date=2026-11-20" in out
    fields = field_lines(out)
    assert fields["data.url"].startswith("transformed by url -> url_scheme, url_host, url_port")
    assert fields["device_id"] == "transformed by pseudonym (device) -> device_id_pseudonym"
    assert fields["data.browser"] == "kept"
    assert "url_host                    shop.example.com" in out
    for secret in SECRETS:
        assert secret not in out
    # With the input echoed (the default), the secrets are only in the echo.
    doc = explain_json(capsys, record())
    [item] = doc["records"]
    assert "zqS3cretPw" in item["input"]
    rest = json.dumps({k: v for k, v in item.items() if k != "input"})
    for secret in SECRETS:
        assert secret not in rest
    assert item["output"]["url_host"] == "shop.example.com" and item["output"]["url_scheme"] == "https"


def test_unknown_fields_are_removed_as_not_allowed(capsys):
    rec = record(data_tracking_id="x", session={"token": "zqTok123", "ids": [{"a": 1}]})
    fields = field_lines(explain(capsys, rec))
    assert fields["data.tracking_id"] == "removed: not on the allow-list of url_visit"
    assert fields["session.token"] == "removed: not on the allow-list"
    assert fields["session.ids[0].a"] == "removed: not on the allow-list"


def test_special_category_fields_show_their_category_at_any_depth(capsys):
    rec = record(data_extra={"religion": "x", "nested": {"healthStatus": "y"}}, sexualOrientation="z")
    out = explain(capsys, rec)
    fields = field_lines(out)
    assert fields["data.extra.religion"] == "removed: special category religion"
    assert fields["data.extra.nested.healthStatus"] == "removed: special category health"
    assert fields["sexualOrientation"] == "removed: special category sexual_orientation"
    [item] = explain_json(capsys, rec)["records"]
    special = {f["path"]: f["category"] for f in item["fields"] if f.get("reason") == "special_category"}
    assert special == {"data.extra.religion": "religion", "data.extra.nested.healthStatus": "health",
                       "sexualOrientation": "sexual_orientation"}


def test_child_record_is_dropped_and_fields_still_explained(capsys):
    out = explain(capsys, record(is_child=True))
    assert "outcome:  dropped: child_data" in out
    assert "output row" not in out
    assert field_lines(out)["is_child"] == "consumed by gate (children: dropped for url_visit)"


def test_missing_ksn_consent_is_dropped(capsys):
    out = explain(capsys, record(consent={"eula": True, "marketing": True}))
    assert "outcome:  dropped: consent_missing:ksn" in out
    fields = field_lines(out)
    assert fields["consent.eula"] == "consumed by gate (consent: required for url_visit)"
    assert fields["consent.marketing"] == "consumed by gate (consent: not required for url_visit)"


@pytest.mark.parametrize("line, text", [
    ('{"schema_version": 1, "type": "url_visit", "device_id": "D-zq', "quarantined: truncated_json"),
    ("not json at all password=zqS3cretPw", "quarantined: invalid_json"),
    ("[1, 2]", "quarantined: not_an_object (list)"),
    (json.dumps(record(type="os_event", data={"pid": "zqS3cretPw"})),
     "quarantined: wrong_type (data.pid: expected a number, got str)"),
])
def test_bad_input_is_explained_as_quarantined(capsys, line, text):
    out = explain(capsys, line, args=("--no-input",))
    assert f"outcome:  {text}" in out
    assert "stored in _quarantine (values masked)" in out
    assert "zqS3cretPw" not in out


def test_expired_licence_is_locked_and_renamed_column_is_named(capsys):
    rec = record(type="license", ts="2022-01-01T00:00:00Z", consent={"eula": True},
                 data={"license_key": "zqLIC-1", "product": "KIS", "expires": "2023-01-01T00:00:00Z"})
    out = explain(capsys, rec)
    assert "written to _locked/license/user_region=EEA/event_date=2022-01-01" in out
    fields = field_lines(out)
    assert fields["data.product"] == "kept as licensed_product"
    assert fields["data.expires"] == "transformed by date_or_timestamp -> expires"
    assert fields["data.license_key"] == "transformed by pseudonym (license) -> license_key_pseudonym"


def test_key_file_gives_the_runs_pseudonyms_and_no_key_says_so(capsys):
    without = explain_json(capsys, record())
    assert any("fixed explain key" in n for n in without["notes"])
    assert without["records"][0]["output"]["device_id_pseudonym"] == Pseudonymizer(EXPLAIN_KEY)("device",
                                                                                                 "D-zqdevice01")
    text = explain(capsys, record())
    assert text.startswith("note: no --pseudonym-key-file")
    with_key = explain_json(capsys, record(), args=("--pseudonym-key-file", str(DEV_KEY)))
    dev = DEV_KEY.read_bytes().strip()
    assert with_key["records"][0]["output"]["device_id_pseudonym"] == Pseudonymizer(dev)("device", "D-zqdevice01")
    assert not any("fixed explain key" in n for n in with_key["notes"])


def test_config_errors_exit_2(capsys, tmp_path):
    assert explain_main(["{}", "--policy", str(tmp_path / "missing.toml")]) == 2
    assert explain_main(["{}", "--pseudonym-key-file", str(tmp_path / "missing.key")]) == 2
    assert explain_main(["{}", "--as-of", "yesterday"]) == 2
    assert capsys.readouterr().err.count("error:") == 3


def test_outcomes_agree_with_a_batch_run_over_the_sample(ctx):
    """Every line of the sample explained alone gives the same verdicts and rows as one pipeline batch."""
    with gzip.open(SAMPLE_GZ, "rb") as fh:
        lines = [ln.rstrip(b"\n").removesuffix(b"\r") for ln in fh]
    batch = sanitize_lines(ctx, "sample", 0, list(enumerate(lines, 1)))
    expected = Counter({k: v for k, v in batch.stats.items()
                        if v and k.startswith(("output/", "dropped/", "quarantined/", "locked/"))})
    rows_by_line = {}
    for key, table in batch.outputs.items():
        for row in table.to_pylist():
            rows_by_line[row.pop("_origin")] = (key, row)
            row.pop("_key")

    got: Counter = Counter()
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        item = explain_line(ctx, raw)
        outcome = item["outcome"]
        status = outcome["status"]
        if status == "written":
            got[f"output/{outcome['path'].split('/')[0]}"] += 1
        elif status == "locked":
            got[f"locked/{outcome['path'].split('/')[1]}"] += 1
            got["dropped/expired_locked"] += 1
        elif status == "dropped":
            got[f"dropped/{outcome['rule']}"] += 1
        else:
            got[f"quarantined/{outcome['reason']}"] += 1
        if status in ("written", "locked"):
            key, row = rows_by_line.pop(number)
            assert outcome["path"].endswith(f"{key.record_type}/user_region={key.user_region}/"
                                            f"event_date={key.event_date}")
            output = dict(item["output"])
            assert (output.pop("user_region"), output.pop("event_date")) == (key.user_region, key.event_date)
            assert output == row
    assert got == expected
    assert not rows_by_line


def test_explain_record_fields_cover_every_input_key(ctx):
    rec = record(data_extra={"a": {"b": 1}}, junk=[1, 2])
    item = explain_line(SanitizeContext(policy=ctx.policy, key=ctx.key, as_of=ctx.as_of), orjson.dumps(rec))
    paths = [f["path"] for f in item["fields"]]
    assert paths == ["schema_version", "type", "event_id", "device_id", "user_id", "ts", "country", "product",
                     "is_child", "consent.eula", "consent.ksn", "data.url", "data.browser", "data.verdict",
                     "data.extra.a.b", "junk"]
    assert {f["action"] for f in item["fields"]} == {"consumed", "kept", "transformed", "removed"}


def test_cli_reads_ndjson_from_stdin():
    lines = [json.dumps(record()), "", json.dumps(record(is_child=True)), '{"broken":', "[]"]
    proc = subprocess.run([sys.executable, "-m", "pipeline", "explain", "--format", "json", "--as-of", AS_OF],
                          input="\r\n".join(lines) + "\n", cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [r["outcome"]["text"] for r in doc["records"]] == [
        "written to url_visit/user_region=EEA/event_date=2026-11-20",
        "dropped: child_data",
        "quarantined: truncated_json",
        "quarantined: not_an_object (list)",
    ]
    assert doc["policy"]["version"] and doc["as_of"] == "2026-11-25T00:00:00+00:00"
