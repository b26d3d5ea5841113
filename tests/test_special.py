"""Special categories (GDPR Art. 9) are recognised by name in four languages and at any depth."""

from __future__ import annotations

import orjson
import pytest

from transforms.special import SpecialCategoryMatcher, words


@pytest.fixture(scope="module")
def matcher(policy):
    return SpecialCategoryMatcher(policy.special_categories)


@pytest.mark.parametrize("key, category", [
    ("religion", "religion"), ("Religion", "religion"), ("RELIGION", "religion"), ("religiousAffiliation", "religion"),
    ("godsdienst", "religion"), ("Konfession", "religion"), ("croyance", "religion"),
    ("health", "health"), ("healthStatus", "health"), ("health-data", "health"), ("gezondheid", "health"),
    ("Gesundheitsdaten", "health"), ("santé", "health"), ("SANTÉ", "health"),
    ("political_opinion", "political_opinion"), ("politieke_voorkeur", "political_opinion"),
    ("politische_Meinung", "political_opinion"), ("opinion_politique", "political_opinion"),
    ("sexualOrientation", "sexual_orientation"), ("seksuele_geaardheid", "sexual_orientation"),
    ("sexuelle_Orientierung", "sexual_orientation"), ("orientation_sexuelle", "sexual_orientation"),
    ("ethnicity", "racial_or_ethnic_origin"), ("origine_ethnique", "racial_or_ethnic_origin"),
    ("ethnische_Herkunft", "racial_or_ethnic_origin"), ("race", "racial_or_ethnic_origin"),
    ("trade_union", "trade_union"), ("TradeUnion", "trade_union"), ("vakbond", "trade_union"),
    ("Gewerkschaft", "trade_union"), ("appartenance_syndicale", "trade_union"),
    ("biometric", "biometric"), ("fingerprint_template", "biometric"), ("genetic", "genetic"),
    ("genetische_gegevens", "genetic"), ("DNA", "genetic"),
])
def test_special_names_match(matcher, key, category):
    assert matcher.category_of(key) == category


@pytest.mark.parametrize("key", ["stackTrace", "trace", "url", "device_id", "threat_name", "union_id",
                                 "command_line", "os_build", "target_path", "signal_dbm", "extra_debug", "races_won"])
def test_ordinary_names_do_not_match(matcher, key):
    assert matcher.category_of(key) is None


def test_words_split_camel_snake_kebab_and_accents():
    assert words("healthStatus") == ["health", "status"]
    assert words("Santé_Données-X") == ["sante", "donnees", "x"]


def test_find_at_any_depth(matcher):
    rec = {"a": {"b": [{"healthStatus": "x"}, {"ok": 1}]}, "religion": {"deep": 1}, "data": {"vakbond": "y"}}
    found = sorted((p, c) for p, _, c in matcher.find(rec))
    assert found == [("a.b[].healthStatus", "health"), ("data.vakbond", "trade_union"), ("religion", "religion")]


def test_prefilter_never_misses_a_line_with_a_special_key(matcher):
    lines = [b'{"x":{"Religion":1}}', b'{"sant\xc3\xa9":1}', b'{"r\\u0065ligion":1}', b'{"GEZONDHEID":2}',
             b'{"data":{"a":{"healthStatus":1}}}', b'{"data":{"a":[{"vakbond":1}]}}', b'[{"religion":1}]',
             b'{"data":{"note":"{"},"x":{"y":{"religion":1}}}']
    for line in lines:
        assert matcher.may_contain(orjson.loads(line), line), line
    line = b'{"type":"wifi","data":{"ssid":"x"},"consent":{"eula":true}}'
    assert not matcher.may_contain(orjson.loads(line), line)
    assert not matcher.may_contain(orjson.loads(line), line)  # second time from the known-names set
    line = b'{"data":{"a":{"b":1}}}'  # a deeper object: "maybe", the caller walks it
    assert matcher.may_contain(orjson.loads(line), line)
