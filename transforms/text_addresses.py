"""Where a text names a person: URLs and their user info, e-mail addresses (also spelled out), profile
folders and other per-user paths, account SIDs.

The passes of `transforms/text.py` that cut URLs to `scheme://host[:port]`, replace `user:pw@host`,
e-mail addresses (`pz-<pseudonym>`; `bob [at] example [dot] org` too), the name in
`C:\\Users\\NAME`, `/home/NAME`, crontab and mailbox paths, and `S-1-5-21-...` SIDs.
"""

from __future__ import annotations

import re

from transforms.text_values import _SID, REDACTED, RunBase, _account_name, _is_placeholder, _pz, _sid_replacement

# A URL with a scheme, or a scheme-relative one with user info (`//bob:pw@host/x`).
_URL = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s\"'<>|`]+"
    r"|(?<![\w/\\:.-])//(?=[^\s\"'<>|`/?#@\\]{1,256}@[\w\[])[^\s\"'<>|`]+"
)
_URL_TRAILING = ").,;:]}\\!?"
_URL_USERINFO = re.compile(r"(?:://|^//)([^/?#@\s]{1,256})@")

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

_SSH_WORDS = frozenset({
    "ssh", "scp", "sftp", "rsync", "plink", "pscp", "psftp", "sshpass", "autossh", "mosh", "ssh-copy-id",
    "git", "putty", "kitty", "winscp", "psexec", "smbexec", "wmiexec", "atexec", "dcomexec", "secretsdump",
    "getuserspns", "getnpusers", "gettgt", "getst", "lookupsid", "mssqlclient", "rpcdump", "samrdump",
    "smbclient", "addcomputer", "ntlmrelayx",
})


class AddressRules(RunBase):
    """The passes for URLs, addresses, profiles and SIDs."""

    __slots__ = ()

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
