"""Parser tricks of the hostile corpus: lines whose structure, not their text, tries to carry a secret through.

Each line plants one rendered template (a command line, token, URL, header, special-category value or
profile path) where a parser or a quarantine excerpt may keep it: a duplicate key (either copy), an escaped
twin key, a secret as a key name, in `type`/`ts`/`country`/consent, next to NaN/Infinity/huge numbers,
behind a BOM, with CR/CRLF/U+2028 inside the line, raw NUL or invalid UTF-8 in it, a truncated line, a line
over the size limit, wrong JSON types, JSON-in-a-string, deep nesting. Whether the line is written or
quarantined, the planted value must not be in any output.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any

from hostile_templates import TEMPLATES, Template

TRICK_TEMPLATES = ["mysql_glued", "github_pat_classic", "url_plain_userinfo", "auth_basic_header", "religion_en",
                   "win_profile_path", "aws_key_pair", "psexec", "email_in_text", "sid_registry"]
HOLE = "@@HOLE@@"
TARGETS = [("os_event", "command_line"), ("url_visit", "browser"), ("detection", "threat_name"),
           ("installed_app", "install_path")]


def _j(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _esc_all(text: str) -> str:
    """A JSON string literal with every character \\u-escaped (valid JSON; decodes to the same text)."""
    return '"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else json.dumps(c)[1:-1] for c in text) + '"'


def _tricks() -> dict[str, Callable[[dict[str, Any], str, str], bytes]]:
    """name -> f(benign record, field, secret) -> raw line (field: the target data field)."""

    def with_data(rec: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
        out = json.loads(_j(rec))
        out["data"][field] = value
        return out

    def _dup(rec: dict[str, Any], field: str, s: str, first: bool, key: str | None = None) -> bytes:
        data = dict(rec["data"])
        benign = data.pop(field)
        body = [_j(k) + ":" + _j(v) for k, v in data.items()]
        twin = key if key is not None else _j(field)
        pair = [twin + ":" + _j(s), _j(field) + ":" + _j(benign)] if first else \
            [_j(field) + ":" + _j(benign), twin + ":" + _j(s)]
        env = {k: v for k, v in rec.items() if k != "data"}
        return (_j(env)[:-1] + ',"data":{' + ",".join(pair + body) + "}}").encode()

    def esc_twin(rec: dict[str, Any], field: str, s: str) -> bytes:
        return _dup(rec, field, s, first=False, key=_esc_all(field))

    def dup_data(rec: dict[str, Any], field: str, s: str) -> bytes:
        return (_j(rec)[:-1] + ',"data":' + _j(with_data(rec, field, s)["data"]) + "}").encode()

    def dup_product(rec: dict[str, Any], field: str, s: str) -> bytes:
        return (_j(rec)[:-1] + ',"product":' + _j(s) + "}").encode()

    def number_sibling(token: str) -> Callable[[dict[str, Any], str, str], bytes]:
        def make(rec: dict[str, Any], field: str, s: str) -> bytes:
            text = _j(with_data(rec, field, s))
            return (text[:-2] + ',"duration_ms":' + token + "}}").encode()
        return make

    def bom(rec: dict[str, Any], field: str, s: str) -> bytes:
        return b"\xef\xbb\xbf" + _j(with_data(rec, field, s)).encode()

    def crlf(rec: dict[str, Any], field: str, s: str) -> bytes:
        return _j(with_data(rec, field, s)).encode() + b"\r\n"

    def cr_inside(rec: dict[str, Any], field: str, s: str) -> bytes:
        return _j(with_data(rec, field, s)).replace(',"data":', ',\r"data":').encode()

    def raw_in_value(mark: bytes) -> Callable[[dict[str, Any], str, str], bytes]:
        def make(rec: dict[str, Any], field: str, s: str) -> bytes:
            raw = _j(with_data(rec, field, HOLE)).encode()
            half = len(s) // 2
            return raw.replace(HOLE.encode(), _j(s[:half])[1:-1].encode() + mark + _j(s[half:])[1:-1].encode())
        return make

    def escaped_inside(seq: str) -> Callable[[dict[str, Any], str, str], bytes]:
        def make(rec: dict[str, Any], field: str, s: str) -> bytes:
            half = len(s) // 2
            lit = _j(s[:half])[:-1] + seq + _j(s[half:])[1:]
            return _j(with_data(rec, field, HOLE)).replace(_j(HOLE), lit).encode()
        return make

    def all_escaped(rec: dict[str, Any], field: str, s: str) -> bytes:
        return _j(with_data(rec, field, HOLE)).replace(_j(HOLE), _esc_all(s)).encode()

    def truncated(rec: dict[str, Any], field: str, s: str) -> bytes:
        text = _j(with_data(rec, field, s))
        return text[: text.index(_j(s)) + len(_j(s)) - 1].encode()

    def too_long(rec: dict[str, Any], field: str, s: str) -> bytes:
        return _j(with_data(rec, field, s + " " + "A" * (1 << 20))).encode()

    def key_in_data(rec: dict[str, Any], field: str, s: str) -> bytes:
        out = json.loads(_j(rec))
        out["data"][s] = "x"
        return _j(out).encode()

    def key_in_envelope(rec: dict[str, Any], field: str, s: str) -> bytes:
        return _j({**rec, s: True}).encode()

    def envelope_value(key: str) -> Callable[[dict[str, Any], str, str], bytes]:
        def make(rec: dict[str, Any], field: str, s: str) -> bytes:
            return _j({**rec, key: s}).encode()
        return make

    def consent_value(rec: dict[str, Any], field: str, s: str) -> bytes:
        return _j({**rec, "consent": {**rec["consent"], "ksn": s}}).encode()

    def consent_key(rec: dict[str, Any], field: str, s: str) -> bytes:
        return _j({**rec, "consent": {**rec["consent"], s: True}}).encode()

    def extra_field(key: str) -> Callable[[dict[str, Any], str, str], bytes]:
        def make(rec: dict[str, Any], field: str, s: str) -> bytes:
            out = json.loads(_j(rec))
            out["data"][key] = s
            return _j(out).encode()
        return make

    def nested_special(rec: dict[str, Any], field: str, s: str) -> bytes:
        out = json.loads(_j(rec))
        out["data"]["profile"] = {"Gesundheit": {"diagnosis": s}, "notes": [s]}
        return _j(out).encode()

    def extra_envelope(rec: dict[str, Any], field: str, s: str) -> bytes:
        return _j({**rec, "debug": {"last_command": s}}).encode()

    def as_type(make_value: Callable[[str], Any]) -> Callable[[dict[str, Any], str, str], bytes]:
        def make(rec: dict[str, Any], field: str, s: str) -> bytes:
            return _j(with_data(rec, field, make_value(s))).encode()
        return make

    def in_int_field(rec: dict[str, Any], field: str, s: str) -> bytes:
        out = json.loads(_j(rec))
        out["data"]["duration_ms"] = s
        out["data"]["pid"] = s
        return _j(out).encode()

    def data_is_string(rec: dict[str, Any], field: str, s: str) -> bytes:
        return _j({**rec, "data": _j(with_data(rec, field, s)["data"])}).encode()

    def top_string(rec: dict[str, Any], field: str, s: str) -> bytes:
        return _j(s).encode()

    def top_array(rec: dict[str, Any], field: str, s: str) -> bytes:
        return _j([with_data(rec, field, s)]).encode()

    def bare_text(rec: dict[str, Any], field: str, s: str) -> bytes:
        return s.replace("\n", " ").encode()

    def deep(rec: dict[str, Any], field: str, s: str) -> bytes:
        inner: Any = s
        for _ in range(300):
            inner = {"x": inner}
        return _j({**rec, "data": {**rec["data"], "nested": inner}}).encode()

    def expired_license(rec: dict[str, Any], field: str, s: str) -> bytes:
        # a licence past retention is locked (written to _locked/), not deleted: still output
        return _j({**with_data(rec, field, s), "ts": "2022-06-01T10:00:00Z"}).encode()

    def long_value(rec: dict[str, Any], field: str, s: str) -> bytes:
        return _j(with_data(rec, field, "C:\\Temp\\x.exe " * 20000 + s)).encode()

    return {
        "expired_license_locked": expired_license,
        "secret_after_300kb_of_text": long_value,
        "dup_key_secret_second": lambda r, f, s: _dup(r, f, s, first=False),
        "dup_key_secret_first": lambda r, f, s: _dup(r, f, s, first=True),
        "escaped_key_twin": esc_twin,
        "dup_data_object": dup_data,
        "dup_envelope_product": dup_product,
        "nan_sibling": number_sibling("NaN"),
        "infinity_sibling": number_sibling("Infinity"),
        "minus_infinity_sibling": number_sibling("-Infinity"),
        "huge_int_sibling": number_sibling("123456789012345678901234567890123"),
        "huge_float_sibling": number_sibling("1e400"),
        "bom_line": bom,
        "crlf_line": crlf,
        "cr_inside_line": cr_inside,
        "raw_nul_in_value": raw_in_value(b"\x00"),
        "raw_invalid_utf8_in_value": raw_in_value(b"\xff\xfe"),
        "raw_u2028_in_value": raw_in_value("\u2028".encode()),
        "raw_nel_in_value": raw_in_value("\u0085".encode()),
        "raw_tab_in_value": raw_in_value(b"\t"),
        "escaped_nul_in_value": escaped_inside("\\u0000"),
        "escaped_lone_surrogate": escaped_inside("\\ud800"),
        "escaped_newline_in_value": escaped_inside("\\n"),
        "every_char_escaped": all_escaped,
        "truncated_line": truncated,
        "line_too_long": too_long,
        "secret_as_data_key": key_in_data,
        "secret_as_envelope_key": key_in_envelope,
        "secret_in_type": envelope_value("type"),
        "secret_in_schema_version": envelope_value("schema_version"),
        "secret_in_ts": envelope_value("ts"),
        "secret_in_country": envelope_value("country"),
        "secret_in_is_child": envelope_value("is_child"),
        "secret_in_consent_value": consent_value,
        "secret_as_consent_key": consent_key,
        "special_field_religion": extra_field("religion"),
        "special_field_nl_gezondheid": extra_field("gezondheid"),
        "special_field_nested": nested_special,
        "extra_data_field": extra_field("notes"),
        "extra_envelope_object": extra_envelope,
        "value_as_array": as_type(lambda s: [s]),
        "value_as_object": as_type(lambda s: {"password": s}),
        "secret_in_int_fields": in_int_field,
        "data_as_json_string": data_is_string,
        "line_is_json_string": top_string,
        "line_is_json_array": top_array,
        "line_is_bare_text": bare_text,
        "deep_nesting": deep,
    }


def trick_lines(rng: random.Random, start_line: int,
                benign_record: Callable[[str, int, random.Random], dict[str, Any]],
                render: Callable[[Template, random.Random], tuple[str, list[dict[str, str]]]],
                ) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """(raw line, manifest entry without `line`) for every trick and its templates."""
    by_name = {t[1]: t for t in TEMPLATES}
    line = start_line
    # every template in one value: rules with a time or size budget must still scrub all of them
    for rtype, field in TARGETS:
        rec = benign_record(rtype, line, rng)
        parts = [render(t, rng) for t in TEMPLATES]
        value = " ; ".join(v for v, _ in parts)
        rec["data"][field] = value
        yield _j(rec).encode(), {"ts": rec["ts"], "event_id": rec["event_id"], "class": "parser_trick",
                                 "template": "every_template_in_one_value", "type": rtype, "field": "data." + field,
                                 "value": value, "cores": [c for _, cores in parts for c in cores],
                                 "planted_template": "*"}
        line += 1
    for t_index, (name, make) in enumerate(_tricks().items()):
        names = TRICK_TEMPLATES[:2] if name == "line_too_long" else TRICK_TEMPLATES
        for k, template_name in enumerate(names):
            rtype, field = TARGETS[(t_index + k) % len(TARGETS)]
            if name == "expired_license_locked":
                rtype, field = "license", ("product", "product_version")[k % 2]
            template = by_name[template_name]
            rec = benign_record(rtype, line, rng)
            value, cores = render(template, rng)
            raw = make(rec, field, value)
            yield raw, {"ts": rec["ts"], "event_id": rec["event_id"], "class": "parser_trick", "template": name,
                        "type": rtype, "field": "data." + field, "value": value, "cores": cores,
                        "planted_template": template_name}
            line += 1
