"""Raw identifiers inside kept free text, found by rules kept as data (`schemas/identifiers.toml`).

MAC addresses, IMEIs, serial numbers, `DOMAIN\\user` accounts, machine accounts and e-mail
addresses with hidden characters have their own pseudonymised fields; inside a free-text value
nothing needs them (POLICY.md promise 5), so each one is replaced by a fixed placeholder. The
rules are compiled once per process; `scrub_identifiers` is pure and runs last in the free-text
rule (`transforms/text.py::scrub_free_text`). `TOKEN_SHAPE` is what the columnar clean-proof
(`transforms/fields.py`) must not call clean: the shapes of the rules that can match inside a
single plain token.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import re2

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "schemas" / "identifiers.toml"
_RULE_KEYS = {"id", "regex", "check", "keep_values", "token_shape"}
_CHECKS = ("luhn", "not_path")


class IdentifierRulesError(ValueError):
    """The rule file is malformed: names the rule and the problem."""


@dataclass(frozen=True)
class IdentifierRule:
    id: str
    regex: str
    check: str | None = None
    keep_values: frozenset[str] = frozenset()
    token_shape: str | None = None


def load_rules(path: str | Path | None = None) -> tuple[str, list[IdentifierRule]]:
    """(placeholder, rules) of `path` (default: schemas/identifiers.toml), checked."""
    path = Path(path or DEFAULT_RULES)
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    placeholder = data.get("placeholder")
    if not isinstance(placeholder, str) or not placeholder:
        raise IdentifierRulesError(f"{path}: placeholder must be a non-empty string")
    rules: list[IdentifierRule] = []
    for i, raw in enumerate(data.get("rule", [])):
        rid = raw.get("id") or f"#{i}"
        unknown = set(raw) - _RULE_KEYS
        if unknown:
            raise IdentifierRulesError(f"{path}: rule {rid}: unknown keys {sorted(unknown)}")
        if any(r.id == rid for r in rules):
            raise IdentifierRulesError(f"{path}: rule {rid}: id used twice")
        check = raw.get("check")
        if check is not None and check not in _CHECKS:
            raise IdentifierRulesError(f"{path}: rule {rid}: check must be one of {_CHECKS}")
        if not isinstance(raw.get("regex"), str):
            raise IdentifierRulesError(f"{path}: rule {rid}: regex missing")
        try:
            re2.compile(raw["regex"])
        except re2.error as exc:
            raise IdentifierRulesError(f"{path}: rule {rid}: bad regex: {exc}") from exc
        rules.append(IdentifierRule(rid, raw["regex"], check,
                                    frozenset(v.lower() for v in raw.get("keep_values", ())),
                                    raw.get("token_shape")))
    return placeholder, rules


def luhn_ok(digits: str) -> bool:
    """True when the last digit is the Luhn check digit of the others (IMEI, card numbers)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _in_spaced_path(text: str, start: int) -> bool:
    """True when the word before `start` (across one blank) begins a path with blanks in it
    (`C:\\Program Files\\X`, `\\\\srv\\my share\\x`): it holds a drive, starts at a separator or
    holds two of them. `by CONTOSO\\a CONTOSO\\b` is two accounts."""
    before = text[:start]
    stripped = before.rstrip()
    if len(stripped) == len(before) or not stripped.split():
        return False
    word = stripped.rsplit(None, 1)[-1]
    return (":\\" in word or ":/" in word or word[0] in "\\/"
            or word.count("\\") + word.count("/") >= 2)


class IdentifierScrubber:
    """The rules of one file, compiled once; call it on a string."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.placeholder, self.rules = load_rules(path)
        # RE2 throughout: linear in the value's length whatever it holds (a backtracking engine
        # took 0.15 s on 2,000 letters for the hidden-character rule)
        self._compiled = [(r, re2.compile(r.regex)) for r in self.rules]
        # one scan of every rule at once decides whether any rule needs to run
        self._any = re2.compile("|".join(f"(?:{_unnamed(r.regex)})" for r in self.rules))
        shapes = [r.token_shape for r in self.rules if r.token_shape]
        self.token_shape = "|".join(f"(?:{s})" for s in shapes) if shapes else "$^"

    def _replace(self, rule: IdentifierRule, rx: re2._Regexp, m: re2._Match, text: str) -> str | None:
        """The match with its identifier replaced, or None when the rule keeps it."""
        i = rx.groupindex.get("id", 0)
        s, e = m.span(i)
        value = text[s:e]
        if rule.check == "luhn" and not luhn_ok(re.sub(r"[^0-9]", "", value)):
            return None
        if rule.check == "not_path" and _in_spaced_path(text, s):
            return None
        if rule.keep_values:
            keys = {value.lower()}
            d = rx.groupindex.get("domain")
            if d is not None and m.start(d) >= 0:
                keys.add(text[m.start(d):m.end(d)].lower())
            if not keys.isdisjoint(rule.keep_values):
                return None
        return text[m.start():s] + self.placeholder + text[e:m.end()]

    def __call__(self, text: str) -> tuple[str, int]:
        """(text with every raw identifier replaced by the placeholder, number of replacements)."""
        if self._any.search(text) is None:
            return text, 0
        count = 0
        for rule, rx in self._compiled:
            m = rx.search(text)
            if m is None:
                continue
            parts, done = [], 0
            while m is not None:
                out = self._replace(rule, rx, m, text)
                if out is None:  # kept: look again from the next character
                    nxt = m.start() + 1
                else:
                    # keep what follows the identifier: its boundary may open the next match
                    nxt = m.end(rx.groupindex.get("id", 0))
                    parts += [text[done:m.start()], out[: len(out) - (m.end() - nxt)]]
                    done = nxt
                    count += 1
                m = rx.search(text, max(nxt, done)) if max(nxt, done) <= len(text) else None
            text = "".join(parts) + text[done:]
        return text, count


def _unnamed(regex: str) -> str:
    """`regex` with its named groups made plain, so that rules can be joined into one pattern."""
    return re.sub(r"\(\?P<[A-Za-z_]+>", "(?:", regex)


_DEFAULT: IdentifierScrubber | None = None


def default_scrubber() -> IdentifierScrubber:
    """The scrubber of schemas/identifiers.toml, compiled once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = IdentifierScrubber()
    return _DEFAULT


def scrub_identifiers(text: str) -> tuple[str, int]:
    """Replace raw identifiers in `text` by the placeholder; (new text, replacements)."""
    if not text:
        return text, 0
    return default_scrubber()(text)


def token_shape() -> str:
    """RE2 pattern finding every single plain token some rule could change (for the clean-proof)."""
    return default_scrubber().token_shape
