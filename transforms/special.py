"""Special categories of personal data (GDPR Art. 9): find them by field name, at any depth.

POLICY.md promise 2: such fields are dropped wherever they appear and counted.
Dropping is guaranteed by the allow-list (a special-category name is never
allowed); this module makes the count and the report possible.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^a-z0-9]+")
_PREFIX_MIN = 6
_UNSEEN = object()  # terms this long also match as a word prefix ("religio" -> "religious")


def words(key: str) -> list[str]:
    """`healthStatus` / `health-status` / `Santé_Données` -> ['health', 'status'] ... accents removed."""
    plain = unicodedata.normalize("NFKD", key).encode("ascii", "ignore").decode()
    return [w for w in _SPLIT.split(_CAMEL.sub("_", plain).lower()) if w]


class SpecialCategoryMatcher:
    """Tells whether a field name denotes a special category, cached per name."""

    def __init__(self, categories: Mapping[str, tuple[str, ...]]) -> None:
        self._exact: dict[str, str] = {}
        self._prefix: list[tuple[str, str]] = []
        for category, terms in categories.items():
            for term in terms:
                norm = "".join(words(term))
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
        ws = words(key)
        found = None
        candidates = set(ws)
        for size in (2, 3):
            candidates.update("".join(ws[i:i + size]) for i in range(len(ws) - size + 1))
        for cand in candidates:
            found = self._exact.get(cand)
            if found:
                break
            for term, category in self._prefix:
                if cand.startswith(term):
                    found = category
                    break
            if found:
                break
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key] = found
        return found

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
