"""Visited URLs cut down to where they point, never who asked or what was sent.

POLICY.md: "Information about logins and passwords, if present in the user's
initial browser request, is removed from visited URL addresses down to the
host name or IP address." Only the scheme, the host (or IP literal), a
non-default port, the registered domain and the public suffix survive; user
info, path, query and fragment are dropped before anything else looks at them.

Parsing follows what browsers accept (the WHATWG URL standard, loosely), so a
URL that a browser would send to `evil.com` is reported as `evil.com` however
it was spelled: backslashes, tabs inside, several `@`, percent-encoding,
numeric IPv4 forms, IDN. Anything that cannot be reduced safely gets a status
saying why and no host at all; nothing raises.

A host is kept only when it reads as a machine name: one that holds a token of the
secret rule set (`https://AKIA.../`, `//ghp_.../`, a JWT), or is a single label
(no dot) other than `localhost`, an IP literal or a browser page (`chrome://settings`),
gets the status `secret_like` and no host: a bare token, an account SID or a
computer name put where the host goes is not kept (fail closed).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, NamedTuple
from urllib.parse import unquote

import idna
import tldextract

from transforms.secrets import default_sweep

OK = "ok"
OPAQUE = "opaque"
EMPTY = "empty"
INVALID_HOST = "invalid_host"
INVALID_PORT = "invalid_port"
INVALID = "invalid"
SECRET_LIKE = "secret_like"
STATUSES = (OK, OPAQUE, EMPTY, INVALID_HOST, INVALID_PORT, INVALID, SECRET_LIKE)

# Special schemes (WHATWG) and their default ports; `file` is handled as opaque.
DEFAULT_PORTS: dict[str, int] = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}

# Non-hierarchical schemes: only the scheme is kept, even when written with `//`
# (`file://host/...`, `javascript://%0a...`), because what follows is data, not a host.
OPAQUE_SCHEMES = frozenset({
    "about", "blob", "bitcoin", "callto", "cid", "data", "facetime", "facetime-audio", "file",
    "filesystem", "geo", "intent", "itms", "itms-apps", "itms-services", "jar", "javascript",
    "magnet", "mailto", "market", "mid", "mms", "news", "sip", "sips", "skype", "sms", "smsto",
    "tel", "urn", "vbscript", "view-source", "webcal", "xmpp",
})
# Windows protocol handlers (`ms-settings:display`, `ms-word:ofe|u|https://...`).
_OPAQUE_PREFIX = "ms-"
# Single-label hosts that are kept: the loopback name, and the pages of browsers' own schemes
# (`chrome://settings`, `edge://flags`), a short lower-case word; any other host without a dot
# is a computer name or a token, not a place on the web.
_SINGLE_LABEL_HOSTS = frozenset({"localhost"})
_BROWSER_SCHEMES = frozenset({"chrome", "edge", "brave", "opera", "vivaldi"})
_BROWSER_PAGE = re.compile(r"[a-z][a-z-]{0,31}")

HOST_CACHE_LIMIT = 200_000
URL_CACHE_LIMIT = 20_000
MAX_CACHED_URL_CHARS = 1024  # longer inputs are rare; caching them would cost memory, not time
MAX_SCHEME_CHARS = 32
MAX_HOST_INPUT_CHARS = 4096  # before percent-decoding and IDNA; bounds the work on garbage
MAX_HOST_CHARS = 253

_STRIP = "".join(map(chr, range(0x21))) + "\ufeff"  # C0 controls, space, and a byte order mark
# For callers holding many URLs (see UrlSanitizer.authority): a URL that matches both
# patterns reduces to what `authority(scheme.lower(), authority)` gives, because `_parse`
# then does nothing but what the pattern does: the scheme is one of DEFAULT_PORTS (as
# `_SCHEME` reads it), the slashes after it are skipped, the authority runs to the first of
# `/\?#`, and user info up to its last `@` is left out (so that one host with many users is
# one key). Printable ASCII only: no edge `_STRIP` would trim, no tab or newline `_parse`
# would delete, no letter RE2's case folding takes for another (`ſ` for `s`), no space
# (callers may use it to join scheme and authority).
AUTHORITY_PRINTABLE = "^[!-~]*$"
AUTHORITY_PATTERN = (rf"^(?P<scheme>(?i:{'|'.join(sorted(DEFAULT_PORTS))})):[/\\]*(?:[^/\\?#]*@)?"
                     r"(?P<authority>[^/\\?#@]*)")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_SPECIAL_END = re.compile(r"[/\\?#]")  # authority ends here for special schemes and bare hosts
_OTHER_END = re.compile(r"[/?#]")
_PORT = re.compile(r"[0-9]+")
_HOST = re.compile(r"[a-z0-9_\-]{1,63}(?:\.[a-z0-9_\-]{1,63})*")
_DOTS = re.compile("[.\u3002\uff0e\uff61]")
_HEX = re.compile(r"[0-9a-f]*")
_OCT = re.compile(r"[0-7]+")


class UrlParts(NamedTuple):
    """What may leave the pipeline for one URL (column order of the `url` transform)."""

    scheme: str | None
    host: str | None
    port: int | None
    registered_domain: str | None
    suffix: str | None
    status: str


_EMPTY = UrlParts(None, None, None, None, None, EMPTY)
_INVALID = UrlParts(None, None, None, None, None, INVALID)


def make_suffix_extractor() -> tldextract.TLDExtract:
    """Public-suffix lookup from the snapshot bundled with tldextract.

    No suffix-list URLs and no cache directory: workers never touch the network
    or the file system, and every run uses the same list.
    """
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def _fail(scheme: str | None, status: str) -> UrlParts:
    return UrlParts(scheme, None, None, None, None, status)


def _to_ascii(host: str) -> str:
    """IDN to punycode, lowercased; raises UnicodeError when no IDNA flavour accepts it.

    UTS #46 (IDNA 2008, non-transitional) is what browsers use; labels it refuses
    but IDNA 2003 accepts (emoji, `_` next to non-ASCII) fall back to Python's codec.
    """
    if host.isascii():
        return host.lower()
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        pass
    out = []
    for label in _DOTS.split(host):
        if label.isascii():
            out.append(label.lower())
            continue
        try:
            out.append(idna.encode(label, uts46=True).decode("ascii"))
        except (idna.IDNAError, UnicodeError, ValueError):
            out.append(label.encode("idna").decode("ascii").lower())
    return ".".join(out)


def _parse_ipv4(labels: list[str]) -> str | None:
    """WHATWG IPv4 parser: 1-4 parts, each decimal, 0x-hex or 0-octal; None if out of range."""
    if len(labels) > 4:
        return None
    numbers = []
    for part in labels:
        if part.startswith("0x"):
            digits = part[2:]
            if not _HEX.fullmatch(digits):
                return None
            numbers.append(int(digits, 16) if digits else 0)
        elif len(part) > 1 and part[0] == "0":
            if not _OCT.fullmatch(part):
                return None
            numbers.append(int(part, 8))
        elif part.isdigit():
            numbers.append(int(part))
        else:
            return None
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        return None
    value = numbers[-1]
    for i, n in enumerate(numbers[:-1]):
        value += n << (8 * (3 - i))
    return ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0))


def _ends_in_number(last: str) -> bool:
    return last.isdigit() or (last.startswith("0x") and _HEX.fullmatch(last[2:]) is not None)


def _ipv6(text: str) -> str | None:
    """Bracket content to compressed IPv6 (RFC 5952, same on every Python); zone id dropped."""
    address = text.split("%", 1)[0]
    if not address or len(address) > 64:
        return None
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return None
    words = [int(w, 16) for w in ip.exploded.split(":")]
    best_start, best_len, i = -1, 1, 0
    while i < 8:
        if words[i]:
            i += 1
            continue
        j = i
        while j < 8 and not words[j]:
            j += 1
        if j - i > best_len:
            best_start, best_len = i, j - i
        i = j
    if best_start < 0:
        return ":".join(f"{w:x}" for w in words)
    head = ":".join(f"{w:x}" for w in words[:best_start])
    tail = ":".join(f"{w:x}" for w in words[best_start + best_len:])
    return f"{head}::{tail}"


def _host(text: str) -> tuple[str, bool] | None:
    """(ASCII host, is IPv4) for a host that is not an IPv6 literal; None when invalid."""
    if not text or len(text) > MAX_HOST_INPUT_CHARS:
        return None
    if "%" in text:
        text = unquote(text, errors="replace")
    try:
        host = _to_ascii(text)
    except UnicodeError:
        return None
    if host.endswith("."):
        host = host[:-1]
    if len(host) > MAX_HOST_CHARS or not _HOST.fullmatch(host):
        return None
    labels = host.split(".")
    if _ends_in_number(labels[-1]):
        ipv4 = _parse_ipv4(labels)
        return None if ipv4 is None else (ipv4, True)
    return host, False


def _secret_like(scheme: str | None, raw: str, host: str) -> bool:
    """A host (not an IP literal) that is not kept: a single label other than localhost and
    browser pages, or one in which the secret rule set finds something (read before it was
    lower-cased, as the rules are case-sensitive: `AKIA...`, `eyJ...`)."""
    if "." not in host and host not in _SINGLE_LABEL_HOSTS and not (
            scheme in _BROWSER_SCHEMES and raw.islower() and _BROWSER_PAGE.fullmatch(host)):
        return True
    if "%" in raw:
        raw = unquote(raw, errors="replace")
    return default_sweep().sweep(raw)[1] > 0


class UrlSanitizer:
    """Parses URLs into `UrlParts`, caching per raw URL and per host.

    Pickles without its extractor and caches (a Beam worker rebuilds them
    lazily), so shipping it in a DoFn costs nothing. An extractor passed to
    the constructor is not pickled either: workers use `make_suffix_extractor()`.
    """

    def __init__(self, extractor: tldextract.TLDExtract | None = None) -> None:
        self._extractor = extractor
        self._hosts: dict[str, tuple[str | None, str | None]] = {}
        self._urls: dict[str, UrlParts] = {}
        self._authorities: dict[tuple[str | None, str], UrlParts] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    @property
    def extractor(self) -> tldextract.TLDExtract:
        """The public-suffix extractor, built on first use (not at construction or unpickling)."""
        if self._extractor is None:
            self._extractor = make_suffix_extractor()
        return self._extractor

    def sanitize(self, raw: str) -> UrlParts:
        """Reduce one URL to scheme/host/port/domain/suffix; never raises."""
        if not isinstance(raw, str):
            return _INVALID
        hit = self._urls.get(raw)
        if hit is not None:
            return hit
        try:
            parts = self._parse(raw)
        except Exception:  # noqa: BLE001 - a record must never fail because of its URL
            parts = _INVALID
        if len(raw) <= MAX_CACHED_URL_CHARS:
            if len(self._urls) >= URL_CACHE_LIMIT:
                self._urls.clear()
            self._urls[raw] = parts
        return parts

    def reduce(self, raw: str) -> str | None:
        """The URL as text without anything after the host: `scheme://host[:port]`.

        For free text, where a URL is replaced in place. `scheme:` for opaque
        URLs, `//host` without a scheme; None when nothing safe is left.
        """
        p = self.sanitize(raw)
        if p.status == OPAQUE:
            return f"{p.scheme}:" if p.scheme else None
        if p.status != OK or p.host is None:
            return None
        host = f"[{p.host}]" if ":" in p.host else p.host
        port = f":{p.port}" if p.port is not None else ""
        scheme = f"{p.scheme}:" if p.scheme else ""
        return f"{scheme}//{host}{port}"

    def authority(self, scheme: str, authority: str) -> UrlParts:
        """What `sanitize` gives for a URL matching AUTHORITY_PRINTABLE and AUTHORITY_PATTERN,
        from the pattern's lower-cased scheme and its authority: only they decide the result,
        and they repeat far more than whole URLs do, so a caller holding many URLs can ask
        once per authority."""
        try:
            return self._authority(scheme, authority, special=True)
        except Exception:  # noqa: BLE001 - as in sanitize: a record must never fail because of its URL
            return _INVALID

    def _domain(self, host: str) -> tuple[str | None, str | None]:
        hit = self._hosts.get(host)
        if hit is None:
            r = self.extractor(host)
            suffix = r.suffix or None
            hit = (f"{r.domain}.{r.suffix}" if r.domain and r.suffix else None, suffix)
            if len(self._hosts) >= HOST_CACHE_LIMIT:
                self._hosts.clear()
            self._hosts[host] = hit
        return hit

    def _parse(self, raw: str) -> UrlParts:
        s = raw.strip(_STRIP)
        if not s:
            return _EMPTY
        if "\t" in s or "\n" in s or "\r" in s:
            s = s.replace("\t", "").replace("\n", "").replace("\r", "")
        m = _SCHEME.match(s)
        if m is None:
            if s[:2] in ("//", "\\\\", "/\\", "\\/"):
                return self._authority(None, s.lstrip("/\\"), special=True)
            return self._authority(None, s, special=True)  # bare host, or a path: no host
        scheme = m.group()[:-1].lower()
        rest = s[m.end():]
        if scheme in DEFAULT_PORTS:
            return self._authority(scheme, rest.lstrip("/\\"), special=True)
        if scheme in OPAQUE_SCHEMES:
            return UrlParts(scheme, None, None, None, None, OPAQUE)
        if len(scheme) == 1 and rest[:1] in ("/", "\\"):  # C:\Users\... is a file path
            return UrlParts("file", None, None, None, None, OPAQUE)
        if rest.startswith("//"):
            if len(scheme) > MAX_SCHEME_CHARS:
                return _INVALID
            return self._authority(scheme, rest[2:], special=False)
        if scheme.startswith(_OPAQUE_PREFIX) and len(scheme) <= MAX_SCHEME_CHARS:
            return UrlParts(scheme, None, None, None, None, OPAQUE)
        head = _SPECIAL_END.split(rest, 1)[0]
        if "@" in head or _PORT.fullmatch(head):
            # `user:pw@host/x` or `localhost:8080/x`: what looked like a scheme is a
            # user name or a host, so parse host-first.
            return self._authority(None, s, special=True)
        # Unknown non-hierarchical scheme: in `alice:hunter2` it would be a user
        # name, so it is not kept.
        return UrlParts(None, None, None, None, None, OPAQUE)

    def _authority(self, scheme: str | None, rest: str, special: bool) -> UrlParts:
        end = (_SPECIAL_END if special else _OTHER_END).search(rest)
        auth = rest[: end.start()] if end else rest
        auth = auth[auth.rfind("@") + 1:]  # user info, however many `@`, is never looked at
        hit = self._authorities.get((scheme, auth))
        if hit is None:
            hit = self._host_port(scheme, auth)
            if len(auth) <= MAX_CACHED_URL_CHARS:
                if len(self._authorities) >= URL_CACHE_LIMIT:
                    self._authorities.clear()
                self._authorities[(scheme, auth)] = hit
        return hit

    def _host_port(self, scheme: str | None, auth: str) -> UrlParts:
        """Parts of `host[:port]` (user info already cut off): cached, since hosts repeat
        far more than whole URLs do."""
        if auth.startswith("["):
            close = auth.find("]")
            host = _ipv6(auth[1:close]) if close > 0 else None
            after = auth[close + 1:] if close > 0 else ""
            if host is None or (after and after[0] != ":"):
                return _fail(scheme, INVALID_HOST)
            port_text, is_ip = after[1:], True
        else:
            host_text, colon, port_text = auth.rpartition(":")
            if not colon:
                host_text, port_text = port_text, ""
            parsed = _host(host_text)
            if parsed is None:
                return _fail(scheme, INVALID_HOST)
            host, is_ip = parsed
            if not is_ip and _secret_like(scheme, host_text, host):
                return _fail(scheme, SECRET_LIKE)
        port = None
        if port_text:
            digits = port_text.lstrip("0") or "0"
            if not _PORT.fullmatch(port_text) or len(digits) > 5 or int(digits) > 65535:
                return _fail(scheme, INVALID_PORT)
            port = int(digits)
            if scheme is not None and DEFAULT_PORTS.get(scheme) == port:
                port = None
        if is_ip:
            return UrlParts(scheme, host, port, None, None, OK)
        registered, suffix = self._domain(host)
        return UrlParts(scheme, host, port, registered, suffix, OK)
