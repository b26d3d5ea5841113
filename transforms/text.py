"""Free-text scrubbing: process command lines and file/registry paths.

POLICY.md ("scrub" transform): no credential, raw account name or e-mail
address survives, while what threat analysis needs stays byte for byte: the
executable, the switch names, hosts (URLs are cut to `scheme://host[:port]`)
and paths outside user profiles.

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
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import unquote

from transforms.identifiers import scrub_identifiers
from transforms.secrets import SecretSweep, default_sweep, is_safe_token, join_userinfo
from transforms.special import latin_lookalike_words

REDACTED = "[REDACTED]"
PSEUDONYM_PREFIX = "pz-"

Pseudonym = Callable[[str, str], str]
UrlReducer = Callable[[str], "str | None"]

_CACHE_LIMIT = 50_000  # per worker; bounds memory, repeats are what pays
_CACHE_MAX_TEXT = 8192          # longer texts are scrubbed every time rather than pinned in memory
_PROPAGATE_MIN_NAME = 3         # shorter account names are not searched for elsewhere in the text
_PROPAGATE_MIN_SECRET = 4
_PROPAGATE_MAX = 256            # longer values are not searched for again
_PROPAGATE_MAX_HITS = 10_000
_PZ_FULL = re.compile(r"pz-[0-9a-f]{8,64}")
# En dash, em dash and horizontal bar: PowerShell reads them as '-' in front of a parameter name.
_PS_DASH = re.compile(r"[\u2013-\u2015](?=[^\W\d_])")

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


# --------------------------------------------------------------------------- rule patterns

# A URL with a scheme, or a scheme-relative one with user info (`//bob:pw@host/x`).
_URL = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s\"'<>|`]+"
    r"|(?<![\w/\\:.-])//(?=[^\s\"'<>|`/?#@\\]{1,256}@[\w\[])[^\s\"'<>|`]+"
)
_URL_TRAILING = ").,;:]}\\!?"
_URL_USERINFO = re.compile(r"(?:://|^//)([^/?#@\s]{1,256})@")

_ENCODED = re.compile(
    r"(?i)(?<![\w-])[-/](?P<sw>e[a-z]{0,13}|ec)(?:\s+|:)(?P<b64>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])"
)

_PSCRED = re.compile(
    r"(?i)(?P<head>(?:PSCredential|NetworkCredential)\]?(?:::new)?"
    r"(?:\s{0,8}\(|\s+-ArgumentList\s{0,8}(?:@?\()?|\s+(?=[\"'$@])))"
    r"(?P<args>(?:(?!\s-[A-Za-z])[^)\r\n;|]){1,1024})"
)
_PSCRED_LITERAL = re.compile(r"""'([^']*)'|"([^"]*)\"""")
_SECURESTRING = re.compile(
    r"(?i)(?P<head>ConvertTo-SecureString(?:\s+-(?:AsPlainText|Force|String)\b(?::\$\w+)?)*"
    rf"(?:\s+-String)?(?::|\s+)){_NOT_SWITCH}(?P<val>{_VALUE})"
)
_SECURESTRING_PIPE = re.compile(
    r"""(?i)(?P<val>"[^"\r\n]{0,1024}"|'[^'\r\n]{0,1024}')(?=\s{0,8}\|\s{0,8}ConvertTo-SecureString)"""
)
_ECHO_PIPE = re.compile(
    rf"(?i)(?<![\w-])(?:echo|printf)(?:\s+-[a-z]{{1,3}})?\s+(?P<val>{_VALUE})"
    r"(?=\s{0,8}\|\s{0,8}(?:sudo|passwd|chpasswd|su|smbpasswd|kinit|anydesk|[^|&;\r\n]{0,200}--?set-pass))"
)

_HEADER = re.compile(
    r"(?i)(?P<oq>[\"']?)(?<![\w\-/])"
    r"(?P<name>(?:proxy-)?authorization|(?:set-)?cookie"
    r"|[a-z0-9]{1,30}(?:-[a-z0-9]{1,30}){0,5}-(?:token|key|secret|auth|signature|session|sessionid|password"
    r"|credential|apikey))(?![\w-])"
    r"(?P<cq>[\"']?)[ \t]{0,8}(?P<sep>[:=])[ \t]{0,8}"
)
_HEADER_HINTS = ("authorization", "cookie", "-token", "-key", "-secret", "-auth", "-signature", "-session",
                 "-password", "-credential", "-apikey")
_HEADER_TOKEN = re.compile(r"[^\s\"']*")
_AUTH_SCHEME = re.compile(
    r"(?i)(?:bearer|basic|digest|negotiate|ntlm|token|apikey|api-key|aws4-hmac-sha256|hmac|sso-key)\s+"
)

_NET = re.compile(
    r"(?i)(?<![\w-])net1?(?:\.exe)?[\"']?\s+(?P<verb>use|user|localgroup|group)(?![\w-])"
    # to the end of the command: `&`, `|`, a line break, or a `;` standing alone (`pw;x` is one password)
    r"(?P<args>(?:[^&|\r\n\s]|\s(?!;(?:\s|$)))*)"
)
_NET_TOKEN = re.compile(r""""[^"]*"|'[^']*'|[^\s"']+(?:"[^"]*")?|["']""")
_NET_SWITCH = re.compile(r"(?i)/(?P<name>[a-z]+)(?P<sep>:)(?P<val>.*)", re.DOTALL)
_NET_MASKED_SWITCHES = frozenset({"user", "u", "fullname", "comment", "usercomment", "homedir", "profilepath",
                                  "scriptpath", "password", "pass", "p"})
_NET_KEPT_TOKEN = re.compile(r"[A-Za-z]:|\*")

_REG_VALUE = re.compile(
    r"(?i)(?<![\w-])(?:/v|-name)\s+(?P<vn>\"[^\"\r\n]{1,128}\"|'[^'\r\n]{1,128}'|[^\s\"']{1,128})"
    r"(?P<mid>(?:\s+[/-][a-z]\w{0,30}(?:\s+(?![/-][a-z])(?:\"[^\"\r\n]{0,256}\"|'[^'\r\n]{0,256}'"
    r"|[^\s\"']{1,256}))?){0,6}?)"
    rf"\s+(?P<dsw>/d|-value)\s+(?P<val>{_VALUE})"
)

# Switch candidates; whether the name carries a secret is decided in Python (cheaper than one big regex).
_DASH = re.compile(r"(?<![\w\-])(?P<dash>--?)(?P<name>[A-Za-z][\w.\-]{0,127})")
_DASH_VALUE = re.compile(
    rf"(?P<cq>[\"']?)(?P<sep>[ \t]{{0,8}}[=:][ \t]{{0,8}}|[ \t]+{_NOT_SWITCH})(?P<val>{_VALUE})"
)
_SPACED_VALUE = re.compile(rf"(?P<cq>[\"']?)(?P<sep>[ \t]+){_NOT_SWITCH}(?P<val>{_VALUE})")
_ATTACHED_VALUE = re.compile(rf"(?P<sep>[:=]?)(?![\s\-])(?P<val>{_VALUE})")
_SLASH = re.compile(r"(?<![\w/\\:.\-])/(?P<name>[A-Za-z][\w\-]{0,40})(?=[:=]|[ \t])")
_SLASH_COLON_VALUE = re.compile(rf"(?P<sep>[:=])(?P<val>{_VALUE})")
_SLASH_SPACED_VALUE = re.compile(rf"(?P<sep>[ \t]+){_NOT_SWITCH}(?P<val>{_VALUE})")
_SLASH_NAMES = frozenset({
    "rc4", "ntlm", "aes128", "aes256", "aes", "des", "password", "passwd", "pass", "pwd", "pw", "p", "u",
    "user", "username", "ticket", "key", "krbkey", "hash", "creduser", "credpassword", "certificate", "pth",
    "token", "secret", "rp", "ru", "krbtgt", "aeskey", "certpass", "pfxpass",
})
_SLASH_GLUED = re.compile(r"[a-z0-9]{1,30}(?:password|passwd|pwd|token|secret|credential|username)")
_SLASH_USER_NAMES = frozenset({"u", "user", "username", "creduser", "ru"})
# Windows switches that take a secret as the next token (`tool.exe /password x`) for any tool.
_SLASH_SPACED_SECRETS = frozenset({"password", "passwd", "pwd", "pass", "secret", "token", "apikey"})
_HTTP_VERSION = re.compile(r"HTTP/\d(?:\.\d)?", re.IGNORECASE)
_MSBUILD_PROPERTY = re.compile(r"[A-Za-z_][\w.]{1,63}=[^=]")
_MSBUILD_WORDS = frozenset({"msbuild", "dotnet", "devenv", "csc", "vbc", "nuget"})

_CONFIG_SET = re.compile(
    r"(?i)(?<![\w-])(?P<head>(?:configure\s+set|config(?:\s+--[a-z-]{1,20})*|setx(?:\s+/[a-z]{1,2})*)\s+)"
    rf"(?P<name>[\w.-]{{1,128}})(?P<sep>\s+){_NOT_SWITCH}(?P<val>{_VALUE})"
)
_GIT_PERSONAL = frozenset({"user.name", "user.email", "author.name", "author.email", "committer.name",
                           "committer.email", "sendemail.smtpuser"})

_KV_SEP = re.compile(r"[=:]")
_USER_ID_BEFORE = re.compile(r"(?i)(?<![\w])user\s{1,4}$")
_KV_VALUE_RE = re.compile(rf"(?P<val>{_KV_VALUE})")

_LMNT = re.compile(r"(?i)(?<![0-9a-z])[0-9a-f]{32}:[0-9a-f]{32}(?![0-9a-z])")     # used with .match()

_USERINFO = re.compile(
    r"(?<![^\s\"'=(,;<>|&/\\])(?:(?P<dom>[\w.-]{1,64})(?P<dsep>[/\\]))?"
    r"(?P<ui>[^\s\"'<>@:/\\=,;()|&\-][^\s\"'<>@:/\\=,;()|&]{0,127}:(?![\\/])[^\s\"'<>|]{0,256})"
    r"@(?P<host>\[[0-9A-Fa-f:.]{2,45}\]|[\w-]{1,63}(?:\.[\w-]{1,63}){0,9})"
)
_EMAIL = re.compile(
    r"(?<![\w.%+])(?P<local>\w[\w.%+\-]{0,63})(?P<at>@|%40)"
    r"(?P<host>\[[0-9A-Fa-f:.]{2,45}\]|[\w-]{1,63}(?:\.[\w-]{1,63}){0,9})"
)
# An address spelled to slip past a scan: `alice [at] example [dot] org`, `bob(at)corp.example`,
# `carol at example dot com`. The `at` is bracketed, or a plain word when a dot is spelled out too
# (`Error at System.IO.File` stays); the last label is a top-level domain of letters.
_OBF_AT = r"(?:\s{0,3}[\[({<]\s{0,3}(?:at|@)\s{0,3}[\])}>]\s{0,3}|\s{1,3}at\s{1,3})"
_OBF_DOT = r"(?:\s{0,3}[\[({<]\s{0,3}(?:dot|\.)\s{0,3}[\])}>]\s{0,3}|\s{1,3}dot\s{1,3}|\.)"
_OBF_EMAIL = re.compile(
    rf"(?i)(?<![\w.%+-])(?P<local>\w[\w.%+\-]{{0,63}}?)(?P<at>{_OBF_AT})"
    rf"(?P<host>[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?(?:{_OBF_DOT}[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?){{0,8}}"
    rf"{_OBF_DOT}[a-z]{{2,63}})(?![\w-])"
)
_OBF_GATE = re.compile(r"(?i)[\[({<]\s{0,3}(?:at|@)\s{0,3}[\])}>]|\bdot\b")
_OBF_PART = re.compile(rf"(?i){_OBF_DOT}")


def _may_have_obfuscated_email(low: str) -> bool:
    """A cheap screen for `_OBF_GATE` (lower-case text): the closing side of a bracketed `at`, or `dot`."""
    return "dot" in low or ("at" in low or "@" in low) and _OBF_HINT.search(low) is not None


_OBF_HINT = re.compile(r"(?:at|@)[\s\])}>]")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
# Extensions that are not top-level domains: `logo@2x.png` is a file, not an address.
_FILE_EXTENSIONS = frozenset({
    "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "exe", "dll", "sys", "txt",
    "log", "js", "mjs", "css", "json", "xml", "html", "htm", "tmp", "dat", "ini", "lnk", "bat", "ps1", "vbs",
    "yml", "yaml", "msi", "jar", "pdf", "docx", "xlsx", "gz", "tgz", "woff", "woff2", "ttf", "scss", "vue",
    "jsx", "tsx", "pdb", "obj", "lib",
})
_USERINFO_KEPT = frozenset({"git", "root"})


def _is_mail_domain(host: str) -> bool:
    """At least two labels and an alphabetic top-level label of two letters or more."""
    labels = host.split(".")
    return len(labels) >= 2 and all(labels) and labels[-1].isalpha() and len(labels[-1]) >= 2


_TOKEN_START = frozenset(" \t\r\n\"'=/\\(,;")
_TOKEN_END = frozenset(" \t\r\n\"':,;)/")

_PROFILE_EXCL = r"\\/\r\n\"'<>|:*?\[\];=,+&"
_PROFILE = re.compile(
    r"(?i)(?P<pre>[\\/]{1,2}(?:(?:users|documents and settings|home)\$?"
    # per-user files named after the account: crontabs (Debian, RHEL, BSD, macOS) and mailboxes
    r"|var[\\/]spool[\\/]cron(?:[\\/]crontabs)?|var[\\/](?:at|cron)[\\/]tabs|usr[\\/]lib[\\/]cron[\\/]tabs"
    r"|var[\\/](?:spool[\\/])?mail)[\\/]{1,2})"
    rf"(?P<name>[^{_PROFILE_EXCL}]{{0,62}}[^\s{_PROFILE_EXCL}](?=[\\/\"']|\Z)"
    rf"|[^\s(){_PROFILE_EXCL}]{{1,64}})"
)
_PROFILE_KEPT = frozenset({
    "public", "default", "default user", "all users", "defaultuser0", "default.migrated", "shared",
    "defaultapppool", "desktop.ini", "linuxbrew", ".", "..", "redacted",
    "crontabs", "atjobs", "atspool", "lastrun", "cron.allow", "cron.deny",   # under /var/spool/cron
    # default accounts of cloud images and service accounts named after their program: not persons,
    # and replacing `node` elsewhere in `node server.js` would cost the executable name
    "root", "ubuntu", "ec2-user", "centos", "debian", "fedora", "azureuser", "vagrant", "pi", "opc", "node",
    "git", "gitlab-runner", "runner", "jenkins", "www-data", "postgres", "mysql", "oracle", "redis", "nginx",
    "apache", "tomcat", "docker", "elasticsearch", "kafka", "hadoop", "mongodb", "rabbitmq", "ansible",
})

_ANY_SID = re.compile(r"(?i)S-1-\d{1,3}(?:-\d{1,10}){1,8}")
_SID = re.compile(r"(?i)(?<![A-Za-z0-9\-])S-1-(?P<auth>5-21|12-1)(?P<rest>(?:-\d{1,10}){3,5})(?!\d)")

# Unix account tools whose account is a positional argument: `su - bob`, `useradd -m -s /bin/sh bob`.
_SU = re.compile(
    r"(?<![\w-])su(?:\s+-(?![csgGw](?:\s|$)|-(?:command|shell|group|session-command|whitelist-environment)\b)"
    r"[A-Za-z-]{0,12})*\s+(?P<val>[A-Za-z_][\w.$-]{0,63})(?![\w.$\\/-])"
)
_ACCOUNT_TOOLS = re.compile(
    r"(?<![\w-])(?:passwd|useradd|adduser|usermod|userdel|deluser|chage|smbpasswd)"
    r"(?P<args>(?:[ \t]+[^\s&|;<>]{1,256}){1,16})"
)
_ACCOUNT_TOOL_WORDS = frozenset({
    "su", "passwd", "useradd", "adduser", "usermod", "userdel", "deluser", "chage", "smbpasswd",
})
_ORACLE = re.compile(
    r"(?i)(?<![\w-])(?:sqlplus|expdp|impdp|rman|sqlldr|dgmgrl)(?:\.exe)?[\"']?"
    r"(?:\s+-[a-z]{1,10})*\s+(?:(?:target|catalog|auxiliary)\s+)?"
    r"(?P<cred>[^\s/@\"'-][^\s/@\"']{0,127}/[^\s@\"']{0,256})(?=@|\s|$|[\"'])"
)
_ORACLE_AT = re.compile(r"(?<![\w/\\.:\-])(?P<cred>[A-Za-z_][\w$#]{0,127}/[^\s@\"'/]{1,256})@")
_ORACLE_WORDS = frozenset({"sqlplus", "expdp", "impdp", "rman", "sqlldr", "dgmgrl"})

# Tools whose short options carry credentials: (options taking a separate value, options with an
# attached value `-pSecret`, Windows `/u value` options). Option letters are case-sensitive.
_TOOL_OPTIONS: dict[str, tuple[frozenset[str], tuple[str, ...], frozenset[str]]] = {}


def _tools(names: Iterable[str], spaced: str = "", attached: str = "", slash: str = "") -> None:
    for n in names:
        _TOOL_OPTIONS[n] = (frozenset(spaced.split()), tuple(sorted(attached.split(), key=len, reverse=True)),
                            frozenset(slash.split()))


_tools(("mysql", "mysqldump", "mysqladmin", "mysqlimport", "mysqlcheck", "mysqlshow", "mysqlsh", "mariadb",
        "mariadb-dump", "mariadb-admin", "mysqlbinlog"), "u p", "u p")
_tools(("psexec", "psexec64", "paexec"), "u p U P")
_tools(("sshpass",), "p", "p")
_tools(("7z", "7za", "7zr", "7zz", "7zg"), "", "p")
_tools(("rar", "winrar", "unrar"), "", "p hp")
_tools(("zip", "unzip", "zipcloak"), "P", "P")
_tools(("sqlcmd", "osql", "isql", "bcp"), "U P", "U P")
_tools(("psql", "pg_dump", "pg_dumpall", "pg_restore", "pg_basebackup", "pgbench", "createdb", "dropdb",
        "vacuumdb", "reindexdb"), "U", "U")
_tools(("smbclient", "rpcclient", "winexe", "pth-winexe", "pth-smbclient", "pth-rpcclient", "smbget",
        "smbcacls"), "U", "U")
_tools(("smbmap", "crackmapexec", "cme", "nxc", "netexec", "evil-winrm", "kerbrute", "medusa", "rdesktop",
        "sprayhound"), "u p U P H")
_tools(("hydra", "ncrack", "patator"), "l p")
_tools(("curl",), "u b E", "u")
_tools(("redis-cli", "keydb-cli"), "a")
_tools(("mongo", "mongosh", "mongodump", "mongorestore", "mongoexport", "mongoimport", "mongostat",
        "mongotop"), "u p")
_tools(("ssh", "plink", "autossh", "putty", "kitty", "pscp", "psftp"), "l")
_tools(("lftp",), "u")
_tools(("openssl",), "k")
_tools(("certutil",), "p")
_tools(("winrs",), "", "u p")
# Active Directory tools: `dsquery user -u CORP\bob -p PW`, `dsmod ... -pwd PW` (the word rule takes -pwd).
_tools(("dsquery", "dsadd", "dsmod", "dsget", "dsrm", "dsmove"), "u p", "")
_tools(("ssh-keygen",), "N P", "N P")     # new and old passphrase
_tools(("snmpwalk", "snmpget", "snmpset", "snmpbulkwalk", "snmpbulkget", "snmpgetnext", "snmptable", "snmptrap",
        "snmpdelta", "snmpdf", "snmpstatus", "snmptest", "snmpinform", "snmpusm", "onesixtyone"), "c u A X", "c")
_tools(("ipmitool",), "U P", "U P")
_tools(("mosquitto_pub", "mosquitto_sub", "mosquitto_rr"), "u P", "")
_tools(("sudo", "doas", "runuser", "crontab", "pkill", "pgrep", "top", "htop", "killall"), "u")
_tools(("useradd", "usermod"), "p")
_tools(("schtasks", "tasklist", "taskkill", "systeminfo", "getmac", "driverquery", "openfiles", "eventcreate",
        "eventtriggers", "gpresult", "eventquery"), "", "", "u p user")
# `docker login -u x -p y` and friends: only with the `login` verb (`docker run -p 80:80` is a port).
_LOGIN_TOOLS = frozenset({
    "docker", "podman", "nerdctl", "buildah", "skopeo", "oras", "helm", "az", "oc", "cf",
})
_ACCOUNT_CMDLETS = frozenset({
    "new-localuser", "set-localuser", "get-localuser", "remove-localuser", "enable-localuser",
    "disable-localuser", "rename-localuser", "new-aduser", "set-aduser", "get-aduser", "remove-aduser",
    "enable-adaccount", "disable-adaccount", "unlock-adaccount", "set-adaccountpassword",
})
_SHORT_USER_OPTIONS = frozenset({"u", "U", "l"})
_LOGIN_OPTIONS: tuple[frozenset[str], tuple[str, ...], frozenset[str]] = (frozenset({"u", "p"}), (), frozenset())

_SSH_WORDS = frozenset({
    "ssh", "scp", "sftp", "rsync", "plink", "pscp", "psftp", "sshpass", "autossh", "mosh", "ssh-copy-id",
    "git", "putty", "kitty", "winscp", "psexec", "smbexec", "wmiexec", "atexec", "dcomexec", "secretsdump",
    "getuserspns", "getnpusers", "gettgt", "getst", "lookupsid", "mssqlclient", "rpcdump", "samrdump",
    "smbclient", "addcomputer", "ntlmrelayx",
})
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


def _may_have_header(low: str) -> bool:
    """Cheap test: a header-like name followed by `:` or `=` (after an optional quote and blanks)."""
    for hint in _HEADER_HINTS:
        i = low.find(hint)
        while i >= 0:
            j = i + len(hint)
            while j < len(low) and low[j] in "\"' \t" and j - i - len(hint) < 10:
                j += 1
            if j < len(low) and low[j] in ":=":
                return True
            i = low.find(hint, i + 1)
    return False


def _sid_replacement(sid: str, pseudonym: Pseudonym) -> str:
    m = _SID.fullmatch(sid)
    if m is None:
        return sid
    canonical = f"S-1-{m['auth']}{m['rest']}"
    return f"S-1-{m['auth']}-{_pz(pseudonym, 'sid', canonical)}"


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


# --------------------------------------------------------------------------- the scrubber


class _Run:
    """State of one `scrub_text` call: the counter and what was found."""

    __slots__ = ("pseudonym", "reduce_url", "count", "names", "secrets", "words")

    def __init__(self, pseudonym: Pseudonym, reduce_url: UrlReducer, words: set[str]) -> None:
        self.pseudonym = pseudonym
        self.reduce_url = reduce_url
        self.count = 0
        self.names: set[str] = set()
        self.secrets: set[str] = set()
        self.words = words

    # -- replacements ----------------------------------------------------------

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

    # -- passes ----------------------------------------------------------------

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

    def urls(self, text: str) -> str:
        def repl(m: re.Match) -> str:
            url = m[0]
            tail = len(url)
            while tail > 0 and url[tail - 1] in _URL_TRAILING:
                tail -= 1
            url, rest = url[:tail], url[tail:]
            if url.endswith("://"):
                return m[0]
            ui = _URL_USERINFO.search(url)
            if ui:
                self.name(_account_name(ui[1]))
            out = self.reduce_url(url)
            return self.swap(url, REDACTED if out is None else out) + rest

        return _URL.sub(repl, text)

    def powershell_credentials(self, text: str, low: str) -> str:
        def cred(m: re.Match) -> str:
            args = m["args"]
            stripped = args.rstrip()
            if stripped.strip() in ("", REDACTED):
                return m[0]
            for single, double in _PSCRED_LITERAL.findall(args):
                self.name(_account_name(single or double))
            return m["head"] + self.swap(stripped, REDACTED) + args[len(stripped):]

        def value(m: re.Match) -> str:
            return m[0][: m.start("val") - m.start()] + self.secret(m["val"])

        if "convertto-securestring" in low:      # first: a credential object may hold one
            text = _SECURESTRING.sub(value, text)
            text = _SECURESTRING_PIPE.sub(lambda m: self.secret(m["val"]), text)
        if "credential" in low:
            text = _PSCRED.sub(cred, text)
        if "|" in text and ("echo" in self.words or "printf" in self.words):
            text = _ECHO_PIPE.sub(value, text)
        return text

    def headers(self, text: str) -> str:
        def edits() -> Iterator[tuple[int, int, str]]:
            n = len(text)
            last = 0
            for m in _HEADER.finditer(text):
                if m.start() < last:
                    continue
                start = m.end()
                name = m["name"].lower()
                if start < n and text[start] in "\"'":
                    close = text.find(text[start], start + 1)
                    vstart, end = start + 1, close if close >= 0 else _eol(text, start + 1)
                elif m["oq"] and not m["cq"]:
                    close = text.find(m["oq"], start)
                    vstart, end = start, close if close >= 0 else _eol(text, start)
                elif name in ("authorization", "proxy-authorization", "cookie", "set-cookie"):
                    vstart, end = start, _eol(text, start)
                else:
                    token = _HEADER_TOKEN.match(text, start)
                    vstart, end = start, token.end() if token else start
                value = text[vstart:end]
                scheme = _AUTH_SCHEME.match(value)
                prefix = scheme[0] if scheme else ""
                secret = value[len(prefix):].rstrip()
                if not secret or secret == REDACTED:
                    continue
                self.count += 1
                self.remember_secret(secret)
                last = vstart + len(prefix) + len(secret)
                yield vstart, last, prefix + REDACTED

        return _splice(text, edits())

    def net_commands(self, text: str) -> str:
        def repl(m: re.Match) -> str:
            verb = m["verb"].lower()
            args = m["args"]
            bare = 0

            def edits() -> Iterator[tuple[int, int, str]]:
                nonlocal bare
                for t in _NET_TOKEN.finditer(args):
                    tok = t[0]
                    core = _unquote(tok)
                    new = tok
                    if tok in ('"', "'") or not core:
                        continue
                    if core.startswith("/"):
                        s = _NET_SWITCH.fullmatch(tok)
                        if s and s["val"] and s["name"].lower() in _NET_MASKED_SWITCHES:
                            kind = "user" if s["name"].lower() in ("user", "u") else "secret"
                            new = tok[: s.start("val")] + self.value(s["val"], kind)
                    elif verb == "use":
                        if not (_NET_KEPT_TOKEN.fullmatch(core) or core.startswith(("\\\\", "//"))
                                or "://" in core):
                            new = self.secret(tok)
                    else:
                        bare += 1
                        if verb == "user" and bare == 1 or verb != "user" and bare >= 2:
                            new = self.account_token(tok, core)
                        elif verb == "user" and core != "*":
                            new = self.secret(tok)
                    if new != tok:
                        yield t.start(), t.end(), new

            new_args = _splice(args, edits())
            return m[0] if new_args == args else m[0][: m.start("args") - m.start()] + new_args

        return _NET.sub(repl, text)

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

    def registry_values(self, text: str) -> str:
        def repl(m: re.Match) -> str:
            kind = _secret_kind(_unquote(m["vn"]))
            if kind is None:
                return m[0]
            return m[0][: m.start("val") - m.start()] + self.value(m["val"], kind)

        return _REG_VALUE.sub(repl, text)

    def dash_options(self, text: str, spaced: frozenset[str], attached: tuple[str, ...]) -> str:
        """`--password x`, `-Password:x`, `--db-user=x` for any tool; `-p x`, `-pX` for the known tools."""
        account_cmdlet = not _ACCOUNT_CMDLETS.isdisjoint(self.words)

        def edits() -> Iterator[tuple[int, int, str]]:
            last = 0
            for m in _DASH.finditer(text):
                if m.start() < last:
                    continue
                name, end = m["name"], m.end()
                e = None
                if m["dash"] == "-" and name in spaced:
                    kind: str | None = "user" if name in _SHORT_USER_OPTIONS else "secret"
                    e = self.value_edit(_SPACED_VALUE.match(text, end), kind or "secret")
                if e is None:
                    kind = _secret_kind(name)
                    if kind is None and account_cmdlet and name.lower() == "name":
                        kind = "user"       # New-LocalUser -Name bob
                    if kind is not None:
                        e = self.value_edit(_DASH_VALUE.match(text, end), kind)
                if e is None and m["dash"] == "-":
                    for opt in attached:
                        if name.startswith(opt):
                            vm = _ATTACHED_VALUE.match(text, m.start("name") + len(opt))
                            e = self.value_edit(vm, "user" if opt in _SHORT_USER_OPTIONS else "secret")
                            break
                if e:
                    last = e[1]
                    yield e

        return _splice(text, edits())

    def slash_options(self, text: str, spaced: frozenset[str]) -> str:
        """`/user:x`, `/ntlm:x`, `/ru x`, `/rp x`, `/password x`; `/u x`, `/p x` for the known tools."""
        def edits() -> Iterator[tuple[int, int, str]]:
            n = len(text)
            last = 0
            for m in _SLASH.finditer(text):
                end = m.end()
                if end >= n or m.start() < last:
                    continue
                name = m["name"].lower()
                kind = "user" if name in _SLASH_USER_NAMES else "secret"
                if text[end] in ":=":
                    if name not in _SLASH_NAMES and not _SLASH_GLUED.fullmatch(name):
                        continue
                    vm = _SLASH_COLON_VALUE.match(text, end)
                    if (vm and name == "p" and _MSBUILD_PROPERTY.match(_unquote(vm["val"]))
                            and not _MSBUILD_WORDS.isdisjoint(self.words)):
                        continue    # msbuild /p:Name=Value: the key=value pass judges it
                elif name in ("ru", "rp") or name in spaced or name in _SLASH_SPACED_SECRETS:
                    vm = _SLASH_SPACED_VALUE.match(text, end)
                    if vm and name not in spaced and _HTTP_VERSION.fullmatch(vm["val"]):
                        continue    # `GET /token HTTP/1.1`: a request line, not a switch
                else:
                    continue
                e = self.value_edit(vm, kind)
                if e:
                    last = e[1]
                    yield e

        return _splice(text, edits())

    def tool_options(self, text: str) -> str:
        spaced: set[str] = set()
        attached: set[str] = set()
        slashed: set[str] = set()
        found = [_TOOL_OPTIONS[w] for w in self.words if w in _TOOL_OPTIONS]
        if "login" in self.words and not _LOGIN_TOOLS.isdisjoint(self.words):
            found.append(_LOGIN_OPTIONS)
        for sp, at, sl in found:
            spaced.update(sp)
            attached.update(at)
            slashed.update(sl)
        if "-" in text:
            text = self.dash_options(text, frozenset(spaced), tuple(sorted(attached, key=len, reverse=True)))
        if "/" in text:
            text = self.slash_options(text, frozenset(slashed))
        if not _ACCOUNT_TOOL_WORDS.isdisjoint(self.words):
            text = _SU.sub(lambda m: m[0][: m.start("val") - m.start()] + self.user(m["val"]), text)
            text = _ACCOUNT_TOOLS.sub(self.account_tool, text)
        if not _ORACLE_WORDS.isdisjoint(self.words):
            text = _ORACLE.sub(self.oracle_credentials, text)
            text = _ORACLE_AT.sub(self.oracle_credentials, text)
        return text

    def account_tool(self, m: re.Match) -> str:
        args = m["args"]
        last = args.split()[-1]
        if last.startswith("-") or _is_placeholder(last):
            return m[0]
        i = args.rfind(last)
        return m[0][: m.start("args") - m.start()] + args[:i] + self.user(last) + args[i + len(last):]

    def oracle_credentials(self, m: re.Match) -> str:
        cred = m["cred"]
        if _is_placeholder(cred):
            return m[0]
        user, _, pw = cred.partition("/")
        self.name(user)
        self.remember_secret(pw)
        head, tail = m[0][: m.start("cred") - m.start()], m[0][m.end("cred") - m.start():]
        return head + self.swap(cred, REDACTED) + tail

    def config_values(self, text: str) -> str:
        def repl(m: re.Match) -> str:
            name = m["name"].lower()
            kind = "secret" if name in _GIT_PERSONAL else (
                _secret_kind(name.rsplit(".", 1)[-1]) or _secret_kind(name))
            if kind is None:
                return m[0]
            e = self.value_edit(m, kind)
            return m[0] if e is None else m[0][: e[0] - m.start()] + e[2] + m[0][e[1] - m.start():]

        return _CONFIG_SET.sub(repl, text)

    def key_values(self, text: str) -> str:
        """`password=x`, `Pwd=x;`, `User ID=x`, `AWS_SECRET_ACCESS_KEY=x`, `"token": "x"`, `password: x`."""
        def edits() -> Iterator[tuple[int, int, str]]:
            last = 0
            for sep in _KV_SEP.finditer(text):
                i = sep.start()
                if i < last:
                    continue
                k = i
                while k > 0 and i - k < 8 and text[k - 1] in " \t":
                    k -= 1
                quoted = k > 0 and text[k - 1] in "\"'"
                if quoted:
                    k -= 1 + (k > 1 and text[k - 2] == "\\")
                key_end = k
                while k > 0 and key_end - k < 120 and (text[k - 1].isalnum() or text[k - 1] in "_.-"):
                    k -= 1
                key = text[k:key_end].lstrip("-._")      # `:_authToken=x` (.npmrc)
                if not key or k > 0 and text[k - 1] == "_":
                    continue
                kind: str | None
                if key.lower() == "id" and _USER_ID_BEFORE.search(text, max(0, k - 12), k):
                    kind = "user"
                elif sep[0] == ":" and not quoted and not _LONG_NAME_RE.fullmatch(key):
                    continue    # `C:\`, `user:pw@host`, `/user:` ... only `password: x` without quotes
                else:
                    kind = _secret_kind(key)
                    if kind is None:
                        continue
                v = i + 2 if text.startswith("=>", i) else i + 1    # `:password => "x"` (Ruby, Perl, PHP)
                while v < len(text) and v - i <= 8 and text[v] in " \t":
                    v += 1
                e = self.value_edit(_KV_VALUE_RE.match(text, v), kind)
                if e:
                    last = e[1]
                    yield e

        return _splice(text, edits())

    def hashes(self, text: str) -> str:
        """LM:NT hash pairs (`aad3b435...:31d6cfe0...`)."""
        def edits() -> Iterator[tuple[int, int, str]]:
            i = text.find(":", 32)
            while i >= 0:
                m = _LMNT.match(text, i - 32)
                if m:
                    self.remember_secret(m[0])
                    self.count += 1
                    yield m.start(), m.end(), REDACTED
                    i = text.find(":", m.end() + 32)
                else:
                    i = text.find(":", i + 1)

        return _splice(text, edits())

    def userinfo(self, text: str) -> str:
        def repl(m: re.Match) -> str:
            user, _, pw = m["ui"].partition(":")
            if _is_placeholder(user) and pw in ("", REDACTED):
                return m[0]
            s = m.start("ui")
            if (not m["dom"] and s > 0 and text[s - 1] == "/" and (s == 1 or text[s - 2] in _TOKEN_START)
                    and user.isalpha() and len(user) <= 20):
                return m[0]     # a `/m:alice@example.com` switch: the e-mail pass takes the value
            self.name(_account_name(user))
            if pw != REDACTED:
                self.remember_secret(pw)
            self.count += 1
            return f"{m['dom'] or ''}{m['dsep'] or ''}{REDACTED}@{m['host']}"

        return _USERINFO.sub(repl, text)

    def emails(self, text: str) -> str:
        ssh = not _SSH_WORDS.isdisjoint(self.words) or any(w.startswith("impacket-") for w in self.words)

        def repl(m: re.Match) -> str:
            local, host, ext = m["local"], m["host"], ""
            labels = host.split(".")
            if len(labels) >= 3 and labels[-1].lower() in _FILE_EXTENSIONS:
                # `alice@corp.com.pdf`, `bob@10.0.0.1.log`: an address naming a file; `logo@2x.png` is not
                base = host[: -len(labels[-1]) - 1]
                if _IPV4.fullmatch(base) or _is_mail_domain(base):
                    host, ext = base, host[len(base):]
            labels = host.split(".")
            tld = labels[-1]
            is_ip = host.startswith("[") or _IPV4.fullmatch(host) is not None
            emailish = ext != "" or (not is_ip and _is_mail_domain(host) and tld.lower() not in _FILE_EXTENSIONS)
            s, e = m.start(), m.end()
            at_token = (s == 0 or text[s - 1] in _TOKEN_START) and (e == len(text) or text[e] in _TOKEN_END)
            if m["at"] == "@" and at_token and (ssh or is_ip) and not ext:
                if local.lower() in _USERINFO_KEPT or _is_placeholder(local):
                    return m[0]
                self.name(local)
                self.count += 1
                return f"{REDACTED}@{host}"
            if not emailish:
                return m[0]
            switch = ""
            if s > 0 and text[s - 1] == "-" and (s == 1 or text[s - 2] in _TOKEN_START) and len(local) > 1:
                switch, local = local[0], local[1:]     # `sendmail -falice@example.com`: `-f` is a switch
            self.name(local)
            self.count += 1
            return switch + _pz(self.pseudonym, "email", f"{local}@{host}".lower()) + ext

        return _EMAIL.sub(repl, text)

    def obfuscated_emails(self, text: str) -> str:
        def repl(m: re.Match) -> str:
            at = m["at"].strip().lower()
            host = _OBF_PART.sub(".", m["host"])
            if at == "at" and host.count(".") == m["host"].count("."):
                return m[0]     # a plain ` at ` needs a spelled-out dot: `failed at Foo.Bar.dll` is no address
            local = m["local"]
            self.name(local)
            self.count += 1
            return _pz(self.pseudonym, "email", f"{local}@{host}".lower())

        return _OBF_EMAIL.sub(repl, text)

    def profiles(self, text: str) -> str:
        def repl(m: re.Match) -> str:
            name = m["name"]
            rest = ""
            if (m.end() == len(text) and any(c.isspace() for c in name)
                    and any(c.isspace() for c in text[: m.start()])):
                # `dir C:\Users\bob foo` ending a command line: only the first word is the name.
                first = name.split()[0]
                rest = name[len(first):]
                name = first
            low = name.lower()
            if low in _PROFILE_KEPT or name[0] in "%$~[" or low.startswith("pz-") or _is_placeholder(name):
                return m[0]
            self.name(name)
            self.count += 1
            return m["pre"] + self.account_pz(name) + rest

        return _PROFILE.sub(repl, text)

    def sids(self, text: str) -> str:
        def repl(m: re.Match) -> str:
            self.count += 1
            return _sid_replacement(m[0], self.pseudonym)

        return _SID.sub(repl, text)

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
