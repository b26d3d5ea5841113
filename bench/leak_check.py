"""Adversarial corpus: secrets planted in every string field of every record type; planted vs leaked.

    python bench/leak_check.py [--seed 7] [--fields]

Classes (issue 13):
  1  token formats with no keyword next to them (cloud keys, source-hosting and chat tokens,
     payment/API keys, JWTs, PEM private keys, `Basic <base64>`, long random tokens)
  2  tools and spellings that take a secret: curl -U, ldapsearch -w, htpasswd -b, vault login,
     echo | docker login --password-stdin, heroku auth:token, /key, -k, sqlplus u/p@db,
     runas & echo, password keywords in other languages
  3  the command-line forms the README lists (mysql -pX, net use, --password=, headers ...),
     here also in fields whose transform is `text`
  4  URLs inside free text: user info split by white space or line breaks, opaque schemes
     (data:, javascript:, about:, ms-settings:, mailto:) carrying a token
  5  duplicate keys that would open the consent gate or the children rule
  7  special-category field names in disguise (look-alike letters, digits for letters,
     dotted or glued spellings, terms of more categories and languages)
  8  disguised identifiers and secrets: percent-encoded once or more, an -EncodedCommand
     holding a credential (no byte of its payload may survive), look-alike letters in a tool's
     switch, spelled-out addresses (`bob [at] example [dot] org`), per-user system paths
     (crontabs, mailboxes), a line break inside an account name or address

Every value is synthetic: token formats are built from the providers' documented shapes
(prefix, alphabet, length) with random characters, so nothing here is a real secret. A
planted secret has leaked when its random core appears anywhere in the output tables or
the quarantine, in any letter case (classes 1-4), when a duplicate-key record is written (5), or when a
special-category field is not counted as special category (7).

The base of this work can be measured too: `PYTHONPATH=/path/to/old/tree python bench/leak_check.py`
(this script only appends its own tree to sys.path).
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import string
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime

import orjson

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)

from schemas.policy import load_policy  # noqa: E402
from transforms.columnar import sanitize_columnar  # noqa: E402
from transforms.records import SanitizeContext, sanitize_lines  # noqa: E402

KEY = b"leak-check-key-0123456789abcdef-0123"
AS_OF = datetime(2026, 11, 25, tzinfo=UTC)
TS = "2026-11-20T10:04:05Z"
ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits
B64 = ALNUM + "+/"


class Planter:
    """Random synthetic values; every secret carries a core that is searched for in the output."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def s(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def mixed(self, n: int) -> str:
        """Letters and digits, at least one of each kind (a password someone typed)."""
        return (self.s(string.ascii_uppercase, 1) + self.s(string.ascii_lowercase, 1) + self.s(string.digits, 1)
                + self.s(ALNUM, n - 3))

    def password(self) -> str:
        return "Zq" + self.mixed(10)


# Each template: (class, name, builder) -> builder(planter) returns (text, [cores that must not appear]).
def _tokens(p: Planter) -> list[tuple[str, str, list[str]]]:
    jwt_head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
    body = base64.urlsafe_b64encode(orjson.dumps({"sub": p.s(ALNUM, 12), "iat": 1700000000})).decode().rstrip("=")
    sig = p.s(ALNUM + "-_", 43)
    pem_body = "\n".join(p.s(B64, 64) for _ in range(4))
    basic = base64.b64encode(f"zquser:{p.password()}".encode()).decode()
    out = []
    for name, tok, core in [
        ("aws-key-id", (k := "AKIA" + p.s(UPPER_DIGITS, 16)), k[4:]),
        ("aws-sts-id", (k := "ASIA" + p.s(UPPER_DIGITS, 16)), k[4:]),
        ("aws-secret", (k := p.s(ALNUM, 18) + "/" + p.s(ALNUM, 10) + "+" + p.s(ALNUM, 10)), k),
        ("github-pat", (k := "ghp_" + p.s(ALNUM, 36)), k[4:]),
        ("github-oauth", (k := "gho_" + p.s(ALNUM, 36)), k[4:]),
        ("github-fine-grained", (k := "github_pat_" + p.s(ALNUM, 22) + "_" + p.s(ALNUM, 59)), k[11:]),
        ("gitlab-pat", (k := "glpat-" + p.s(ALNUM + "-_", 20)), k[6:]),
        ("slack-bot", (k := f"xoxb-{p.s(string.digits, 12)}-{p.s(string.digits, 13)}-{p.s(ALNUM, 24)}"), k[-24:]),
        ("slack-user", (k := f"xoxp-{p.s(string.digits, 12)}-{p.s(string.digits, 12)}-{p.s(string.digits, 12)}-"
                             f"{p.s('0123456789abcdef', 32)}"), k[-32:]),
        ("stripe-live", (k := "sk_live_" + p.s(ALNUM, 24)), k[8:]),
        ("stripe-restricted", (k := "rk_live_" + p.s(ALNUM, 24)), k[8:]),
        ("openai", (k := "sk-" + p.s(ALNUM, 48)), k[3:]),
        ("openai-project", (k := "sk-proj-" + p.s(ALNUM + "_-", 56)), k[8:]),
        ("anthropic", (k := "sk-ant-api03-" + p.s(ALNUM + "_-", 93) + "AA"), k[13:60]),
        ("jwt", (k := f"{jwt_head}.{body}.{sig}"), sig),
        ("pem-rsa", f"-----BEGIN RSA PRIVATE KEY-----\n{pem_body}\n-----END RSA PRIVATE KEY-----", pem_body[:40]),
        ("pem-openssh", f"-----BEGIN OPENSSH PRIVATE KEY-----\n{pem_body}\n-----END OPENSSH PRIVATE KEY-----",
         pem_body[70:110]),
        ("pem-pkcs8-cut", f"-----BEGIN PRIVATE KEY-----\n{pem_body}", pem_body[140:180]),
        ("basic-auth", f"Basic {basic}", basic),
        ("google-api", (k := "AIza" + p.s(ALNUM + "_-", 35)), k[4:]),
        ("npm", (k := "npm_" + p.s(ALNUM, 36)), k[4:]),
        ("sendgrid", (k := f"SG.{p.s(ALNUM + '_-', 22)}.{p.s(ALNUM + '_-', 43)}"), k[3:]),
        ("vault", (k := "hvs." + p.s(ALNUM + "_-", 90)), k[4:60]),
        ("random-40", (k := p.mixed(40)), k),
        # providers with no rule of their own: one case, or hex after a word (the entropy rule's other half)
        ("random-lower-32", (k := p.s(string.ascii_lowercase, 2) + p.s(string.digits, 2)
                             + p.s(string.ascii_lowercase + string.digits, 28)), k),
        ("random-upper-28", (k := "ZQ" + p.s(string.digits, 2) + p.s(UPPER_DIGITS, 24)), k),
        ("unknown-prefix-lower", "zqtok_live_" + (k := p.s(string.digits, 2) + p.s(string.ascii_lowercase
                                                                                 + string.digits, 30)), k),
        ("unknown-prefix-hex-48", "zqkey_" + (k := "a1" + p.s("0123456789abcdef", 46)), k),
        ("unknown-prefix-hex-64", "zq_v1_" + (k := "b2" + p.s("0123456789abcdef", 62)), k),
    ]:
        out.append((name, tok, [core]))
    return out


_CLASS1_FRAMES = ["{T}", "run {T} now", "C:\\tools\\agent.exe {T}", "cfg {T};", "\"{T}\""]

_CLASS2 = [
    ("curl-proxy-user", "curl -U zqproxy:{S} -x http://proxy.example:3128 https://h.example/"),
    ("curl-user-space", "curl.exe --user zqbob:{S} https://h.example/api"),
    ("ldapsearch-w", "ldapsearch -x -H ldap://dc.example -D cn=admin,dc=example,dc=com -w {S} -b dc=example,dc=com"),
    ("ldapmodify-w", "ldapmodify -D cn=admin -w{S} -f change.ldif"),
    ("htpasswd-b", "htpasswd -b /etc/nginx/.htpasswd zqalice {S}"),
    ("htpasswd-nb", "htpasswd -nbB zqalice {S}"),
    ("vault-login", "vault login {S}"),
    ("vault-login-method", "vault login -method=token {S}"),
    ("docker-stdin", "echo {S} | docker login --password-stdin -u zqbob registry.example.com"),
    ("docker-stdin-quoted", "echo \"{S}\" | docker login registry.example.com -u zqbob --password-stdin"),
    ("heroku-token", "heroku auth:token {S}"),
    ("slash-key", "app /key {S}"),
    ("dash-k", "app -k {S}"),
    ("sqlplus", "sqlplus scott/{S}@ORCL"),
    ("sqlplus-silent", "sqlplus -s system/{S}@//db.example:1521/XE"),
    ("runas-echo", "runas /user:CORP\\zqadmin cmd.exe & echo {S}"),
    ("passwort", "tool.exe Passwort={S}"),
    ("wachtwoord", "wachtwoord={S}"),
    ("mot-de-passe", "sync mot_de_passe={S} --go"),
    ("contrasena", "contraseña={S}"),
    ("kennwort-colon", "Kennwort: {S}"),
    # found by an independent hostile corpus after the first version of this work
    ("dsquery-p", "dsquery user -u CORP\\zqadmin -p {S} -limit 0"),
    ("dsmod-pwd", "dsmod user cn=zq,dc=corp -pwd {S} -mustchpwd yes"),
    ("pwd-colon", "PWD:{S}"),
    ("pass-colon-space", "Pass: {S}"),
    ("securestring-in-credential", "$c = New-Object System.Management.Automation.PSCredential -ArgumentList "
                                   "\"zqbob\",(ConvertTo-SecureString -String \"{S}\" -AsPlainText -Force)"),
    ("securestring-positional", "ConvertTo-SecureString '{S}' -AsPlainText -Force"),
    ("greek", "κωδικός πρόσβασης: {S}"),
    ("arabic", "كلمة المرور={S}"),
    ("glued-p-any-program", "backup-agent.exe -u zqbob -p{S} --run"),
    ("ssh-keygen-N", "ssh-keygen -t ed25519 -N {S} -f id_zq"),
    ("ssh-keygen-P", "ssh-keygen -p -P {S} -N '' -f id_zq"),
    ("rclone-pair", "rclone config create zqs3 s3 access_key_id ZQID secret_access_key {S}"),
    ("rclone-pass", "rclone config create zqsftp sftp host h.example user zqbob pass {S}"),
]

_CLASS3 = [
    ("mysql-p", "mysql -u root -p{S}"),
    ("mysql-p-db", "mysqldump -uroot -p{S} shop > dump.sql"),
    ("net-use", "net use \\\\srv\\share /user:CORP\\zqbob {S}"),
    ("curl-u", "curl -u zqbob:{S} https://api.example/v1"),
    ("password-eq", "backup.exe --password={S}"),
    ("ps-password", "Connect-Thing -Password {S}"),
    ("authorization", "Authorization: Bearer {S}"),
    ("cookie", "Cookie: session={S}"),
    ("sshpass", "sshpass -p {S} ssh zqbob@host.example"),
    ("conn-string", "Server=db.example;User ID=sa;Password={S};"),
    ("psexec", "psexec \\\\host -u admin -p {S} cmd"),
    ("url-userinfo", "git clone https://zqbob:{S}@git.example/repo.git"),
]

_CLASS4 = [
    ("userinfo-newline", "https://zqalice{U}:\n{S}@h.example/"),
    ("userinfo-newline-before-colon", "see https://zqalice{U}\n:{S}@h.example/x"),
    ("userinfo-tab", "https://zqalice{U}:{S}\t@h.example/"),
    ("userinfo-crlf", "open https://zqalice{U}:\r\n{S}@h.example/login"),
    ("userinfo-space", "https://zqalice{U}: {S}@h.example/"),
    ("data-url", "data:text/plain;base64,{S}"),
    ("javascript", "javascript:void(fetch('/t?{S}'))"),
    ("about-blank", "about:blank#{S}"),
    ("ms-settings", "ms-settings:{S}"),
    ("mailto", "mailto:zqalice{U}@example.com?subject={S}"),
    ("data-in-command", "chrome.exe data:text/html,<b>{S}</b>"),
    ("scheme-relative", "fetch //zqalice{U}:{S}@h.example/path"),
]

_CLASS8 = [
    ("crontab", "/var/spool/cron/crontabs/zqbob{U}"),
    ("crontab-rhel", "crontab -u zqbob{U} -l > /var/spool/cron/zqbob{U}"),
    ("mailbox", "mail spool /var/mail/zqbob{U} is full"),
    ("email-bracket-at", "zqbob{U} [at] example [dot] org"),
    ("email-paren-at", "contact zqbob{U}(at)corp.example.com"),
    ("email-spelled", "mail zqbob{U} at example dot com"),
    ("profile-percent", "%2FUsers%2Fzqbob{U}%2FDownloads%2Fa.dmg"),
    ("profile-percent-windows", "C:%5CUsers%5Czqbob{U}%5CDocuments%5Cx.docx"),
    ("url-double-percent", "url=https%253A%252F%252Fzqbob{U}%253A{S}%2540db.example"),
    ("password-percent", "agent --password%3D{S}"),
    ("cyrillic-switch", "sshp\u0430ss -\u0440 {S} ssh zqbob{U}@10.0.0.1"),
    ("cyrillic-switch-mysql", "mysql -u zqbob{U} -\u0440{S}"),
    ("linebreak-account", "psexec \\\\h.example -u CORP\\zq\nbob{U} -p {S} cmd"),
    ("linebreak-email", "sent to zqbob{U}\nmail{U}@example.org at 10:04"),
    ("encoded-command", "powershell.exe -NoP -Enc {E}"),
]


def _encoded_command(secret: str, user: str) -> tuple[str, str]:
    """(-EncodedCommand payload holding a credential, its first 12 characters: `$pw='` encoded)."""
    script = f"$pw='{secret}'; net use \\\\srv\\c$ $pw /u:zqbob{user}".encode("utf-16-le")
    payload = base64.b64encode(script).decode()
    return payload, payload[:12]


# Special-category names in disguise (class 7): (planted name, expected category).
SPECIAL_NAMES = [
    ("r\u0435ligion", "religion"),                 # Cyrillic e
    ("\u0440olitical_opinion", "political_opinion"),  # Cyrillic er looks like p
    ("h\u0435alth_status", "health"),
    ("\u0455exual_orientation", "sexual_orientation"),  # Cyrillic dze looks like s
    ("\u0397\u0399V", "health"),                    # Greek Eta Iota
    ("\u03b5thnicity", "racial_or_ethnic_origin"),  # Greek epsilon
    ("\u029c\u1d07\u1d00\u029f\u1d1b\u029c", "health"),  # small capitals
    ("\u0280\u1d07\u029f\u026a\u0262\u026a\u1d0f\u0274", "religion"),
    ("h3alth", "health"), ("r3l1gion", "religion"), ("s3xual1ty", "sexual_orientation"),
    ("b10metric", "biometric"), ("g3netic_data", "genetic"), ("d1sab1lity", "health"),
    ("h.e.a.l.t.h", "health"), ("r_e_l_i_g_i_o_n", "religion"), ("sexual.orientation", "sexual_orientation"),
    ("tradeunionmember", "trade_union"), ("trade.union", "trade_union"), ("politicalopinion", "political_opinion"),
    ("userReligiousbelief", "religion"), ("ethnicorigin", "racial_or_ethnic_origin"),
    ("HIV", "health"), ("hivStatus", "health"), ("diagnoses", "health"), ("medication", "health"),
    ("pregnancy", "health"), ("disability", "health"), ("gay", "sexual_orientation"),
    ("transgender", "sexual_orientation"), ("ethnie", "racial_or_ethnic_origin"), ("Rasse", "racial_or_ethnic_origin"),
    ("iris", "biometric"), ("retina_scan", "biometric"), ("voiceprint", "biometric"), ("genotype", "genetic"),
    ("church", "religion"), ("mosque", "religion"), ("zwanger", "health"), ("schwanger", "health"),
    ("behinderung", "health"), ("handicap", "health"), ("medicijnen", "health"), ("medikamente", "health"),
    ("lesbian", "sexual_orientation"), ("bisexual", "sexual_orientation"), ("homosexuell", "sexual_orientation"),
    ("kerk", "religion"), ("kirche", "religion"), ("eglise", "religion"), ("syndicalist", "trade_union"),
    ("gezichtsherkenning", "biometric"), ("gesichtserkennung", "biometric"), ("dna_sample", "genetic"),
    ("partij", "political_opinion"), ("parteimitglied", "political_opinion"), ("voting_intention", "political_opinion"),
    # other languages and scripts, found missing by an independent hostile corpus
    ("salud", "health"), ("здоровье", "health"), ("религия", "religion"), ("saúde", "health"),
    ("religião", "religion"), ("zdrowie", "health"), ("sağlık", "health"), ("健康", "health"), ("宗教", "religion"),
    ("orientación_sexual", "sexual_orientation"), ("opinión_política", "political_opinion"),
    ("sindicato", "trade_union"), ("etnia", "racial_or_ethnic_origin"), ("huella_dactilar", "biometric"),
    ("cinsel_yönelim", "sexual_orientation"), ("sendika", "trade_union"), ("профсоюз", "trade_union"),
    ("политические_взгляды", "political_opinion"), ("этническое_происхождение", "racial_or_ethnic_origin"),
    ("性取向", "sexual_orientation"), ("工会", "trade_union"), ("民族", "racial_or_ethnic_origin"),
    ("指纹", "biometric"), ("基因", "genetic"), ("genetyczne", "genetic"), ("用户健康状态", "health"),
]


def _base_record(policy, rtype: str, n: int) -> dict:
    tpol = policy.types[rtype]
    consent = {"eula": True, **{flag: True for flag in tpol.consent}}
    data: dict = {}
    for rule in tpol.fields:
        t = rule.transform
        data[rule.name] = (1 if t in ("int",) else 1.5 if t == "float" else True if t == "bool"
                           else 52.37 if t == "coarse_coordinate" else TS if t == "timestamp"
                           else (rule.values[0] if t == "enum" else "x"))
    return {"schema_version": 1, "type": rtype, "event_id": f"e-{n}", "device_id": f"D-{n}", "user_id": f"U-{n}",
            "ts": TS, "country": "NL", "product": "KIS 21.3",
            "consent": consent, "is_child": rtype == "child_protection", "data": data}


def string_fields(policy) -> list[tuple[str, str]]:
    """(record type, field path) of every field that holds a string: envelope and data."""
    out = []
    for rtype, tpol in policy.types.items():
        for rule in policy.envelope:
            out.append((rtype, rule.name))
        for rule in tpol.fields:
            if rule.transform not in ("int", "float", "bool", "coarse_coordinate"):
                out.append((rtype, "data." + rule.name))
    return out


def build_corpus(seed: int = 7, sample: int = 1):
    """([(class, template, type, field, line, cores)], duplicate-key lines, special-category lines).
    `sample` > 1 keeps one (field, template) pair in `sample`, rotating, so every field still gets
    templates of every class and every template lands in many fields (the suite's smaller run)."""
    policy = load_policy()
    p = Planter(seed)
    planted = []
    n = 0
    for f, (rtype, field) in enumerate(string_fields(policy)):
        values: list[tuple[str, str, str, list[str]]] = []
        for name, tok, cores in _tokens(p):
            frame = _CLASS1_FRAMES[n % len(_CLASS1_FRAMES)]
            values.append(("1", name, frame.replace("{T}", tok), cores))
            n += 1
        for cls, table in (("2", _CLASS2), ("3", _CLASS3)):
            for name, template in table:
                secret = p.password()
                values.append((cls, name, template.replace("{S}", secret), [secret]))
        for name, template in _CLASS4:
            secret, user = p.password(), p.s(ALNUM, 6)
            values.append(("4", name, template.replace("{S}", secret).replace("{U}", user), [secret, "zqalice" + user]))
        for name, template in _CLASS8:
            secret, user = p.password(), p.s(string.digits, 6)
            payload, head = _encoded_command(secret, user)
            who = "bob" + user if "zq\nbob" in template else "zqbob" + user    # the part after the break
            cores = [secret, who] if "{S}" in template else [who]
            if "{E}" in template:
                cores = [head]
            values.append(("8", name, template.replace("{S}", secret).replace("{U}", user).replace("{E}", payload),
                           cores))
        for t, (cls, name, value, cores) in enumerate(values):
            if (f + t) % sample:
                continue
            n += 1
            rec = _base_record(policy, rtype, n)
            if field.startswith("data."):
                rec["data"][field[5:]] = value
            else:
                rec[field] = value
            planted.append((cls, name, rtype, field, orjson.dumps(rec), cores))
    duplicates = []
    for rtype in policy.types:
        n += 1
        line = orjson.dumps(_base_record(policy, rtype, n))
        tag = b'"eula":true'
        duplicates += [
            (rtype, "consent flag false then true", line.replace(tag, b'"eula":false,' + tag, 1)),
            (rtype, "is_child true then false", line.replace(b'"data":', b'"is_child":true,"data":', 1)),
            (rtype, "consent object repeated", line.replace(b'"data":', b'"consent":{"eula":false},"data":', 1)),
            (rtype, "escaped repeat", line.replace(tag, b'"eula":false,"e\\u0075la":true', 1)),
            (rtype, "nested repeat", line.replace(b'"data":{', b'"data":{"zz":{"a":1,"a":2},', 1)),
        ]
    special = []
    for r, rtype in enumerate(policy.types):
        for k, (name, category) in enumerate(SPECIAL_NAMES):
            n += 1
            for w, where in enumerate(("data", "nested", "top")):
                if (r + k + w) % sample:
                    continue
                rec = _base_record(policy, rtype, n)
                secret = "zqsc" + p.s(ALNUM, 10)
                if where == "data":
                    rec["data"][name] = secret
                elif where == "nested":
                    rec["data"]["extra"] = {name: secret}
                else:
                    rec[name] = secret
                special.append((rtype, name, category, where, orjson.dumps(rec), secret))
    return planted, duplicates, special


def _strings(result) -> str:
    """Every string cell of the output tables and the quarantine, one blob."""
    parts = []
    for table in [*result.outputs.values(), result.quarantine]:
        if table is None:
            continue
        for column in table.columns:
            if str(column.type) in ("string", "large_string") or str(column.type).startswith("list<"):
                parts.extend(str(v) for v in column.to_pylist() if v is not None)
    return "\n".join(parts)


def _ctx() -> SanitizeContext:
    return SanitizeContext(policy=load_policy(), key=KEY, as_of=AS_OF)


def run(seed: int = 7, sample: int = 1) -> dict:
    """Planted and leaked counts per class, per field and per template."""
    planted, duplicates, special = build_corpus(seed, sample)
    ctx = _ctx()
    blob_parts = []
    batch = 1000
    lines = [item[4] for item in planted]
    for start in range(0, len(lines), batch):
        numbered = list(enumerate(lines[start:start + batch], start + 1))
        blob_parts.append(_strings(sanitize_columnar(ctx, "corpus.ndjson", 0, numbered)))
    blob = "\n".join(blob_parts).lower()     # URL hosts are lower-cased: `AKIA...` is still a leak as `akia...`
    per_class: dict[str, Counter] = defaultdict(Counter)
    per_field: dict[str, Counter] = defaultdict(Counter)
    leaked_examples: dict[str, list[str]] = defaultdict(list)
    for cls, name, rtype, field, _line, cores in planted:
        leak = any(core.lower() in blob for core in cores)
        for table, key in ((per_class, cls), (per_field, f"{rtype}.{field}")):
            table[key]["planted"] += 1
            table[key]["leaked"] += leak
        if leak:
            leaked_examples[cls].append(f"{name} in {rtype}.{field}")
    # 5: a record with a repeated key must not be written
    numbered = list(enumerate([d[2] for d in duplicates], 1))
    dup_result = sanitize_lines(ctx, "dups.ndjson", 0, numbered)
    written = sum(t.num_rows for t in dup_result.outputs.values())
    per_class["5"]["planted"] += len(duplicates)
    per_class["5"]["leaked"] += written
    # 7: each disguised special-category field must be counted as special category
    special_ctx = _ctx()
    for rtype, name, category, where, line, secret in special:
        result = sanitize_lines(special_ctx, "special.ndjson", 0, [(1, line)])
        counted = sum(v for k, v in result.stats.items() if k.startswith(f"special_category/{category}/"))
        missed = counted < 1 or secret in _strings(result)
        per_class["7"]["planted"] += 1
        per_class["7"]["leaked"] += missed
        if missed:
            leaked_examples["7"].append(f"{name!r} ({where}) in {rtype}")
    return {"per_class": per_class, "per_field": per_field, "examples": leaked_examples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--sample", type=int, default=1, help="keep one (field, template) pair in N (default: all)")
    ap.add_argument("--fields", action="store_true", help="also print planted/leaked per field")
    ap.add_argument("--examples", type=int, default=5, help="leaked examples shown per class")
    args = ap.parse_args()
    res = run(args.seed, args.sample)
    print("| class | planted | leaked |\n|---|---:|---:|")
    for cls in sorted(res["per_class"]):
        c = res["per_class"][cls]
        print(f"| {cls} | {c['planted']} | {c['leaked']} |")
    if args.fields:
        print("\n| field | planted | leaked |\n|---|---:|---:|")
        for field in sorted(res["per_field"]):
            c = res["per_field"][field]
            print(f"| {field} | {c['planted']} | {c['leaked']} |")
    for cls, examples in sorted(res["examples"].items()):
        shown = Counter(e.split(" in ")[0] for e in examples)
        print(f"class {cls} leaks by template: {dict(shown.most_common(args.examples))}")


if __name__ == "__main__":
    main()
