"""Special categories of personal data inside free-text VALUES (POLICY.md promise 2).

`transforms/special.py` finds special-category field NAMES (JSON keys): the allow-list drops
those fields. A kept free-text value (command line, path, threat name, app name: every `text`
and `scrub` field) can carry the same data written out: `religion=sunni muslim`,
`{"faith": "roman catholic"}`, `<health>hiv</health>`, `patient diagnosed with brustkrebs`.
Two rules, both failing closed:

1. A pair (`k=v`, `k: v`, `k : v`, JSON `"k": "v"`, XML `<k>v</k>`) whose key reads as a
   special-category name (the matcher of field names: confusable skeleton, digits for letters,
   dotted and glued spellings, other scripts) loses its value, up to the closing quote or tag,
   else up to the next `;` `,` `&` `|` bracket or line break, or the end: `religion=[special]`.
2. A value whose words hold a term of the vocabulary (`schemas/special_values.toml`: conditions,
   medicines, religions, orientations, parties, unions, origins, genetic markers) is replaced
   as a whole by `[special]`: prose has no boundary that would say where the datum ends.

`SpecialText.scrub` returns the new text and the categories found, which are counted like
removed special-category fields. `SpecialText.has_term` is the vocabulary test alone, part of
the proof that a short token is clean (FieldEngine.clean_mask).
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections import Counter
from collections.abc import Collection
from pathlib import Path

import re2

from transforms.special import LOOSE, SpecialCategoryMatcher, is_cjk, is_latin, loose, native_words, skeleton
from transforms.text_values import percent_decoded

SPECIAL = "[special]"
DEFAULT_VALUES = Path(__file__).resolve().parent.parent / "schemas" / "special_values.toml"
_AFFIX_MIN = 4              # letters a `word*` / `*word` term must have before its star
_CONTEXT_REACH = 2          # an acronym counts when a context word is this close
_KEY_CHARS = 64             # longest key word looked at, left of a separator
_CACHE_LIMIT = 50_000
# Words of an ASCII skeleton, camelCase split: `HIVPositive` -> HIV Positive, `CYP2C19`, `Win32`.
_WORD = re.compile(r"[0-9]*[A-Z][A-Z0-9]*(?![a-z])|[A-Z]?[a-z0-9]+")
_SPLIT = re.compile(r"[^a-z0-9]+")
_DIGIT = re.compile(r"[0-9]")
_HEXISH = re.compile(r"[0-9a-f]*[0-9][0-9a-f]*")       # digits here are digits, not letters in disguise
_HEX_WORD = re.compile(r"(?<![a-z0-9])[0-9a-f]*[0-9][0-9a-f]*(?![a-z0-9])")
_CAMEL_HINT = re.compile(r"[a-z0-9][A-Z]|[A-Z][A-Z][a-z]")
_SPACED_HINT = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9][._ -][A-Za-z0-9](?![A-Za-z0-9])")
_SPACED_LETTERS = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9](?P<sep>[._ -])[A-Za-z0-9](?:(?P=sep)[A-Za-z0-9])+"
                             r"(?![A-Za-z0-9])")
_INVISIBLE = ("Mn", "Me", "Cf")  # combining marks, zero-width and soft hyphens, bidi controls
_SEPARATOR = re.compile(r"[:=]")
# Left of a separator, read backwards (the text reversed): blanks, a quote, then one or two key words.
_KEY_BACKWARDS = re.compile(rf"[ \t]{{0,8}}[\"']?(?P<w1>[\w.\-]{{0,{_KEY_CHARS - 1}}}[^\W_])"
                            rf"(?:[ \t]{{1,3}}(?P<w2>[\w.\-]{{0,{_KEY_CHARS - 1}}}[^\W_]))?")
_BLANKS = re.compile(r"[ \t]{0,8}")
# An unquoted value ends at a bracket, `|`, `<`, a double quote or a quote not inside a word
# (`Jehovah's` goes on); at `;` `,` `&` or a line break only when another pair follows (`a, b` goes on,
# and so does a value split over two lines).
_VALUE_END = re.compile(r"[;,&|\r\n<>{}\[\]\"]|'(?![^\W\d_])")
_SOFT_END = frozenset(";,&\r\n")
_NEXT_KEY = re.compile(r"[ \t]{0,8}[\"']?[^\W_][\w.\- ]{0,63}[\"']?[ \t]{0,8}[:=]")
_XML = re.compile(r"<(?P<tag>[^\W\d_][\w.\-:]{0,63})(?:\s[^<>]{0,512})?>(?P<val>[^<]*)")


class SpecialValuesError(ValueError):
    """The vocabulary file is malformed: names the category and the term."""


def fold(word: str) -> str:
    """A word as terms are compared: digits and l/i folded like field names (`h1v` -> `hiv`),
    except in a word of hex digits with a digit (`41d5`, a GUID piece, is not `aids`)."""
    return word if _HEXISH.fullmatch(word) else loose(word)


def value_words(text: str, camel: bool = True) -> list[str]:
    """Words of a value on its confusable skeleton, split at camelCase (`HIVPositive`) unless
    `camel` is False (`AfD`, `ver.di`), folded."""
    skel = skeleton(text)
    raw = " ".join(_WORD.findall(skel)).lower() if camel else " ".join(_SPLIT.split(skel.lower())).strip()
    return _fold_words(raw).split()


def _fold_words(raw: str) -> str:
    """`fold` on every word of `raw` (lower-case words joined by single spaces) at once."""
    out = raw.translate(LOOSE)
    if _DIGIT.search(raw) is None:
        return out
    pieces = []
    pos = 0
    for m in _HEX_WORD.finditer(raw):         # put back the words of hex digits (see fold)
        pieces.append(out[pos:m.start()])
        pieces.append(m.group())
        pos = m.end()
    pieces.append(out[pos:])
    return "".join(pieces)


def probe(text: str) -> str:
    """The words of `text` as the vocabulary's pattern reads them: ` w1 w2 ... ` with the plain
    split, then ` . ` and the camelCase split when it differs (`HivPositive`, but `AfD` too),
    then ` . ` and single letters joined (`h.i.v`). ` . ` keeps a term of several words from
    spanning two of these readings."""
    skel = skeleton(text)
    parts = [_fold_words(" ".join(_SPLIT.split(skel.lower())).strip())]
    if _CAMEL_HINT.search(skel):
        parts.append(_fold_words(" ".join(_WORD.findall(skel)).lower()))
    if _SPACED_HINT.search(skel):
        parts.extend(spaced_letters(skel))
    return " " + " . ".join(parts) + " "


def spaced_letters(text: str) -> list[str]:
    """Single letters joined by one repeated separator, read as one word: `h.i.v` -> `hiv`
    (not `-d -n -a`: switches have two characters between their letters)."""
    return [fold(_SPLIT.sub("", m.group(0).lower())) for m in _SPACED_LETTERS.finditer(skeleton(text))]


def normalise(text: str) -> str:
    """NFKC (full-width letters and colons), without combining marks and invisible characters
    (zero-width, soft hyphen, bidi controls): the text the pair rule reads and cuts."""
    if text.isascii():
        return text
    return "".join(ch for ch in unicodedata.normalize("NFKC", text) if unicodedata.category(ch) not in _INVISIBLE)


class _Index:
    """Terms of one form (Latin skeleton or native script), indexed for a word-by-word scan."""

    def __init__(self) -> None:
        self.first: dict[str, list[tuple[tuple[str, ...], bool, str]]] = {}  # word -> (rest, last is prefix, cat)
        self.prefix: dict[str, list[tuple[str, str]]] = {}                   # first 4 letters -> (stem, cat)
        self.suffix: dict[str, list[tuple[str, str]]] = {}                   # last 4 letters -> (ending, cat)
        self._words: dict[str, tuple[frozenset[str], tuple[tuple[tuple[str, ...], bool, str], ...]]] = {}

    def add(self, ws: list[str], category: str, term: str) -> None:
        star_end = ws[-1].endswith("*")
        star_start = ws[0].startswith("*")
        ws = [w.strip("*") for w in ws]
        if any(len(w) < _AFFIX_MIN for w, star in ((ws[-1], star_end), (ws[0], star_start)) if star):
            raise SpecialValuesError(f"term {term!r}: at least {_AFFIX_MIN} letters next to '*'")
        if star_start:
            if len(ws) != 1 or star_end:
                raise SpecialValuesError(f"term {term!r}: '*word' is one word")
            self.suffix.setdefault(ws[0][-_AFFIX_MIN:], []).append((ws[0], category))
        elif star_end and len(ws) == 1:
            self.prefix.setdefault(ws[0][:_AFFIX_MIN], []).append((ws[0], category))
        else:
            self.first.setdefault(ws[0], []).append((tuple(ws[1:]), star_end, category))

    def _word(self, w: str) -> tuple[frozenset[str], tuple[tuple[tuple[str, ...], bool, str], ...]]:
        """(categories `w` is a term of by itself, terms of several words that start with `w`)."""
        hit = self._words.get(w)
        if hit is None:
            alone: set[str] = set()
            longer = []
            for rest, last_prefix, category in self.first.get(w, ()):
                if rest:
                    longer.append((rest, last_prefix, category))
                else:
                    alone.add(category)
            if len(w) >= _AFFIX_MIN:
                alone.update(c for stem, c in self.prefix.get(w[:_AFFIX_MIN], ()) if w.startswith(stem))
                alone.update(c for end, c in self.suffix.get(w[-_AFFIX_MIN:], ()) if len(w) > len(end)
                             and w.endswith(end))
            hit = (frozenset(alone), tuple(longer))
            if len(self._words) >= _CACHE_LIMIT:
                self._words.clear()
            self._words[w] = hit
        return hit

    def scan(self, ws: list[str]) -> set[str]:
        """Categories of the terms found in the words `ws` (whole words, in order)."""
        found: set[str] = set()
        n = len(ws)
        word = self._word
        for i, w in enumerate(ws):
            alone, longer = word(w)
            if alone:
                found |= alone
            for rest, last_prefix, category in longer:
                k = len(rest)
                if i + k >= n:
                    continue
                if all(ws[i + 1 + j] == r for j, r in enumerate(rest[:-1] if last_prefix else rest)) and (
                        not last_prefix or ws[i + k].startswith(rest[-1])):
                    found.add(category)
        return found


class Vocabulary:
    """The special-category value terms of `schemas/special_values.toml`, ready to scan a value."""

    def __init__(self, path: str | Path | None = None, categories: Collection[str] | None = None) -> None:
        path = Path(path or DEFAULT_VALUES)
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        unknown = set(data) - {"terms", "acronyms", "keys"}
        if unknown:
            raise SpecialValuesError(f"{path}: unknown tables {sorted(unknown)}")
        self._latin: dict[str, list[str]] = {}   # category -> regex pieces over `probe` words
        self._screen: list[tuple[list[str], bool, bool]] = []  # (words, '*word', 'word*') of every Latin term
        self.native = _Index()
        self.unspaced: list[tuple[str, str]] = []
        self.acronyms: dict[str, str] = {}
        terms = data.get("terms", {})
        acronyms = dict(data.get("acronyms", {}))
        context = acronyms.pop("context", [])
        for category in {*terms, *acronyms}:
            if categories is not None and category not in categories:
                raise SpecialValuesError(f"{path}: {category!r} is not a category of [special_categories]")
        for category, items in terms.items():
            for term in _strings(path, category, items):
                try:
                    self._add(term, category)
                except SpecialValuesError as exc:
                    raise SpecialValuesError(f"{path}: {category}: {exc}") from None
        for category, items in acronyms.items():
            for term in _strings(path, category, items):
                self.acronyms["".join(value_words(term))] = category
        self._acronym_words = frozenset(self.acronyms)
        self.context = frozenset("".join(value_words(w)) for w in _strings(path, "context", context))
        keys = data.get("keys", {})
        self.keys_not_in_text = frozenset(loose("".join(value_words(k)))
                                          for k in _strings(path, "keys", keys.get("not_in_text", [])))
        self._compile()

    def _compile(self) -> None:
        """One RE2 set, a pattern per category: one linear scan of a value's words finds them all."""
        options = re2.Options()
        options.max_mem = 64 << 20
        self._set = re2.Set.SearchSet(options)
        self._set_categories = []
        for category, pieces in self._latin.items():
            self._set.Add(f" (?:{'|'.join(pieces)}) ".encode())
            self._set_categories.append(category)
        self._set.Compile()
        self._screen_re = re2.compile(_screen_pattern(self._screen + [([w], False, False) for w in self.acronyms]),
                                      options)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_set", "_set_categories")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._compile()

    def _add(self, term: str, category: str) -> None:
        if not is_latin(term):
            ws = native_words(term)
            if any(map(is_cjk, "".join(ws))):
                self.unspaced.append(("".join(ws), category))
                return
            star_end, star_start = term.endswith("*"), term.startswith("*")
            ws[-1] += "*" * star_end
            ws[0] = "*" * star_start + ws[0]
            self.native.add(ws, category, term)
            return
        ws = [w for w in re.split(r"[^a-z0-9*]+", skeleton(term).lower()) if w]
        if not ws:
            raise SpecialValuesError(f"term {term!r} has no letters")
        if any("*" in w.strip("*") for w in ws) or any(w.startswith("*") for w in ws[1:]) or any(
                w.endswith("*") for w in ws[:-1]):
            raise SpecialValuesError(f"term {term!r}: '*' only at the start of a single word or at the end")
        star_start, star_end = ws[0].startswith("*"), ws[-1].endswith("*")
        ws = [fold(w.strip("*")) for w in ws]
        if (star_start and len(ws[0]) < _AFFIX_MIN) or (star_end and len(ws[-1]) < _AFFIX_MIN):
            raise SpecialValuesError(f"term {term!r}: at least {_AFFIX_MIN} letters next to '*'")
        if star_start and (len(ws) > 1 or star_end):
            raise SpecialValuesError(f"term {term!r}: '*word' is one word")
        self._screen.append((ws, star_start, star_end))
        piece = " ".join(ws)
        if star_start:
            piece = "[a-z0-9]+" + piece          # strictly longer: `brustkrebs`, not `krebs` itself
        if star_end:
            piece += "[a-z0-9]*"
        self._latin.setdefault(category, []).append(piece)

    def categories(self, text: str) -> set[str]:
        """Categories of every term in `text` (empty when there is none). An ASCII text the screen
        (`_screen_pattern`, one RE2 search of the text as it is) does not match has none."""
        if text.isascii() and _SPACED_HINT.search(text) is None and self._screen_re.search(text) is None:
            return set()
        return self.scan(text)

    def screen(self, text: str) -> bool:
        """The screen alone: False only when `scan` certainly finds nothing in an ASCII `text`."""
        return not text.isascii() or _SPACED_HINT.search(text) is not None or self._screen_re.search(text) is not None

    def scan(self, text: str) -> set[str]:
        """`categories` without the screen: every value's words against every term."""
        words = probe(text)
        found = {self._set_categories[i] for i in self._set.Match(words.encode()) or ()}
        if self.acronyms:
            ws = words.split()
            if not self._acronym_words.isdisjoint(ws):
                for i, w in enumerate(ws):
                    category = self.acronyms.get(w)
                    if category and not self.context.isdisjoint(ws[max(0, i - _CONTEXT_REACH):i + 1 + _CONTEXT_REACH]):
                        found.add(category)
        if not text.isascii():
            nws = native_words(text)
            found |= self.native.scan(nws)
            if self.unspaced:
                joined = "".join(nws)
                found.update(category for term, category in self.unspaced if term in joined)
        return found


# What a folded letter of a term can stand for in a value as written (see `fold`).
_SOURCES = {"i": "iIlL1", "o": "oO0", "e": "eE3", "a": "aA4", "s": "sS5", "t": "tT7", "b": "bB8", "g": "gG9"}


def _screen_pattern(terms: list[tuple[list[str], bool, bool]]) -> str:
    """One pattern that matches an ASCII value as written whenever `probe` + the term set would
    find a term in it (it may match more; the exact scan decides): each folded letter a class of
    what folds to it in either case, words separated by any non-alphanumerics or none (camelCase),
    a term starting after a non-alphanumeric or at an upper-case letter (where camelCase splits),
    ending before anything but a lower-case letter or digit."""
    def cls(ch: str, upper: bool = False) -> str:
        chars = _SOURCES.get(ch, ch + ch.upper() if ch.isalpha() else ch)
        if upper:
            chars = "".join(c for c in chars if not c.islower())
        return f"[{chars}]" if len(chars) > 1 else re.escape(chars)

    def body(ws: list[str], upper_first: bool) -> str:
        parts = []
        for i, w in enumerate(ws):
            parts.append("".join(cls(c, upper_first and i == 0 and j == 0) for j, c in enumerate(w)))
        return "[^A-Za-z0-9]*".join(parts)

    groups: dict[tuple[bool, bool], list[tuple[str, str]]] = {}
    for ws, star_start, star_end in terms:
        groups.setdefault((star_start, star_end), []).append((body(ws, False), body(ws, True)))
    alternatives = []
    for (star_start, star_end), bodies in groups.items():
        any_case = "|".join(b for b, _ in bodies)
        end = "" if star_end else "(?:$|[^a-z0-9])"
        if star_start:
            alternatives.append(f"[A-Za-z0-9](?:{any_case}){end}")
        else:
            upper = "|".join(u for _, u in bodies)
            alternatives.append(f"(?:(?:^|[^A-Za-z0-9])(?:{any_case})|(?:{upper})){end}")
    return "|".join(alternatives)


def _strings(path: Path, name: str, items: object) -> list[str]:
    if not isinstance(items, list) or not all(isinstance(t, str) and t.strip() for t in items):
        raise SpecialValuesError(f"{path}: {name}: must be a list of non-empty strings")
    return items


class SpecialText:
    """The two rules of this module with the run's name matcher and vocabulary; cached per text."""

    def __init__(self, names: SpecialCategoryMatcher, vocabulary: Vocabulary | None = None) -> None:
        self.names = names
        self.vocabulary = vocabulary or Vocabulary(categories=None)
        self._cache: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._terms: dict[str, bool] = {}

    def has_term(self, text: str) -> bool:
        """True when the vocabulary finds a term in `text` (the pair rule needs a `:`, `=` or `<`)."""
        hit = self._terms.get(text)
        if hit is None:
            hit = bool(self.vocabulary.categories(text))
            if len(self._terms) >= _CACHE_LIMIT:
                self._terms.clear()
            self._terms[text] = hit
        return hit

    def scrub(self, text: str) -> tuple[str, tuple[str, ...]]:
        """(text without special-category data, sorted categories found; empty when unchanged)."""
        hit = self._cache.get(text)
        if hit is not None:
            return hit
        out = scrub_special(text, self.names, self.vocabulary)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[text] = out
        return out

    def __getstate__(self) -> dict:
        return {"names": self.names, "vocabulary": self.vocabulary}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["names"], state["vocabulary"])  # type: ignore[misc]


def key_category(key: str, names: SpecialCategoryMatcher, vocabulary: Vocabulary) -> str | None:
    """Category of a pair's key (one or two words), unless it is a name the vocabulary says is
    ordinary as a key inside text (`Fingerprint: SHA256:...` of a certificate)."""
    if not key:
        return None
    category = names.category_of(key)
    if category and loose("".join(value_words(key))) in vocabulary.keys_not_in_text:
        return None
    return category


def pair_spans(text: str, names: SpecialCategoryMatcher,
               vocabulary: Vocabulary) -> list[tuple[int, int, str]]:
    """(start, end, category) of every value of a special-category pair in `text` (normalised)."""
    spans: list[tuple[int, int, str]] = []
    backwards: str | None = None
    size = len(text)
    for sep in _SEPARATOR.finditer(text):
        s = sep.start()
        if backwards is None:
            backwards = text[::-1]
        m = _KEY_BACKWARDS.match(backwards, size - s)
        if m is None:
            continue
        w1 = m.group("w1")[::-1]
        w2 = (m.group("w2") or "")[::-1]
        category = (key_category(w1, names, vocabulary) or key_category(w2, names, vocabulary)
                    or (key_category(w2 + w1, names, vocabulary) if w2 else None))
        if not category:
            continue
        start = _BLANKS.match(text, s + 1).end()  # type: ignore[union-attr]  # matches the empty string
        if start < size and text[start] in "\"'":
            end = text.find(text[start], start + 1)
            start, end = start + 1, size if end < 0 else end
        else:
            end = _value_end(text, start)
        while end > start and text[end - 1] in " \t":
            end -= 1
        if end > start:
            spans.append((start, end, category))
    if "<" in text:
        for m in _XML.finditer(text):
            category = key_category(m.group("tag"), names, vocabulary)
            if category and m.group("val").strip():
                spans.append((m.start("val"), m.end("val"), category))
    return spans


def _value_end(text: str, start: int) -> int:
    """Where an unquoted value that starts at `start` ends (see _VALUE_END): fail closed, the end
    of the text when nothing ends it."""
    pos = start
    while True:
        stop = _VALUE_END.search(text, pos)
        if stop is None:
            return len(text)
        if stop.group() not in _SOFT_END or _NEXT_KEY.match(text, stop.end()):
            return stop.start()
        pos = stop.end()


def scrub_special(text: str, names: SpecialCategoryMatcher, vocabulary: Vocabulary) -> tuple[str, tuple[str, ...]]:
    """Rule 1 (pairs lose their value), then rule 2 (a term left anywhere: the whole value goes).
    A percent-encoded value (`diagnosis%3A%20HIV%20positive`) is read again decoded, from what the
    first reading left; the decoded form is returned when that reading found more."""
    out, found = _scrub_special(text, names, vocabulary)
    decoded = percent_decoded(out)
    if decoded is not None:
        again, more = _scrub_special(decoded, names, vocabulary)
        if more:
            return again, tuple(sorted(set(found) | set(more)))
    return out, found


def _scrub_special(text: str, names: SpecialCategoryMatcher, vocabulary: Vocabulary) -> tuple[str, tuple[str, ...]]:
    if not text:
        return text, ()
    norm = normalise(text)
    found: set[str] = set()
    out = norm
    if ":" in norm or "=" in norm or "<" in norm:
        spans = pair_spans(norm, names, vocabulary)
        if spans:
            pieces = []
            pos = 0
            for start, end, category in sorted(spans):
                found.add(category)
                if end <= pos:
                    continue              # inside a value already cut
                pieces.append(norm[pos:max(pos, start)])
                pieces.append(SPECIAL if start >= pos else "")
                pos = end
            pieces.append(norm[pos:])
            out = "".join(pieces)
    terms = vocabulary.categories(out)
    if terms:
        found |= terms
        out = SPECIAL
    if not found:
        return text, ()
    return out, tuple(sorted(found))


_VOCABULARIES: dict[frozenset[str], Vocabulary] = {}


def default_vocabulary(categories: Collection[str]) -> Vocabulary:
    """The vocabulary of schemas/special_values.toml, checked against the policy's categories;
    loaded once per process."""
    key = frozenset(categories)
    vocabulary = _VOCABULARIES.get(key)
    if vocabulary is None:
        vocabulary = _VOCABULARIES[key] = Vocabulary(categories=key)
    return vocabulary


def count_special_values(stats: Counter, field: str, categories: tuple[str, ...], n: int = 1) -> None:
    """Count `n` values of `field` (`data.command`, `event_id`) that held special-category data of
    `categories`, beside the removed special-category fields of the report: one per value and
    category in `special_category/<category>/value:<field>`, one per value in
    `values_scrubbed/special_category`."""
    if n:
        stats["values_scrubbed/special_category"] += n
        for category in categories:
            stats[f"special_category/{category}/value:{field}"] += n
