"""Secrets in free text, found by a rule set kept as data (`schemas/secrets.toml`).

The text rules (`transforms/text_tools.py`) know how command lines carry credentials (switches, key=value
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

from transforms.special import fold_lookalikes, hides_characters

REDACTED = "[REDACTED]"
DEFAULT_RULES = Path(__file__).resolve().parent.parent / "schemas" / "secrets.toml"
_KINDS = ("token", "context", "url")
_CHECKS = ("basic_auth", "entropy", "not_port", "password_like")
_RULE_KEYS = {"id", "kind", "regex", "check", "except_words", "require_words", "keep_values"}
_MAX_PASSES = 4
_RE2_MEMORY = 256 << 20  # per compiled pattern; the DFA grows lazily, only as far as the input needs
# Entropy check (see docs/free-text.md for how these were chosen): a candidate of at least
# _ENTROPY_MIN_LEN characters that mixes upper case, lower case and digits is a secret when
# its Shannon entropy reaches _ENTROPY_RATIO of the most its length allows (log2 of the length).
_ENTROPY_MIN_LEN = 24
_ENTROPY_RATIO = 0.78
# ... and a run of 20+ letters and digits in one case, see `random_span` (docs/free-text.md).
_UNIFORM_MIN_LEN = 20
_UNIFORM_RATIO = 0.75
# A word before a run of hex digits that says it is a digest, not a token (`sha256-<hex>`, `commit_<hex>`).
_DIGEST_WORDS = frozenset({
    "md5", "sha", "sha1", "sha224", "sha256", "sha384", "sha512", "sha3", "blake2", "blake2b", "blake3", "crc",
    "crc32", "xxh64", "hash", "digest", "checksum", "commit", "rev", "revision", "git", "object", "etag",
    "thumbprint", "fingerprint", "build",
})
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]+")
_HEX_ONLY = re.compile(r"[0-9a-fA-F]+")
_TOKEN_WORDS = re.compile(r"[_-]")
_VERSION_WORD = re.compile(r"[a-z]{1,4}[0-9]{1,2}")     # `v1` of `dop_v1_`, `us14` of Mailchimp's `-us14`
_DIGIT = re.compile(r"[0-9]")


class SecretRulesError(ValueError):
    """The rule file is malformed: names the rule and the problem."""


@dataclass(frozen=True)
class SecretRule:
    id: str
    kind: str
    regex: str
    check: str | None = None
    except_words: tuple[str, ...] = ()
    require_words: tuple[str, ...] = ()
    keep_values: frozenset[str] = frozenset()


def load_rules(path: str | Path | None = None) -> list[SecretRule]:
    """The rules of `path` (default: schemas/secrets.toml), checked."""
    path = Path(path or DEFAULT_RULES)
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    rules = []
    seen = set()
    for i, raw in enumerate(data.get("rule", [])):
        rid = raw.get("id") or f"#{i}"
        unknown = set(raw) - _RULE_KEYS
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
        if check == "entropy" and not _SIMPLE_CLASS.fullmatch(regex):
            raise SecretRulesError(f"{path}: rule {rid}: an entropy rule's regex is one character class and counts")
        if kind == "url" and not ("(?P<scheme>" in regex and "(?P<payload>" in regex):
            raise SecretRulesError(f"{path}: rule {rid}: a url rule needs groups scheme and payload")
        lists = {}
        for key in ("except_words", "require_words", "keep_values"):
            words = raw.get(key, [])
            if not (isinstance(words, list) and all(isinstance(w, str) and w for w in words)):
                raise SecretRulesError(f"{path}: rule {rid}: {key} must be a list of words")
            lists[key] = words
        rules.append(SecretRule(rid, kind, regex, check, tuple(w.lower() for w in lists["except_words"]),
                                tuple(w.lower() for w in lists["require_words"]), frozenset(lists["keep_values"])))
    if not rules:
        raise SecretRulesError(f"{path}: no rules")
    return rules


def shannon_entropy(token: str) -> float:
    """Bits per character of `token` (0 for an empty one)."""
    n = len(token)
    if not n:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in Counter(token).values())


def looks_random(token: str, dotted: bool = False) -> bool:
    """The entropy check: a long token that mixes upper case, lower case and digits with near-maximal
    entropy, or one that holds a long random run of a single case (`random_span`)."""
    return random_span(token, dotted) is not None


def random_span(token: str, dotted: bool = False) -> tuple[int, int] | None:
    """(start, end) of what is random in `token`, or None.

    - Mixed case with digits (base62, base64): the whole token when it is 24+ characters and its
      Shannon entropy reaches 0.78 of log2 of its length, or such a run of letters and digits inside
      it (`xoxb-<digits>-<digits>-<random>`: the digits pull the whole below).
    - A run of letters and digits in one case (`oy2…`, `DT0C01…`): 20+ characters, 2+ digits and 2+
      letters, entropy at least 0.75 of log2(min(length, 36)), and digits and letters alternating as
      chance has them (3 switches, one per 8 characters: `chromesetup120060993` has 1).
    - Hex digits alone are a hash or an identifier (MD5 … SHA-512, GUIDs, git objects, PDB
      signatures) and stay, unless a word glued by `_` or `-` makes the whole a token
      (`rubygems_<48 hex>`, `dop_v1_<64 hex>`, `PMAK-<hex>-<hex>`, `<hex>-us14`) and no word names a
      digest (`sha256-`, `commit_`).
    `dotted`: a `.label` follows or comes before (a host name, a file name): only the mixed-case
    rule applies (`k2j4…q1w2.exe`, `d3kdm2lq9ef0hb.cloudfront.net` stay)."""
    core = token.strip("=-_~+/")
    if len(core) < _UNIFORM_MIN_LEN or _DIGIT.search(core) is None:
        return None         # every rule below needs a digit: `Microsoft-Windows-Defender` stops here
    if token.startswith("/") or "//" in core or core.count("/") * 12 > len(core):
        return None         # a path (`/storage/emulated/0/Download/...`), not base64
    if core != core.lower() and core != core.upper() and _mixed_random(core):
        return 0, len(token)
    if dotted or token.startswith("pz-"):
        return None
    words = [w.lower() for w in _TOKEN_WORDS.split(token)] if "-" in token or "_" in token else []
    if (any(len(w) >= 24 and _HEX_ONLY.fullmatch(w) and _random_run(w, 16) for w in words)
            and any(w.isalpha() and len(w) >= 2 or _VERSION_WORD.fullmatch(w) for w in words)
            and _DIGEST_WORDS.isdisjoint(words)):
        return 0, len(token)
    found = [r.span() for r in _ALNUM_RUN.finditer(token) if len(r[0]) >= _UNIFORM_MIN_LEN and (
        _mixed_random(r[0]) if r[0] != r[0].lower() and r[0] != r[0].upper()
        else not _HEX_ONLY.fullmatch(r[0]) and _random_run(r[0], 36))]
    return (found[0][0], found[-1][1]) if found else None


def _mixed_random(text: str) -> bool:
    """24+ characters with upper case, lower case and digits, entropy near the most the length allows."""
    return (len(text) >= _ENTROPY_MIN_LEN and _DIGIT.search(text) is not None
            and shannon_entropy(text) >= _ENTROPY_RATIO * math.log2(min(len(text), 64)))


def _random_run(run: str, alphabet: int) -> bool:
    """A run of one case whose letters and digits look drawn at random from `alphabet` symbols."""
    n = len(run)
    digits = sum(c.isdigit() for c in run)
    if digits < 2 or n - digits < 2:
        return False
    switches = sum(1 for a, b in zip(run, run[1:], strict=False) if a.isdigit() != b.isdigit())
    return (switches >= max(3, (n - 1) / 8)
            and shannon_entropy(run.lower()) >= _UNIFORM_RATIO * math.log2(min(n, alphabet)))


def _dotted(data: bytes, start: int, end: int) -> bool:
    """The bytes data[start:end] are a label of a dotted name: a `.` and a letter or digit on either side."""
    return (data[end:end + 1] == b"." and data[end + 1:end + 2].isalnum()
            or start >= 2 and data[start - 1:start] == b"." and data[start - 2:start - 1].isalnum())


def _basic_auth(token: str) -> bool:
    """Base64 that decodes to `user:password`, or a long token that is not a plain word."""
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
        if b":" in raw and raw.decode("utf-8").isprintable():
            return True
    except (binascii.Error, ValueError):
        pass
    return len(token) >= 12 and not token.isalpha()


_PORT_SPEC = re.compile(r"[0-9][0-9.:-]*(?:/(?:tcp|udp|sctp))?", re.IGNORECASE)


def _not_port(token: str) -> bool:
    """Anything but a port or a port mapping (`-p8080`, `-p127.0.0.1:8080:80`, `-p53/udp`)."""
    return _PORT_SPEC.fullmatch(token) is None


def _password_like(token: str) -> bool:
    """A digit, a symbol, upper case after the first letter, or 12+ characters: `Manager` and
    `protected` after the word password are words, `hunter2` and `S3cret!` are not."""
    return len(token) >= 12 or any(not c.isalpha() for c in token) or token[1:] != token[1:].lower()


def _words_before(words: tuple[str, ...]) -> re.Pattern[str]:
    """One of `words` (a program name, `.exe` optional) as a whole word."""
    return re.compile(r"(?i)(?<![\w-])(?:" + "|".join(map(re.escape, words)) + r")(?:\.exe)?(?![\w-])")


_CHECK_FUNCS = {"basic_auth": _basic_auth, "entropy": looks_random, "not_port": _not_port,
                "password_like": _password_like}
_NAMED_GROUP = re.compile(r"\(\?P<[A-Za-z0-9_]+>")
_COLUMN_NUMBER = re.compile(r"\d{1,3}(?:,\d{1,3})?")
_SIMPLE_CLASS = re.compile(r"\[[^\]\[()|]+\]\{\d+,\d*\}(?:=\{0,2\})?")


class SecretSweep:
    """The rule set compiled into one RE2 set (one scan per value); `sweep` removes what it finds."""

    def __init__(self, rules: list[SecretRule] | None = None, max_mem: int = _RE2_MEMORY) -> None:
        self.rules = rules if rules is not None else load_rules()
        self.max_mem = max_mem
        # Whether any rule matches: `pattern` (all rules, no groups) as one RE2 regex. When its DFA
        # runs out of memory RE2 falls back to its NFA, so the answer is always right: a value is
        # proven clean only by a scan that finished. Which rules match: an RE2 set (one DFA scan
        # for all rules); a set whose DFA runs out of memory reports no match at all, so when it
        # names no rule for a value the pattern matched, every rule is tried (fail closed).
        # Where: each matching rule's own pattern, with its groups.
        self.pattern = _NAMED_GROUP.sub("(?:", "|".join(f"(?:{rule.regex})" for rule in self.rules))
        options = re2.Options()
        options.max_mem = max_mem  # room for the DFA's states: a full cache is thrown away and rebuilt
        options.log_errors = False  # RE2 would log "DFA out of memory" lines; the fallback is handled here
        self._any = re2.compile(self.pattern.encode(), options)
        self._set = re2.Set.SearchSet(options)
        self._own = []
        for rule in self.rules:
            self._set.Add(_NAMED_GROUP.sub("(?:", rule.regex).encode())
            if rule.check == "entropy":    # one character class: Python's engine is linear on it, and faster
                own = re.compile(rule.regex.encode())
            else:
                own = re2.compile(rule.regex.encode(), options)
            index = own.groupindex
            self._own.append((own, {k.decode() if isinstance(k, bytes) else k: v for k, v in index.items()}))
        self._set.Compile()
        self._except = {id(rule): _words_before(rule.except_words) for rule in self.rules if rule.except_words}
        self._require = {id(rule): _words_before(rule.require_words) for rule in self.rules if rule.require_words}

    def __getstate__(self) -> dict:
        return {"rules": self.rules, "max_mem": self.max_mem}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["rules"], state.get("max_mem", _RE2_MEMORY))  # type: ignore[misc]

    @property
    def opaque_urls(self) -> SecretSweep:
        """The `url` rules alone: run before the text rules, which would read `mailto:bob@host`
        as an account at a host and no longer see the scheme."""
        sub = self.__dict__.get("_opaque")
        if sub is None:
            sub = self.__dict__["_opaque"] = SecretSweep([r for r in self.rules if r.kind == "url"], self.max_mem)
        return sub

    def matches(self, text: str) -> bool:
        """True when some rule's pattern matches (before checks): only then can `sweep` change it.
        A False here is the proof that the value holds nothing the rule set knows."""
        return self._any.search(text.encode("utf-8", "surrogatepass")) is not None

    def findings(self, text: str) -> list[tuple[int, int, str, str]]:
        """(start, end, replacement, rule id) of every finding, in text order, overlaps merged later."""
        data = text.encode("utf-8", "surrogatepass")
        if self._any.search(data) is None:
            return []
        # no rule named: the set's DFA ran out of memory (it then reports nothing); try them all
        hits = self._set.Match(data) or range(len(self.rules))
        ascii_text = len(data) == len(text)      # byte offsets are character offsets
        out: list[tuple[int, int, str, str]] = []
        for i in sorted(hits):
            rule = self.rules[i]
            own, groups = self._own[i]
            for m in own.finditer(data):
                found = self._finding(m, rule, groups, data)
                if found is None:
                    continue
                start, end, repl = found
                if not ascii_text:
                    start, end = len(data[:start].decode("utf-8", "surrogatepass")), len(
                        data[:end].decode("utf-8", "surrogatepass"))
                if rule.except_words and self._except[id(rule)].search(text, 0, start + 1):
                    continue
                if rule.require_words and not self._require[id(rule)].search(text, 0, start + 1):
                    continue
                out.append((start, end, repl, rule.id))
        return out

    @staticmethod
    def _finding(m: re2._Match, rule: SecretRule, groups: dict[str, int], data: bytes
                 ) -> tuple[int, int, str] | None:
        """(start, end, replacement) in bytes of one match of `rule`, or None when it is not a secret."""
        if rule.kind == "url":
            scheme, payload = groups["scheme"], groups["payload"]
            value = m.group(payload)
            if not value or value.startswith(b"//"):
                return None
            return m.start(scheme), m.end(payload), m.group(scheme).decode().lower() + ":"
        secret = groups.get("secret")
        if secret is not None:
            if m.start(secret) < 0:
                return None
            start, end = m.span(secret)
        else:
            start, end = m.span()
        value = m.group(secret if secret is not None else 0).decode("utf-8", "surrogatepass")
        core = value.strip("\"'{}")
        if not core or core == REDACTED or core.startswith(("pz-", REDACTED)) or "://" in core:
            return None
        if rule.kind == "context" and _COLUMN_NUMBER.fullmatch(core):
            return None     # `sort -k 2`: a column number, not a secret
        if rule.keep_values and m.group(0).decode("utf-8", "surrogatepass").strip(" \t\r\n\"'") in rule.keep_values:
            return None     # a match the rule names as no secret (`-passin` is a switch, not `-p` + `assin`)
        if rule.check == "entropy":    # only the random part goes: `Temp/<random>/x` keeps `Temp/` and `/x`
            span = random_span(value, _dotted(data, start, end))
            if span is None:
                return None
            return start + span[0], start + span[1], REDACTED
        check = _CHECK_FUNCS.get(rule.check) if rule.check else None
        if check is not None and not check(core):
            return None
        return start, end, _mask_value(value)

    def sweep(self, text: str) -> tuple[str, int]:
        """(text with every finding replaced, number of replacements). Non-ASCII text is read
        in NFKC form (`ｇｈｐ_…` is `ghp_…`), which is returned when something was replaced;
        text with invisible or look-alike characters is then read once more as a reader sees
        it (`fold_lookalikes`: `pass\u00adword=`, `раsswоrd:`, `ghp_…\u200b…`), and that form
        is returned when it shows more."""
        if not text:
            return text, 0
        out, n = self._sweep_form(text)
        if hides_characters(text):      # read the whole value as a reader sees it: a token cut by
            # a Cyrillic letter is one token, not a prefix and a rest; line breaks are joined below,
            # in what this reading left (a script's lines are read before they are merged)
            folded = fold_lookalikes(text, join_lines=False)
            again, m = self._sweep(folded)
            if m and m >= n:
                out, n = again, m
        if not (out.isascii() and out.isprintable()):
            folded = fold_lookalikes(out)
            if folded != out:
                again, m = self._sweep(folded)
                if m:
                    return again, n + m
        return out, n

    def _sweep_form(self, text: str) -> tuple[str, int]:
        if not text.isascii():
            norm = unicodedata.normalize("NFKC", text)
            if norm != text:
                out, n = self._sweep(norm)
                if n:
                    return out, n
        return self._sweep(text)

    def _sweep(self, text: str) -> tuple[str, int]:
        try:
            return self._sweep_rules(text)
        except Exception:  # noqa: BLE001 - fail closed: a value the scan could not finish is not kept
            return REDACTED, 1

    def _sweep_rules(self, text: str) -> tuple[str, int]:
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
# transforms/text*.py can change it (they all need white space, a separator such as ':', '=',
# '/', '\\' or '@', a switch, or an `S-1-` account SID; tests/test_secrets.py checks this on
# generated tokens). Such a value is clean when the secret rules do not match it either.
_SAFE_FIRST, _SAFE_REST = "[A-Za-z0-9]", "[A-Za-z0-9._+#-]"
SAFE_TOKEN = f"{_SAFE_FIRST}{_SAFE_REST}{{0,127}}"
# Shorter than any match of a rule on such a token (token rules match 18+ characters; every
# other rule needs a blank, ':', '=' or '/'; tests/test_secrets.py checks both on the rule file):
# a safe token this short is clean without looking at the rules, which Arrow proves for whole columns.
SAFE_SHORT_MAX = 17
SAFE_SHORT_TOKEN = f"{_SAFE_FIRST}{_SAFE_REST}{{0,{SAFE_SHORT_MAX - 1}}}"
# Identifiers of lower-case hex digits and dashes (UUIDs, hashes): no token rule matches within
# [0-9a-f-] (each needs another character, checked by the test; upper-case hex is not safe:
# `ACCA` + 16 upper-case hex digits is an AWS key id), and the entropy check wants mixed case.
_HEX_FIRST, _HEX_REST = "[0-9a-f]", "[0-9a-f-]"
HEX_ID_MAX = 128
HEX_ID = f"{_HEX_FIRST}{_HEX_REST}{{0,{HEX_ID_MAX - 1}}}"
# The same two shapes without their length bound, for Arrow's kernels: Arrow compiles a kernel's
# pattern on every call, and RE2 unrolls a counted repeat into states (130-160 µs per call for the
# bounded forms, 6-8 µs for these); the length is checked by a kernel of its own.
SAFE_TOKEN_OPEN = f"{_SAFE_FIRST}{_SAFE_REST}*"
HEX_ID_OPEN = f"{_HEX_FIRST}{_HEX_REST}*"
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
