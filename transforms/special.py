"""Special categories of personal data (GDPR Art. 9): find them by field name, at any depth.

POLICY.md promise 2: such fields are dropped wherever they appear and counted.
Dropping is guaranteed by the allow-list (a special-category name is never
allowed); this module makes the count and the report possible.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from pathlib import Path

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^a-z0-9]+")
_NATIVE_SPLIT = re.compile(r"[\W_]+")
_PREFIX_MIN = 6  # terms this long also match as a word prefix ("religio" -> "religious")
_UNSEEN = object()
_NGRAM_MAX = 4
_CONFUSABLES_FILE = Path(__file__).resolve().parent.parent / "schemas" / "confusables.txt"
# Digits and symbols read as letters, and the letters a look-alike could stand for: both sides of a
# comparison are brought to this "loose" form, so `h3alth`, `hea1th` and `heaIth` all read `heaith`.
LOOSE = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "l": "i"})


def _load_confusables() -> dict[int, str]:
    table: dict[int, str] = {}
    for line in _CONFUSABLES_FILE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            code, _, letter = line.partition(";")
            table[int(code, 16)] = letter
    return table


_CONFUSABLES = _load_confusables()
# Latin letters with a stroke or ligatures: no decomposition takes them to ASCII (`muzułmanin`, `Straße`).
_CONFUSABLES.update({ord(k): v for k, v in {
    "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ø": "o", "Ø": "O", "ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE",
    "œ": "oe", "Œ": "OE", "ħ": "h", "Ħ": "H", "ŧ": "t", "Ŧ": "T", "þ": "th", "Þ": "TH", "ð": "d", "Ð": "D"}.items()
    if ord(k) not in _CONFUSABLES})


def skeleton(key: str) -> str:
    """`key` in ASCII letters where a character only looks like one (UTS #39 confusables:
    Cyrillic `е`, Greek `Ι`, small capital `ʜ` ...), compatibility forms folded (NFKC: full-width,
    mathematical letters), accents removed; other characters are dropped. Case is kept for words."""
    if key.isascii():
        return key
    out = []
    for ch in unicodedata.normalize("NFKC", key):
        if ch.isascii():
            out.append(ch)
            continue
        mapped = _CONFUSABLES.get(ord(ch))
        if mapped is None:
            mapped = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
            if not mapped:
                mapped = _CONFUSABLES.get(ord(ch.lower()), "")
            out.append(mapped)
        else:
            out.append(mapped.upper() if ch.isupper() and not ch.islower() else mapped)
    return "".join(out)


_DROPPED_CONTROLS = frozenset("\x85\u2028\u2029")
_WORD_SPLIT_BY_LINE = re.compile(r"(?<=[A-Za-z0-9_])[\r\n]+(?=[A-Za-z0-9_])")
_MIXED_WORD = re.compile(r"\w+")


def fold_lookalikes(text: str, join_lines: bool = True) -> str:
    """`text` as a reader sees it, for the secret scan of text that hides a keyword or token:
    NFKC, invisible characters removed (zero-width, soft hyphen, bidi controls, C0/C1 controls
    but tab and line breaks, NEL, line and paragraph separators), accents removed, a line break
    inside a word removed, and in a word that mixes ASCII with Cyrillic or Greek letters those
    letters read as their Latin look-alike (`раsswоrd` -> `password`; one without a look-alike
    reads `x`, so `sk_live_sокrq...` is still one token). Other scripts stay as they are.
    `join_lines=False` keeps line breaks: joining them merges the lines of a script (`open HOST` /
    `user NAME PW`), which the rules that read line by line must see first."""
    out = []
    for ch in unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text)):
        cat = unicodedata.category(ch)
        if cat == "Cf" or cat == "Mn" or ch in _DROPPED_CONTROLS or (cat == "Cc" and ch not in "\t\n\r"):
            continue
        out.append(ch)
    folded = unicodedata.normalize("NFC", "".join(out))
    if join_lines:
        folded = _WORD_SPLIT_BY_LINE.sub("", folded)
    if folded.isascii():
        return folded
    return _MIXED_WORD.sub(_latin_lookalikes, folded)


_HIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")


def hides_characters(text: str) -> bool:
    """True when `text` has characters a reader does not see (controls, zero-width, soft hyphen, bidi,
    line separators) or a word that mixes ASCII with Greek or Cyrillic letters: the signs of a
    keyword or token spelled to slip past a scan."""
    if text.isascii():
        return _HIDDEN.search(text) is not None
    return _HIDDEN.search(text) is not None or any(
        _latin_lookalikes(m) != m[0] for m in _MIXED_WORD.finditer(text) if not m[0].isascii())


def _latin_lookalikes(m: re.Match) -> str:
    word = m[0]
    if word.isascii() or not any(c.isascii() and c.isalnum() for c in word):
        return word
    out = []
    for ch in word:
        if not ch.isascii() and unicodedata.name(ch, "").startswith(("CYRILLIC", "GREEK")):
            mapped = _CONFUSABLES.get(ord(ch)) or _CONFUSABLES.get(ord(ch.lower())) or "x"
            out.append(mapped.upper() if ch.isupper() else mapped)
        else:
            out.append(ch)
    return "".join(out)


_SWITCH_NAME = re.compile(r"(?<![\w-])(?:--?|/)(?P<name>[^\W\d_]{1,40})(?![\w-])")


def _lookalike_switch(m: re.Match) -> str:
    name = m["name"]
    if name.isascii():
        return m[0]
    out = []
    for ch in name:
        if ch.isascii():
            out.append(ch)
            continue
        mapped = _CONFUSABLES.get(ord(ch)) if unicodedata.name(ch, "").startswith(("CYRILLIC", "GREEK")) else None
        if mapped is None or not mapped.isascii():
            return m[0]        # a word of its own script (`-пароль`), not a disguised switch
        out.append(mapped.upper() if ch.isupper() else mapped)
    return m[0][: m.start("name") - m.start()] + "".join(out)


def latin_lookalike_words(text: str) -> str:
    """`text` with the Cyrillic and Greek look-alikes read as Latin where they disguise a command
    line: in a word that mixes them with ASCII (`sshраss`), and in a switch name written only in
    look-alike letters (`-р`, `--раss`, `/Р`). Words of their own script stay (`пароль`)."""
    if text.isascii():
        return text
    return _SWITCH_NAME.sub(_lookalike_switch, _MIXED_WORD.sub(_latin_lookalikes, text))


def words(key: str) -> list[str]:
    """`healthStatus` / `health-status` / `Santé_Données` / `hеalth` (Cyrillic е) -> ['health', ...]."""
    return [w for w in _SPLIT.split(_CAMEL.sub("_", skeleton(key)).lower()) if w]


def loose(word: str) -> str:
    """Digits for letters and l/i look-alikes folded: `h3a1th` -> `heaith`, `health` -> `heaith`."""
    return word.translate(LOOSE)


def _candidates(ws: list[str]) -> list[str]:
    """Forms a category term is looked for in: each word, runs of single letters joined
    (`h.e.a.l.t.h`), neighbouring words joined up to four (`trade.union`), all words joined."""
    forms = list(ws)
    run: list[str] = []
    for w in [*ws, ""]:
        if len(w) == 1:
            run.append(w)
            continue
        if len(run) > 1:
            forms.append("".join(run))
        run = []
    for size in range(2, _NGRAM_MAX + 1):
        forms.extend("".join(ws[i:i + size]) for i in range(len(ws) - size + 1))
    if 1 < len(ws) <= 12:
        forms.append("".join(ws))
    return list(dict.fromkeys(loose(f) for f in forms))  # in a fixed order: the first category found wins


def is_latin(term: str) -> bool:
    """True when every letter of `term` is Latin (ASCII once accents are removed): such a term is
    read on the ASCII skeleton; any other (`здоровье`, `健康`) in its own script."""
    return all(ch.isascii() or not ch.isalpha() or unicodedata.normalize("NFKD", ch).encode("ascii", "ignore")
               for ch in term)


def native_words(key: str) -> list[str]:
    """`key` in its own script: NFKC, case folded, accents removed, split like `words`
    (`Здоровье_пользователя` -> ['здоровье', 'пользователя'], `健康状态` -> ['健康状态'])."""
    text = unicodedata.normalize("NFKC", _CAMEL.sub("_", key)).casefold()
    text = "".join(ch for ch in unicodedata.normalize("NFD", text) if not unicodedata.combining(ch))
    return [w for w in _NATIVE_SPLIT.split(unicodedata.normalize("NFC", text)) if w]


def is_cjk(ch: str) -> bool:
    """True for a Chinese, Japanese or Korean character: such text has no separators between words."""
    return _is_cjk(ch)


def _is_cjk(ch: str) -> bool:
    return ch >= "⺀" and (ch <= "鿿" or "가" <= ch <= "힯" or "豈" <= ch <= "﫿")


class SpecialCategoryMatcher:
    """Tells whether a field name denotes a special category, cached per name.

    Latin terms are compared on the ASCII skeleton (look-alike letters, digits for letters);
    terms in other scripts on the name's own script (`native_words`): a whole word, a word
    prefix for terms of 6+ characters, and anywhere in the name for Chinese, Japanese and
    Korean terms, which are written without separators (`用户健康状态`)."""

    def __init__(self, categories: Mapping[str, tuple[str, ...]]) -> None:
        self._exact: dict[str, str] = {}
        self._prefix: list[tuple[str, str]] = []
        self._native: dict[str, str] = {}
        self._native_prefix: list[tuple[str, str]] = []
        self._cjk: list[tuple[str, str]] = []
        for category, terms in categories.items():
            for term in terms:
                if not is_latin(term):
                    norm = "".join(native_words(term))
                    if any(map(_is_cjk, norm)):
                        self._cjk.append((norm, category))
                    self._native.setdefault(norm, category)
                    if len(norm) >= _PREFIX_MIN:
                        self._native_prefix.append((norm, category))
                    continue
                norm = loose("".join(words(term)))
                self._exact.setdefault(norm, category)
                if len(norm) >= _PREFIX_MIN:
                    self._prefix.append((norm, category))
        self._cache: dict[str, str | None] = {}
        self.ordinary: set[str] = set()  # names known not to be special (the context adds its allowed names)

    def category_of(self, key: str) -> str | None:
        """Category name if `key` is a special-category field name, else None."""
        hit = self._cache.get(key, _UNSEEN)
        if hit is not _UNSEEN:
            return hit  # type: ignore[return-value]  # a cached str | None
        found = None
        for cand in _candidates(words(key)) if isinstance(key, str) else ():
            found = self._exact.get(cand)
            if found:
                break
            for term, category in self._prefix:
                if cand.startswith(term):
                    found = category
                    break
            if found:
                break
        if found is None and isinstance(key, str) and not key.isascii():
            found = self._native_category(native_words(key))
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key] = found
        return found

    def _native_category(self, ws: list[str]) -> str | None:
        """The category of a name with words in a script other than Latin, or None."""
        joined = "".join(ws)
        for cand in dict.fromkeys([*ws, *("".join(ws[i:i + 2]) for i in range(len(ws) - 1)), joined]):
            found = self._native.get(cand)
            if found:
                return found
            for term, category in self._native_prefix:
                if cand.startswith(term):
                    return category
        if any(map(_is_cjk, joined)):
            for term, category in self._cjk:
                if term in joined:
                    return category
        return None

    def may_contain(self, rec: object, raw: bytes) -> bool:
        """False only when the parsed line `rec` (from the bytes `raw`) certainly has no
        special-category key: the cheap test that lets most lines skip `find`.

        The keys of the top-level object and of the objects directly inside it
        are checked against a set of names known to be ordinary (set operations
        in C). Every JSON object in a line starts with one `{` byte, so when the
        line has no more `{` than the objects checked, there is no deeper object
        and no key was missed; otherwise (deeper objects, or braces inside
        strings) the answer is "maybe" and the caller walks the record in full.
        """
        if type(rec) is not dict:
            return True
        if not self._ordinary_keys(rec):
            return True
        objects = 1
        for value in rec.values():
            if type(value) is dict:
                objects += 1
                if not self._ordinary_keys(value):
                    return True
        return raw.count(b"{") != objects

    def _ordinary_keys(self, obj: dict) -> bool:
        ordinary = self.ordinary
        if ordinary.issuperset(obj):
            return True
        for key in obj:
            if key in ordinary:
                continue
            if self.category_of(key):
                return False
            if len(ordinary) < 100_000 and len(key) <= 128:  # input chooses these names: bound them
                ordinary.add(key)
        return True

    def find(self, obj: object, path: str = "") -> Iterator[tuple[str, str, str]]:
        """Yield (path, key, category) for every special-category key at any depth (no recursion limit)."""
        stack = [(obj, path)]
        while stack:
            node, where = stack.pop()
            if isinstance(node, dict):
                for key, value in node.items():
                    sub = f"{where}.{key}" if where else str(key)
                    category = self.category_of(key) if isinstance(key, str) else None
                    if category:
                        yield sub, key, category
                    elif isinstance(value, dict | list):
                        stack.append((value, sub))
            elif isinstance(node, list):
                stack.extend((item, f"{where}[]") for item in reversed(node) if isinstance(item, dict | list))
