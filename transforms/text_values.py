"""What the free-text rules replace, and how: account names, secret values, and the state of one scrub.

Shared by the rule modules (`transforms/text_tools.py`, `transforms/text_addresses.py`) and the
scrubber (`transforms/text.py`): which accounts are built-in and stay, how a switch or key name
says it carries a secret or an account, how a value is masked (quotes kept), and `RunBase`, the
counter and the names and secrets found so far, which are replaced wherever else they occur.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

REDACTED = "[REDACTED]"
PSEUDONYM_PREFIX = "pz-"
Pseudonym = Callable[[str, str], str]
UrlReducer = Callable[[str], "str | None"]
_PROPAGATE_MIN_NAME = 3         # shorter account names are not searched for elsewhere in the text
_PROPAGATE_MIN_SECRET = 4
_PZ_FULL = re.compile(r"pz-[0-9a-f]{8,64}")

# --------------------------------------------------------------------------- accounts

# Non-personal built-in accounts: kept in `user` fields and as values of user switches.
_BUILTIN_NAMES = frozenset({
    "system", "local system", "localsystem", "local service", "localservice", "network service",
    "networkservice", "anonymous logon", "root",
})
_BUILTIN_NAME_PATTERN = re.compile(r"(?:dwm|umfd)-\d{1,5}", re.IGNORECASE)
# The well-known names under NT AUTHORITY: nothing else there is built-in.
_NT_AUTHORITY_NAMES = frozenset({
    "system", "local system", "localsystem", "local service", "localservice", "network service",
    "networkservice", "anonymous logon", "iusr", "authenticated users", "interactive", "network", "service",
    "batch", "dialup", "remote interactive logon", "enterprise domain controllers", "self",
    "this organization", "other organization", "restricted", "terminal server user", "write restricted",
    "local account", "local account and member of administrators group", "ntlm authentication",
    "digest authentication", "schannel authentication", "proxy", "user mode drivers",
    "this organization certificate",
})
# Windows-internal account domains whose members are services, app pools, groups or session accounts:
# a name there is built-in only when it looks like one (no '@', blanks or '=').
_BUILTIN_DOMAINS = frozenset({
    "nt authority", "nt service", "iis apppool", "window manager", "font driver host", "builtin",
})
_SERVICE_NAME = re.compile(r"[A-Za-z0-9_.$-]{1,64}")
# Account domains kept in `user` fields besides NetBIOS-looking names (letters only).
_KEPT_DOMAINS = _BUILTIN_DOMAINS | {"workgroup", "microsoftaccount", "azuread"}
_NETBIOS_DOMAIN = re.compile(r"[A-Za-z]{1,15}")
# `alice@corp.example.com`: the part after '@' is kept only when it is a DNS domain, not a host name.
_DNS_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,10}[A-Za-z]{2,63}")


def _is_builtin_name(name: str) -> bool:
    n = name.strip().lower()
    return n in _BUILTIN_NAMES or _BUILTIN_NAME_PATTERN.fullmatch(n) is not None


def is_builtin_account(value: str) -> bool:
    """True for SYSTEM, LOCAL/NETWORK SERVICE, root, DWM-n, UMFD-n, the well-known NT AUTHORITY names
    and service, app pool and group names under NT SERVICE, IIS APPPOOL, BUILTIN & co."""
    s = value.strip().strip("\"'")
    domain, sep, name = s.rpartition("\\")
    if sep:
        d = domain.strip().lower()
        if d == "nt authority":
            return name.strip().lower() in _NT_AUTHORITY_NAMES
        if d in _BUILTIN_DOMAINS:
            return _SERVICE_NAME.fullmatch(name) is not None
        if not (d in _KEPT_DOMAINS or _NETBIOS_DOMAIN.fullmatch(domain)):
            return False        # `DESKTOP-4F2A9\root`: the computer name is not built-in
    return _is_builtin_name(name)


def _pz(pseudonym: Pseudonym, kind: str, value: str) -> str:
    return PSEUDONYM_PREFIX + pseudonym(kind, value)


def _account_host(host: str, pseudonym: Pseudonym) -> str:
    """The part after '@' of an account: a DNS domain stays, a host name is pseudonymised."""
    if not host or _DNS_DOMAIN.fullmatch(host) or _PZ_FULL.fullmatch(host):
        return host
    return _pz(pseudonym, "host", host.lower())


def scrub_account(value: str, pseudonym: Pseudonym) -> str:
    """Account of a `user` field with the name pseudonymised: `CORP\\alice` -> `CORP\\pz-<hex>`.

    `alice@corp.example` keeps its domain (`pz-<hex>@corp.example`) when it is
    a DNS domain (a dot and an alphabetic top-level label); anything else after
    '@' (`bob@alices-macbook-pro`) is a computer name and is pseudonymised with
    kind `host`. Built-in accounts stay; an account SID is pseudonymised as in
    free text. The domain part is kept when it is a Windows-internal,
    WORKGROUP/MicrosoftAccount/AzureAD or NetBIOS-looking domain (letters
    only); anything else there (`DESKTOP-4F2A9\\alice`, `Alices-MBP\\alice`) is a
    computer name and is pseudonymised with kind `host`. A domain with an
    empty name (`alice\\`) is pseudonymised whole. The name's pseudonym is
    `pseudonym('account', name.lower())`, as for `C:\\Users\\alice` in paths.
    """
    if not isinstance(value, str):
        return value
    s = value.strip()
    if not s:
        return value
    if _SID.fullmatch(s):
        return _sid_replacement(s, pseudonym)
    if is_builtin_account(s) or _ANY_SID.fullmatch(s):     # well-known SIDs: S-1-5-18, S-1-5-32-544 ...
        return value
    domain, sep, name = s.rpartition("\\")
    if sep and not name:
        return _pz(pseudonym, "account", s.lower())
    if (sep and domain and domain.lower() not in _KEPT_DOMAINS and not _NETBIOS_DOMAIN.fullmatch(domain)
            and not _PZ_FULL.fullmatch(domain)):
        domain = _pz(pseudonym, "host", domain.lower())
    local, at, host = name.rpartition("@")
    if at and local:
        host = _account_host(host, pseudonym)
        if _PZ_FULL.fullmatch(local) or local.lower() in _BUILTIN_NAMES:
            return f"{domain}{sep}{local}@{host}"
        return f"{domain}{sep}{_pz(pseudonym, 'account', local.lower())}@{host}"
    if _PZ_FULL.fullmatch(name) or (sep and _is_builtin_name(name)):
        return f"{domain}{sep}{name}"       # `DESKTOP-4F2A9\\SYSTEM`: the computer name went above
    return f"{domain}{sep}{_pz(pseudonym, 'account', name.lower())}"


_ACCOUNT_SPLIT = re.compile(r"[\\/]")


def _account_name(value: str) -> str:
    """`"CORP\\bob"`, `corp/bob`, `bob@corp`, `bob:pw`, `bob%pw` -> `bob`."""
    s = _ACCOUNT_SPLIT.split(value.strip().strip("\"'"))[-1]
    return s.split("@", 1)[0].split(":", 1)[0].split("%", 1)[0]


_ANY_SID = re.compile(r"(?i)S-1-\d{1,3}(?:-\d{1,10}){1,8}")
_SID = re.compile(r"(?i)(?<![A-Za-z0-9\-])S-1-(?P<auth>5-21|12-1)(?P<rest>(?:-\d{1,10}){3,5})(?!\d)")

def _sid_replacement(sid: str, pseudonym: Pseudonym) -> str:
    m = _SID.fullmatch(sid)
    if m is None:
        return sid
    canonical = f"S-1-{m['auth']}{m['rest']}"
    return f"S-1-{m['auth']}-{_pz(pseudonym, 'sid', canonical)}"

# --------------------------------------------------------------------------- values and names

# A value after a switch or `=`: escaped-quoted, quoted (PowerShell doubling and backtick escapes;
# an unterminated quote runs to the end of the line), a quoted string in parentheses, or a bare token.
_QUOTED = (
    r'\\"[^"\r\n]{0,1024}?\\"|\\"[^"\r\n]{0,1024}'
    r'|"(?:[^"\r\n`]|`.|""){0,1024}"?'
    r"|'(?:[^'\r\n]|''){0,1024}'?"
)
_PAREN_QUOTED = r"""\(\s{0,8}(?:"[^"\r\n]{0,1024}"|'[^'\r\n]{0,1024}')\s{0,8}\)"""
_PAREN_QUOTED_RE = re.compile(_PAREN_QUOTED)
_VALUE = rf"""(?:{_QUOTED}|{_PAREN_QUOTED}|[^\s"']{{1,1024}})"""
_KV_VALUE = rf"""(?:{_QUOTED}|\{{[^}}\r\n]{{0,1024}}\}}?|[^\s"'&;]{{1,1024}})"""
# After a space, a token that looks like a switch or a shell operator is not a value.
_NOT_SWITCH = r"""(?!-{1,2}[A-Za-z]|/[A-Za-z]|[&|<>;])"""

# Names of switches, parameters and keys that carry a secret or an account. "Long" words may be glued
# to a prefix (`AccountPassword`, `PGPASSWORD`); "short" ones stand alone or after `-`, `_` or `.`.
_LONG_WORDS = (
    "password|passwd|passphrase|passcode|token|secret|secretkey|apikey|accesskey|accountkey|privatekey"
    "|credentials|credential|username|sessionid|sessid|sessiontoken|signature|storepass|keypass|keyid"
    "|samaccountname|userprincipalname|sharedaccesskey|sharedaccesssignature|sshpass|bearer"
    "|givenname|surname|displayname|fullname|emailaddress"
)
_SHORT_WORDS = (
    "pass|pwd|pw|user|userid|uid|sid|auth|sig|key|login|cred|creds|hash|hashes|session|cookie|author"
    "|identity|passin|passout|aeskey|ntlm|rc4|cert|key[-_]id|user[-_]name|user[-_]id|session[-_]id"
    "|member|members|obj|usr"
)
_NAME_RE = re.compile(
    rf"(?:[a-z0-9]{{1,30}}[-_.]){{0,6}}[a-z0-9]{{0,30}}(?:{_LONG_WORDS})"
    rf"|(?:[a-z0-9]{{1,30}}[-_.]){{0,6}}(?:{_SHORT_WORDS})",
    re.IGNORECASE,
)
_LONG_NAME_RE = re.compile(
    rf"(?:[a-z0-9]{{1,30}}[-_.]){{0,6}}[a-z0-9]{{0,30}}(?:{_LONG_WORDS})", re.IGNORECASE
)
_USER_ENDINGS = (
    "username", "user_name", "user-name", "userid", "user_id", "user-id", "user", "uid", "login", "identity",
    "samaccountname", "userprincipalname", "member", "members", "obj", "usr",
)
_NAME_EXCLUDED = frozenset({"usedefaultcredentials", "usedefaultcredential", "defaultcredentials"})
_KIND_CACHE: dict[str, str | None] = {}


def _secret_kind(name: str) -> str | None:
    """'user' when `name` names an account, 'secret' when a secret, None otherwise."""
    hit = _KIND_CACHE.get(name, "")
    if hit != "":
        return hit
    n = name.strip().strip("\"'").lower()
    kind = None
    if (n not in _NAME_EXCLUDED and not n.startswith(("no-", "no_")) and len(n) <= 128
            and _NAME_RE.fullmatch(n)):
        kind = "user" if n.endswith(_USER_ENDINGS) else "secret"
    if len(_KIND_CACHE) >= 50_000:
        _KIND_CACHE.clear()
    _KIND_CACHE[name] = kind
    return kind


def _unquote(v: str) -> str:
    if v.startswith('\\"'):
        v = v[2:]
        return v[:-2] if v.endswith('\\"') else v
    if v[:1] in ('"', "'"):
        q = v[0]
        v = v[1:]
        return v[:-1] if v.endswith(q) else v
    if v.startswith("(") and v.endswith(")"):
        return _unquote(v[1:-1].strip())
    return v


def _mask(v: str) -> str:
    """`v` with its content replaced by [REDACTED], quotes and parentheses kept."""
    if not v:
        return v
    if v.startswith('\\"'):
        close = '\\"' if len(v) >= 4 and v.endswith('\\"') else ""
        inner = v[2:len(v) - len(close)]
        return v if inner in ("", REDACTED) else '\\"' + REDACTED + close
    c = v[0]
    if c in ('"', "'"):
        close = c if len(v) > 1 and v.endswith(c) else ""
        inner = v[1:len(v) - len(close)]
        return v if inner in ("", REDACTED) else c + REDACTED + close
    if c == "(" and v.endswith(")") and ('"' in v or "'" in v):
        i = min(p for p in (v.find('"'), v.find("'")) if p >= 0)
        j = v.rfind(v[i])
        return v if j <= i or v[i + 1:j] in ("", REDACTED) else v[:i + 1] + REDACTED + v[j:]
    if c == "{":
        close = "}" if len(v) > 1 and v.endswith("}") else ""
        inner = v[1:len(v) - len(close)]
        return v if inner in ("", REDACTED) else "{" + REDACTED + close
    return v if v == REDACTED else REDACTED


def _is_placeholder(core: str) -> bool:
    return core == REDACTED or _PZ_FULL.fullmatch(core) is not None


def _splice(text: str, edits: Iterator[tuple[int, int, str]]) -> str:
    """Apply (start, end, replacement) edits given in text order; overlapping ones are skipped."""
    out: list[str] = []
    pos = 0
    for start, end, rep in edits:
        if start < pos:
            continue
        out.append(text[pos:start])
        out.append(rep)
        pos = end
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)

def _eol(text: str, start: int) -> int:
    ends = [i for i in (text.find("\n", start), text.find("\r", start)) if i >= 0]
    return min(ends) if ends else len(text)

def _is_boundary(text: str, i: int) -> bool:
    return i < 0 or i >= len(text) or not text[i].isalnum()


class RunBase:
    """State of one `scrub_text` call: the counter and what was found."""

    __slots__ = ("pseudonym", "reduce_url", "count", "names", "secrets", "words")

    def __init__(self, pseudonym: Pseudonym, reduce_url: UrlReducer, words: set[str]) -> None:
        self.pseudonym = pseudonym
        self.reduce_url = reduce_url
        self.count = 0
        self.names: set[str] = set()
        self.secrets: set[str] = set()
        self.words = words

    def swap(self, old: str, new: str) -> str:
        if new != old:
            self.count += 1
        return new

    def secret(self, value: str) -> str:
        """Mask a secret value; remember it so that other copies go too."""
        out = _mask(value)
        if out != value:
            self.count += 1
            self.remember_secret(_unquote(value))
        return out

    def remember_secret(self, core: str) -> None:
        if len(core) >= _PROPAGATE_MIN_SECRET and not _is_placeholder(core) and not core.startswith("$"):
            self.secrets.add(core)

    def user(self, value: str) -> str:
        """Mask an account name unless it is a non-personal built-in."""
        core = _unquote(value)
        if not core or _is_placeholder(core) or is_builtin_account(core):
            return value
        self.name(_account_name(core))
        for sep in (":", "%"):
            if sep in core:
                self.remember_secret(core.partition(sep)[2])
        return self.swap(value, _mask(value))

    def value(self, value: str, kind: str) -> str:
        return self.user(value) if kind == "user" else self.secret(value)

    def name(self, name: str) -> None:
        n = name.strip()
        if (len(n) >= _PROPAGATE_MIN_NAME and not _is_placeholder(n) and n.lower() not in _BUILTIN_NAMES
                and n.lower() != "redacted" and _secret_kind(n) is None):
            self.names.add(n)

    def account_pz(self, name: str) -> str:
        return _pz(self.pseudonym, "account", name.lower())

    def value_edit(self, vm: re.Match | None, kind: str) -> tuple[int, int, str] | None:
        """Edit masking the `val` group of a value match (None: nothing to do)."""
        if vm is None:
            return None
        val = vm["val"]
        if val.startswith(("(", "$(", "@(")) and not _PAREN_QUOTED_RE.fullmatch(val):
            return None     # a PowerShell expression: its literals are judged by the other rules
        new = self.value(val, kind)
        return None if new == val else (vm.start("val"), vm.end("val"), new)

    def account_token(self, tok: str, core: str) -> str:
        if _is_placeholder(core) or is_builtin_account(core):
            return tok
        self.name(_account_name(core))
        new_core = scrub_account(core, self.pseudonym)
        if new_core == core:
            return tok
        self.count += 1
        i = tok.find(core)
        return tok[:i] + new_core + tok[i + len(core):]
