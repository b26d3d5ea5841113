"""Free text: the secret rule set (schemas/secrets.toml), the clean-value proof and the leak corpus."""

from __future__ import annotations

import os
import re
import sys

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.secrets import (
    REDACTED,
    SecretRulesError,
    SecretSweep,
    is_safe_token,
    join_userinfo,
    load_rules,
    looks_random,
)
from transforms.text import scrub_free_text, scrub_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import leak_check  # noqa: E402


def _pz(kind: str, value: str) -> str:
    return "0123456789abcdef0123456789abcdef"


def _url(url: str) -> str:
    return "https://h.example"


def scrub(text: str) -> str:
    return scrub_free_text(text, _pz, _url)[0]


@pytest.fixture(scope="module")
def sweep() -> SecretSweep:
    return SecretSweep()


@pytest.mark.parametrize("text, secret", [
    # 1: token formats alone (synthetic values of the documented shapes)
    ("AKIAZQ7D3F5H2J4K6L8M", "ZQ7D3F5H2J4K6L8M"),
    ("sync ghp_Zq01234567890abcdefABCDEFghijklmnopq", "Zq01234567890abcdef"),
    ("github_pat_11ZQ0123456789abcdefgh_ZqAbCdEf0123456789ZqAbCdEf0123456789ZqAbCdEf0123456789Zq", "ZqAbCdEf"),
    ("glpat-Zq0123456789abcdeFGH", "Zq0123456789"),
    ("xoxb-123456789012-1234567890123-ZqAbCdEfGhIjKlMnOpQrStUv", "ZqAbCdEf"),
    ("charge sk_live_Zq0123456789abcdefABCDEF", "Zq0123456789"),
    ("sk-Zq0123456789abcdefABCDEF0123456789abcdefABCDEF", "Zq0123456789"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ6cSJ9.Zq0123456789abcdefABCDEFghij", "Zq0123456789"),
    ("-----BEGIN EC PRIVATE KEY-----\nZqAbCdEf0123456789\n-----END EC PRIVATE KEY-----", "ZqAbCdEf"),
    ("-----BEGIN PRIVATE KEY-----\nZqAbCdEf0123456789 (cut off)", "ZqAbCdEf"),
    ("Basic enF1c2VyOlpxUzNjcmV0", "enF1c2VyOlpxUzNjcmV0"),
    ("key Zq7mK2pQ9xL4vN8bR3tW6yH1cF5gJ0dS", "Zq7mK2pQ9xL4vN8bR3tW6yH1cF5gJ0dS"),
    # 2: tools and spellings
    ("curl -U zqproxy:ZqS3cretPw -x http://proxy.example:3128 https://h.example/", "ZqS3cretPw"),
    ("ldapsearch -x -D cn=admin -w ZqS3cretPw -b dc=example", "ZqS3cretPw"),
    ("htpasswd -b /etc/htpasswd zqbob ZqS3cretPw", "ZqS3cretPw"),
    ("vault login ZqS3cretPw", "ZqS3cretPw"),
    ("echo ZqS3cretPw | docker login --password-stdin -u zqbob registry.example", "ZqS3cretPw"),
    ("heroku auth:token ZqS3cretPw", "ZqS3cretPw"),
    ("app /key ZqS3cretPw", "ZqS3cretPw"),
    ("app -k ZqS3cretPw", "ZqS3cretPw"),
    ("sqlplus scott/ZqS3cretPw@ORCL", "ZqS3cretPw"),
    ("runas /user:CORP\\zqadmin cmd & echo ZqS3cretPw", "ZqS3cretPw"),
    ("Passwort=ZqS3cretPw", "ZqS3cretPw"), ("wachtwoord=ZqS3cretPw", "ZqS3cretPw"),
    ("mot_de_passe=ZqS3cretPw", "ZqS3cretPw"), ("contraseña=ZqS3cretPw", "ZqS3cretPw"),
    # 3: the README's forms in a `text` field: no trigger character is needed any more
    ("mysql -u root -pZqS3cretPw", "ZqS3cretPw"),
    # 4: URLs in free text
    ("https://zqalice:\nZqS3cretPw@h.example/", "zqalice"),
    ("https://zqalice:\nZqS3cretPw@h.example/", "ZqS3cretPw"),
    ("data:text/plain;base64,ZqS3cretPw", "ZqS3cretPw"),
    ("javascript:void(fetch('/t?ZqS3cretPw'))", "ZqS3cretPw"),
    ("about:blank#ZqS3cretPw", "ZqS3cretPw"),
    ("ms-settings:ZqS3cretPw", "ZqS3cretPw"),
    ("mailto:zqalice@example.com?subject=ZqS3cretPw", "ZqS3cretPw"),
])
def test_secret_is_removed(text, secret):
    out = scrub(text)
    assert secret not in out, out
    assert REDACTED in out or out.endswith(":") or "h.example" in out


@pytest.mark.parametrize("text", [
    "C:\\Windows\\System32\\svchost.exe -k netsvcs -p", "curl -k https://h.example", "sort -k 2 file.txt",
    "Visual Basic Compiler", "HEUR:Trojan-Ransom.Win32.Generic", "Trojan.Win32.Agent.abcd", "KIS 21.3.10.391",
    "Kaspersky Internet Security", "chrome", "WPA2", "e-0ed99531985d",
    "3e7d1bfbc7a2ea20b2f14c942e05319acb5c74273f98e2774cbd87ad5c90a958",
    "Microsoft.Windows.Photos_2021.21090.10008.0_x64__8wekyb3d8bbwe", "about the product",
    "Mozilla/5.0 (Windows NT 10.0)",
])
def test_ordinary_text_survives(text):
    assert scrub(text) == text


def test_opaque_url_keeps_only_its_scheme():
    assert scrub("open about:blank#tok now") == "open about: now"
    assert scrub("mailto:zqbob@example.com?subject=x") == "mailto:"


def test_user_info_split_by_white_space_is_joined():
    assert join_userinfo("x https://a:\nb@h.example/ y") == "x https://a:b@h.example/ y"
    assert join_userinfo("x https://a\r\n:b@h.example/") == "x https://a:b@h.example/"
    # two things, not user info: a blank and no colon
    two = "see https://example.com and bob@corp.example"
    assert join_userinfo(two) == two


def test_entropy_check_takes_random_tokens_not_words():
    assert looks_random("Zq7mK2pQ9xL4vN8bR3tW6yH1cF5gJ0dS")
    assert not looks_random("Trojan-Ransom-Win32-WannaCryVariant")
    assert not looks_random("3e7d1bfbc7a2ea20b2f14c942e05319acb5c74273f98e2774cbd87ad5c90a958")  # a hash: no upper case
    assert not looks_random("550E8400-E29B-41D4-A716-446655440000")


# Long random tokens of one case (providers with no rule of their own): synthetic values.
@pytest.mark.parametrize("token", [
    "zq" + "k3h8z2m4n7p1r5t9v6w0x3y8b2c4d6f8g1j",               # lower case and digits
    "oy2" + "kq3h8z2m4n7p1r5t9v6w0x3y8b2c4d6f8g1jh5k",          # NuGet's shape, no rule needed
    "ZQ" + "K3H8Z2M4N7P1R5T9V6W0X3Y8",                          # upper case and digits
    "tok_live_" + "zq3h8z2m4n7p1r5t9v6w0x3y",                   # an unknown provider's prefix
    "rubygems_" + "a3f9c2e81b7d4f60a3f9c2e81b7d4f60a3f9c2e81b7d4f60",   # hex after a word prefix
    "dop_v1_" + "a3f9c2e81b7d4f60a3f9c2e81b7d4f60a3f9c2e81b7d4f60a3f9c2e81b7d4f60",  # even of a hash's length
    "glptt-" + "A3F9C2E81B7D4F60A3F9C2E81B7D4F60A3F9C2E8",
])
def test_a_long_random_token_of_one_case_is_removed(token):
    out = scrub(f"run {token} now")
    assert out.startswith("run ") and out.endswith(f"{REDACTED} now") and token[-16:] not in out, out


@pytest.mark.parametrize("text", [
    # digests and identifiers the policy keeps as they are
    "3e7d1bfbc7a2ea20b2f14c942e05319acb5c74273f98e2774cbd87ad5c90a958", "d41d8cd98f00b204e9800998ecf8427e",
    "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709", "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
    "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e", "0059696bee3c0a6721454b0fe6cb287669bbcc",
    "{3844DBB9-2017-4967-BE7A-A4A2C20430FA}", "550e8400-e29b-41d4-a716-446655440000",
    "3844DBB920174967BE7AA4A2C20430FA1", "sha256-3e7d1bfbc7a2ea20b2f14c942e05319acb5c74273f98e2774cbd87ad5c90a958",
    "commit_0059696bee3c0a6721454b0fe6cb287669bbcc12", "e-0ed99531985d", "pz-0123456789abcdef0123456789abcdef",
    # versions and builds
    "KIS 21.3.10.391", "10.0.19045.3803 (WinBuild.160101.0800)", "5.15.0-91-generic",
    "v0.0.0-20231010123456-abcdef123456",
    # file names and paths, hosts
    "windows10.0-kb5001716-x64_a0d8fb4f1d4f7f2cba6e4a9a56ab8fc0c2063a7d.msu",
    "C:\\Temp\\k2j4h5g6f7d8s9a0q1w2e3r4.exe", "d3kdm2lq9ef0hbk2j4h5g6f7.cloudfront.net",
    "amd64_microsoft-windows-defender-service_31bf3856ad364e35_10.0.19041.1_none_8c1f2a3b4c5d6e7f",
    "C:\\Windows\\SoftwareDistribution\\Download\\3E7D1BFBC7A2EA20B2F14C942E05319A",
    "AppCrash_chrome.exe_3e7d1bfbc7a2ea20b2f14c942e05319acb5c7427_d3e4f5a6_1234abcd",
    "6ec57f84c680d3a3778b__mypyc.cpython-311-x86_64-linux-gnu.so", "api-ms-win-core-synch-l1-2-0.dll",
    "Microsoft.WindowsStore_22305.1401.3.0_x64__8wekyb3d8bbwe", "chromesetup120060993",
    "microsoft-windows-defender-antivirus-platform", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
])
def test_what_the_entropy_rule_leaves_alone(text):
    assert scrub(text) == text


def test_rule_file_errors_name_the_rule(tmp_path):
    bad = tmp_path / "s.toml"
    bad.write_text("[[rule]]\nid = 'x'\nkind = 'context'\nregex = 'abc'\n")
    with pytest.raises(SecretRulesError, match="rule x: a context rule needs a group"):
        load_rules(bad)
    bad.write_text("[[rule]]\nid = 'y'\nkind = 'token'\nregex = '(?<=a)b'\n")
    with pytest.raises(SecretRulesError, match="rule y: regex does not compile with RE2"):
        load_rules(bad)
    bad.write_text("[[rule]]\nid = 'z'\nkind = 'token'\nregex = 'a'\nflavour = 1\n")
    with pytest.raises(SecretRulesError, match="rule z: unknown keys"):
        load_rules(bad)


def test_every_rule_finds_something_in_the_leak_corpus(sweep):
    """No dead rule: each rule of the file is hit by at least one planted value or example."""
    planted, _, _ = leak_check.build_corpus(seed=3, sample=3)
    texts = set()
    for _cls, _name, _rtype, _field, line, _cores in planted:
        texts.add(line.decode("unicode_escape", "replace"))
    hit = set()
    for text in texts:
        hit.update(rule for *_, rule in sweep.findings(text))
    unused = {r.id for r in sweep.rules} - hit
    # formats the corpus does not plant (other providers): each has a synthetic example here
    examples = {
        "gitlab-runner-registration": "GR1348941Zq0123456789abcdefgh",
        "slack-webhook": "hooks.slack.com/services/T0/B0/Zq01",
        "stripe-webhook-secret": "whsec_Zq0123456789abcdefAB",
        "private-key-body": "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAA",
        "google-oauth-token": "ya29.Zq0123456789abcdefghij",
        "azure-client-secret": "abc8Q~Zq0123456789abcdefghij0123456789ab",
        "azure-sas-signature": "sig=Zq0123456789abcdefABCDEF%3D",
        "pypi-token": "pypi-AgEIcHlwaS5vcmcZq0123456789abcdefghij",
        "twilio-key": "SK0123456789abcdef0123456789abcdef",
        "mailgun-key": "key-0123456789abcdef0123456789abcdef",
        "square-token": "sq0atp-Zq0123456789abcdefghij",
        "shopify-token": "shpat_0123456789abcdef0123456789abcdef",
        "digitalocean-token": "dop_v1_" + "ab" * 32,
        "huggingface-token": "hf_Zq0123456789abcdefghijABCDEFGHIJ",
        "databricks-token": "dapi0123456789abcdef0123456789abcdef",
        "age-secret-key": "AGE-SECRET-KEY-1" + "Q" * 58,
        "telegram-bot-token": "123456789:AAZq0123456789abcdefghijABCDEFGHIJ",
        "discord-bot-token": "MTAxZq0123456789abcdefgh.Zq01ab.Zq0123456789abcdefghijABCDEFG",
        "atlassian-token": "ATATT3xFfGF0Zq0123456789abcdefghijABCDEFGHIJ0123",
        "grafana-token": "glsa_Zq0123456789abcdefghijABCDEFGHIJ_01234567",
        "postman-key": "PMAK-" + "a" * 24 + "-" + "b" * 34,
        "aws-access-key-id-any-case": "akia" + "zq01" * 4,
        "secret-store-value": "aws ssm put-parameter --name /app/db --value Zq0123 --type SecureString",
        "dynatrace-token": "dt0c01." + "AB12" * 6 + "." + "CD34" * 16,
        "hubspot-private-app-token": "pat-na1-0a1b2c3d-0a1b-0a1b-0a1b-0a1b2c3d4e5f",
        "nuget-api-key": "oy2" + "ab1" * 14 + "c",
        "rubygems-api-key": "rubygems_" + "0a" * 24,
        "sendinblue-api-key": "xkeysib-" + "0a" * 32 + "-" + "Zq01" * 4,
        "doppler-linear-newrelic-heroku": "dp.pt.Zq0123456789abcdefghijABCDEFGHIJ0123",
        "dropbox-token": "sl." + "Zq01" * 16,
        "facebook-token": "EAAB" + "Zq01" * 16,
        "bearer-token": "bearer Zq0123456789abcdefAB",
        "cli-token-argument": "gh auth login --with-token Zq0123",
        "connection-string-password": "Server=x;Pwd=Zq01;",
        "password-word-colon": "PWD:Zq01",
        "credential-key-spaced": "rclone config create r s3 secret_access_key Zq01",
        "rclone-config-pair": "rclone config create r sftp host h.example pass Zq01",
        # second round: synthetic values in the shapes an independent hostile corpus used
        "mailchimp-key": "0123456789abcdef0123456789abcdef-us14",
        "supabase-braintree-terraform": "sbp_" + "ab12" * 10,
        "twilio-account": "AC0123456789abcdef0123456789abcdef:0123456789abcdef0123456789abcdef",
        "twitter-bearer": "A" * 21 + "Zq0123456789abcdefZq0123456789abcdef",
        "crypt-hash": "$6$ZqSalt01$Zq0123456789abcdefghijklmn",
        "crypt-hash-user": "zqbob:$apr1$ZqSalt01$Zq0123456789abcdefghij",
        "kerberos-hash": "$krb5tgs$23$*svc$CORP$MSSQLSvc/db*$0123456789abcdef",
        "ntlm-hash-keyword": "NTLM hash: 0123456789abcdef0123456789abcdef",
        "aws-secret-after-key-id": "AKIAZQ7D3F5H2J4K6L8M " + "Zq01/+" * 6 + "Zq01",
        "pat-key": "AZURE_DEVOPS_EXT_PAT=zq0123456789abcdefghij",
        "pgpass-line": "db.example:5432:*:zqbob:ZqS3cretPw",
        "netrc-login": "machine h.example login zqbob password ZqS3cretPw",
        "password-spaced": "PASSWORD ZqS3cretPw",
        "wpa-passphrase": "wpa_passphrase HomeNet ZqS3cretPw",
        "wifi-psk": 'network={ssid="Office" psk="ZqS3cretPw"}',
        "netsh-key": "Key Content            : ZqS3cretPw",
        "xml-secret-element": "<password>ZqS3cretPw</password>",
        "xml-key-value-attribute": '<add key="SmtpPassword" value="ZqS3cretPw" />',
        "pin-code": "PIN=123456789012",
        "login-name": "login: zqbob / pass: x",
        "ldap-bind-dn": 'ldapsearch -D "cn=zqbob,dc=corp" -w x',
        "aws-sts-session-token": "IQoJb3JpZ2luX2VjZq0123456789abcdefghij",
        "mac-address-colon": "24:ce:0a:40:95:9c",
        "mac-address-dash-dot": "arp -s 10.0.0.5 34-f6-91-70-ad-7d",
        "mac-address-bare": "adapter b8a6a0210be3",
        "imei": "IMEI: 534859296732088",
        "serial-number": "serialnumber PF5WDQMS86",
        "more-provider-keys": "LTAIZq0123456789abcdefgh",
        "crypto-wallet-key": "0x" + "ab12" * 16,
        "seed-phrase": "seed phrase: " + " ".join(["abandon", "walnut", "coconut"] * 4),
        "domain-account-in-prose": "logon by CONTOSO\\zqbob04 from 10.0.0.1",
        "ftp-script-user": "open files.example\nuser zqbob ZqS3cretPw\nbinary",
        "computer-account": "LAPTOP-ZQ8F3K2Q1\\zqbob47",
        "machine-account": "CONTOSO\\WSZQ8F3K2Q$",
    }
    for rid, text in examples.items():
        assert rid in {r for *_, r in sweep.findings(text)}, rid
    assert unused - set(examples) == set()


# A plain single token: the text rules provably leave it alone (`is_safe_token`), so it may skip them.
_TOKEN_CHARS = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+#-Ss1")


@settings(max_examples=400, deadline=None)
@given(st.text(_TOKEN_CHARS, min_size=1, max_size=40))
def test_a_safe_token_is_left_alone_by_the_text_rules(token):
    if is_safe_token(token):
        assert scrub_text(token, _pz, _url) == (token, 0)


_SAFE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+#-")


def _needs_other_char(items) -> bool:
    """Whether every match of the parsed regex `items` holds a character outside the safe token's set."""
    import re._constants as c

    for op, av in items:
        if op is c.LITERAL and chr(av) not in _SAFE_CHARS:
            return True
        if op is c.IN and not any(o is c.NEGATE for o, _ in av):
            chars = set()
            for o, a in av:
                if o is c.LITERAL:
                    chars.add(chr(a))
                elif o is c.RANGE:
                    chars.update(chr(x) for x in range(a[0], a[1] + 1))
                elif o is c.CATEGORY and a is c.CATEGORY_SPACE:
                    chars.update(" \t\n\r\f\v")
                else:
                    chars.update(_SAFE_CHARS)       # unknown: assume it could be safe
            if not chars & _SAFE_CHARS:
                return True
        if op is c.MAX_REPEAT or op is c.MIN_REPEAT:
            low, _high, sub = av
            if low >= 1 and _needs_other_char(sub):
                return True
        if op is c.SUBPATTERN and _needs_other_char(av[-1]):
            return True
        if op is c.BRANCH and all(_needs_other_char(branch) for branch in av[1]):
            return True
    return False


def _cannot_match_a_safe_token(items) -> bool:
    """`_needs_other_char`, or `(?:^|[\\s"'])-x...`: at the start of the value such a match begins
    with a character no safe token starts with, anywhere else it needs the blank or quote before it."""
    import re._constants as c

    if _needs_other_char(items):
        return True
    if len(items) < 2 or items[1][0] is not c.LITERAL:
        return False
    branch = items[0]
    if branch[0] is c.SUBPATTERN and len(branch[1][-1]) == 1:
        branch = list(branch[1][-1])[0]
    if branch[0] is not c.BRANCH:
        return False
    at_start = [(c.AT, c.AT_BEGINNING)]
    others = [list(b) for b in branch[1][1] if list(b) != at_start]
    return all(_needs_other_char(b) for b in others) and not chr(items[1][1]).isalnum()


def test_no_rule_can_match_a_short_safe_token():
    """The proof behind SAFE_SHORT_TOKEN: token rules match 18+ characters, every other rule needs a
    character a safe token never has (a blank, ':', '=', '/' ...) or starts with one a safe token
    never starts with (`-p...` at the start of the value)."""
    import re._parser as sre_parse

    global _SAFE_CHARS
    for rule in load_rules():
        parsed = sre_parse.parse(rule.regex)
        if rule.kind == "token":
            assert parsed.getwidth()[0] >= 18, rule.id
        else:
            assert _cannot_match_a_safe_token(list(parsed)), rule.id
    # HEX_ID: lower-case hex identifiers; no rule but the entropy one (mixed case only) fits in them
    saved = _SAFE_CHARS
    try:
        for chars in ("0123456789abcdef-",):
            _SAFE_CHARS = set(chars)
            for rule in load_rules():
                if rule.check != "entropy":
                    assert _needs_other_char(list(sre_parse.parse(rule.regex))), (rule.id, chars)
    finally:
        _SAFE_CHARS = saved
    assert not looks_random("ae96c4bb-8996-4aee-a2a8-4a631655b47f" * 2)


@settings(max_examples=300, deadline=None)
@given(st.text(_TOKEN_CHARS, min_size=1, max_size=17))
def test_a_short_safe_token_is_clean(token):
    from transforms.secrets import SAFE_SHORT_TOKEN

    if is_safe_token(token) and re.fullmatch(SAFE_SHORT_TOKEN, token):
        assert scrub(token) == token


@settings(max_examples=300, deadline=None)
@given(st.text("0123456789abcdefXYZ._+#-\n", min_size=0, max_size=140))
def test_the_open_patterns_with_their_bounds_are_the_bounded_ones(token):
    """clean_mask gives Arrow SAFE_TOKEN_OPEN and HEX_ID_OPEN plus a length check (a counted repeat
    costs a compile per kernel call): the same strings as SAFE_SHORT_TOKEN and HEX_ID."""
    from transforms.secrets import HEX_ID, HEX_ID_MAX, HEX_ID_OPEN, SAFE_SHORT_MAX, SAFE_SHORT_TOKEN, SAFE_TOKEN_OPEN

    for bounded, open_form, most in ((SAFE_SHORT_TOKEN, SAFE_TOKEN_OPEN, SAFE_SHORT_MAX),
                                     (HEX_ID, HEX_ID_OPEN, HEX_ID_MAX)):
        for text in (token, token[:most], token[:most + 1]):
            expected = re.fullmatch(bounded, text) is not None
            assert (re.fullmatch(open_form, text) is not None and len(text) <= most) == expected, text


def test_the_vectorised_proof_agrees_with_value_by_value(ctx):
    """FieldEngine.clean_mask (Arrow's RE2 over a column) and TextScrubber give the same output."""
    values = ["e-0ed99531985d", "chrome", "AKIAZQ7D3F5H2J4K6L8M", "S-1-5-21-1-2-3-1001", "mysql -pX",
              "KIS 21.3", "ghp_Zq01234567890abcdefABCDEFghijklmnopq", "-k", "Trojan.Win32.Agent", "a" * 200,
              "xoxb-1234567890-abc", "about:blank", "sk-Zq0123456789abcdefABCD", "Über", None]
    mask = ctx.engine.clean_mask(pa.array(values, pa.string())).to_pylist()
    for value, clean in zip(values, mask, strict=True):
        if value is None:
            assert not clean
        elif clean:
            assert ctx.scrubber(value)[0] == value, value


def test_leak_corpus_has_no_leak():
    """The adversarial corpus (bench/leak_check.py), one (field, template) pair in four: every class
    is planted in every string field of every record type, and nothing reaches the output."""
    res = leak_check.run(seed=11, sample=4)
    for cls in ("1", "2", "3", "4", "5", "7"):
        assert res["per_class"][cls]["planted"] > 0, cls
    fields = leak_check.string_fields(leak_check.load_policy())
    assert {f"{t}.{f}" for t, f in fields} == set(res["per_field"])
    leaked = {cls: c["leaked"] for cls, c in res["per_class"].items() if c["leaked"]}
    assert leaked == {}, dict(res["examples"])


def test_what_threat_analysis_needs_survives_in_the_bundled_sample():
    """bench/over_redaction.py on the bundled sample: hosts, threat names, executables, switch names,
    Wi-Fi security types, product names, GUIDs, versions and file names come through unchanged, and
    fields that carry no secret in the sample are not changed at all."""
    import over_redaction

    res = over_redaction.run()
    kinds = res["kinds"]
    assert set(kinds) == {"hosts", "threat names", "executables", "switch names", "Wi-Fi security", "products",
                          "GUIDs", "versions", "file names"}
    assert all(c["seen"] > 0 for c in kinds.values())
    assert {kind: c["lost"] for kind, c in kinds.items() if c["lost"]} == {}, dict(res["lost"])
    for field in ("event_id", "product", "detection.data.threat_name", "url_visit.data.browser",
                  "installed_app.data.name", "installed_app.data.publisher", "os_event.data.parent_image"):
        assert res["changed"][field]["values"] > 0 and res["changed"][field]["changed"] == 0, field


# Found by an independent hostile corpus (written apart from these rules) after the first version.
@pytest.mark.parametrize("text, secret", [
    # scheme-relative URL with user info in free text: the user goes with the password
    ("fetch //zqalice:ZqS3cretPw@h.example/path", "zqalice"),
    ("fetch //zqalice:ZqS3cretPw@h.example/path", "ZqS3cretPw"),
    # Active Directory tools
    ("dsquery user -u CORP\\zqadmin -p ZqS3cretPw -limit 0", "ZqS3cretPw"),
    ("dsquery user -u CORP\\zqadmin -p ZqS3cretPw -limit 0", "zqadmin"),
    ("dsget user cn=x -p ZqS3cretPw", "ZqS3cretPw"), ("dsrm cn=x -p ZqS3cretPw -noprompt", "ZqS3cretPw"),
    ("dsmove cn=x -newname y -p ZqS3cretPw", "ZqS3cretPw"), ("dsadd user cn=x -pwd ZqS3cretPw", "ZqS3cretPw"),
    ("dsmod user cn=x -pwd ZqS3cretPw -mustchpwd yes", "ZqS3cretPw"),
    # short password words with ':' or '=' in any case
    ("PWD:ZqS3cretPw", "ZqS3cretPw"), ("Pass:ZqS3cretPw", "ZqS3cretPw"), ("pass: ZqS3cretPw", "ZqS3cretPw"),
    ("pwd=ZqS3cretPw", "ZqS3cretPw"), ("PASS=ZqS3cretPw", "ZqS3cretPw"), ("login ok; Pw : ZqS3cretPw", "ZqS3cretPw"),
    # ConvertTo-SecureString, also inside a credential object
    ('ConvertTo-SecureString -String "ZqS3cretPw" -AsPlainText -Force', "ZqS3cretPw"),
    ("ConvertTo-SecureString 'ZqS3cretPw' -AsPlainText -Force", "ZqS3cretPw"),
    ('ConvertTo-SecureString -AsPlainText "ZqS3cretPw" -Force', "ZqS3cretPw"),
    ('$c = New-Object System.Management.Automation.PSCredential -ArgumentList "zqbob",'
     '(ConvertTo-SecureString -String "ZqS3cretPw" -AsPlainText -Force)', "ZqS3cretPw"),
    ('$c = New-Object System.Management.Automation.PSCredential("zqbob", '
     '(ConvertTo-SecureString "ZqS3cretPw" -AsPlainText -Force))', "ZqS3cretPw"),
    ('[pscredential]::new("zqbob", (ConvertTo-SecureString -String "ZqS3cretPw" -AsPlainText -Force))', "ZqS3cretPw"),
    # password words in other languages and scripts
    ("κωδικός=ZqS3cretPw", "ZqS3cretPw"), ("κωδικός πρόσβασης: ZqS3cretPw", "ZqS3cretPw"),
    ("ΚΩΔΙΚΟΣ: ZqS3cretPw", "ZqS3cretPw"), ("пароль=ZqS3cretPw", "ZqS3cretPw"), ("hasło: ZqS3cretPw", "ZqS3cretPw"),
    ("şifre=ZqS3cretPw", "ZqS3cretPw"), ("parola: ZqS3cretPw", "ZqS3cretPw"), ("密码=ZqS3cretPw", "ZqS3cretPw"),
    ("密码：ZqS3cretPw", "ZqS3cretPw"), ("パスワード: ZqS3cretPw", "ZqS3cretPw"), ("비밀번호=ZqS3cretPw", "ZqS3cretPw"),
    ("كلمة المرور=ZqS3cretPw", "ZqS3cretPw"), ("סיסמה: ZqS3cretPw", "ZqS3cretPw"),
    ("mật khẩu: ZqS3cretPw", "ZqS3cretPw"), ("kata sandi=ZqS3cretPw", "ZqS3cretPw"),
    ("รหัสผ่าน: ZqS3cretPw", "ZqS3cretPw"), ("पासवर्ड=ZqS3cretPw", "ZqS3cretPw"),
    # -p glued to a value after any program
    ("foo -pZqS3cretPw", "ZqS3cretPw"), ('backup.exe "-pZqS3cretPw" --run', "ZqS3cretPw"),
    ("agent -p=ZqS3cretPw", "ZqS3cretPw"), ("agent -psecretword", "secretword"),
    # ssh-keygen passphrases
    ("ssh-keygen -t ed25519 -N ZqS3cretPw -f key", "ZqS3cretPw"),
    ("ssh-keygen -p -P ZqOldPw123 -N ZqS3cretPw -f key", "ZqOldPw123"),
    ('ssh-keygen -N "ZqS3cretPw"', "ZqS3cretPw"),
    # cloud credential keys as config tools take them
    ("rclone config create s3 s3 secret_access_key ZqS3cretPw access_key_id ZqKeyId123", "ZqS3cretPw"),
    ("rclone config create s3 s3 secret_access_key ZqS3cretPw access_key_id ZqKeyId123", "ZqKeyId123"),
    ("rclone config create s sftp host h.example user zqbob pass ZqS3cretPw", "ZqS3cretPw"),
    ("rclone copy --s3-secret-access-key ZqS3cretPw a b", "ZqS3cretPw"),
    ("aws configure set aws_secret_access_key ZqS3cretPw", "ZqS3cretPw"),
    ("aws configure set default.aws_session_token ZqS3cretPw", "ZqS3cretPw"),
])
def test_hostile_corpus_finding_is_removed(text, secret):
    out = scrub(text)
    assert secret not in out, out
    assert REDACTED in out or "h.example" in out


# Second round: what the independent hostile corpus planted (synthetic values, its shapes).
@pytest.mark.parametrize("text, secret", [
    ("machine vpn.example login zqbob password ZqS3cretPw", "zqbob"),
    ("machine vpn.example login zqbob password ZqS3cretPw", "ZqS3cretPw"),
    ("db.example:5432:*:zqbob:ZqS3cretPw", "zqbob"), ("db.example:5432:*:zqbob:ZqS3cretPw", "ZqS3cretPw"),
    ("zqbob:$apr1$ZqSalt01$Zq0123456789abcdefghij", "zqbob"),
    ("zqbob:$6$ZqSaltZqSalt0123$Zq0123456789abcdefghij:19700:0:99999:7:::", "ZqSaltZqSalt0123"),
    ("zqbob:$6$ZqSaltZqSalt0123$Zq0123456789abcdefghij:19700:0:99999:7:::", "Zq0123456789abcdefghij"),
    ('{"client_id": "x", "client_secret": "Zq0123456789abcdefghijklmnopqrstuvwxyzAB"}', "Zq0123456789"),
    ("login: zqbob / pass: ZqS3cretPw", "zqbob"), ("PASSWORD ZqS3cretPw", "ZqS3cretPw"),
    ("nmcli dev wifi connect Office password ZqS3cretPw", "ZqS3cretPw"),
    ("<connection><user>zqbob</user><password>ZqS3cretPw</password></connection>", "zqbob"),
    ("<connection><user>zqbob</user><password>ZqS3cretPw</password></connection>", "ZqS3cretPw"),
    ('<add key="SmtpPassword" value="ZqS3cretPw" />', "ZqS3cretPw"),
    ("<AutoLogon><Password><Value>ZqS3cretPw</Value><PlainText>true</PlainText></Password>", "ZqS3cretPw"),
    (':password => "ZqS3cretPw"', "ZqS3cretPw"), ("PIN=123456789012", "123456789012"),
    ('network={ssid="Office" psk="ZqS3cretPw"}', "ZqS3cretPw"), ("parola d'ordine: ZqS3cretPw", "ZqS3cretPw"),
    ("AZURE_DEVOPS_EXT_PAT=zq0123456789abcdefghijklmnop", "zq0123456789abcdef"),
    ("//registry.npmjs.org/:_authToken=0c2e5c4e-1d7e-4a8b-9b6f-3f1f8e2d7a11", "0c2e5c4e-1d7e"),
    ("access_token$production$zq0123456789abcd$0123456789abcdef0123456789abcdef", "zq0123456789abcd"),
    ("Zq0123456789ab.atlasv1." + "Zq01" * 17, "Zq0123456789ab"),
    ("AC0123456789abcdef0123456789abcdef:fedcba9876543210fedcba9876543210", "fedcba9876543210"),
    ("AAAAAAAAAAAAAAAAAAAAAZq0123456789abcdefghij%3DZq0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH",
     "Zq0123456789abcdefghijklmnop"),
    ("sbp_0123456789abcdef0123456789abcdef01234567", "0123456789abcdef0123456789abcdef"),
    ("0123456789abcdef0123456789abcdef-us14", "0123456789abcdef0123456789abcdef"),
    ("AKIAZQ7D3F5H2J4K6L8M /Zq0123456789abcdefZq0123456789abcdef+Zq", "Zq0123456789abcdefZq"),
    ("ipmitool -I lanplus -H 10.0.0.9 -U ADMIN -P ZqS3cretPw chassis power cycle", "ZqS3cretPw"),
    ("mosquitto_pub -h h.example -u zqbob -P ZqS3cretPw -t x -m 1", "ZqS3cretPw"),
    ("snmpwalk -v2c -c ZqCommunity01 10.0.0.9 1.3.6.1", "ZqCommunity01"),
    ("snmpwalk -v3 -l authPriv -u zqbob -a SHA -A ZqS3cretPw -x AES -X ZqPr1vPw99 10.0.0.9", "ZqPr1vPw99"),
    ('setup.exe /Q /ACTION=Install /SECURITYMODE=SQL /SAPWD="ZqS3cretPw!"', "ZqS3cretPw"),
    ("msv :\n * Username : zqbob\n * NTLM     : 0123456789abcdef0123456789abcdef\n * Password : x",
     "0123456789abcdef0123456789abcdef"),
    ("msv :\n * Username : zqbob\n * NTLM     : 0123456789abcdef0123456789abcdef", "zqbob"),
    ("$krb5tgs$23$*svc_sql$CORP.LOCAL$MSSQLSvc/db01*$0123456789abcdef0123456789abcdef$fedcba98", "0123456789abcdef0"),
    ('ldapsearch -x -H ldap://h.example -D "cn=zqbob,dc=corp,dc=local" -w x -b dc=corp', "zqbob"),
    ("wpa_passphrase HomeNet ZqS3cretPw", "ZqS3cretPw"),
    ("netsh wlan add profile ... keyMaterial ZqS3cretPw ; Key Content            : ZqOtherPw99", "ZqS3cretPw"),
    ("netsh wlan add profile ... keyMaterial ZqS3cretPw ; Key Content            : ZqOtherPw99", "ZqOtherPw99"),
    # look-alike and invisible characters: read as a reader sees them
    ("pa\u0301sswd=ZqS3cretPw", "ZqS3cretPw"), ("pass\u00adword=ZqS3cretPw", "ZqS3cretPw"),
    ("pass\u200bword=ZqS3cretPw", "ZqS3cretPw"), ("\u0440\u0430ssw\u043erd: ZqS3cretPw", "ZqS3cretPw"),
    ("sk_live_s\u043e\u043arq2vnnq5u\u04435r\u043el4lnq\u04421d", "rq2vnnq5u"),
    ("ghp_Zq0123456789ab\u200bcdefABCDEFghijklmnopq", "Zq0123456789ab"),
    ("ghp_Zq0123456789ab\x00cdefABCDEFghijklmnopq", "Zq0123456789ab"),
    ("ghp_Zq0123456789ab\u2028cdefABCDEFghijklmnopq", "Zq0123456789ab"),
    # device identifiers
    ("24:ce:0a:40:95:9c", "0a:40:95"), ("arp -s 10.0.0.5 34-f6-91-70-ad-7d", "91-70-ad"),
    ("ether 1c65.e349.191f", "e349"), ("adapter b8a6a0210be3", "b8a6a0210be3"), ("imei: 534859296732088", "5348592967"),
    ('"IOPlatformSerialNumber" = "C02FK41PPC0B"', "C02FK41PPC0B"), ("serialnumber PF5WDQMS86", "PF5WDQMS86"),
    ("disk serial WD-WCC47LJN95ZI", "WCC47LJN95ZI"),
    ("LTAIZq0123456789abcdefgh", "Zq0123456789"), ("AKID" + "Zq01" * 8, "Zq01Zq01"),
    ("dckr_pat_Zq0123456789abcdefghijk", "Zq0123456789"), ("0x" + "ab12" * 16, "ab12ab12ab12"),
    ("seed phrase: abandon blanket walnut quantum giraffe bamboo walnut coconut coconut coconut blanket alcohol",
     "giraffe bamboo"),
    ("logon by CONTOSO\\zqbob04 from 10.0.0.1", "zqbob04"),
    ("open files.example\nuser zqbob ZqS3cretPw\nbinary\nget backup.zip", "ZqS3cretPw"),
    ("psexec64.exe \\\\build.example -u zqopi\x85sure96 -p x -accepteula cmd.exe", "sure96"),
    ("LAPTOP-ZQ8F3K2Q1\\zqbob47", "ZQ8F3K2Q1"), ("LAPTOP-ZQ8F3K2Q1\\zqbob47", "zqbob47"),
    ("CONTOSO\\WSZQ8F3K2Q$", "ZQ8F3K2Q"),
])
def test_second_round_finding_is_removed(text, secret):
    out = scrub(text)
    assert secret not in out, out


@pytest.mark.parametrize("text", [
    "Kaspersky Password Manager", "password protected archive", "WPA2-PSK (AES)", "Serial Port",
    "serial number unknown", "HEUR:Trojan.Win32.Generic", "10:04:05", "fe80::1ff:fe23:4567:890a", "user is logged on",
    "net use \\\\srv\\ADMIN$", "copy a \\\\srv\\C$\\x", "dir \\\\srv\\IPC$",
])
def test_what_the_second_round_rules_leave_alone(text):
    assert scrub(text) == text


@pytest.mark.parametrize("text", [
    # ports and switch names after -p stay
    "docker run -p 8080:80 nginx", "docker run -p8080:80 nginx", "server -p8080", "iperf3 -p5201/udp",
    "gcc -pthread -o a a.c", "find / -path /proc -prune -o -print",
    "svchost.exe -k netsvcs -p", "mkdir -p /var/log/app", "patch -p1", "cp -p a b",
    "Invoke-Thing -Path C:\\x", "mvn -Pprod package",
    # words that only look like the new rules
    "bypass: on", "compass=N", "Password Manager", "rclone copy remote:docs /backup",
])
def test_what_the_new_rules_leave_alone(text):
    assert scrub(text) == text


# Third round: the hostile corpus's second-round templates and line breaks inside a value.
@pytest.mark.parametrize("text, secret", [
    ("/var/spool/cron/crontabs/zqbob47", "zqbob47"), ("crontab -l > /var/spool/cron/zqbob47", "zqbob47"),
    ("/var/mail/zqbob47", "zqbob47"), ("/var/spool/mail/zqbob47", "zqbob47"), ("/usr/lib/cron/tabs/zqbob47", "zqbob47"),
    ("zqbob47 [at] example [dot] org", "zqbob47"), ("zqbob47[at]example[dot]com", "zqbob47"),
    ("mail zqbob47(at)corp.example.com", "zqbob47"), ("zqbob47 {at} example.org", "zqbob47"),
    ("contact zqbob47 at example dot com", "zqbob47"), ("zqbob47 AT mail DOT example DOT de", "zqbob47"),
    ("%2FUsers%2Fzqbob47%2FDownloads%2Fa.dmg", "zqbob47"), ("C:%5CUsers%5Czqbob47%5Cx.txt", "zqbob47"),
    ("url=https%253A%252F%252Fzqbob47%253AZqS3cretPw%2540db.example", "zqbob47"),
    ("url=https%253A%252F%252Fzqbob47%253AZqS3cretPw%2540db.example", "ZqS3cretPw"),
    ("copy %25252FUsers%25252Fzqbob47 x", "zqbob47"),
    ("sshраss -р ZqS3cretPw ssh rооt@10.0.0.1", "ZqS3cretPw"), ("mysql -u root -р ZqS3cretPw", "ZqS3cretPw"),
    ("psexec64.exe \\\\build.example -u CONTOSO\\zqopi\nsure96 -p x -accepteula cmd.exe", "sure96"),
    ("report sent to zqbobg\nbby04@example.org at 10:04", "zqbobg"),
    # a `net use` does not run on past a `;` into the next command (it took `user` there for a password)
    ("net use * \\\\10.0.0.1\\C$ /user:zqann01 ZqPw0 ; net user zqbob01 ZqPw1 /add ; "
     "open files.example\nuser zqcarol01 ZqS3cretPw\nbinary", "zqcarol01"),
    # a script's lines are read before a line break inside a word is joined
    ("x\u200b ; open files.example\nuser zqbob ZqS3cretPw\nbinary", "ZqS3cretPw"),
])
def test_third_round_finding_is_removed(text, secret):
    out = scrub(text)
    assert secret not in out, out


@pytest.mark.parametrize("text", [
    "Error at System.IO.File.Open", "failed at 10:04", "sent at example.org", "saved at C:\\Temp\\x",
    "/var/log/syslog", "/var/spool/cron/crontabs/root", "/var/spool/cron/crontabs", "C:\\Program%20Files\\x.exe",
    "%APPDATA%\\x", "%DEFAULTUSERPROFILE%", "-пароль", "Антивирус Касперского",
    "line one\nline two", "a 100% b", "%41%42 ok",
])
def test_what_the_third_round_rules_leave_alone(text):
    assert scrub(text) == text


def test_an_encoded_command_holding_a_credential_keeps_none_of_its_bytes():
    import base64
    script = "$pw='ZqS3cretPw'; net use \\\\srv\\c$ $pw /u:adm"
    enc = base64.b64encode(script.encode("utf-16-le")).decode()
    out = scrub(f"powershell.exe -NoP -Enc {enc}")
    assert out == "powershell.exe -NoP -Enc [REDACTED]"


def test_keep_values_and_require_words_are_read_from_the_rule_file(tmp_path):
    rules = tmp_path / "s.toml"
    rules.write_text("[[rule]]\nid = 'g'\nkind = 'context'\ncheck = 'not_port'\nkeep_values = ['-path']\n"
                     "regex = '''(?:^|\\s)-p(?P<secret>\\S{4,})'''\n"
                     "[[rule]]\nid = 'r'\nkind = 'context'\nrequire_words = ['tool']\n"
                     "regex = '''\\sword\\s+(?P<secret>\\S+)'''\n")
    sweep = SecretSweep(load_rules(rules))
    assert sweep.sweep("x -path y")[0] == "x -path y"
    assert sweep.sweep("x -p8080")[0] == "x -p8080"
    assert sweep.sweep("x -pathy")[0] == "x -p[REDACTED]"
    assert sweep.sweep("other word Zq01")[0] == "other word Zq01"
    assert sweep.sweep("tool.exe word Zq01")[0] == "tool.exe word [REDACTED]"


class _SetOutOfMemory:
    """What RE2::Set::Match gives when its DFA runs out of memory: no match at all."""

    def Match(self, data):  # noqa: N802 - the re2 method name
        return None


def test_a_set_whose_dfa_runs_out_of_memory_fails_closed():
    """RE2's set reports nothing when its DFA budget is exhausted; the sweep then tries every rule
    rather than calling the value clean."""
    sweep = SecretSweep()
    sweep._set = _SetOutOfMemory()
    text = "sync ghp_Zq01234567890abcdefABCDEFghijklmnopq and PWD:ZqS3cretPw"
    out, n = sweep.sweep(text)
    assert "Zq01234567890" not in out and "ZqS3cretPw" not in out and n == 2


def test_a_scan_that_cannot_finish_scrubs_the_whole_value(monkeypatch):
    """Any failure of the scan (RE2 out of memory, an engine error) replaces the value, never keeps it."""
    sweep = SecretSweep()

    class Broken:
        def search(self, data):
            raise MemoryError("DFA out of memory")

    sweep._any = Broken()
    assert sweep.sweep("sync ghp_Zq01234567890abcdefABCDEFghijklmnopq") == (REDACTED, 1)
    assert sweep.sweep("chrome") == (REDACTED, 1)
    assert scrub_free_text("mysql -pZqS3cretPw", _pz, _url, sweep)[0] == REDACTED
