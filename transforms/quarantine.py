"""Make a rejected line safe to keep: its shape survives, its values do not.

POLICY.md promise 10 wants bad input quarantined with its reason, and the
non-negotiable says a quarantined line must leak nothing. A line that failed
validation may hold anything (credentials, identifiers, special-category
values) in any position, so this is fail-closed: JSON structure and known field
names are kept, every value is replaced by a type marker, except a few
envelope values that identify nobody and explain most rejections.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection

MAX_EXCERPT_CHARS = 2000
# Values kept in clear: they say why a line was rejected and identify nobody.
SAFE_VALUE_KEYS = frozenset({"type", "schema_version", "ts", "country", "product", "event_kind", "security"})
_SAFE_VALUE = re.compile(r"[A-Za-z0-9 _.:+\-]{0,64}")

_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"?'          # string literal, possibly cut off
    r"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"
    r"|true|false|null"
    r"|[{}\[\]:,]"
    r"|\s+"
    r'|[^\s{}\[\]:,"]+'            # anything else: garbage
)


def mask_line(text: str, known_keys: Collection[str], is_special: Callable[[str], str | None]) -> str:
    """Replace every value of a (possibly broken) JSON line by a marker; keep keys we know."""
    out: list[str] = []
    size = 0
    tokens = _TOKEN.findall(text[: MAX_EXCERPT_CHARS + 500])
    last_key: str | None = None
    for i, tok in enumerate(tokens):
        if tok.startswith('"'):
            body = tok[1:-1] if len(tok) > 1 and tok.endswith('"') else tok[1:]
            nxt = next((t for t in tokens[i + 1:i + 3] if not t.isspace()), "")
            if nxt == ":":
                if is_special(body):
                    out.append('"<special>"')
                elif body in known_keys:
                    out.append(tok)
                else:
                    out.append(f'"<key:{len(body)}>"')
                last_key = body
                continue
            if last_key in SAFE_VALUE_KEYS and _SAFE_VALUE.fullmatch(body):
                out.append(f'"{body}"')
            else:
                out.append(f'"<str:{len(body)}>"')
        elif tok[0] in "-0123456789":
            out.append(tok if last_key == "schema_version" and len(tok) < 6 else "<num>")
        elif tok in ("true", "false", "null") or tok[0] in "{}[]:," or tok.isspace():
            out.append(" " if tok.isspace() else tok)
            if tok in "{[,":
                last_key = None if tok != "," else last_key
        else:
            out.append(f"<raw:{len(tok)}>")
        size += len(out[-1])
        if size > MAX_EXCERPT_CHARS:
            out.append("...")
            break
    return "".join(out)
