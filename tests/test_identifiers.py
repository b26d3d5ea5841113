"""Raw identifiers in free text (schemas/identifiers.toml, transforms/identifiers.py): each form is
replaced, what must survive is kept, and the columnar clean-proof never calls one clean."""

from __future__ import annotations

import re
import string

import pyarrow as pa
import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st
from test_columnar import URL_VISIT, fresh, good_lines, variant
from test_fast_path import assert_same
from test_secrets import scrub as free_text  # the free-text rule with fixed pseudonym and URL stand-ins

from transforms.columnar import sanitize_columnar
from transforms.identifiers import (
    IdentifierRulesError,
    IdentifierScrubber,
    load_rules,
    luhn_ok,
    scrub_identifiers,
    token_shape,
)
from transforms.records import sanitize_lines
from transforms.reference import sanitize_lines_reference

PLACEHOLDER = "[id]"
ZW = "\u200b\u200c\u200d\u2060"


def hidden(text: str) -> str:
    """Zero-width characters between every two characters, as the hostile corpus writes them."""
    return "".join(ch + ZW[i % 4] for i, ch in enumerate(text[:-1])) + text[-1:]


# (text, the identifier that must be gone), one or more per form
POSITIVE = [
    ("d4:10:34:9a:ef:38", "d4:10:34:9a:ef:38"),
    ("link/ether D4:10:34:9A:EF:38 brd ff:ff:ff:ff:ff:ff", "D4:10:34:9A:EF:38"),
    ("arp -s 10.0.0.5 50-3F-A9-A3-C3-E3", "50-3F-A9-A3-C3-E3"),
    ("50-3f-a9-a3-c3-e3", "50-3f-a9-a3-c3-e3"),
    ("ether c826.d9ae.ceb0", "c826.d9ae.ceb0"),
    ("c826.d9ae.ceb0", "c826.d9ae.ceb0"),
    ("adapter 187D6363E4BA", "187D6363E4BA"),
    ("MAC=187d6363e4ba;", "187d6363e4ba"),
    ("bssid: 187d6363e4ba", "187d6363e4ba"),
    ("187D6363E4BA", "187D6363E4BA"),
    ("IMEI: 385035665850567", "385035665850567"),
    ("imei 35-209900-176148-1", "209900-176148"),
    ("device 385035665850567 locked", "385035665850567"),
    ("385035665850567", "385035665850567"),
    ("IOPlatformSerialNumber = C0215YDU353Q", "C0215YDU353Q"),
    ('"IOPlatformSerialNumber" = "C02XYZ12345"', "C02XYZ12345"),
    ("SerialNumber PFH1ZNGS94", "PFH1ZNGS94"),
    ("SerialNumber PFJEFTLVNH", "PFJEFTLVNH"),
    ("serial 5CG1234XYZ", "5CG1234XYZ"),
    ("disk serial WD-WCC4DPYD4Q0U", "WCC4DPYD4Q0U"),
    ("S/N: 5CG1234XYZ", "5CG1234XYZ"),
    ("serial_number=ABC123456", "ABC123456"),
    ("logon by CONTOSO\\mdezulimilu55 from 10.147.20.56", "mdezulimilu55"),
    ("LAPTOP-6WUKW0EH2\\qgoruleriga03", "qgoruleriga03"),
    ("runas /user:DESKTOP-AB12CD3\\bob.smith cmd", "bob.smith"),
    (".\\zqlocaladmin", "zqlocaladmin"),
    ("CONTOSO\\WSALGF1US1D$", "WSALGF1US1D"),
    ("joined as WS0042$ today", "WS0042"),
    (hidden("tfakesabima11") + "@contoso.example", "tfakesabima11"),
    ("mail " + hidden("zq.alice") + "@example.org sent", "zq.alice"),
    ("tfakesabima11" + hidden("@contoso.example"), "tfakesabima11"),
]


@pytest.mark.parametrize("text, ident", POSITIVE)
def test_a_raw_identifier_is_replaced(text, ident):
    out = free_text(text)
    visible = re.sub(f"[{ZW}]", "", out)
    assert ident.lower() not in visible.lower(), out
    assert out != text
    # the identifier rules alone find it too (the text rules may have pseudonymised it first)
    if any(ch in text for ch in ZW):  # hidden characters: the text rules drop them and read the address
        return
    alone, n = scrub_identifiers(text)
    assert n >= 1 and PLACEHOLDER in alone and ident.lower() not in re.sub(f"[{ZW}]", "", alone).lower()


# values that must come through the identifier rules as they are
NEGATIVE = [
    "e-0ed99531985d", "0ed99531985d-x", "ae96c4bb-8996-4aee-a2a8-4a631655b47f", "a" * 64,
    "C:\\Windows\\System32\\cmd.exe", "C:\\Program Files\\Vendor", "C:\\Program Files (x86)\\Vendor\\app.exe",
    "\\\\fs01\\home$\\docs", "\\\\srv\\ADMIN$", "\\\\srv\\C$", "HKLM\\Run", "NT AUTHORITY\\SYSTEM",
    "BUILTIN\\Administrators", "temp\\setup.exe", "svchost.exe -k LocalService", "KIS 21.3.10.391",
    "10.0.19041.1234", "fe80::1:2:3:4:5:6", "2001:db8:0:0:0:0:2:1", "10:20:30:40:50:60:70:80", "12:34:56",
    "serial port COM1", "serial console", "385035665850568", "1700000000000", "1234567890123456",
    "HEUR:Trojan-Ransom.Win32.Generic", "Trojan.Win32.Agent.abcd", "someone@example.com", "$env:TEMP",
    "price 12$", "chrome", "serial number unknown", "x-51-3f-a9-a3-c3-e4-y",
]


@pytest.mark.parametrize("text", NEGATIVE)
def test_what_must_survive_is_kept(text):
    assert scrub_identifiers(text) == (text, 0)


def test_neighbours_sharing_a_boundary_are_all_replaced():
    assert scrub_identifiers("aa:bb:cc:dd:ee:ff 11:22:33:44:55:66")[0] == "[id] [id]"
    assert scrub_identifiers("x 11-22-33-44-55-66 22-33-44-55-66-77")[0] == "x [id] [id]"
    assert scrub_identifiers("CONTOSO\\a CONTOSO\\b,WS1$")[0] == "[id] [id],[id]"


def test_luhn():
    assert luhn_ok("385035665850567") and luhn_ok("490154203237518")
    assert not luhn_ok("385035665850568")


def test_every_rule_compiles_with_re2_and_the_file_is_checked(tmp_path):
    _placeholder, rules = load_rules()
    assert rules
    for rule in rules:
        re2.compile(rule.regex)
        if rule.token_shape:
            re2.compile(rule.token_shape)
    re2.compile(token_shape())
    bad = tmp_path / "bad.toml"
    bad.write_text('placeholder = "[id]"\n[[rule]]\nid = "x"\nregex = "a"\ncheck = "nope"\n')
    with pytest.raises(IdentifierRulesError, match="check"):
        IdentifierScrubber(bad)
    bad.write_text('placeholder = "[id]"\n[[rule]]\nid = "x"\nregex = "a"\nflavour = 1\n')
    with pytest.raises(IdentifierRulesError, match="unknown"):
        IdentifierScrubber(bad)


def test_rules_without_a_token_shape_need_a_character_no_plain_token_has():
    """The columnar proof calls a single plain token clean unless `token_shape` finds it; that is sound
    only if every other rule needs a blank, ':', '=', '\\', '$', '@' ... (checked on the parsed regex)."""
    import re._parser as sre_parse

    from test_secrets import _needs_other_char

    for rule in load_rules()[1]:
        if not rule.token_shape:
            assert _needs_other_char(list(sre_parse.parse(rule.regex))), rule.id


_TOKEN = string.ascii_letters + string.digits + "._+#-"


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.text(_TOKEN, min_size=1, max_size=20),
    st.text("0123456789abcdefABCDEF-.", min_size=12, max_size=20),
    st.text(string.digits, min_size=14, max_size=16),
))
def test_a_token_the_rules_change_is_found_by_the_token_shape(token):
    if scrub_identifiers(token)[0] != token:
        assert re.search(token_shape(), token), token


def test_the_clean_proof_never_calls_an_identifier_clean(ctx):
    values = ["50-3F-A9-A3-C3-E3", "50-3f-a9-a3-c3-e3", "c826.d9ae.ceb0", "187d6363e4ba", "187D6363E4BA",
              "385035665850567", "e-0ed99531985d", "chrome", "KIS", "ae96c4bb-8996-4aee-a2a8-4a631655b47f"]
    mask = ctx.engine.clean_mask(pa.array(values, pa.string())).to_pylist()
    assert mask == [False] * 6 + [True] * 4
    for value, clean in zip(values, mask, strict=True):
        if not clean:
            assert ctx.scrubber(value)[0] != value or value == "e-0ed99531985d", value


IDENTIFIER_VALUES = [text for text, _ in POSITIVE] + NEGATIVE


def test_columnar_plain_and_reference_paths_agree_on_identifiers(ctx):
    """Every positive and negative value in the free-text fields of a batch big enough for Arrow: the
    three paths give the same tables and counts, and no identifier reaches the output."""
    lines = good_lines(200)
    for i, value in enumerate(IDENTIFIER_VALUES):
        field = ("browser", "verdict", "category")[i % 3]
        lines[3 * i + 1] = variant(URL_VISIT, event_id=f"i-{i}", **{f"data__{field}": value})
    numbered = list(enumerate(lines, 1))
    got = sanitize_columnar(fresh(ctx), "in.ndjson", 2, numbered)
    assert_same(got, sanitize_lines(fresh(ctx), "in.ndjson", 2, numbered))
    assert_same(got, sanitize_lines_reference(fresh(ctx), "in.ndjson", 2, numbered))
    blob = re.sub(f"[{ZW}]", "", str([t.to_pylist() for t in got.outputs.values()])).lower()
    for _text, ident in POSITIVE:
        assert ident.lower() not in blob, ident
