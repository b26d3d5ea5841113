"""Special-category data inside free-text values: pairs lose their value, terms in prose remove
the whole value, every finding is counted, and ordinary telemetry is left alone."""

from __future__ import annotations

import re

import orjson
import pyarrow as pa
import pytest
from test_columnar import ANTITHEFT, URL_VISIT, fresh, good_lines, same_as_plain_path, variant

from transforms.columnar import sanitize_columnar
from transforms.records import sanitize_lines
from transforms.reference import sanitize_lines_reference
from transforms.secrets import HEX_ID
from transforms.special import SpecialCategoryMatcher
from transforms.special_text import (
    SPECIAL,
    SpecialText,
    SpecialValuesError,
    Vocabulary,
    default_vocabulary,
    value_words,
)


@pytest.fixture(scope="module")
def vocabulary(policy):
    return default_vocabulary(policy.special_categories)


@pytest.fixture(scope="module")
def special(policy, vocabulary):
    return SpecialText(SpecialCategoryMatcher(policy.special_categories), vocabulary)


# ----------------------------------------------------------------- rule 1: pairs

_PAIRS = [
    # (text, what must be gone, category)
    ("religion=sunni muslim", "sunni", "religion"),
    ("geloof: gereformeerd vrijgemaakt", "gereformeerd", "religion"),
    ("Konfession: evangelisch", "evangelisch", "religion"),
    ("religion : orthodox jewish", "orthodox", "religion"),
    ("religión: shia ithna ashari", "ithna", "religion"),
    ("вероисповедание: musulman pratiquant", "pratiquant", "religion"),
    ('{"faith": "roman catholic"}', "roman", "religion"),
    ("<religion>Roman Catholic</religion> ok", "Roman", "religion"),
    ("religião: candomblé", "candombl", "religion"),
    ("religia=katolik", "katolik", "religion"),
    ("宗教=佛教", "佛教", "religion"),
    ("health_status=zwangerschap 12 weken", "weken", "health"),
    ("diagnosis: multiple sclerosis", "sclerosis", "health"),
    ("ziekte: sertraline 100mg", "sertraline", "health"),
    ("Diagnose=Multiple Sklerose", "Sklerose", "health"),
    ("maladie : chemotherapy cycle 3", "cycle", "health"),
    ("salud: diabetes tipo 2", "tipo", "health"),
    ("saúde=asma", "asma", "health"),
    ("zdrowie: cukrzyca", "cukrzyca", "health"),
    ("sağlık: diyabet", "diyabet", "health"),
    ("здоровье: диабет", "диабет", "health"),
    ("健康: 良好", "良好", "health"),
    ("salute: ipertensione", "ipertensione", "health"),
    ("sexual_orientation=homoseksueel", "homoseksueel", "sexual_orientation"),
    ("geaardheid: pansexual", "pansexual", "sexual_orientation"),
    ("orientation sexuelle : bisexuelle", "bisexuelle", "sexual_orientation"),
    ("sexuelle Orientierung: schwul, in Beziehung", "schwul", "sexual_orientation"),
    ("political_party=afd-mitglied", "mitglied", "political_opinion"),
    ("partij: Forum voor Democratie", "Forum", "political_opinion"),
    ("Partei: Die Linke Ortsverband", "Ortsverband", "political_opinion"),
    ("partido: izquierda unida", "izquierda", "political_opinion"),
    ("trade_union=ver.di Landesbezirk", "Landesbezirk", "trade_union"),
    ("vakbond: FNV Metaal", "Metaal", "trade_union"),
    ("syndicat: CGT syndiqué", "CGT", "trade_union"),
    ("sindacato=FIOM", "FIOM", "trade_union"),
    ("ethnicity: Surinaams-Hindostaans", "Surinaams", "racial_or_ethnic_origin"),
    ("afkomst=Marokkaans", "Marokkaans", "racial_or_ethnic_origin"),
    ("Herkunft: kurdisch", "kurdisch", "racial_or_ethnic_origin"),
    ("etnia: quechua", "quechua", "racial_or_ethnic_origin"),
    ("genetic_marker=Factor V Leiden heterozygous", "Leiden", "genetic"),
    ("genotype: AA/TT rs1234", "rs1234", "genetic"),
    ("face_embedding: vOnuAj1tbpx2eognhxd5l", "vOnuAj1", "biometric"),
    ("fingerprint_template=Zm9vYmFy", "Zm9vYmFy", "biometric"),
    ("voiceprint: 8f1e2d", "8f1e2d", "biometric"),
]


@pytest.mark.parametrize("text, secret, category", _PAIRS)
def test_a_special_pair_loses_its_value_and_is_counted(special, text, secret, category):
    out, categories = special.scrub(text)
    assert secret.lower() not in out.lower()
    assert SPECIAL in out
    assert category in categories


_DISGUISED_KEYS = [
    "r\u0435ligion=x sunni x",            # Cyrillic е
    "\uff48\uff45\uff41\uff4c\uff54\uff48: x hiv x",  # full-width letters
    "h.e.a.l.t.h=x hepatitis x",          # dotted
    "h\u200bealth=x hepatitis x",          # zero-width space
    "hea\u00adlth: x hepatitis x",         # soft hyphen
    "he\u0301alth: x hepatitis x",         # combining mark
    "r3l1g10n=x sunni x",                 # digits for letters
    "HEALTH : x hepatitis x",
    "trade.union=x metall x",
    "Gesundheitsdaten: x hepatitis x",
    "\u0437\u0434\u043e\u0440\u043e\u0432\u044c\u0435\uff1ax hepatitis x",  # здоровье + full-width colon
]


@pytest.mark.parametrize("text", _DISGUISED_KEYS)
def test_disguised_keys_are_read_on_their_skeleton(special, text):
    out, categories = special.scrub(text)
    assert "x" not in out.split(":")[-1].split("=")[-1].replace(SPECIAL, ""), out
    assert categories


def test_the_value_ends_at_a_separator_a_closing_quote_or_tag(special):
    assert special.scrub("religion=x y; os=win11")[0] == "religion=[special]; os=win11"
    assert special.scrub("health: a b, c=d")[0] == "health: [special], c=d"
    assert special.scrub("a=1&religion=x&b=2")[0] == "a=1&religion=[special]&b=2"
    assert special.scrub('{"faith": "x, y", "os": "win"}')[0] == '{"faith": "[special]", "os": "win"}'
    assert special.scrub("<health>x y</health><os>w</os>")[0] == "<health>[special]</health><os>w</os>"
    assert special.scrub("religion=x\nos=win")[0] == "religion=[special]\nos=win"
    assert special.scrub("religion='x; y' z")[0] == "religion='[special]' z"


def test_fail_closed_the_value_runs_to_the_end_when_nothing_ends_it(special):
    assert special.scrub("religion: x y z os=win")[0] == "religion: [special]"
    assert special.scrub("geaardheid: schwul, in Beziehung")[0] == "geaardheid: [special]"
    assert special.scrub("religion=Jehovah's Witness; os=win")[0] == "religion=[special]; os=win"
    assert special.scrub("religion=x & y")[0] == "religion=[special]"
    assert special.scrub("religion=musul\nman pratiquant")[0] == "religion=[special]"
    assert special.scrub('{"faith": "roman')[0] == '{"faith": "[special]'


def test_an_empty_value_is_not_counted(special):
    assert special.scrub("religion=; os=win") == ("religion=; os=win", ())
    assert special.scrub("health:") == ("health:", ())


def test_every_pair_of_a_value_is_counted(special):
    out, categories = special.scrub("religion=x; health=y; vakbond=z")
    assert out == "religion=[special]; health=[special]; vakbond=[special]"
    assert categories == ("health", "religion", "trade_union")


def test_names_that_are_ordinary_as_keys_in_text_keep_their_value(special):
    """A certificate's fingerprint, a disabled feature, an anti-virus treatment (schemas/special_values.toml)."""
    for text in ("Fingerprint: SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8", "Disabled: true",
                 "treatment=quarantine", "SHA256 fingerprint: 9f:86:d0"):
        assert special.scrub(text) == (text, ()), text
    assert special.scrub("fingerprint_template=Zm9v")[1] == ("biometric",)


# ----------------------------------------------------------------- rule 2: terms in prose

_PROSE = [
    ("note: patient diagnosed with Brustkrebs Stadium II", "health"),
    ("user is scientologist, asked for prayer times", "religion"),
    ("dating profile: homosexual", "sexual_orientation"),
    ("member of CNV Vakmensen since 2015", "trade_union"),
    ("HIV positive", "health"), ("HIVPositive", "health"), ("h.i.v", "health"), ("h1v-test.pdf", "health"),
    ("type 1 diabetes", "health"), ("schizophrénie paranoïde", "health"), ("bipolar disorder", "health"),
    ("epilepsie (medicatie)", "health"), ("alcoholverslaving", "health"), ("Hepatitis C chronic", "health"),
    ("C:\\Users\\pz-1a2b\\Documents\\Chemotherapie\\plan.pdf", "health"), ("zwanger van 12 weken", "health"),
    ("Lungenkrebs", "health"), ("seropositivo", "health"), ("cukrzyca typu 2", "health"), ("hamile", "health"),
    ("беременность 12 недель", "health"), ("糖尿病患者", "health"), ("w ciazy", "health"),
    ("Sunni Muslim", "religion"), ("Jehovah's Witness", "religion"), ("evangelisch-lutherisch", "religion"),
    ("Hindoeïstisch", "religion"), ("musulman pratiquant", "religion"), ("Siebenten-Tags-Adventist", "religion"),
    ("Mormon (LDS)", "religion"), ("católica", "religion"), ("muzułmanin", "religion"), ("müslüman", "religion"),
    ("православный", "religion"), ("基督教徒", "religion"),
    ("bisexuell", "sexual_orientation"), ("lesbienne", "sexual_orientation"),
    ("transgender woman", "sexual_orientation"),
    ("asexual (ace)", "sexual_orientation"), ("lesbijka", "sexual_orientation"), ("eşcinsel", "sexual_orientation"),
    ("гей", "sexual_orientation"), ("同性恋", "sexual_orientation"),
    ("AfD-Mitglied", "political_opinion"), ("PVV-stemmer", "political_opinion"),
    ("Rassemblement National", "political_opinion"), ("Labour Party member", "political_opinion"),
    ("Communist Party USA", "political_opinion"), ("Partij voor de Dieren", "political_opinion"),
    ("Prawo i Sprawiedliwość", "political_opinion"), ("Единая Россия", "political_opinion"),
    ("IG Metall Mitglied", "trade_union"), ("FNV Metaal", "trade_union"), ("CGT syndiqué", "trade_union"),
    ("Unite the Union", "trade_union"), ("Teamsters Local 705", "trade_union"), ("ver.di Landesbezirk", "trade_union"),
    ("Romani descent", "racial_or_ethnic_origin"), ("Marokkaanse afkomst", "racial_or_ethnic_origin"),
    ("türkischstämmig", "racial_or_ethnic_origin"), ("Afro-Caribbean", "racial_or_ethnic_origin"),
    ("Han Chinese", "racial_or_ethnic_origin"), ("Aboriginal Australian", "racial_or_ethnic_origin"),
    ("Surinaams-Hindostaans", "racial_or_ethnic_origin"), ("türk kökenli", "racial_or_ethnic_origin"),
    ("BRCA1 c.68_69delAG carrier", "genetic"), ("APOE e4/e4 homozygous", "genetic"),
    ("CYP2C19*2 poor metabolizer", "genetic"), ("Huntington CAG repeat 42", "genetic"),
    ("Factor V Leiden heterozygous", "genetic"),
    ("iris template v2", "biometric"), ("face embedding 512d", "biometric"),
]


@pytest.mark.parametrize("text, category", _PROSE)
def test_a_value_with_a_term_is_replaced_as_a_whole(special, text, category):
    assert special.scrub(text) == (SPECIAL, (category,)), text


@pytest.mark.parametrize("text, gone, category", [
    ("diagnosis%3A%20HIV%20positive", "HIV", "health"),
    ("patient%20diagnosed%20with%20schizophrenia", "schizophren", "health"),
    ("religion%3DSunni%20Muslim", "Sunni", "religion"),
    ("url=x%253Freligion%253DSunni%252520Muslim", "Sunni", "religion"),     # twice encoded
])
def test_a_percent_encoded_value_is_read_decoded(special, text, gone, category):
    out, found = special.scrub(text)
    assert gone not in out and category in found, out


_ORDINARY = [
    # threat names, executables, products, paths, command lines of the bundled sample and beyond
    "HEUR:Trojan-Ransom.Win32.Generic", "Trojan.Win32.Agent", "not-a-virus:HEUR:AdWare.Win32.Agent.gen",
    "Backdoor.Linux.Mirai.b", "HEUR:Exploit.MSOffice.CVE-2017-11882.gen", "Email-Worm.Win32.Brontok.q",
    "UDS:DangerousObject.Multi.Generic", "Trojan-PSW.Win32.Stealer.gen", "KIS 21.3.10.391",
    "AidsUpdater.exe", "hearing aids", "C:\\Windows\\System32\\drivers\\afd.sys", "CDA audio track 01.cda",
    "FNV-1a hash", "git push origin main", "platform-agnostic build", "die linke Maustaste",
    "Christian Ghisler", "Microsoft.Windows.HealthMonitor", "HealthService.exe", "Samsung Health",
    "lithium-ion battery 87%", "3f2a41d5-9c1e-4b7a-8d2e-aa11bb22cc33", "e-0ed99531985d", "41D5",
    "chrome --type=renderer --lang=nl", "-d -n -a", "cmd /d /n /a", "svchost.exe -k LocalService -p -s W32Time",
    "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups", "Fingerprint reader driver",
    "Windows Hello face", "quarantined", "disinfected", "WPA2-Personal", "Roblox Player", "Telegram Desktop",
    "Python 3.12.7 (64-bit)", "WinRAR 7.01 (64-bit)", "docker-ce", "The Git Development Community",
    "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe", "partial=true", "status: disabled",
    "race condition in driver", "union_id=5", "GenericHealthCheck",
    "Porter stemmer", "Mitglied seit 2019", "iPhone", "AfD", "afd", "coming out soon", "non-binary file",
    "/usr/lib/x86_64-linux-gnu", "C:\\Program%20Files\\x.exe", "lithium-ion battery 87%25",
]


@pytest.mark.parametrize("text", _ORDINARY)
def test_ordinary_telemetry_is_left_alone(special, text):
    assert special.scrub(text) == (text, ()), text


# ----------------------------------------------------------------- the vocabulary as data

def test_every_term_is_found_by_the_vocabulary_as_written(vocabulary):
    """A term the scan cannot find (a typo in how it is written) would be silently useless."""
    import tomllib

    from transforms.special_text import DEFAULT_VALUES

    data = tomllib.loads(DEFAULT_VALUES.read_text(encoding="utf-8"))
    for category, terms in data["terms"].items():
        for term in terms:
            sample = ("zz" + term[1:]) if term.startswith("*") else term.rstrip("*")
            assert category in vocabulary.categories(sample), (category, term)
    for category, terms in data["acronyms"].items():
        if category != "context":
            for term in terms:
                assert category in vocabulary.categories(f"{term} member"), term
                assert not vocabulary.categories(term), term


def _disguises(term: str) -> list[str]:
    """A term written the ways values write it: cases, camelCase, glued to other words, digits for
    letters, separators, inside paths and command lines."""
    plain = term.replace("*", "")
    camel = "".join(w.capitalize() for w in re.split(r"[^\w]+", plain))
    loose = plain.replace("i", "1").replace("o", "0").replace("e", "3")
    return [plain, plain.upper(), plain.title(), camel, camel + "Updater", "my" + camel, loose, loose.upper(),
            f"C:\\Users\\pz-1\\{camel}\\x.pdf", f"--note={plain.replace(' ', '_')}", f"x {plain}s y",
            f"pre{plain}", f"{plain}post", plain.replace(" ", "-"), plain.replace(" ", ""), f"({plain})",
            f"{plain.upper()}Positive", f"v2_{plain}_3"]


def test_the_screen_never_hides_what_the_scan_finds(vocabulary):
    """`categories` skips the word scan when one RE2 search of the text says no term can be in
    it: that screen must pass every text the scan would find something in."""
    import tomllib

    from transforms.special_text import DEFAULT_VALUES

    data = tomllib.loads(DEFAULT_VALUES.read_text(encoding="utf-8"))
    texts = [d for terms in data["terms"].values() for t in terms if t.isascii() for d in _disguises(t)]
    texts += [d for k, terms in data["acronyms"].items() for t in terms for d in _disguises(f"{t} member")]
    texts += _ORDINARY + [t for t, _ in _PROSE] + [t for t, _, _ in _PAIRS]
    found = 0
    for text in texts:
        if vocabulary.scan(text):
            found += 1
            assert vocabulary.screen(text), text
    assert found > len(texts) // 2  # the disguises are found, so the check above is not empty


def test_no_term_is_made_of_hex_digits(vocabulary):
    """FieldEngine.clean_mask proves lower-case hex identifiers clean without asking the vocabulary:
    no term (nor an acronym's context word) may be spelt with hex digits alone."""
    import tomllib

    from transforms.special_text import DEFAULT_VALUES

    data = tomllib.loads(DEFAULT_VALUES.read_text(encoding="utf-8"))
    hex_only = [t for terms in data["terms"].values() for t in terms if t.isascii()
                and all(re.fullmatch(HEX_ID, w) for w in value_words(t.strip("*")))]
    hex_only += [w for w in data["acronyms"]["context"] if re.fullmatch(HEX_ID, w)]
    assert hex_only == []


def test_hex_identifiers_never_hold_a_term(vocabulary):
    hexes = ["41d5", "a1d5", "5eda", "9a7", "cafe-babe", "dead-beef-41d5-0000", "ad5", "d0a"]
    for h in hexes:
        assert re.fullmatch(HEX_ID, h) and not vocabulary.categories(h), h


def test_vocabulary_errors_name_the_problem(tmp_path):
    bad = tmp_path / "v.toml"
    bad.write_text('[terms]\nhealth = ["ab*"]\n', encoding="utf-8")
    with pytest.raises(SpecialValuesError, match="letters next to"):
        Vocabulary(bad)
    bad.write_text('[terms]\nhobbies = ["chess"]\n', encoding="utf-8")
    with pytest.raises(SpecialValuesError, match="not a category"):
        Vocabulary(bad, categories=["health"])
    bad.write_text('[terms]\nhealth = "hiv"\n', encoding="utf-8")
    with pytest.raises(SpecialValuesError, match="list of non-empty strings"):
        Vocabulary(bad)
    bad.write_text('[words]\nhealth = ["hiv"]\n', encoding="utf-8")
    with pytest.raises(SpecialValuesError, match="unknown tables"):
        Vocabulary(bad)


# ----------------------------------------------------------------- in the pipeline: proof, paths, counts

def test_a_short_token_with_a_term_is_never_proven_clean(ctx):
    values = ["homosexual", "hiv", "h.i.v", "Scientologist", "chrome", "KIS", "e-0ed99531985d", "HIV-1", "41d5",
              "diabetes", "sertraline", None]
    mask = ctx.engine.clean_mask(pa.array(values, pa.string())).to_pylist()
    for value, clean in zip(values, mask, strict=True):
        if clean:
            assert ctx.special_text.scrub(value) == (value, ()), value
    assert dict(zip(values, mask, strict=True))["hiv"] is False
    assert dict(zip(values, mask, strict=True))["chrome"] is True


SPECIAL_LINES = {
    "pair in a text field": variant(URL_VISIT, data__category="religion=sunni muslim; x"),
    "prose in a text field": variant(URL_VISIT, data__browser="patient diagnosed with HIV"),
    "short token in a text field": variant(URL_VISIT, data__category="homosexual"),
    "dotted token in the envelope": variant(URL_VISIT, product="h.i.v"),
    "pair in a scrub field": variant(ANTITHEFT, data__command="vakbond: FNV; locate"),
    "zero-width key": variant(URL_VISIT, data__category="re\u200bligion: x"),
    "json in a text field": variant(URL_VISIT, data__browser='{"faith": "roman catholic"}'),
    "two categories": variant(ANTITHEFT, data__command="health=x; partei=y"),
}


@pytest.mark.parametrize("name", sorted(SPECIAL_LINES))
def test_special_values_are_removed_and_counted_alike_on_every_path(ctx, name):
    lines = good_lines(100) + [SPECIAL_LINES[name]] + good_lines(100, start=100)
    [result] = same_as_plain_path(ctx, lines, batch=len(lines))
    assert_same_reference(ctx, lines, result)
    assert result.stats["values_scrubbed/special_category"] >= 1
    assert any(k.startswith("special_category/") and "/value:" in k for k in result.stats)
    for bad in ("sunni", "HIV", "homosexual", "h.i.v", "FNV", "roman"):
        for table in result.outputs.values():
            for column in table.columns:
                if pa.types.is_string(column.type):
                    assert not any(bad in v for v in column.to_pylist() if v), (bad, column)


def assert_same_reference(ctx, lines, result):
    from test_fast_path import assert_same

    assert_same(result, sanitize_lines_reference(fresh(ctx), "in.ndjson", 2, list(enumerate(lines, 1))))


def test_counts_per_field_and_category(ctx):
    lines = [SPECIAL_LINES["two categories"], SPECIAL_LINES["pair in a text field"],
             SPECIAL_LINES["dotted token in the envelope"]]
    result = sanitize_lines(fresh(ctx), "in.ndjson", 0, list(enumerate(lines, 1)))
    counted = {k: v for k, v in result.stats.items() if "value:" in k or k.startswith("values_scrubbed/")}
    assert counted == {
        "values_scrubbed/special_category": 3,
        "special_category/health/value:data.command": 1,
        "special_category/political_opinion/value:data.command": 1,
        "special_category/religion/value:data.category": 1,
        "special_category/health/value:product": 1,
    }


def test_repeated_values_are_counted_per_row_across_batches(ctx):
    """The memo answers a value seen in an earlier batch: its rows are counted all the same."""
    col_ctx, plain_ctx = fresh(ctx), fresh(ctx)
    line = SPECIAL_LINES["pair in a text field"]
    for batch in range(3):
        lines = good_lines(80, start=batch * 100) + [line.replace(b'"e-0"', f'"s-{batch}-{i}"'.encode())
                                                     for i in range(3)]
        numbered = list(enumerate(lines, 1))
        got = sanitize_columnar(col_ctx, "in.ndjson", 0, numbered)
        plain = sanitize_lines(plain_ctx, "in.ndjson", 0, numbered)
        assert got.stats == plain.stats
        assert got.stats["special_category/religion/value:data.category"] == 3


def test_a_row_whose_transform_fails_is_counted_once(ctx, monkeypatch):
    """The columnar path hands a failing row to the plain path, which quarantines it: its special
    value is not counted (nothing of the row is written), on both paths."""
    from test_fast_path import make_fragile

    col_ctx, plain_ctx = fresh(ctx), fresh(ctx)
    make_fragile(monkeypatch, col_ctx.urls.__class__, "sanitize")
    lines = good_lines(150)
    lines[10] = variant(URL_VISIT, event_id="x-1", data__url="https://boom.example/a b", data__category="religion=x")
    lines[20] = variant(URL_VISIT, event_id="x-2", data__category="religion=x")
    numbered = list(enumerate(lines, 1))
    got = sanitize_columnar(col_ctx, "in.ndjson", 0, numbered)
    plain = sanitize_lines(plain_ctx, "in.ndjson", 0, numbered)
    assert got.stats == plain.stats
    assert got.stats["quarantined/transform_error"] == 1
    assert got.stats["special_category/religion/value:data.category"] == 1


def test_the_report_shows_scrubbed_values(ctx):
    from pipeline.report import build_report

    result = sanitize_lines(fresh(ctx), "in.ndjson", 0, [(1, SPECIAL_LINES["pair in a text field"])])
    report = build_report(result.stats, {})
    assert report["values_scrubbed"] == {"special_category": 1}
    assert report["special_category_fields"] == {"religion": {"value:data.category": 1}}


def test_special_text_pickles_without_its_caches(special):
    import pickle

    special.scrub("religion=x")
    clone = pickle.loads(pickle.dumps(special))
    assert clone.scrub("religion=x") == ("religion=[special]", ("religion",))
    assert orjson.dumps(clone._cache)  # empty after unpickling
