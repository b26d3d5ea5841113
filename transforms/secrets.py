"""Secrets in free text, found by a rule set kept as data (`schemas/secrets.toml`).

`transforms/text.py` knows how command lines carry credentials (switches, key=value
pairs, headers, tools' own options). What it cannot know is every token format a
provider issues, every tool that takes a secret as a plain argument, and every
language's word for "password". Those live in one data file, compiled into ONE RE2
pattern: a value is scanned once, in time linear in its length, whatever the number
of rules, and the scan is what proves a value clean (no rule matched), never the
absence of a trigger character.

`SecretSweep.sweep(text)` replaces every finding by `[REDACTED]` (opaque URLs by their
scheme) and counts the replacements. `join_userinfo` runs before the URL rule: it
closes white space and line breaks inside URL user info (browsers drop tabs and line
breaks in URLs), so `https://alice:\\nS3cret@host/` is read as one URL.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import tomllib
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import re2

REDACTED = "[REDACTED]"
DEFAULT_RULES = Path(__file__).resolve().parent.parent / "schemas" / "secrets.toml"
_KINDS = ("token", "context", "url")
_CHECKS = ("basic_auth", "entropy")
_MAX_PASSES = 4
# Entropy check (see docs/free-text.md for how these were chosen): a candidate of at least
# _ENTROPY_MIN_LEN characters that mixes upper case, lower case and digits is a secret when
# its Shannon entropy reaches _ENTROPY_RATIO of the most its length allows (log2 of the length).
_ENTROPY_MIN_LEN = 24
_ENTROPY_RATIO = 0.83


class SecretRulesError(ValueError):
    """The rule file is malformed: names the rule and the problem."""


@dataclass(frozen=True)
class SecretRule:
    id: str
    kind: str
    regex: str
    check: str | None = None
    except_words: tuple[str, ...] = ()


def load_rules(path: str | Path | None = None) -> list[SecretRule]:
    """The rules of `path` (default: schemas/secrets.toml), checked."""
    path = Path(path or DEFAULT_RULES)
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    rules = []
    seen = set()
    for i, raw in enumerate(data.get("rule", [])):
        rid = raw.get("id") or f"#{i}"
        unknown = set(raw) - {"id", "kind", "regex", "check", "except_words"}
        if unknown:
            raise SecretRulesError(f"{path}: rule {rid}: unknown keys {sorted(unknown)}")
        if rid in seen:
            raise SecretRulesError(f"{path}: rule {rid}: id used twice")
        seen.add(rid)
        kind, check = raw.get("kind"), raw.get("check")
        if kind not in _KINDS:
            raise SecretRulesError(f"{path}: rule {rid}: kind must be one of {_KINDS}")
        if check is not None and check not in _CHECKS:
            raise SecretRulesError(f"{path}: rule {rid}: check must be one of {_CHECKS}")
        regex = raw.get("regex")
        if not isinstance(regex, str) or not regex:
            raise SecretRulesError(f"{path}: rule {rid}: regex missing")
        try:
            re2.compile(regex)
        except Exception as exc:  # noqa: BLE001 - re2 raises its own error type
            raise SecretRulesError(f"{path}: rule {rid}: regex does not compile with RE2: {exc}") from None
        if kind == "context" and "(?P<secret>" not in regex:
            raise SecretRulesError(f"{path}: rule {rid}: a context rule needs a group (?P<secret>...)")
        if kind == "url" and not ("(?P<scheme>" in regex and "(?P<payload>" in regex):
            raise SecretRulesError(f"{path}: rule {rid}: a url rule needs groups scheme and payload")
        words = raw.get("except_words", [])
        if not (isinstance(words, list) and all(isinstance(w, str) and w for w in words)):
            raise SecretRulesError(f"{path}: rule {rid}: except_words must be a list of words")
        rules.append(SecretRule(rid, kind, regex, check, tuple(w.lower() for w in words)))
    if not rules:
        raise SecretRulesError(f"{path}: no rules")
    return rules


def shannon_entropy(token: str) -> float:
    """Bits per character of `token` (0 for an empty one)."""
    n = len(token)
    if not n:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in Counter(token).values())


def looks_random(token: str) -> bool:
    """The entropy check: long, mixes upper case, lower case and digits, near-maximal entropy."""
    core = token.strip("=-_~+/")
    if len(core) < _ENTROPY_MIN_LEN:
        return False
    has_upper = has_lower = has_digit = False
    for ch in core:
        if ch.isdigit():
            has_digit = True
        elif ch.isupper():
            has_upper = True
        elif ch.islower():
            has_lower = True
    if not (has_upper and has_lower and has_digit):
        return False
    return shannon_entropy(core) >= _ENTROPY_RATIO * math.log2(min(len(core), 64))


def _basic_auth(token: str) -> bool:
    """Base64 that decodes to `user:password`, or a long token that is not a plain word."""
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
        if b":" in raw and raw.decode("utf-8").isprintable():
            return True
    except (binascii.Error, ValueError):
        pass
    return len(token) >= 12 and not token.isalpha()


_CHECK_FUNCS = {"basic_auth": _basic_auth, "entropy": looks_random}
_NAMED_GROUP = re.compile(r"\(\?P<[A-Za-z0-9_]+>")


class _Decoded:
    """A match over ASCII bytes read as text (offsets are the same)."""

    def __init__(self, m: re2._Match) -> None:
        self._m = m

    def group(self, g: int) -> str:
        return self._m.group(g).decode()

    def start(self, g: int) -> int:
        return self._m.start(g)

    def end(self, g: int) -> int:
        return self._m.end(g)

    def span(self, g: int) -> tuple[int, int]:
        return self._m.span(g)


class SecretSweep:
    """The rule set compiled into one RE2 pattern; `sweep` removes what it finds."""

    def __init__(self, rules: list[SecretRule] | None = None) -> None:
        self.rules = rules if rules is not None else load_rules()
        parts = []
        for i, rule in enumerate(self.rules):
            regex = (rule.regex.replace("(?P<secret>", f"(?P<s{i}>").replace("(?P<scheme>", f"(?P<c{i}>")
                     .replace("(?P<payload>", f"(?P<p{i}>"))
            parts.append(f"(?P<r{i}>{regex})")
        grouped = "|".join(parts)
        # Without capturing groups RE2 answers "does anything match" with its DFA, several times
        # faster: that is the scan every value gets; the groups are read only on a match.
        self.pattern = _NAMED_GROUP.sub("(?:", grouped)
        self._plain = re2.compile(self.pattern.encode())
        self._re = re2.compile(grouped.encode())
        self._re_text = re2.compile(grouped)
        index = self._re_text.groupindex
        self._groups = {f"r{i}": (rule, (index[f"r{i}"], index.get(f"s{i}"), index.get(f"c{i}"), index.get(f"p{i}")))
                        for i, rule in enumerate(self.rules)}
        self._except = [(rule, re.compile(r"(?i)(?<![\w-])(?:" + "|".join(map(re.escape, rule.except_words))
                                          + r")(?:\.exe)?(?![\w-])")) for rule in self.rules if rule.except_words]

    def __getstate__(self) -> dict:
        return {"rules": self.rules}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["rules"])

    @property
    def opaque_urls(self) -> SecretSweep:
        """The `url` rules alone: run before the text rules, which would read `mailto:bob@host`
        as an account at a host and no longer see the scheme."""
        sub = self.__dict__.get("_opaque")
        if sub is None:
            sub = self.__dict__["_opaque"] = SecretSweep([r for r in self.rules if r.kind == "url"])
        return sub

    def matches(self, text: str) -> bool:
        """True when some rule's pattern matches (before checks): only then can `sweep` change it.
        A False here is the proof that the value holds nothing the rule set knows."""
        return self._plain.search(text.encode("utf-8", "surrogatepass")) is not None

    def findings(self, text: str) -> list[tuple[int, int, str, str]]:
        """(start, end, replacement, rule id) of every finding, in text order, overlaps merged later."""
        out: list[tuple[int, int, str, str]] = []
        ascii_text = text.isascii()
        subject = text.encode() if ascii_text else text   # ASCII: byte offsets are character offsets
        search = self._re.search if ascii_text else self._re_text.search
        pos = 0
        n = len(text)
        while pos <= n:
            m = search(subject, pos)
            if m is None:
                break
            last = m.lastgroup
            rule, groups = self._groups[last if isinstance(last, str) else last.decode()]
            start, end = m.span()
            found = self._finding(m, rule, groups, ascii_text)
            if found is not None and not self._excepted(rule, text, start):
                out.append((*found, rule.id))
            # context and url rules start at a keyword: look again just after it, so a finding
            # inside a span the rule passed over (e.g. `-k https://...`) is still seen
            pos = end if rule.kind == "token" and end > start else start + 1
        return out

    def _excepted(self, rule: SecretRule, text: str, start: int) -> bool:
        if not rule.except_words:
            return False
        for r, pattern in self._except:
            if r is rule:
                return pattern.search(text, 0, start + 1) is not None
        return False

    @staticmethod
    def _finding(m: re2._Match, rule: SecretRule, groups: tuple, ascii_text: bool) -> tuple[int, int, str] | None:
        if ascii_text:
            m = _Decoded(m)
        whole, secret, scheme, payload = groups
        if rule.kind == "url":
            value = m.group(payload)
            if not value or value.startswith("//"):
                return None
            return m.start(scheme), m.end(payload), m.group(scheme).lower() + ":"
        if secret is not None:
            if m.start(secret) < 0:
                return None
            start, end = m.span(secret)
            value = m.group(secret)
        else:
            start, end = m.span(whole)
            value = m.group(whole)
        core = value.strip("\"'{}")
        if not core or core == REDACTED or core.startswith(("pz-", REDACTED)) or "://" in core:
            return None
        if rule.kind == "context" and re.fullmatch(r"\d{1,3}(?:,\d{1,3})?", core):
            return None     # `sort -k 2`: a column number, not a secret
        check = _CHECK_FUNCS.get(rule.check) if rule.check else None
        if check is not None and not check(core):
            return None
        return start, end, _mask_value(value)

    def sweep(self, text: str) -> tuple[str, int]:
        """(text with every finding replaced, number of replacements). Non-ASCII text is read
        in NFKC form (`ｇｈｐ_…` is `ghp_…`), which is returned when something was replaced."""
        if not text:
            return text, 0
        if not text.isascii():
            norm = unicodedata.normalize("NFKC", text)
            if norm != text:
                out, n = self._sweep(norm)
                if n:
                    return out, n
        return self._sweep(text)

    def _sweep(self, text: str) -> tuple[str, int]:
        if not self.matches(text):
            return text, 0
        total = 0
        for _ in range(_MAX_PASSES):
            found = self.findings(text)
            if not found:
                break
            edits = _merge(found)
            pieces = []
            pos = 0
            for start, end, repl in edits:
                pieces.append(text[pos:start])
                pieces.append(repl)
                pos = end
            pieces.append(text[pos:])
            new = "".join(pieces)
            if new == text:
                break
            total += len(edits)
            text = new
        return text, total


def _mask_value(value: str) -> str:
    """[REDACTED] in place of the value, its quotes kept."""
    for q in ('"', "'"):
        if len(value) >= 2 and value[0] == q and value[-1] == q:
            return q + REDACTED + q
    return REDACTED


def _merge(found: list[tuple[int, int, str, str]]) -> list[tuple[int, int, str]]:
    """Overlapping findings become one [REDACTED] over their union; the others keep their replacement."""
    found = sorted(found, key=lambda f: (f[0], -f[1]))
    out: list[tuple[int, int, str]] = []
    for start, end, repl, _rule in found:
        if out and start < out[-1][1]:
            prev = out[-1]
            out[-1] = (prev[0], max(prev[1], end), prev[2] if end <= prev[1] else REDACTED)
        else:
            out.append((start, end, repl))
    return out


# --------------------------------------------------------------------------- URL user info across white space

_SPACED_USERINFO = re.compile(
    r"(?i)(?P<scheme>[a-z][a-z0-9+.-]{0,31}://)(?P<info>[^/?#@\s]{0,256}(?:\s{1,16}[^/?#@\s]{0,256}){1,8})@"
    r"(?=[^\s@/?#])"
)
_HAS_SPACED_USERINFO = re.compile(r"://[^/?#@]{0,2048}\s[^/?#@]{0,2048}@")


def join_userinfo(text: str) -> str:
    """`https://alice:\\nS3cret@host/` -> `https://alice:S3cret@host/`: white space inside what
    can only be URL user info (it holds a ':' or no blank at all) is removed, so the URL
    rule sees the whole URL and drops the user info."""
    if "://" not in text or "@" not in text or _HAS_SPACED_USERINFO.search(text) is None:
        return text

    def join(m: re.Match) -> str:
        info = m.group("info")
        if ":" not in info and " " in info:
            return m.group(0)          # `https://example.com and bob@corp.example`: two things
        return m.group("scheme") + "".join(info.split()) + "@"

    return _SPACED_USERINFO.sub(join, text)


# --------------------------------------------------------------------------- proof that a value is clean

# A single token of these characters, not starting with a switch character: no rule of
# transforms/text.py can change it (they all need white space, a separator such as ':', '=',
# '/', '\\' or '@', a switch, or an `S-1-` account SID; tests/test_secrets.py checks this on
# generated tokens). Such a value is clean when the secret rules do not match it either.
SAFE_TOKEN = r"[A-Za-z0-9][A-Za-z0-9._+#-]{0,127}"
SID_LIKE = r"(?i)s-1-[0-9]"
_SAFE_TOKEN_RE = re.compile(SAFE_TOKEN)
_SID_LIKE_RE = re.compile(SID_LIKE)


def is_safe_token(text: str) -> bool:
    """True when the text scrubber provably leaves `text` unchanged (see SAFE_TOKEN)."""
    return _SAFE_TOKEN_RE.fullmatch(text) is not None and _SID_LIKE_RE.search(text) is None


_DEFAULT: SecretSweep | None = None


def default_sweep() -> SecretSweep:
    """The sweep of schemas/secrets.toml, compiled once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = SecretSweep()
    return _DEFAULT
