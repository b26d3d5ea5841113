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


_DISGUISED = [
    ("r\u0435ligion", "religion"), ("\u0440olitical_opinion", "political_opinion"),   # Cyrillic е, р
    ("\u0397\u0399V", "health"), ("\u03b5thnicity", "racial_or_ethnic_origin"),        # Greek Η Ι, ε
    ("\u029c\u1d07\u1d00\u029f\u1d1b\u029c", "health"),                                 # small capitals
    ("ｈｅａｌｔｈ", "health"), ("h3alth", "health"), ("r3l1gion", "religion"), ("b10metric", "biometric"),
    ("h.e.a.l.t.h", "health"), ("r_e_l_i_g_i_o_n", "religion"), ("trade.union", "trade_union"),
    ("politicalopinion", "political_opinion"), ("HIV", "health"), ("diagnoses", "health"),
    ("medication", "health"), ("pregnancy", "health"), ("disability", "health"), ("gay", "sexual_orientation"),
    ("transgender", "sexual_orientation"), ("ethnie", "racial_or_ethnic_origin"), ("Rasse", "racial_or_ethnic_origin"),
    ("iris", "biometric"), ("retina", "biometric"), ("voiceprint", "biometric"), ("genotype", "genetic"),
    ("church", "religion"), ("Schwangerschaft", "health"), ("medicijnen", "health"), ("kirche", "religion"),
]


@pytest.mark.parametrize("key, category", _DISGUISED)
def test_disguised_special_names_match(matcher, key, category):
    """Issue 13 class 7: look-alike letters (UTS #39 skeleton), digits for letters, dotted or glued
    spellings and terms of more categories and languages."""
    assert matcher.category_of(key) == category


@pytest.mark.parametrize("key", ["sha256", "os_version", "is_executable", "signal_dbm", "exception_code",
                                 "stack_hash", "install_path", "captive_portal", "accuracy_m", "parent_pid",
                                 "diagnostics_level", "union_id", "hive_key", "ratio", "grace_period"])
def test_ordinary_names_stay_ordinary_on_their_skeleton(matcher, key):
    assert matcher.category_of(key) is None


def test_a_dropped_disguised_field_is_counted_as_special_at_any_depth(ctx):
    from transforms.records import sanitize_lines
    rec = {"schema_version": 1, "type": "wifi", "event_id": "e-1", "device_id": "D-1", "ts": "2026-11-20T10:04:05Z",
           "consent": {"eula": True, "ksn": True}, "h\u0435alth": "x",
           "data": {"security": "WPA2", "r3ligion": "y", "extra": {"HIV": "z"}}}
    result = sanitize_lines(ctx, "t", 0, [(1, orjson.dumps(rec))])
    assert result.stats["fields_removed/special_category"] == 3
    assert result.stats["fields_removed/not_allowed"] == 1      # `extra`, the object around HIV


_OTHER_LANGUAGES = [
    ("salud", "health"), ("saúde", "health"), ("zdrowie", "health"), ("sağlık", "health"), ("здоровье", "health"),
    ("Здоровье_пользователя", "health"), ("健康", "health"), ("用户健康状态", "health"), ("건강", "health"),
    ("υγεία", "health"), ("الصحة", "health"),
    ("религия", "religion"), ("religião", "religion"), ("religia", "religion"), ("宗教", "religion"),
    ("θρησκεία", "religion"), ("din", "religion"),
    ("orientación_sexual", "sexual_orientation"), ("orientacjaSeksualna", "sexual_orientation"),
    ("cinsel_yönelim", "sexual_orientation"), ("сексуальная_ориентация", "sexual_orientation"),
    ("性取向", "sexual_orientation"),
    ("opinión_política", "political_opinion"), ("siyasi_görüş", "political_opinion"),
    ("политические_взгляды", "political_opinion"), ("政治观点", "political_opinion"),
    ("sindicato", "trade_union"), ("związekZawodowy", "trade_union"), ("sendika", "trade_union"),
    ("профсоюз", "trade_union"), ("工会", "trade_union"), ("労働組合", "trade_union"),
    ("etnia", "racial_or_ethnic_origin"), ("raza", "racial_or_ethnic_origin"), ("raça", "racial_or_ethnic_origin"),
    ("etnik_köken", "racial_or_ethnic_origin"), ("этническое_происхождение", "racial_or_ethnic_origin"),
    ("民族", "racial_or_ethnic_origin"),
    ("huella_dactilar", "biometric"), ("odcisk_palca", "biometric"), ("parmak_izi", "biometric"),
    ("биометрия", "biometric"), ("指纹", "biometric"), ("지문", "biometric"),
    ("genético", "genetic"), ("genetyczne", "genetic"), ("genetik", "genetic"), ("днк", "genetic"),
    ("基因", "genetic"), ("遺伝子", "genetic"),
]


@pytest.mark.parametrize("key, category", _OTHER_LANGUAGES)
def test_special_names_in_other_languages_and_scripts(matcher, key, category):
    """Terms in scripts other than Latin are read in their own script (the ASCII skeleton of
    `религия` is `per`), Chinese, Japanese and Korean ones anywhere in the name."""
    assert matcher.category_of(key) == category


@pytest.mark.parametrize("key", ["partial", "partial_hash", "partition", "dinner", "raspberry", "etniks_count",
                                 "разрешение_экрана", "имя_файла", "文件路径", "進程名", "파일경로", "συσκευή"])
def test_ordinary_names_in_other_languages_stay_ordinary(matcher, key):
    assert matcher.category_of(key) is None


def test_fold_lookalikes_reads_text_as_a_reader_sees_it():
    from transforms.special import fold_lookalikes

    assert fold_lookalikes("pa\u0301sswd=x") == "passwd=x"                  # combining accent
    assert fold_lookalikes("pass\u00adword=x") == "password=x"              # soft hyphen
    assert fold_lookalikes("pass\u200bword=x") == "password=x"              # zero-width space
    assert fold_lookalikes("\u0440\u0430ssw\u043erd: x") == "password: x"   # Cyrillic look-alikes
    assert fold_lookalikes("sk_live_s\u043e\u043arq") == "sk_live_soxrq"     # no look-alike: still one token
    assert fold_lookalikes("ghp_ab\x00cd\u2028ef\x85gh\ncd") == "ghp_abcdefghcd"
    assert fold_lookalikes("пароль=x 健康 a\tb") == "пароль=x 健康 a\tb"     # other scripts stay
