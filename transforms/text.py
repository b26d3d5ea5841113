"""Free-text scrubbing: process command lines and file/registry paths.

POLICY.md ("scrub" transform): no credential, raw account name or e-mail
address survives, while what threat analysis needs stays byte for byte: the
executable, the switch names, hosts (URLs are cut to `scheme://host[:port]`)
and paths outside user profiles.

The rules live by idea: `transforms/text_tools.py` (command lines: tools, switches, headers,
config commands, key=value), `transforms/text_addresses.py` (URLs, e-mail addresses, profile
folders, SIDs) and `transforms/text_values.py` (accounts, how a value is masked, the state of one
scrub). This module orders them (`scrub_text`) and adds what every kept string goes through
(`scrub_free_text`: the secret rule set, raw identifiers, percent-encoded values, line breaks).

`scrub_text` applies the rules below in a fixed order, each a pass over the
text the previous one produced. Text with non-ASCII characters is first
normalised (NFKC, so `--ｐａｓｓｗｏｒｄ` is `--password`; an en dash, em dash
or horizontal bar before a letter becomes `-`, as PowerShell reads it); the
normalised text is returned when a rule replaced something, the original
otherwise. Every replacement that changes the text counts 1; a value that is
already `[REDACTED]` or a pseudonym is left alone and not counted, so the
passes can safely see each other's output.

 1. URLs with a scheme -> `reduce_url(url)`, or `[REDACTED]` when it gives None.
    A PowerShell `-EncodedCommand` is decoded and scrubbed; when that replaced anything, the whole
    payload becomes `[REDACTED]` (a re-encoding would keep the original's base64 around the change).
 2. Credentials: PowerShell credential objects and `ConvertTo-SecureString`,
    `echo pw | sudo -S`, HTTP headers (Authorization, Cookie, X-Api-Key,
    *-Token ...), `net use/user/localgroup/group`, registry values named like a
    password (`/v DefaultPassword /d x`), `--password`-style switches of any
    tool (`=`, `:` or space), Windows switches (`/user:`, `/pass:`, `/ntlm:`,
    `/rc4:`, `/aes256:`, `/ru`, `/rp`, `/password x`, `/token x` ...), the
    short options of tools known to take credentials that way (`mysql -uroot
    -pX`, `psexec -u -p`, `sshpass -p`, `curl -u`, `sqlcmd -U -P`, `7z -pX`
    ...), `git config user.email x`, `aws configure set *_key x`, `key=value`
    pairs (`password=`, `token=`, `Pwd=`, `User ID=`, `AWS_SECRET_ACCESS_KEY=`,
    JSON `"password": "x"`), LM:NT hash pairs and `user:password@host`.
 3. E-mail addresses -> `pz-<pseudonym('email', address)>`, also when a file
    extension follows (`alice@corp.com.pdf` -> `pz-<...>.pdf`; `logo@2x.png`
    stays); `user@host` given to ssh-like tools (or `user@<IPv4>`) ->
    `[REDACTED]@host`.
 4. Profile folders (`C:\\Users\\NAME`, `\\\\srv\\home$\\NAME`, `/home/NAME`,
    `/Users/NAME` ...) -> `pz-<pseudonym('account', name)>`.
 5. Account SIDs (`S-1-5-21-...`, Azure AD `S-1-12-1-...`) -> `S-1-5-21-pz-<...>`.
 6. Account names and secrets found by the rules above are replaced wherever
    else they occur in the same text (`C:\\Users\\bob\\...\\bob_session.log`).

Non-personal accounts stay: SYSTEM, LOCAL/NETWORK SERVICE, root, DWM-n, UMFD-n,
the well-known NT AUTHORITY names and service/app pool/group names under NT
SERVICE, IIS APPPOOL, BUILTIN & co. (as values of user switches, in `user@host`
also `git`), the Public/Default/All Users profile folders, and the homes of cloud
default and service accounts (`/home/ubuntu`, `/home/node`, `/home/postgres`).

Over-redaction is preferred to a leak, with one exception: a token that looks
like a switch (`-x`, `--xyz`, `/x`) is never taken for a password, so switch
names survive.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from urllib.parse import unquote

from transforms.identifiers import scrub_identifiers
from transforms.secrets import SecretSweep, default_sweep, is_safe_token, join_userinfo
from transforms.special import latin_lookalike_words
from transforms.text_addresses import _OBF_GATE, AddressRules, _may_have_obfuscated_email
from transforms.text_tools import ToolRules, _may_have_header
from transforms.text_values import (
    PSEUDONYM_PREFIX,
    REDACTED,
    Pseudonym,
    UrlReducer,
    _is_boundary,
    _splice,
    is_builtin_account,
    scrub_account,
)

__all__ = ["PSEUDONYM_PREFIX", "REDACTED", "Pseudonym", "TextScrubber", "UrlReducer", "is_builtin_account",
           "scrub_account", "scrub_free_text", "scrub_text"]

_CACHE_LIMIT = 50_000  # per worker; bounds memory, repeats are what pays
_CACHE_MAX_TEXT = 8192          # longer texts are scrubbed every time rather than pinned in memory
_PROPAGATE_MAX = 256            # longer values are not searched for again
_PROPAGATE_MAX_HITS = 10_000
# En dash, em dash and horizontal bar: PowerShell reads them as '-' in front of a parameter name.
_PS_DASH = re.compile(r"[\u2013-\u2015](?=[^\W\d_])")

_ENCODED = re.compile(
    r"(?i)(?<![\w-])[-/](?P<sw>e[a-z]{0,13}|ec)(?:\s+|:)(?P<b64>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])"
)

_WORD_SPLIT = re.compile(r"[\s\\/\"'&|;()=,<>`]+")
_WORD_SUFFIXES = (".exe", ".py", ".sh", ".ps1", ".bat", ".cmd")

def _words(low: str) -> set[str]:
    """Lower-case words of the text, program extensions removed: which tools are named."""
    out = set()
    for w in _WORD_SPLIT.split(low):
        if w:
            if w.endswith(_WORD_SUFFIXES):
                w = w.rsplit(".", 1)[0]
            out.add(w)
    return out


class _Run(ToolRules, AddressRules):
    """One `scrub_text` call: the passes of both rule modules, the encoded-command pass and propagation."""

    __slots__ = ()

    def encoded_powershell(self, text: str, depth: int) -> str:
        def repl(m: re.Match) -> str:
            sw = m["sw"].lower()
            if not "encodedcommand".startswith(sw) and sw != "ec":
                return m[0]
            try:
                raw = base64.b64decode(m["b64"], validate=True)
                if len(raw) % 2:
                    return m[0]
                decoded = raw.decode("utf-16-le")
            except (binascii.Error, ValueError):
                return m[0]
            _, n = _scrub(decoded, self.pseudonym, self.reduce_url, depth + 1)
            if not n:
                return m[0]
            # Re-encoding the scrubbed script would keep the original's base64 up to the first change
            # (and after the last, when the lengths line up): the whole payload goes instead.
            self.count += n
            return m[0][: m.start("b64") - m.start()] + REDACTED

        return _ENCODED.sub(repl, text)

    def propagate(self, text: str) -> str:
        """Other copies of the account names and secrets found by the rules, between non-alphanumerics."""
        names = {n.lower() for n in self.names}
        secrets = {s for s in self.secrets if s not in REDACTED}
        if not names and not secrets:
            return text
        low = text.lower()
        if len(low) != len(text):       # a case mapping changed the length: compare case-sensitively
            low = text
        spans: list[tuple[int, int, bool]] = []
        for needles, hay, is_name in ((names, low, True), (secrets, text, False)):
            for needle in needles:
                if len(needle) > _PROPAGATE_MAX:
                    continue
                i = hay.find(needle)
                budget = _PROPAGATE_MAX_HITS
                while i >= 0 and budget:
                    budget -= 1
                    j = i + len(needle)
                    if _is_boundary(hay, i - 1) and _is_boundary(hay, j):
                        spans.append((i, j, is_name))
                        i = hay.find(needle, j)
                    else:
                        i = hay.find(needle, i + 1)
        if not spans:
            return text
        spans.sort(key=lambda s: (s[0], -s[1]))
        kept: list[tuple[int, int, str]] = []
        pos = 0
        for i, j, is_name in spans:
            if i >= pos:
                kept.append((i, j, self.account_pz(text[i:j]) if is_name else REDACTED))
                pos = j
        self.count += len(kept)
        return _splice(text, iter(kept))

# Characters a reader does not see inside a word (NUL and other C0/C1 controls, NEL, line and paragraph
# separators, zero-width and other format characters): `-u bob\x85by` is the account `bobby`.
_INVISIBLE = re.compile(r"(?<=\w)[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2064"
                        r"\ufeff]+(?=\w)")


# Zero-width, soft hyphen and bidi controls: removed wherever they are (`a\u200b@b.example` is an address).
_FORMAT_CHARS = re.compile(r"[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]+")


def _normalize(text: str) -> str:
    """NFKC (`ｐａｓｓｗｏｒｄ` -> `password`), PowerShell's dashes before a letter (`–Password`) as '-',
    format characters removed, invisible controls inside a word removed, and Cyrillic or Greek
    look-alikes read as Latin in tool and switch names (`sshраss -р` -> `sshpass -p`)."""
    text = _INVISIBLE.sub("", _FORMAT_CHARS.sub("", _PS_DASH.sub("-", unicodedata.normalize("NFKC", text))))
    return latin_lookalike_words(text)


def _scrub(text: str, pseudonym: Pseudonym, reduce_url: UrlReducer, depth: int = 0) -> tuple[str, int]:
    """Scrub the normalised text; the original comes back untouched when there was nothing to replace."""
    if not text.isascii() or not text.isprintable() and _INVISIBLE.search(text):
        norm = _normalize(text)
        if norm != text:
            out, n = _scrub_normal(norm, pseudonym, reduce_url, depth)
            if n:
                return out, n
    return _scrub_normal(text, pseudonym, reduce_url, depth)


def _scrub_normal(text: str, pseudonym: Pseudonym, reduce_url: UrlReducer, depth: int) -> tuple[str, int]:
    low = text.lower()
    words = _words(low)
    run = _Run(pseudonym, reduce_url, words)
    if depth == 0 and ("powershell" in words or "pwsh" in words):
        text = run.encoded_powershell(text, depth)
    if "://" in text or "//" in text and "@" in text:
        text = run.urls(text)
    text = run.powershell_credentials(text, low)
    if _may_have_header(low):
        text = run.headers(text)
    if "net" in words or "net1" in words:
        text = run.net_commands(text)
    if "/v" in low or "-name" in low:
        text = run.registry_values(text)
    text = run.tool_options(text)
    if "config" in words or "configure" in words or "setx" in words:
        text = run.config_values(text)
    if "=" in text or ":" in text:
        text = run.key_values(text)
        text = run.hashes(text)
    if "@" in text or "%40" in text:
        text = run.userinfo(text)
        text = run.emails(text)
    if _may_have_obfuscated_email(low) and _OBF_GATE.search(text):
        text = run.obfuscated_emails(text)
    if ("users" in low or "home" in low or "documents and settings" in low or "/var" in low or "\\var" in low
            or "cron" in low):
        text = run.profiles(text)
    if "s-1-" in low:
        text = run.sids(text)
    text = run.propagate(text)
    return text, run.count


def scrub_text(text: str, pseudonym: Pseudonym, reduce_url: UrlReducer) -> tuple[str, int]:
    """Return (scrubbed text, number of replacements made)."""
    if not isinstance(text, str):
        text = str(text)
    if not text:
        return text, 0
    return _scrub(text, pseudonym, reduce_url)


def scrub_free_text(text: str, pseudonym: Pseudonym, reduce_url: UrlReducer,
                    sweep: SecretSweep | None = None) -> tuple[str, int]:
    """The free-text rule every kept string goes through: URL user info split by white space is
    joined, `scrub_text` applies the rules above, then the secret rule set (transforms/secrets.py)
    removes known token formats, secrets given to tools and opaque URLs' payloads.
    A single plain token (`is_safe_token`) skips `scrub_text`, which provably leaves it as it is."""
    if not isinstance(text, str):
        text = str(text)
    if not text:
        return text, 0
    sweep = sweep or default_sweep()
    out, n = _free_text(text, pseudonym, reduce_url, sweep)
    decoded = _percent_decoded(out)
    if decoded is not None:
        # `%2FUsers%2Falice`, `https%253A%252F%252Fbob%253Apw%2540h`: the value read as a browser or a
        # shell would, once decoded as often as it was encoded. Decoding the scrubbed text keeps what
        # the first reading removed; the decoded form is returned only when it held more.
        again, k = _free_text(decoded, pseudonym, reduce_url, sweep)
        if k:
            return again, n + k
    return out, n


def _free_text(text: str, pseudonym: Pseudonym, reduce_url: UrlReducer, sweep: SecretSweep) -> tuple[str, int]:
    if is_safe_token(text):
        out, n = text, 0
    else:
        out, n = join_userinfo(text), 0
        if ":" in out or "\uff1a" in out:        # every opaque URL rule needs the scheme's colon
            out, n = sweep.opaque_urls.sweep(out)
        out, k = scrub_text(out, pseudonym, reduce_url)
        n += k
    out, m = sweep.sweep(out)
    out, k = scrub_identifiers(out)  # MAC, IMEI, serials, accounts: transforms/identifiers.py
    n += m + k
    if n and ("\n" in out or "\r" in out):
        out, k = _across_line_breaks(out)
        n += k
    return out, n


# A value a rule replaced, glued to a line break glued to more of it: `-u CONTOSO\qso<LF>gamatoda70`
# (the rules' values stop at white space) or `qzugu<LF>li03@example.org` (an address starts at a word
# character). A reader may see one name there; the rest goes too, the line break stays.
_MARK = r"(?:\[REDACTED\]|\[id\]|pz-[0-9a-f]{8,64})"
_ACROSS_BREAK = re.compile(
    rf"(?P<mark>{_MARK})(?P<br>\r\n|[\r\n])(?!{_MARK})(?P<after>[^\s\"'<>|&;]+)"
    rf"|(?<![^\s\"'=:(,;])(?!{_MARK})(?P<before>[\w.%+\-]+)(?P<br2>\r\n|[\r\n])(?={_MARK})"
)


def _across_line_breaks(text: str) -> tuple[str, int]:
    """One pass (a replacement does not open the next): the word glued to a replaced value across a line break."""
    count = 0

    def repl(m: re.Match) -> str:
        nonlocal count
        count += 1
        return m["mark"] + m["br"] + REDACTED if m["mark"] else REDACTED + m["br2"]

    return _ACROSS_BREAK.sub(repl, text), count


_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_PERCENT_ROUNDS = 4        # `%25252F` is three rounds; a bound, so a crafted value cannot make it loop


def _percent_decoded(text: str) -> str | None:
    """`text` percent-decoded until nothing changes (at most `_PERCENT_ROUNDS` times); None if it has no escape."""
    if "%" not in text or _PERCENT.search(text) is None:
        return None
    out = text
    for _ in range(_PERCENT_ROUNDS):
        new = unquote(out, errors="replace")
        if new == out:
            break
        out = new
    return out


class TextScrubber:
    """`scrub_free_text` with the run's pseudonymizer and URL reducer, cached per unique text.

    Picklable: the cache is not shipped to workers.
    """

    def __init__(self, pseudonym: Pseudonym, reduce_url: UrlReducer, sweep: SecretSweep | None = None) -> None:
        self.pseudonym = pseudonym
        self.reduce_url = reduce_url
        self.sweep = sweep or default_sweep()
        self._cache: dict[str, tuple[str, int]] = {}

    def __call__(self, text: str) -> tuple[str, int]:
        hit = self._cache.get(text)
        if hit is not None:
            return hit
        out = scrub_free_text(text, self.pseudonym, self.reduce_url, self.sweep)
        if len(text) <= _CACHE_MAX_TEXT:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[text] = out
        return out

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._cache = {}
