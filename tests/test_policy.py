"""The policy file: its content keeps the promises, and bad policy files fail with a usable message."""

from __future__ import annotations

import re

import pytest

from schemas.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy, parse_policy
from transforms.special import SpecialCategoryMatcher

TEXT = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
VERSION_LINE = re.search(r'^version = "[^"]*"', TEXT, re.MULTILINE)[0]  # type: ignore[index]


def test_all_fourteen_contract_types_are_declared(policy):
    assert set(policy.types) == {
        "license", "product_usage", "device", "detection", "installed_app", "url_visit", "os_event",
        "suspicious_file", "wifi", "contact", "dump", "spam_email", "antitheft", "child_protection",
    }


def test_consent_bases_follow_policy_table(policy):
    opt_in = {t: set(p.consent) for t, p in policy.types.items()}
    assert opt_in["product_usage"] == {"marketing"}
    for t in ("detection", "installed_app", "url_visit", "os_event", "suspicious_file", "wifi"):
        assert opt_in[t] == {"ksn"}, t
    assert opt_in["dump"] == {"dumps"}
    assert opt_in["spam_email"] == {"antispam"}
    assert opt_in["antitheft"] == {"antitheft"}
    assert opt_in["child_protection"] == {"child_protection"}
    assert policy.base_consent == ("eula",)


def test_only_child_protection_may_carry_children(policy):
    assert [t for t, p in policy.types.items() if p.children_allowed] == ["child_protection"]


def test_identifiers_are_never_kept_raw(policy):
    transforms = {(t, f.name): f.transform for t, p in policy.types.items() for f in p.fields}
    for field in [("device", "hostname"), ("device", "mac_address"), ("wifi", "ssid"), ("wifi", "bssid"),
                  ("license", "license_key"), ("contact", "email"), ("contact", "nickname")]:
        assert transforms[field] == "pseudonym", field
    assert transforms[("os_event", "user")] == "account"
    assert transforms[("spam_email", "subject")] == transforms[("spam_email", "body")] == "digest"
    env = {r.name: r.transform for r in policy.envelope}
    assert env["device_id"] == env["user_id"] == "pseudonym"


def test_no_allowed_field_is_a_special_category(policy):
    matcher = SpecialCategoryMatcher(policy.special_categories)
    names = {f.name for p in policy.types.values() for f in p.fields} | {r.name for r in policy.envelope}
    assert [n for n in names if matcher.category_of(n)] == []


def test_regions_cover_policy_locations(policy):
    assert policy.region_of("NL").name == "EEA"
    assert policy.region_of("NO").name == "EEA"
    assert policy.region_of("GB").name == "UK"
    assert policy.region_of("US").name == "ROW"
    assert policy.region_of(None).name == "UNKNOWN"
    assert policy.region_of("XX").name == "UNKNOWN"
    assert set(policy.region_of("NL").processing_locations) == {"DE", "NL", "FR", "GB", "RU"}
    assert policy.region_of(None).processing_locations == policy.region_of("DE").processing_locations


def test_schema_is_explicit_and_stable(policy):
    schema = policy.file_schema("url_visit")
    assert "url" not in schema.names  # the raw URL never has a column
    assert {"url_host", "url_registered_domain", "url_suffix", "url_port", "url_scheme", "url_status"} <= set(
        schema.names)
    assert "device_id" not in schema.names and "device_id_pseudonym" in schema.names
    assert str(schema.field("event_time").type) == "timestamp[us, tz=UTC]"


@pytest.mark.parametrize(
    "edit, expected",
    [
        (("fields.url = \"url\"", "fields.url = \"verbatim\""), "unknown transform 'verbatim'"),
        (("consent = [\"ksn\"]\nretention_days = 90", "consent = [\"kns\"]\nretention_days = 90"),
         "unknown consent flag 'kns'"),
        (("retention_days = 30\non_expiry = \"delete\"\nfields.sender",
          "retention_days = -1\non_expiry = \"delete\"\nfields.sender"), "positive number of days"),
        (("on_expiry = \"lock\"", "on_expiry = \"archive\""), "must be one of delete, lock"),
        ((VERSION_LINE, "version = 2026"), "must be str"),
        (("UK.countries = [\"GB\"", "UK.countries = [\"NL\""), "'NL' is already in region EEA"),
        (("fields.lat = { transform = \"coarse_coordinate\", decimals = 2 }",
          "fields.lat = { transform = \"coarse_coordinate\", decimals = 5 }"), "2 decimals is about 1 km"),
        (("[types.wifi]", "[types.wifi]\nfavourite_colour = \"blue\""), "unknown key"),
    ],
)
def test_bad_policy_names_file_line_key_and_problem(edit, expected):
    old, new = edit
    assert old in TEXT, old
    with pytest.raises(PolicyError) as info:
        parse_policy(TEXT.replace(old, new, 1), "custom.toml")
    message = str(info.value)
    assert expected in message
    assert message.startswith("custom.toml:")
    assert message.split(":")[1].strip().isdigit(), message  # a line number


def test_toml_syntax_error_is_reported_with_position():
    with pytest.raises(PolicyError, match=r"custom.toml: not valid TOML: .*line 1"):
        parse_policy("version = \n", "custom.toml")


def test_missing_policy_file_is_a_clear_error(tmp_path):
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "nope.toml")


def test_policy_hash_changes_with_content(policy):
    other = parse_policy(TEXT.replace("retention_days = 30", "retention_days = 31", 1), "x.toml")
    assert other.sha256 != policy.sha256


def test_docs_policy_page_is_current(policy):
    from pipeline.policy_doc import DOC, document

    assert DOC.read_text(encoding="utf-8") == document(policy), (
        "docs/policy.md is stale: run telemetry-sanitizer policy --write-docs")


def test_policy_command_prints_every_type_and_field(policy, capsys):
    from pipeline.policy_doc import main

    assert main([]) == 0
    text = capsys.readouterr().out
    for t in policy.types.values():
        assert f"| {t.name} |" in text
        for f in t.fields:
            assert f"`{f.name}`" in text
