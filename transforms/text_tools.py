"""Command-line rules: how tools, switches, headers, config commands and key=value pairs carry credentials.

The passes of `transforms/text.py` that read a command line the way its tool does: PowerShell
credential objects and `ConvertTo-SecureString`, `echo pw | sudo -S`, HTTP headers, `net use/user`,
registry values named like a password, `--password`-style switches of any tool, Windows `/user:`
switches, the short options of the tools known to take credentials (`mysql -pX`, `psexec -u -p`,
`sshpass -p` ...), `git config user.email`, `aws configure set`, `key=value` pairs, LM:NT hashes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from transforms.text_values import (
    _KV_VALUE,
    _LONG_NAME_RE,
    _NOT_SWITCH,
    _VALUE,
    REDACTED,
    RunBase,
    _account_name,
    _eol,
    _is_placeholder,
    _secret_kind,
    _splice,
    _unquote,
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







class ToolRules(RunBase):
    """The command-line passes."""

    __slots__ = ()

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
