"""Field transforms: one pure function per transform name in the policy.

Each transform has a check (is the input of an acceptable type? if not, the
record is quarantined: POLICY.md promise 10) and a value function (what leaves
the pipeline). `FieldEngine.columns` applies a rule to a whole column of a
batch, computing each distinct value once.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from schemas.policy import FieldRule
from transforms.identifiers import token_shape
from transforms.pseudonym import Pseudonymizer
from transforms.secrets import HEX_ID_MAX, HEX_ID_OPEN, SAFE_SHORT_MAX, SAFE_TOKEN_OPEN, SID_LIKE
from transforms.special_text import SpecialText
from transforms.text import TextScrubber, scrub_account
from transforms.urls import UrlSanitizer

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_RFC3339_NO_OFFSET = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?")
_IDENTIFIER_SHAPE = token_shape()  # compiled once here, not in every Arrow kernel call's argument
_VECTOR_MIN = 64  # shorter lists of new values are proven clean value by value (TextScrubber)
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_INT64 = (-(2**63), 2**63 - 1)
MEMO_ENTRIES = 20_000  # per rule; a memo that grows past this is started afresh


class FieldTypeError(ValueError):
    """The value has a type the contract does not allow; the record is quarantined."""


def parse_rfc3339(value: object) -> datetime:
    """RFC 3339 with a mandatory offset ('Z' or +hh:mm), returned in UTC."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        if isinstance(value, str) and _RFC3339_NO_OFFSET.fullmatch(value):
            raise FieldTypeError("timestamp without time zone offset")
        raise FieldTypeError("not an RFC 3339 timestamp")
    try:
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        raise FieldTypeError("not an RFC 3339 timestamp (out of range)") from None


def parse_date_or_rfc3339(value: str) -> datetime:
    """A date YYYY-MM-DD (00:00 UTC of that day) or an RFC 3339 timestamp, in UTC. Only the
    extended date form: fromisoformat alone would also take 20270101 or 2027-W01-1."""
    if isinstance(value, str) and _DATE.fullmatch(value):
        try:
            return datetime(int(value[:4]), int(value[5:7]), int(value[8:]), tzinfo=UTC)
        except ValueError:
            raise FieldTypeError("not a valid date") from None
    return parse_rfc3339(value)


TIME_PARSERS = {"timestamp": parse_rfc3339, "date_or_timestamp": parse_date_or_rfc3339}


def check(rule: FieldRule, value: Any) -> None:
    """Raise FieldTypeError when `value` (not None) cannot be taken for this rule."""
    t = rule.transform
    if t in ("int", "float", "coarse_coordinate"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldTypeError(f"expected a number, got {type(value).__name__}")
        if t == "int" and (isinstance(value, float) and not value.is_integer() or not _INT64[0] <= value <= _INT64[1]):
            raise FieldTypeError("expected an integer")
        if t == "coarse_coordinate" and not -180.0 <= value <= 180.0:
            raise FieldTypeError("coordinate out of range")
    elif t == "bool":
        if not isinstance(value, bool):
            raise FieldTypeError(f"expected true/false, got {type(value).__name__}")
    elif t in ("text", "pseudonym"):
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise FieldTypeError(f"expected a string, got {type(value).__name__}")
    elif not isinstance(value, str):
        raise FieldTypeError(f"expected a string, got {type(value).__name__}")
    elif t in TIME_PARSERS:
        TIME_PARSERS[t](value)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


class _Special(tuple):
    """The outputs of a free-text value that held special-category data, with its categories
    (counted per row by the caller, like a removed special-category field)."""

    categories: tuple[str, ...]

    def __new__(cls, outputs: tuple, categories: tuple[str, ...]) -> _Special:
        self = super().__new__(cls, outputs)
        self.categories = categories
        return self


def _hex_id(values: pa.Array, size: pa.Array) -> pa.Array:
    """Where a value is a whole `HEX_ID` (its open pattern and its length bound)."""
    return pc.and_(pc.match_substring_regex(values, f"^{HEX_ID_OPEN}$"), pc.less_equal(size, HEX_ID_MAX))


class FieldEngine:
    """Applies the policy's transforms with the run's key and per-value caches."""

    def __init__(self, pseudonymizer: Pseudonymizer, urls: UrlSanitizer, scrubber: TextScrubber, key: bytes,
                 special: SpecialText | None = None) -> None:
        self.pseudonym = pseudonymizer
        self.urls = urls
        self.scrubber = scrubber
        self.special = special
        self._key = key
        self._memos: dict[int, dict[str, tuple]] = {}
        self._failures: dict[int, dict[str, str]] = {}  # per rule: values whose transform raised
        self._found: dict[int, dict[str, tuple[str, ...]]] = {}  # per rule: values with special-category data
        self._unique: set[int] = set()  # rules whose values were (almost) all new in a large batch

    def _free_text(self, value: str) -> tuple:
        """Every kept string that is not a closed set goes through the free-text rule: POLICY.md
        promise 1 covers every output column, and a secret needs no trigger character
        (`mysql -pS3cret`). Then special-category data in it (promise 2) is removed
        (transforms/special_text.py); such a value comes back as `_Special`, to be counted."""
        out = self.scrubber(value)[0]
        if self.special is None:
            return (out,)
        out, categories = self.special.scrub(out)
        return _Special((out,), categories) if categories else (out,)

    def clean_values(self, rule: FieldRule, values: Sequence[str]) -> list[bool] | None:
        """For a `text` or `scrub` rule, which of the string `values` the free-text rule provably
        leaves unchanged, found for the whole list at once with Arrow's RE2 kernels (a single
        plain token that no secret rule matches); None for other rules or short lists."""
        if rule.transform not in ("text", "scrub") or len(values) < _VECTOR_MIN:
            return None
        return self.clean_mask(pa.array(values, pa.string())).to_pylist()

    def clean_mask(self, values: pa.Array) -> pa.Array:
        """True where the free-text rule provably leaves a string unchanged: a single plain token
        shorter than any secret rule's match (`SAFE_SHORT_TOKEN`, no account SID), or a lower-case
        hex identifier (`HEX_ID`: UUIDs, hashes), not shaped like a raw identifier
        (`transforms/identifiers.py::token_shape`). Small RE2
        kernels over the column; every other value goes through the rule (memoised)."""
        size = pc.binary_length(values)  # both shapes are ASCII: bytes are characters
        short = pc.and_(pc.match_substring_regex(values, f"^{SAFE_TOKEN_OPEN}$"), pc.less_equal(size, SAFE_SHORT_MAX))
        clean = pc.or_(short, _hex_id(values, size))
        clean = pc.and_(clean, pc.invert(pc.match_substring_regex(values, SID_LIKE)))
        # a token shaped like a raw identifier (`50-3F-A9-A3-C3-E3`, 12 or 15 digits) goes through the rule
        clean = pc.and_(clean, pc.invert(pc.match_substring_regex(values, _IDENTIFIER_SHAPE)))
        clean = pc.fill_null(clean, False)
        if self.special is not None:
            clean = self._without_terms(values, clean)
        return clean

    def _without_terms(self, values: pa.Array, clean: pa.Array) -> pa.Array:
        """`clean` without the tokens that hold a special-category term (`homosexual`, `h.i.v`):
        the free-text rule replaces those. Such a token has no `:`, `=` or `<`, so the pair rule
        cannot change it; the vocabulary is asked once per distinct token (memoised). Lower-case
        hex identifiers need no asking: no term is made of hex digits (tests/test_special_text.py)."""
        candidates = pc.unique(values.filter(clean))
        if not len(candidates):
            return clean
        asked = candidates.filter(pc.invert(_hex_id(candidates, pc.binary_length(candidates))))
        has_term = self.special.has_term  # type: ignore[union-attr]
        special = [v for v in asked.to_pylist() if has_term(v)]
        if not special:
            return clean
        return pc.and_(clean, pc.invert(pc.fill_null(pc.is_in(values, value_set=pa.array(special, pa.string())),
                                                     False)))

    def digest(self, value: str) -> str:
        """Keyed digest: identical spam campaigns link, content cannot be guessed back."""
        return hmac.new(self._key, b"digest:" + value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]

    def _scalar(self, rule: FieldRule) -> Callable[[Any], tuple]:
        t = rule.transform
        if t == "text":
            return lambda v: self._free_text(_as_text(v))
        if t == "int":
            return lambda v: (int(v),)
        if t == "float":
            return lambda v: (float(v),)
        if t == "bool":
            return lambda v: (v,)
        if t == "enum":
            allowed = frozenset(rule.values)
            return lambda v: (v if v in allowed else None,)
        if t in TIME_PARSERS:
            parse = TIME_PARSERS[t]
            return lambda v: (parse(v),)
        if t == "url":
            return lambda v: tuple(self.urls.sanitize(v))
        if t == "pseudonym":
            kind = rule.kind or rule.name
            return lambda v: (self.pseudonym(kind, _as_text(v)),)
        if t == "account":
            return lambda v: (scrub_account(v, self.pseudonym),)
        if t == "scrub":
            return self._free_text
        if t == "email_domain":
            return lambda v: (_email_domain(v, self.urls),)
        if t == "digest":
            return lambda v: (self.digest(v), len(v))
        if t == "coarse_coordinate":
            decimals = rule.decimals if rule.decimals is not None else 2
            return lambda v: (round(float(v), decimals),)
        if t == "ip":
            return lambda v: (_ip_literal(v),)
        if t == "sha256":
            return lambda v: (v.lower() if _SHA256.fullmatch(v) else None,)
        raise ValueError(f"no implementation for transform {t!r}")

    def _clean_list(self, rule: FieldRule, values: Sequence[Any]) -> list[bool] | None:
        """`clean_values` over a column that may hold None (or non-strings: then None)."""
        if rule.transform not in ("text", "scrub") or len(values) < _VECTOR_MIN:
            return None
        strings = [v for v in values if v is not None]
        if not _STR_ONLY.issuperset(map(type, strings)):
            return None
        clean = iter(self.clean_values(rule, strings) or ())
        return [False if v is None else next(clean) for v in values]

    @staticmethod
    def _each(fn: Callable[[Any], tuple], name: str, values: Sequence[Any], failed: dict[int, str],
              clean: list[bool] | None = None, special: dict[int, tuple[str, ...]] | None = None) -> list[Any]:
        """The single output column of `fn` over `values`, each computed on its own; values
        marked `clean` (proven unchanged by the rule) are kept as they are."""
        out: list[Any] = []
        append = out.append
        for i, v in enumerate(values):
            if v is None:
                append(None)
                continue
            if clean is not None and clean[i]:
                append(v)
                continue
            try:
                result = fn(v)
            except Exception as exc:  # noqa: BLE001 - a rule bug must cost one record, not the run
                failed.setdefault(i, f"{name}: {exc.__class__.__name__}")
                append(None)
                continue
            append(result[0])
            if special is not None and type(result) is _Special:
                special[i] = result.categories
        return out

    def columns(self, rule: FieldRule, values: Sequence[Any], failed: dict[int, str],
                distinct: bool = False, special: dict[int, tuple[str, ...]] | None = None) -> list[list[Any]]:
        """Output columns (one list each) for a column of already-checked input values.

        A value whose transform raises is never passed through: its row index is
        added to `failed` (with the field name, never the value) and its outputs are null.
        Results for string values are kept across batches (hosts, devices, command
        lines repeat), up to MEMO_ENTRIES per rule; other values are computed each time
        (1 and 1.0 are equal keys but different text). `special`, when given, receives the
        row index and categories of every value that held special-category data (free text
        whose data the rule removed), to be counted. `distinct`: the values are already
        the distinct values of a column (the columnar path), so "all new" says nothing about
        whether they repeat across batches and the memo stays on.
        """
        t = rule.transform
        if t == "bool":  # checked: True, False or None, written as they are
            return [list(values)]
        if t in ("int", "float"):  # checked numbers; int() of an integral float is exact
            cast = int if t == "int" else float
            return [[None if v is None else cast(v) for v in values]]
        fn = self._scalar(rule)
        width = len(rule.output_columns())
        nulls = (None,) * width
        key = id(rule)
        if key in self._unique and width == 1:  # values that never repeat (event ids): no memo
            return [self._each(fn, rule.name, values, failed, self._clean_list(rule, values), special)]
        memo: dict[Any, Any] | None
        if key in self._unique:
            memo, failures, found = {}, {}, {}
        else:
            memo = self._memos.get(key)
            if memo is None or len(memo) > MEMO_ENTRIES:
                memo = self._memos[key] = {}
                self._failures[key] = {}
                self._found[key] = {}
            failures = self._failures[key]
            found = self._found[key]
        keys = values
        present = set(values)
        present.discard(None)
        if not _STR_ONLY.issuperset(map(type, present)):  # 1 and 1.0 are equal keys but different text
            keys = [None if v is None else (type(v), v) for v in values]
            present = set(keys)
            present.discard(None)
            memo, failures, found = {}, {}, {}
            fn = _on_value(fn)
        new = present.difference(memo)
        if keys is values and new:
            news = list(new)
            clean = self.clean_values(rule, news)
            if clean is not None:
                for v, ok in zip(news, clean, strict=True):
                    if ok:
                        memo[v] = (v,)
                new = [v for v, ok in zip(news, clean, strict=True) if not ok]  # type: ignore[assignment]
        for v in new:
            try:
                result = memo[v] = fn(v)
            except Exception as exc:  # noqa: BLE001 - a rule bug must cost one record, not the run
                memo[v] = nulls
                failures[v] = f"{rule.name}: {exc.__class__.__name__}"
                continue
            if type(result) is _Special:
                found[v] = result.categories
        if not distinct and memo is self._memos.get(key) and len(values) >= 1000 and len(new) > 0.98 * len(values):
            self._unique.add(key)
            del self._memos[key], self._failures[key], self._found[key]
        if failures and not present.isdisjoint(failures):
            for i, v in enumerate(keys):
                if v in failures:
                    failed.setdefault(i, failures[v])
        if special is not None and found and not present.isdisjoint(found):
            for i, v in enumerate(keys):
                if v in found:
                    special[i] = found[v]
        get = memo.__getitem__
        if width == 1:
            return [[None if v is None else get(v)[0] for v in keys]]
        rows = [nulls if v is None else get(v) for v in keys]
        return [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


_STR_ONLY = frozenset({str})


def _on_value(fn: Callable[[Any], tuple]) -> Callable[[tuple[type, Any]], tuple]:
    return lambda typed: fn(typed[1])


def _email_domain(value: str, urls: UrlSanitizer) -> str | None:
    """Sender's domain only, normalised like a URL host; None when there is none."""
    _, at, domain = value.strip().rpartition("@")
    if not at:
        return None
    domain = domain.strip().strip(">").strip()
    parts = urls.sanitize("//" + domain)
    return parts.host if parts.status == "ok" else None


def _ip_literal(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip().strip("[]")))
    except ValueError:
        return None
