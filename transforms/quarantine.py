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


# The same tokens without the whitespace ones, and with the string literal written as an
# unrolled loop (`[^"\\]*` runs in one step instead of one alternation per character).
_SKIP_SPACE_TOKEN = re.compile(
    r'\s*("[^"\\]*(?:\\.[^"\\]*)*"?'
    r"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"
    r"|true|false|null"
    r"|[{}\[\]:,]"
    r'|[^\s{}\[\]:,"]+)'
)
_LITERALS = frozenset({"true", "false", "null"})
_OPEN, _CLOSE, _PUNCT = frozenset("{["), frozenset("}]"), frozenset(":,")


def mask_line(text: str, known_keys: Collection[str], is_special: Callable[[str], str | None],
              record_types: Collection[str] = (), key_cache: dict[str, str] | None = None) -> str:
    """Replace every value of a (possibly broken) JSON line by a marker; keep keys we know.

    Output: known keys as they are, a special-category key as "<special>", any other
    key as "<key:length>"; strings "<str:length>", numbers <num>, anything else
    <raw:length>; true/false/null and punctuation kept; at most about
    MAX_EXCERPT_CHARS, then "...". `key_cache`, when given, remembers what each key
    becomes (the same known_keys and is_special must come with it every time).
    """
    out: list[str] = []
    append = out.append
    size = 0
    depth = 0
    tokens = _SKIP_SPACE_TOKEN.findall(text[: MAX_EXCERPT_CHARS + 500])
    n = len(tokens)
    pending: str | None = None  # the top-level key whose value comes next, if any
    i = 0
    while i < n:
        tok = tokens[i]
        i += 1
        first = tok[0]
        if first == '"':
            body = tok[1:-1] if len(tok) > 1 and tok[-1] == '"' else tok[1:]
            if i < n and tokens[i] == ":":  # a key
                shown = key_cache.get(tok) if key_cache is not None else None
                if shown is None:
                    if is_special(body):
                        shown = '"<special>"'
                    elif body in known_keys:
                        shown = tok
                    else:
                        shown = f'"<key:{len(body)}>"'
                    if key_cache is not None and len(key_cache) < 10_000 and len(tok) <= 128:
                        key_cache[tok] = shown
                append(shown)
                if depth == 1:
                    append(":")
                    i += 1  # the colon is written here; the value that follows belongs to this key
                    pending = body
                else:
                    pending = None
                continue  # keys do not count towards the size
            if pending is not None and _clear_value(pending, body, record_types):
                piece = f'"{body}"'
            else:
                piece = f'"<str:{len(body)}>"'
        elif first in "-0123456789":
            piece = tok if pending == "schema_version" and len(tok) < 6 else "<num>"
        elif tok in _LITERALS or tok in _PUNCT:
            piece = tok
        elif tok in _OPEN:
            depth += 1
            piece = tok
        elif tok in _CLOSE:
            depth -= 1
            piece = tok
        else:
            piece = f"<raw:{len(tok)}>"
        pending = None
        append(piece)
        size += len(piece)
        if size > MAX_EXCERPT_CHARS:
            append("...")
            break
    return "".join(out)
