"""Make a rejected line safe to keep: its shape survives, its values do not.

POLICY.md promise 10 wants bad input quarantined with its reason, and the
non-negotiable says a quarantined line must leak nothing. A line that failed
validation may hold anything (credentials, identifiers, special-category
values) in any position, so this is fail-closed: JSON structure and known field
names are kept, every value is replaced by a type marker. The only values kept
in clear are top-level envelope values from a closed set (a known record type,
a two-letter country code, a timestamp's shape, the schema version number):
they explain most rejections and identify nobody.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection

MAX_EXCERPT_CHARS = 2000
_TIMESTAMP_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9:.,+\-Zz]{0,30})?")
_COUNTRY = re.compile(r"[A-Za-z]{2}")

_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"?'          # string literal, possibly cut off
    r"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"
    r"|true|false|null"
    r"|[{}\[\]:,]"
    r"|\s+"
    r'|[^\s{}\[\]:,"]+'            # anything else: garbage
)


def _clear_value(key: str, body: str, record_types: Collection[str]) -> bool:
    if key == "type":
        return body in record_types
    if key == "country":
        return _COUNTRY.fullmatch(body) is not None
    if key == "ts":
        return _TIMESTAMP_SHAPE.fullmatch(body) is not None
    return False


def mask_line(text: str, known_keys: Collection[str], is_special: Callable[[str], str | None],
              record_types: Collection[str] = ()) -> str:
    """Replace every value of a (possibly broken) JSON line by a marker; keep keys we know."""
    out: list[str] = []
    size = 0
    depth = 0
    tokens = [t for t in _TOKEN.findall(text[: MAX_EXCERPT_CHARS + 500]) if not t.isspace()]
    value_of: str | None = None  # the top-level key whose value comes next, if any
    for i, tok in enumerate(tokens):
        pending, value_of = value_of, None
        if tok.startswith('"'):
            body = tok[1:-1] if len(tok) > 1 and tok.endswith('"') else tok[1:]
            if i + 1 < len(tokens) and tokens[i + 1] == ":":
                if is_special(body):
                    out.append('"<special>"')
                elif body in known_keys:
                    out.append(tok)
                else:
                    out.append(f'"<key:{len(body)}>"')
                if depth == 1:
                    value_of = body
                    out.append(":")
                    tokens[i + 1] = ""  # the colon is written here, so the next token is the value
                continue
            keep = pending is not None and _clear_value(pending, body, record_types)
            out.append(f'"{body}"' if keep else f'"<str:{len(body)}>"')
        elif not tok:
            value_of = pending  # the colon consumed above: the value is still pending
            continue
        elif tok[0] in "-0123456789":
            out.append(tok if pending == "schema_version" and len(tok) < 6 else "<num>")
        elif tok in ("true", "false", "null"):
            out.append(tok)
        elif tok in "{[":
            depth += 1
            out.append(tok)
        elif tok in "}]":
            depth -= 1
            out.append(tok)
        elif tok in ":,":
            out.append(tok)
        else:
            out.append(f"<raw:{len(tok)}>")
        size += len(out[-1])
        if size > MAX_EXCERPT_CHARS:
            out.append("...")
            break
    return "".join(out)
