"""Deterministic, realistic and deliberately dirty endpoint telemetry (NDJSON).

The generator produces what the field really sends (see the input contract):
all 14 record types, skewed devices and hosts, credentials in URLs and command
lines, profile paths, special-category fields at any depth, consent gaps,
children's devices, old and future clocks, retries, and (when `dirty`) every
kind of broken line a producer fleet emits.

Every value that must never reach the pipeline's output is built from a small
fixed pool and listed in `PLANTED_SECRETS`. Secret strings carry the marker
`zq` followed by at least six letters or digits (URL hosts, product names,
threat names and other kept text never contain `zq`), except MAC addresses,
SIDs, NTLM hashes and precise coordinates, which are listed exactly as
planted. Values that must survive sanitizing are in `LEGIT_VALUES`.

Pools are built once at import from a fixed seed, so `PLANTED_SECRETS` is a
constant; `seed` only drives which pool entries each line uses.

Clean records: url_visit 40% (a third with credentials in the URL), os_event
15%, detection 10%, wifi 7%, installed_app 7%, product_usage 6%, device 3%,
license 2.5%, suspicious_file 2.5%, spam_email 2%, contact 1.5%, dump 1.5%,
antitheft 1%, child_protection 1%. About 1% are retries of an earlier event,
3% carry a special-category field, 4% carry other unknown fields.

Dirty lines (about 4% when `dirty`): blank lines, non-JSON text (some with
credentials), truncated JSON, JSON that is not an object (or a batch array),
unknown `type`, unknown `schema_version`, wrong field types, unparseable
timestamps, missing envelope fields, invalid UTF-8 (UTF-16, Latin-1, binary),
NaN/Infinity, two records on one line. On top of those: a UTF-8 BOM on the
first line, CRLF endings on 1.5% of lines, and one line over 1 MiB per 20 000
lines in files of 5000+ lines.

    python -m pipeline.sample --records 1000000 --output /tmp/t.ndjson.gz [--seed 7] [--clean]
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import string
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson

__all__ = ["LEGIT_VALUES", "PLANTED_SECRETS", "RECORD_TYPES", "generate_lines", "main", "write_sample"]

RECORD_TYPES = (
    "license", "product_usage", "device", "detection", "installed_app", "url_visit", "os_event",
    "suspicious_file", "wifi", "contact", "dump", "spam_email", "antitheft", "child_protection",
)

# Share of clean records per type (percent).
_TYPE_MIX = {
    "url_visit": 40.0, "os_event": 15.0, "detection": 10.0, "wifi": 7.0, "installed_app": 7.0,
    "product_usage": 6.0, "device": 3.0, "license": 2.5, "suspicious_file": 2.5, "spam_email": 2.0,
    "contact": 1.5, "dump": 1.5, "antitheft": 1.0, "child_protection": 1.0,
}

DIRTY_FRACTION = 0.04       # broken lines (not counting CRLF endings or the BOM) when dirty
CRLF_FRACTION = 0.015       # lines ending in "\r" when dirty
DUPLICATE_FRACTION = 0.01   # events re-sent with the same device_id + event_id
SPECIAL_FRACTION = 0.03     # records carrying a special-category field somewhere
EXTRA_FRACTION = 0.04       # records carrying unknown extra fields
CRED_URL_FRACTION = 1 / 3   # url_visit records whose URL carries credentials
HUGE_LINE_BYTES = 1_100_000  # > 1 MiB
HUGE_EVERY = 20_000         # one huge line per this many lines (files of >= 5000 lines get at least one)

_ALNUM = string.ascii_letters + string.digits
_LOWER_ALNUM = string.ascii_lowercase + string.digits
_UPPER_ALNUM = string.ascii_uppercase + string.digits


# --------------------------------------------------------------------------- pools
# Built from a fixed seed: identical for every call, so the secrets are constant.

_secrets: set[str] = set()


def _s(value: str) -> str:
    """Register a planted secret and return it."""
    _secrets.add(value)
    return value


_P = random.Random(0x5EC2E7)


def _rand_str(alphabet: str, k: int) -> str:
    return "".join(_P.choice(alphabet) for _ in range(k))


_FIRST_NAMES = (
    "alice", "bobby", "carla", "daan", "emma", "finn", "fleur", "lotte", "sanne", "pieter", "jeroen", "bram",
    "noah", "julia", "lukas", "hannah", "jonas", "leonie", "felix", "marie", "pierre", "camille", "louis",
    "chloe", "hugo", "ivan", "olga", "dmitri", "natasha", "sergei", "yuki", "haruto", "sakura", "kenji",
    "joao", "mariana", "lucas", "weiwei", "xiaoming", "james", "oliver", "sophie", "charlotte", "george",
    "amelia", "harry", "emily", "michael", "jennifer", "david", "sarah", "jessica", "daniel", "thomas",
    "anouk", "tessa", "ruben", "sven", "klaus", "ingrid", "mathilde", "antoine", "manon", "nadia", "omar",
    "fatima", "mehmet", "ayse", "kevin", "laura", "stefan", "petra", "monique", "gerard", "wouter", "femke",
)
_EMAIL_DOMAINS = (
    "gmail.com", "outlook.com", "hotmail.com", "yahoo.com", "web.de", "gmx.de", "ziggo.nl", "kpnmail.nl",
    "orange.fr", "free.fr", "yandex.ru", "mail.ru", "icloud.com", "proton.me", "mail.example",
)


class _Person:
    __slots__ = ("user", "cap", "email", "nickname", "user_id", "win_host", "mac_host", "lin_host", "ssid",
                 "mail_domain")

    def __init__(self, name: str, nn: int) -> None:
        self.user = _s(f"zq{name}{nn:02d}")
        self.cap = f"{name.capitalize()}{nn:02d}"
        self.mail_domain = _P.choice(_EMAIL_DOMAINS)
        self.email = _s(f"{self.user}@{self.mail_domain}")
        style = _P.randrange(4)
        nick = (f"zq{self.cap}", f"xX_{self.user}_Xx", f"zq{name}{_P.randrange(1000, 9999)}",
                f"zq{self.cap}Gamer")[style]
        self.nickname = _s(nick)
        self.user_id = _s(f"U-zq{_P.randrange(10**6, 10**7)}")
        # Host names are registered as secrets by the devices that use them.
        self.win_host = f"{_P.choice(('DESKTOP', 'LAPTOP', 'PC'))}-zq{self.cap.upper()}"
        self.mac_host = f"zq{self.cap}s-MacBook-Pro"
        self.lin_host = f"{self.user}-{_P.choice(('thinkpad', 'ubuntu', 'desktop', 'xps'))}"
        ssid_style = _P.randrange(4)
        self.ssid = _s((f"zq{self.cap}'s iPhone", f"zq{self.cap} Galaxy S23", f"zq{self.cap}-hotspot",
                        f"Ziggo-zq{self.cap}")[ssid_style])


def _make_people(k: int) -> list[_Person]:
    seen: set[tuple[str, int]] = set()
    out: list[_Person] = []
    while len(out) < k:
        key = (_P.choice(_FIRST_NAMES), _P.randrange(1, 100))
        if key not in seen:
            seen.add(key)
            out.append(_Person(*key))
    return out


_PEOPLE = _make_people(160)

_PW_WORDS = ("Winter", "Summer", "Welkom", "Passwort", "Soleil", "Qwerty", "Admin", "Letmein", "Dragon",
             "Sunshine", "Football", "Princess", "Zomer", "Herbst", "Bonjour", "Moskva", "Sakura", "Master")
_PW_SUFFIX = ("", "", "", "!", "#", "$", "@", "?", "!!")


def _make_password() -> str:
    core = f"zq{_P.choice(_PW_WORDS)}{_P.choice(('2024', '2025', '2026', '123', '1', '99', '8812'))}"
    if _P.random() < 0.3:
        core += _rand_str(string.ascii_lowercase, 2)
    pw = core + _P.choice(_PW_SUFFIX)
    _s(core)
    _s(pw)
    enc = quote(pw, safe="")
    if enc != pw:
        _s(enc)
    return pw


_PASSWORDS = [_make_password() for _ in range(110)]
_PASSWORDS_PLAIN = [p for p in _PASSWORDS if p.isalnum()]      # safe inside shell quoting and URLs
_PASSWORDS_URL = {p: quote(p, safe="") for p in _PASSWORDS}     # as written inside a URL
_TOKENS = [_s("zq" + _rand_str(_ALNUM, _P.randrange(20, 36))) for _ in range(110)]
_SESSIONS = [_s("zq" + _rand_str("0123456789abcdef", 24)) for _ in range(70)]
_NTLM = [_s(_rand_str("0123456789abcdef", 32)) for _ in range(30)]
_LICENSES = [
    _s("zq" + _rand_str(_UPPER_ALNUM, 6) + "-" + "-".join(_rand_str(_UPPER_ALNUM, 5) for _ in range(3)))
    for _ in range(100)
]
_TENANT_DOMAINS = ("CORP", "ACME", "CONTOSO", "FABRIKAM", "NORTHWIND", "GLOBEX", "INITECH", "UMBRELLA")
_TENANTS = [(_s(f"tnt-zq{_rand_str(_LOWER_ALNUM, 8)}"), _P.choice(_TENANT_DOMAINS)) for _ in range(40)]
_SIDS = [_s(f"S-1-5-21-{_P.randrange(10**9, 4 * 10**9)}-{_P.randrange(10**9, 4 * 10**9)}-"
            f"{_P.randrange(10**8, 10**9)}-{_P.randrange(1000, 1200)}") for _ in range(50)]


def _make_mac() -> str:
    octets = [_P.randrange(256) for _ in range(6)]
    octets[0] &= 0xFE
    style = _P.randrange(4)
    if style == 0:
        return _s(":".join(f"{o:02x}" for o in octets))
    if style == 1:
        return _s(":".join(f"{o:02X}" for o in octets))
    if style == 2:
        return _s("-".join(f"{o:02X}" for o in octets))
    h = "".join(f"{o:02x}" for o in octets)
    return _s(f"{h[0:4]}.{h[4:8]}.{h[8:12]}")


_MACS = [_make_mac() for _ in range(180)]
_BSSIDS = [_make_mac() for _ in range(150)]

_SPECIAL_KEYS = {
    "HEALTH": ("healthStatus", "health_status", "health", "HealthData", "medical_condition", "diagnosis",
               "gezondheid", "Gesundheit", "Gesundheitsdaten", "santé", "maladie"),
    "RELIGION": ("religion", "Religion", "RELIGION", "religious_affiliation", "godsdienst", "Konfession",
                 "croyance"),
    "POLITICAL": ("political_opinion", "politicalOpinion", "political-views", "politieke_voorkeur",
                  "politische_Meinung", "opinion_politique"),
    "ORIENTATION": ("sexualOrientation", "sexual_orientation", "seksuele_geaardheid", "sexuelle_Orientierung",
                    "orientation_sexuelle"),
    "ETHNIC": ("ethnicity", "ethnic_origin", "race", "etniciteit", "ethnische_Herkunft", "origine_ethnique"),
    "TRADEUNION": ("trade_union", "tradeUnionMember", "union_membership", "vakbond", "Gewerkschaft",
                   "appartenance_syndicale"),
    "BIOMETRIC": ("biometric", "biometricTemplate", "fingerprint", "Fingerabdruck", "vingerafdruk",
                  "données_biométriques"),
    "GENETIC": ("genetic", "geneticData", "dna_profile", "genetisch", "génétique"),
}
_SPECIAL_WORDS = {
    "HEALTH": ("diabetes", "asthma", "depression", "pregnant", "epilepsy", "cancer"),
    "RELIGION": ("catholic", "muslim", "protestant", "jewish", "hindu", "buddhist"),
    "POLITICAL": ("green", "socialist", "liberal", "conservative", "pirate"),
    "ORIENTATION": ("homosexual", "bisexual", "heterosexual", "asexual"),
    "ETHNIC": ("turkish", "moroccan", "roma", "kurdish", "surinamese"),
    "TRADEUNION": ("fnv", "verdi", "cgt", "unite", "igmetall"),
    "BIOMETRIC": ("fp", "face", "iris", "voice"),
    "GENETIC": ("brca1", "apoe4", "cftr", "hla"),
}
_SPECIAL_CATS = tuple(_SPECIAL_KEYS)
_SPECIAL_VALUES = {
    cat: [_s(f"zq{cat}-{_P.choice(words)}-{_P.randrange(1000, 9999)}") for _ in range(14)]
    for cat, words in _SPECIAL_WORDS.items()
}
_SPECIAL_KEY_LIST = [(cat, key) for cat, keys in _SPECIAL_KEYS.items() for key in keys]

_SPAM_SUBJECTS: list[str] = []
_SPAM_BODIES: list[str] = []
for _i in range(55):
    _p = _P.choice(_PEOPLE)
    _code = _rand_str(_UPPER_ALNUM, 7)
    _SPAM_SUBJECTS.append(_s(_P.choice((
        f"Your parcel zqPARCEL{_code} is waiting - confirm delivery",
        f"Invoice zqINV{_code} is overdue",
        f"{_p.user}, you have won EUR 1.000.000!",
        f"Re: zqREF{_code} account suspended",
        f"Ваш аккаунт zqACC{_code} заблокирован",
        f"Ihre Rechnung zqRE{_code} – Zahlung fällig",
    ))))
    _body = _P.choice((
        f"Dear {_p.user},\nplease verify your account at http://verify-account.example/login?session="
        f"{_P.choice(_SESSIONS)} within 24h.\nRegards, Support",
        f"Hello {_p.cap},\nyour password {_P.choice(_PASSWORDS)} has expired. Reply with your new one.",
        f"Click here to claim zqPRIZE{_code}: https://prize.example/claim?token={_P.choice(_TOKENS)}",
        f"Bonjour {_p.cap},\nvotre colis zqCOLIS{_code} est bloqué.\nPayez 1,99 € ici.",
        f"Beste {_p.user},\nuw rekening zqIBAN{_code} wordt geblokkeerd. Bel ons.",
    ))
    _SPAM_BODIES.append(_body)
    # Registered line by line: a body's newlines are escaped in JSON output, its lines are not.
    for _part in _body.split("\n"):
        if "zq" in _part:
            _s(_part)
    for _word in _SPAM_SUBJECTS[-1].split() + _body.split():
        if _word.startswith("zq"):
            _s(_word.rstrip(".,:!"))

_CITIES = (
    (52.370, 4.895), (52.090, 5.121), (51.924, 4.477), (52.520, 13.405), (48.137, 11.575), (50.110, 8.682),
    (48.856, 2.352), (45.764, 4.835), (51.507, -0.128), (53.480, -2.242), (40.713, -74.006),
    (37.775, -122.419), (55.756, 37.617), (59.934, 30.335), (35.676, 139.650), (34.694, 135.502),
    (-23.550, -46.633), (-22.907, -43.173), (39.904, 116.407), (31.230, 121.473), (-33.868, 151.209),
)


def _coord(base: float) -> float:
    while True:
        v = round(base + _P.uniform(-0.05, 0.05), 6)
        text = f"{v:.6f}"
        if text[-1] != "0" and repr(v) == text:
            _s(text)
            return v


_COORDS = [(_coord(lat), _coord(lon)) for lat, lon in (_P.choice(_CITIES) for _ in range(100))]

# ------------------------------------------------------------------- legit pools

_HOT_HOSTS = (
    "www.google.com", "www.youtube.com", "bank.example.co.uk", "www.facebook.com",
    "login.microsoftonline.com", "www.bol.com", "www.spiegel.de", "www.lemonde.fr", "yandex.ru",
    "www.yahoo.co.jp", "www.amazon.de",
    "www.nu.nl", "www.bbc.co.uk", "accounts.google.com", "www.abc.net.au", "vk.com", "mail.ru",
    "www.marktplaats.nl", "www.leboncoin.fr", "www.baidu.com", "github.com", "www.reddit.com",
    "web.whatsapp.com", "www.instagram.com", "www.netflix.com", "www.wikipedia.org", "de.wikipedia.org",
    "www.rakuten.co.jp", "www.mercadolivre.com.br", "www.uol.com.br", "www.ing.nl", "online.sberbank.ru",
    "www.tiktok.com", "discord.com", "www.roblox.com", "pastebin.com", "cdn.jsdelivr.net",
    "raw.githubusercontent.com", "www.ebay.co.uk", "shop.example.com.au", "bücher.de", "пример.рф",
)
_IDN_HOSTS = ("münchen.de", "straße.de", "café.fr", "例え.jp", "xn--bcher-kva.de", "xn--e1afmkfd.xn--p1ai",
              "ουτοπία.gr", "παράδειγμα.δοκιμή")
_SUFFIXES = (
    (".com", 30), (".co.uk", 6), (".de", 10), (".nl", 8), (".fr", 6), (".ru", 6), (".jp", 2), (".co.jp", 2),
    (".com.au", 3), (".org", 5), (".net", 5), (".io", 2), (".com.br", 3), (".br", 1), (".it", 2), (".es", 2),
    (".pl", 2), (".be", 2), (".ch", 1), (".at", 1), (".cn", 1), (".com.cn", 1), (".ne.jp", 1),
    (".org.uk", 1), (".info", 1), (".xyz", 2), (".top", 1), (".online", 1), (".blogspot.com", 1),
    (".github.io", 1), (".рф", 1),
)
_SYLLABLES = ("ka", "lo", "mi", "ne", "ro", "ta", "vi", "zen", "bar", "dor", "fel", "gri", "han", "jor",
              "kel", "lum", "mar", "nor", "pel", "ras", "sol", "tur", "vel", "wes", "yor", "bel", "cor",
              "dal", "eri", "fa", "gu", "ho", "in", "ju", "ko", "le", "mo", "nu", "pa", "re", "si", "to", "u",
              "va", "we")
_WORDS = ("shop", "bank", "news", "mail", "cloud", "games", "store", "media", "blog", "tech", "market",
          "travel", "auto", "health", "sport", "food", "casino", "crypto", "deals", "hosting")
_SUBDOMAINS = (("www.", 50), ("", 25), ("m.", 4), ("shop.", 3), ("login.", 3), ("cdn.", 3), ("api.", 3),
               ("mail.", 3), ("static.", 2), ("portal.", 2), ("secure.", 2))


def _weighted(pairs: tuple[tuple[Any, float], ...]) -> Any:
    return _P.choices([p[0] for p in pairs], weights=[p[1] for p in pairs])[0]


def _make_hosts(k: int) -> list[str]:
    hosts = list(_HOT_HOSTS)
    seen = set(hosts)
    for h in _IDN_HOSTS:
        hosts.append(h)
        seen.add(h)
    n_v4, n_v6 = 150, 30
    while len(hosts) < k - n_v4 - n_v6:
        name = "".join(_P.choice(_SYLLABLES) for _ in range(_P.randrange(2, 4)))
        if _P.random() < 0.3:
            name += _P.choice(("-", "")) + _P.choice(_WORDS)
        if _P.random() < 0.05:
            name += str(_P.randrange(1, 99))
        suffix = _weighted(_SUFFIXES)
        host = _weighted(_SUBDOMAINS) + name + suffix
        if "zq" in host or host in seen:
            continue
        seen.add(host)
        hosts.append(host)
    for _ in range(n_v4):
        first = _P.choice((185, 45, 91, 193, 77, 5, 104, 172, 192, 10, 213, 62))
        hosts.append(f"{first}.{_P.randrange(256)}.{_P.randrange(256)}.{_P.randrange(1, 255)}")
    for _ in range(n_v6):
        pre = _P.choice(("2001:db8", "2a02:a46f", "2a00:1450", "2606:4700", "fe80", "2a01:4f8"))
        hosts.append(f"[{pre}::{_P.randrange(1, 0xFFFF):x}:{_P.randrange(1, 0xFFFF):x}]")
    rest = hosts[len(_HOT_HOSTS):]
    _P.shuffle(rest)                  # IDN and IP literals spread over the long tail
    return list(_HOT_HOSTS) + rest


_HOSTS = _make_hosts(5000)
_HOST_PORTS = [""] * len(_HOSTS)
for _i in range(len(_HOT_HOSTS), len(_HOSTS)):
    if _P.random() < 0.06:
        _HOST_PORTS[_i] = ":" + str(_P.choice((8080, 8443, 3000, 8000, 81, 8888, 9443, 443, 80)))
_HOST_PORTS[2] = ":8443"   # bank.example.co.uk, as in the contract's example (sometimes)

_THREATS = (
    "HEUR:Trojan.Win32.Generic", "Trojan-PSW.Win32.Stealer.gen", "not-a-virus:HEUR:AdWare.Win32.Agent.gen",
    "Backdoor.Linux.Mirai.b", "HEUR:Trojan-Ransom.Win32.Generic", "PDM:Trojan.Win32.Generic",
    "UDS:DangerousObject.Multi.Generic", "HEUR:Exploit.MSOffice.CVE-2017-11882.gen",
    "Trojan.AndroidOS.Boogr.gsh", "HEUR:Trojan-Downloader.Script.Generic", "Trojan.Win32.Agent.xyzbad",
    "not-a-virus:RiskTool.Win32.BitCoinMiner.gen", "HEUR:Trojan.MSIL.Crypt.gen", "Trojan-Spy.Win32.Noon.gen",
    "HEUR:Backdoor.MSIL.Remcos.gen", "Trojan.JS.Agent.gen", "HEUR:Trojan.PDF.Badur.gena",
    "Exploit.Win32.CVE-2023-36884.a", "HEUR:Trojan-Banker.AndroidOS.Agent.gen", "Worm.Win32.Autorun.gen",
    "Trojan.Linux.Agent.gen", "HEUR:Hoax.Win32.FakeAlert.gen", "Email-Worm.Win32.Brontok.q",
    "Trojan.MacOS.Adload.a", "not-a-virus:HEUR:Downloader.Win32.Bundler.gen", "HEUR:Trojan.Script.Miner.gen",
)
_EVENT_KINDS = ("process_start", "network_connect", "file_write", "registry_set")
_WIFI_SECURITY = ("OPEN", "WEP", "WPA", "WPA2", "WPA3")

LEGIT_VALUES: dict[str, tuple[str, ...]] = {
    "host": ("bank.example.co.uk", "www.google.com", "www.youtube.com", "www.bol.com", "www.spiegel.de",
             "yandex.ru", "www.yahoo.co.jp", "www.abc.net.au", "login.microsoftonline.com"),
    "registered_domain": ("example.co.uk", "google.com", "youtube.com", "bol.com", "spiegel.de", "yandex.ru",
                          "yahoo.co.jp", "abc.net.au", "microsoftonline.com"),
    "threat_name": _THREATS[:4],
    "event_kind": _EVENT_KINDS,
    "wifi_security": _WIFI_SECURITY,
}

_GENERIC_SSIDS = (
    "eduroam", "Starbucks WiFi", "NS WiFi", "Free WiFi", "Telekom_FON", "KPN", "Ziggo", "FRITZ!Box 7590 KJ",
    "Livebox-4A2C", "Bbox-71C2E9", "FreeWifi_secure", "MT_FREE", "Hotel Guest", "Airport Free Wi-Fi",
    "TP-Link_5G_3F21", "NETGEAR42", "McDonalds Free WiFi", "0001docomo", "Vodafone Homespot", "CORP-GUEST",
)

_PRODUCTS = {
    "win": ("KIS 21.3.10.391", "KTS 21.15.8.493", "KAV 21.3.10.391", "KES 12.1.0.506", "KSOS 21.3.10.391",
            "Kaspersky Standard 21.17.7.537", "Kaspersky Plus 21.17.7.537", "KIS 21.2"),
    "mac": ("KIS Mac 21.0.2.464", "Kaspersky Standard Mac 21.4.14.211"),
    "lin": ("KESL 11.4.0.1096", "KESL 12.0.0.6672"),
    "and": ("KISA 11.112.4.8522", "Kaspersky Android 11.108.4.10185"),
}
_OS = {
    "win": (("Windows", "10.0.19045"), ("Windows", "10.0.22631"), ("Windows", "10.0.22621"),
            ("Windows", "6.1.7601"), ("Windows Server", "10.0.17763")),
    "mac": (("macOS", "14.1.1"), ("macOS", "13.6.2"), ("macOS", "15.0")),
    "lin": (("Ubuntu", "22.04"), ("Debian", "12"), ("CentOS", "7.9.2009"),
            ("Red Hat Enterprise Linux", "9.3")),
    "and": (("Android", "14"), ("Android", "13"), ("Android", "11")),
}
_DEVICE_TYPES = {"win": ("desktop", "laptop", "laptop", "server"), "mac": ("laptop", "desktop"),
                 "lin": ("server", "desktop", "laptop"), "and": ("smartphone", "smartphone", "tablet")}

_COUNTRIES = (("NL", 20), ("DE", 18), ("FR", 10), ("GB", 10), ("US", 12), ("RU", 8), ("JP", 5), ("BR", 4),
              ("CN", 3), ("ES", 1.5), ("IT", 1.5), ("PL", 1), ("BE", 1.5), ("CA", 1), ("AU", 1), ("CH", 0.7),
              ("SE", 0.7), ("IN", 0.8), ("AZ", 0.3), (None, 3), ("nl", 1), ("de", 0.5), ("XX", 0.5),
              ("UK", 0.5), ("", 0.3))


def _flag(true: float, false: float) -> bool | None:
    """True / False / None (missing) with the given probabilities."""
    r = _P.random()
    return True if r < true else (False if r < true + false else None)


def _consent(child: bool, withdrawn: str | None = None) -> dict:
    flags = {
        "eula": _flag(0.99, 0.005),
        "ksn": _flag(0.93, 0.05),
        "marketing": _flag(0.65, 0.30),
        "dumps": _flag(0.45, 0.50),
        "antispam": _flag(0.55, 0.25),
        "antitheft": _flag(0.25, 0.35),
        "child_protection": _flag(0.92, 0.05) if child else _flag(0.10, 0.30),
    }
    if withdrawn:
        flags[withdrawn] = False
    return {k: v for k, v in flags.items() if v is not None}


class _Device:
    __slots__ = ("os", "person", "tenant", "bases", "switch", "hostname", "mac", "child", "consent")

    def __init__(self, idx: int) -> None:
        os_kind = _weighted((("win", 70), ("mac", 10), ("lin", 8), ("and", 12)))
        self.os = os_kind
        self.person = _P.choice(_PEOPLE)
        self.tenant = _P.choice(_TENANTS) if os_kind != "and" and _P.random() < 0.25 else None
        self.child = os_kind in ("win", "and") and self.tenant is None and _P.random() < 0.04
        p = self.person
        android = f"Galaxy-{_P.choice(('S23', 'A54', 'Tab-S9'))}-{p.user}"
        self.hostname = {"win": p.win_host, "mac": p.mac_host, "lin": p.lin_host, "and": android}[os_kind]
        _s(self.hostname)
        self.mac = _P.choice(_MACS)
        if _P.random() < 0.7:
            device_id = _s(f"D-zqdev{idx:06d}")
        else:
            h = _rand_str("0123456789abcdef", 30)
            device_id = _s(f"zq{h[:6]}-{h[6:10]}-{h[10:14]}-{h[14:18]}-{h[18:30]}")
        base: dict = {"schema_version": 1, "type": None, "event_id": None, "device_id": device_id}
        if self.child or _P.random() < 0.75:
            base["user_id"] = self.person.user_id
        base["ts"] = None
        country = _weighted(_COUNTRIES)
        if country is not None:
            base["country"] = country
        base["product"] = _P.choice(_PRODUCTS[os_kind])
        if self.tenant:
            base["tenant_id"] = self.tenant[0]
        if self.child:
            base["is_child"] = True
        elif _P.random() < 0.5:
            base["is_child"] = False
        self.consent = _consent(self.child)
        base["consent"] = self.consent
        base["data"] = None
        self.bases = [base]
        self.switch = 2.0
        if _P.random() < 0.04:   # consent withdrawn (or given) part-way through the period
            later = dict(base)
            later["consent"] = _consent(self.child, withdrawn=_P.choice(("ksn", "marketing", "dumps")))
            self.bases.append(later)
            self.switch = _P.uniform(0.2, 0.8)


_DEVICES = [_Device(i) for i in range(2000)]

PLANTED_SECRETS: tuple[str, ...] = tuple(sorted(_secrets))

for _pool in (_HOSTS, _THREATS, _GENERIC_SSIDS, _TENANT_DOMAINS, _EMAIL_DOMAINS,
              [p for products in _PRODUCTS.values() for p in products]):
    if any("zq" in v.lower() for v in _pool):
        raise RuntimeError("a legit value pool carries the secret marker")


# ------------------------------------------------------------------- samplers

def _zipf_table(n: int, s: float, size: int) -> list[int]:
    """Index table: picking a uniform entry gives a Zipf(s)-distributed rank in [0, n)."""
    weights = [1.0 / (k + 1) ** s for k in range(n)]
    total = sum(weights)
    table: list[int] = []
    for k, w in enumerate(weights):
        table.extend([k] * max(1, int(round(w / total * size))))
    return table


_HOST_Z = _zipf_table(len(_HOSTS), 1.0, 1 << 17)
_DEVICE_Z = _zipf_table(len(_DEVICES), 0.8, 1 << 15)
_THREAT_Z = _zipf_table(len(_THREATS), 1.1, 4096)
_SMALL_Z = {len(pool): _zipf_table(len(pool), 0.9, 4096)
            for pool in (_PASSWORDS, _PASSWORDS_PLAIN, _TOKENS, _SESSIONS, _PEOPLE, _LICENSES)}


def _device_subset(pred: Callable[[_Device], bool]) -> tuple[list[int], list[int]]:
    """(skewed, uniform) index tables of the devices that match `pred`.

    The skewed one filters the Zipf table, so hot devices stay hot."""
    skewed = [i for i in _DEVICE_Z if pred(_DEVICES[i])] or [0]
    return skewed, [i for i, d in enumerate(_DEVICES) if pred(d)] or [0]


_DEVICE_SUBSETS = {
    "child_protection": _device_subset(lambda d: d.child),
    "antitheft": _device_subset(lambda d: d.consent.get("antitheft") is True and d.os != "lin"),
    "spam_email": _device_subset(lambda d: d.consent.get("antispam") is True and d.os != "and"),
    "dump": _device_subset(lambda d: d.consent.get("dumps") is True),
    "os_event": _device_subset(lambda d: d.os != "and"),
}
# Inventory-like records (device, license, contact) come from every device at about the same rate.
_UNIFORM_TYPES = frozenset(("device", "license", "contact"))

# ------------------------------------------------------------------- record content

_WIN_APPS = (
    ("Google Chrome", "131.0.6778.86", "Google LLC", "C:\\Program Files\\Google\\Chrome\\Application"),
    ("Mozilla Firefox", "133.0", "Mozilla", "C:\\Program Files\\Mozilla Firefox"),
    ("7-Zip 23.01 (x64)", "23.01", "Igor Pavlov", "C:\\Program Files\\7-Zip"),
    ("Microsoft Office Professional Plus 2019", "16.0.10396.20023", "Microsoft Corporation",
     "C:\\Program Files\\Microsoft Office"),
    ("Steam", "2.10.91.91", "Valve Corporation", "C:\\Program Files (x86)\\Steam"),
    ("Zoom", "6.2.11", "Zoom Video Communications, Inc.", "%PROFILE%\\AppData\\Roaming\\Zoom\\bin"),
    ("TeamViewer", "15.60.3", "TeamViewer", "C:\\Program Files\\TeamViewer"),
    ("AnyDesk", "8.1.0", "AnyDesk Software GmbH", "C:\\Program Files (x86)\\AnyDesk"),
    ("Telegram Desktop", "5.8.3", "Telegram FZ-LLC", "%PROFILE%\\AppData\\Roaming\\Telegram Desktop"),
    ("Spotify", "1.2.50.335", "Spotify AB", "%PROFILE%\\AppData\\Roaming\\Spotify"),
    ("VLC media player", "3.0.21", "VideoLAN", "C:\\Program Files\\VideoLAN\\VLC"),
    ("Notepad++ (64-bit x64)", "8.7.1", "Notepad++ Team", "C:\\Program Files\\Notepad++"),
    ("KeePass Password Safe 2.57", "2.57", "Dominik Reichl", "C:\\Program Files\\KeePass Password Safe 2"),
    ("Python 3.12.7 (64-bit)", "3.12.7150.0", "Python Software Foundation",
     "%PROFILE%\\AppData\\Local\\Programs\\Python\\Python312"),
    ("Discord", "1.0.9172", "Discord Inc.", "%PROFILE%\\AppData\\Local\\Discord"),
    ("WinRAR 7.01 (64-bit)", "7.01.0", "win.rar GmbH", "C:\\Program Files\\WinRAR"),
    ("Roblox Player", "0.652.0.6520806", "Roblox Corporation", "%PROFILE%\\AppData\\Local\\Roblox\\Versions"),
    ("Microsoft Teams", "24295.605.3225.8804", "Microsoft Corporation",
     "%PROFILE%\\AppData\\Local\\Microsoft\\Teams"),
    ("uTorrent", "3.6.0.47044", "BitTorrent Inc.", "%PROFILE%\\AppData\\Roaming\\uTorrent"),
    ("Git", "2.47.0.2", "The Git Development Community", "C:\\Program Files\\Git"),
)
_AND_APPS = (("WhatsApp", "2.24.23.78", "WhatsApp LLC", "com.whatsapp"),
             ("TikTok", "37.2.4", "TikTok Pte. Ltd.", "com.zhiliaoapp.musically"),
             ("Roblox", "2.652.762", "Roblox Corporation", "com.roblox.client"),
             ("Telegram", "11.4.2", "Telegram FZ-LLC", "org.telegram.messenger"),
             ("Flashlight Pro", "1.0.3", "Unknown", "com.flash.light.pro.free"))
_MAC_APPS = (("Zoom", "6.2.11", "Zoom Video Communications, Inc.", "/Applications/zoom.us.app"),
             ("Slack", "4.41.97", "Slack Technologies", "/Applications/Slack.app"),
             ("iTerm2", "3.5.10", "George Nachman", "%PROFILE%/Applications/iTerm.app"))
_LIN_APPS = (("openssh-server", "1:9.6p1-3ubuntu13.5", "Ubuntu Developers", "/usr/sbin"),
             ("docker-ce", "5:27.3.1-1", "Docker Inc.", "/usr/bin"),
             ("nginx", "1.24.0-2ubuntu7", "Ubuntu Developers", "/usr/sbin"),
             ("xmrig", "6.22.2", "Unknown", "%PROFILE%/.cache/.x"))

_URL_PATHS = ("/", "/", "/login", "/search", "/watch", "/account/settings",
              "/news/2026/11/20/article-4312.html", "/cart", "/api/v1/items", "/wp-login.php", "/s",
              "/index.php", "/images/logo.png", "/mail/u/0/",
              "/checkout/payment", "/p/winterjas-heren/9300000123", "/r/netherlands/", "/video/7301")
_URL_QUERIES = ("", "", "", "", "?q=weer+amsterdam", "?utm_source=newsletter&utm_medium=email", "?id=4821",
                "?lang=de&page=2", "?v=dQw4w9WgXcQ", "?ref=homepage")
_BROWSERS = ("chrome", "chrome", "chrome", "firefox", "edge", "safari", "opera", "yandex", "samsung")
_VERDICTS = ("clean",) * 6 + ("malicious", "phishing", "adware", "unknown")
_CATEGORIES = ("search", "banking", "social", "news", "shopping", "adult", "games", "webmail", "software",
               "unknown")
_TOKEN_PARAMS = ("token", "access_token", "api_key", "auth", "key", "id_token", "code")
_SESSION_PARAMS = ("sessionid", "PHPSESSID", "sid", "session", "JSESSIONID", "ASP.NET_SessionId")
_REMOTE_IPS = ("185.220.101.4", "45.133.1.20", "93.184.216.34", "142.250.185.78", "2a02:6b8::2:242",
               "10.0.0.5", "192.168.1.10", "104.21.32.1", "77.88.55.88", "5.255.255.70", "8.8.8.8",
               "2606:4700::6810:84e5", "91.215.85.12", "172.16.4.20")
_REMOTE_PORTS = (443, 443, 443, 80, 445, 3389, 22, 4444, 8080, 53, 1433, 5985)
_APP_NAMES = ("TikTok", "Roblox", "YouTube", "Discord", "Minecraft", "Snapchat", "Instagram", "Fortnite")
_DUMP_MODULES = ("avp.exe", "avpui.exe", "klif.sys", "kavfs.dll", "klflt.sys", "ksde.exe", "kpm.exe")
_ODD_URLS = ("about:blank", "chrome://settings/", "data:text/html;base64,PGgxPmhpPC9oMT4=",
             "javascript:void(0)", "not a url", "//cdn.jsdelivr.net/npm/x.js", "http://[fe80:::1%eth0]/",
             "https://[2001:db8::1/login", "http://999.1.2.3/", "https://exa mple.com/")
_BUILTIN_ACCOUNTS = (r"NT AUTHORITY\SYSTEM", r"NT AUTHORITY\SYSTEM", r"NT AUTHORITY\NETWORK SERVICE",
                     r"NT AUTHORITY\LOCAL SERVICE")
_BAD_TIMESTAMPS = ("yesterday", "2026-13-45T99:00:00Z", "2026-11-20T10:04:05", "20/11/2026 10:04", "",
                   "2026-11-20", "Fri, 20 Nov 2026 10:04:05 GMT", "2026-02-30T10:00:00Z")
_WIN_DROP_DIRS = ("Downloads", "Desktop", "AppData\\Roaming")
_EXC_CODES = ("0xC0000005", "0xC0000409", "0x80000003", "0xC00000FD", "0xE06D7363", "SIGSEGV")

_CMD = r"C:\Windows\System32\cmd.exe"
_PS = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"
_EXPLORER = r"C:\Windows\explorer.exe"
_CHROME = r"C:\Program Files\Google\Chrome\Application\chrome.exe"
_OUTLOOK = r"C:\Program Files\Microsoft Office\root\Office16\OUTLOOK.EXE"
# (image, command line, parent image); placeholders: user, prof (profile dir), pw, pw2, tok, ntlm, email,
# dom (account domain), shell.
_WIN_COMMANDS = (
    (r"C:\Windows\System32\net.exe", r"net use \\fs01.corp.local\share {pw} /user:{dom}\{user}", _CMD),
    (r"C:\Program Files\MySQL\MySQL Server 8.0\bin\mysql.exe", "mysql -uroot -p{pw} -h db01.corp.local shop",
     _CMD),
    (r"C:\Windows\System32\curl.exe",
     'curl -H "Authorization: Bearer {tok}" https://{user}:{pw2}@api.example.com/x', _PS),
    (r"{prof}\Downloads\mimikatz.exe",
     r'mimikatz.exe "privilege::debug" "sekurlsa::pth /user:{user} /domain:{dom} /ntlm:{ntlm}" exit', _CMD),
    (_PS, "powershell.exe -NoProfile -Command \"$p = ConvertTo-SecureString '{pw}' -AsPlainText -Force; "
          r"$c = New-Object PSCredential('{dom}\{user}', $p); Enter-PSSession srv02 -Credential $c" + '"',
     _EXPLORER),
    (r"C:\Windows\System32\cmdkey.exe", r"cmdkey /add:srv01 /user:{dom}\{user} /pass:{pw}", _CMD),
    (r"C:\Windows\System32\schtasks.exe",
     r"schtasks /create /tn Upd /tr {prof}\AppData\Roaming\upd.exe /sc onlogon /ru {dom}\{user} /rp {pw}",
     _CMD),
    (r"{prof}\Tools\PsExec64.exe", r"PsExec64.exe \\10.0.0.5 -u {dom}\{user} -p {pw} cmd.exe", _CMD),
    (r"C:\Program Files\Git\cmd\git.exe", "git clone https://{user}:ghp_{tok}@github.com/acme/infra.git",
     _PS),
    (r"C:\Windows\System32\wbem\WMIC.exe",
     r"wmic /node:10.0.0.7 /user:{dom}\{user} /password:{pw} process call create calc.exe", _CMD),
    (r"C:\Program Files\Docker\Docker\resources\bin\docker.exe",
     "docker login -u {user} -p {pw} registry.example.com", _PS),
    (_PS, r"powershell.exe -ExecutionPolicy Bypass -File {prof}\Desktop\deploy.ps1 -Password {pw}",
     _EXPLORER),
    (_CMD, "cmd.exe /c set API_KEY={tok} && node server.js", _EXPLORER),
    (r"C:\Program Files\Amazon\AWSCLIV2\aws.exe", "aws configure set aws_secret_access_key {tok}", _PS),
    (r"C:\Windows\System32\notepad.exe", r'notepad.exe "{prof}\Documents\wachtwoorden.txt"', _EXPLORER),
    (_OUTLOOK, '"' + _OUTLOOK + '" /c ipm.note /m {email}', _EXPLORER),
    (r"C:\Windows\System32\runas.exe", r"runas /user:{dom}\{user} cmd", _EXPLORER),
    (r"C:\Program Files\PostgreSQL\16\bin\psql.exe", "psql postgresql://{user}:{pw}@db.corp.local:5432/sales",
     _CMD),
    (_CHROME, '"' + _CHROME + '" --profile-directory=Default', _EXPLORER),
    (_CHROME, '"' + _CHROME + '" --type=renderer --lang=nl', _CHROME),
    (r"C:\Windows\System32\svchost.exe", r"C:\Windows\system32\svchost.exe -k netsvcs -p",
     r"C:\Windows\System32\services.exe"),
    (r"C:\Windows\System32\svchost.exe", r"C:\Windows\system32\svchost.exe -k LocalService -p -s W32Time",
     r"C:\Windows\System32\services.exe"),
    (r"{prof}\AppData\Local\Temp\svch0st.exe",
     r"{prof}\AppData\Local\Temp\svch0st.exe --connect 185.220.101.4:4444", _EXPLORER),
    (r"C:\Windows\System32\rundll32.exe", r"rundll32.exe {prof}\AppData\Roaming\a.dll,DllRegisterServer",
     r"C:\Windows\System32\wscript.exe"),
    (_PS, "powershell.exe -NoP -W Hidden -Enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAKQA=", _CMD),
    (r"C:\Windows\System32\reg.exe",
     r'reg add HKCU\Software\Microsoft\Windows\CurrentVersion\Run /v upd /d "{prof}\AppData\upd.exe" /f',
     _CMD),
)
_NIX_COMMANDS = (
    ("/usr/bin/sshpass", "sshpass -p {pw} ssh -o StrictHostKeyChecking=no {user}@10.0.0.5", "{shell}"),
    ("/usr/bin/mysql", "mysql -uroot -p{pw} -h 127.0.0.1 wordpress", "{shell}"),
    ("/usr/bin/curl", 'curl -s -H "Authorization: Bearer {tok}" https://{user}:{pw2}@api.example.com/v1',
     "{shell}"),
    ("/usr/bin/mysqldump", "mysqldump -u backup --password={pw} --all-databases", "/usr/sbin/cron"),
    ("/usr/bin/wget", "wget --user={user} --password={pw} https://files.example.com/dump.tar.gz", "{shell}"),
    ("/usr/bin/curl", "curl -u {user}:{pw} https://nexus.example.com/repository/raw/", "{shell}"),
    ("/usr/bin/psql", "env PGPASSWORD={pw} psql -h db -U {user} sales", "{shell}"),
    ("/usr/bin/redis-cli", "redis-cli -h 10.0.0.9 -a {pw} KEYS *", "{shell}"),
    ("/usr/bin/sudo", 'bash -c "echo {pw} | sudo -S apt-get update"', "{shell}"),
    ("/usr/bin/python3", "/usr/bin/python3 {prof}/app/run.py --db-password {pw} --port 8000", "{shell}"),
    ("/usr/bin/ssh", "ssh -i {prof}/.ssh/id_ed25519 {user}@build.example.com", "{shell}"),
    ("/usr/bin/openssl", "openssl pkcs12 -in {prof}/cert.p12 -passin pass:{pw} -nodes", "{shell}"),
    ("{shell}", "{shell} -c export AWS_SECRET_ACCESS_KEY={tok}; aws s3 ls", "/usr/sbin/sshd"),
    ("{prof}/.cache/.x/xmrig", "{prof}/.cache/.x/xmrig -o pool.minexmr.example:4444 --donate-level 1",
     "/usr/sbin/cron"),
    ("/usr/sbin/sshd", "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups", "/usr/lib/systemd/systemd"),
    ("/usr/bin/ls", "ls -la", "{shell}"),
)


class _Ctx:
    """Per-call state: the seeded RNG and helpers bound to it."""

    def __init__(self, seed: int, start: str, days: int, skew: bool, n: int) -> None:
        self.rng = random.Random(seed)
        self.rnd = self.rng.random
        self.bits = self.rng.getrandbits
        self.skew = skew
        self.n = max(n, 1)
        when = datetime.fromisoformat(start.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        self.t0 = int(when.timestamp())
        self.span = max(days, 1) * 86400
        self.prefix: dict[int, str] = {}
        tt: list[str] = []
        for name, pct in _TYPE_MIX.items():
            tt.extend([name] * int(pct * 10))
        self.type_table = tt
        self.builders = {name: getattr(self, "_d_" + name) for name in RECORD_TYPES}

    # -- small helpers -------------------------------------------------------
    def pick(self, seq):
        return seq[int(self.rnd() * len(seq))]

    def zpick(self, seq):
        """Skewed pick from one of the secret pools (first entries hot)."""
        if self.skew:
            table = _SMALL_Z[len(seq)]
            return seq[table[int(self.rnd() * len(table))]]
        return seq[int(self.rnd() * len(seq))]

    def host_index(self) -> int:
        if self.skew:
            return _HOST_Z[int(self.rnd() * len(_HOST_Z))]
        return int(self.rnd() * len(_HOSTS))

    def device(self, kind: str) -> _Device:
        if kind in _UNIFORM_TYPES:
            return _DEVICES[int(self.rnd() * len(_DEVICES))]
        subset = _DEVICE_SUBSETS.get(kind)
        r = self.rnd()
        if subset is not None and (kind == "os_event" or r < 0.85):
            table = subset[0] if self.skew else subset[1]
            return _DEVICES[table[int(self.rnd() * len(table))]]
        if self.skew:
            return _DEVICES[_DEVICE_Z[int(self.rnd() * len(_DEVICE_Z))]]
        return _DEVICES[int(self.rnd() * len(_DEVICES))]

    def ts(self, t: int) -> str:
        r = self.rnd()
        if r < 0.70:
            off, suffix = 0, "Z"
        elif r < 0.90:
            off, suffix = 7200, "+02:00"
        elif r < 0.95:
            off, suffix = 3600, "+01:00"
        elif r < 0.98:
            off, suffix = -18000, "-05:00"
        else:
            off, suffix = 32400, "+09:00"
        m, s = divmod(t + off, 60)
        p = self.prefix.get(m)
        if p is None:
            if len(self.prefix) > 200_000:
                self.prefix.clear()
            p = time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(m * 60))
            self.prefix[m] = p
        if self.rnd() < 0.15:
            return f"{p}{s:02d}.{int(self.rnd() * 1000):03d}{suffix}"
        return f"{p}{s:02d}{suffix}"

    def event_time(self, i: int) -> int:
        r = self.rnd()
        base = self.t0 + int(i / self.n * self.span)
        if r < 0.004:                        # older than a year (retention)
            return base - int((365 + self.rnd() * 800) * 86400)
        if r < 0.010:                        # weeks to months old
            return base - int((20 + self.rnd() * 200) * 86400)
        if r < 0.013:                        # far in the future (broken clocks)
            return base + int((2 + self.rnd() * 900) * 86400)
        if r < 0.020:                        # small clock skew ahead
            return base + int(60 + self.rnd() * 1200)
        return base + int((self.rnd() - 0.7) * 3600)   # late arrivals dominate

    def profile(self, dev: _Device, user: str) -> str:
        if dev.os == "win":
            return f"C:\\Users\\{user}" if self.rnd() < 0.85 else f"c:\\users\\{user}"
        if dev.os == "mac":
            return f"/Users/{user}"
        if dev.os == "and":
            return "/storage/emulated/0"
        return f"/home/{user}"

    def url(self, cred: bool) -> str:
        hi = self.host_index()
        host = _HOSTS[hi]
        hp = host + _HOST_PORTS[hi] if self.rnd() < 0.7 or hi != 2 else host
        path = self.pick(_URL_PATHS)
        scheme = "https" if self.rnd() < 0.9 else "http"
        if not cred:
            r = self.rnd()
            if r < 0.006:
                p = self.pick(_PEOPLE)
                return f"file:///C:/Users/{p.user}/Downloads/invoice_{int(self.rnd() * 9999)}.html"
            if r < 0.010:
                return self.pick(_ODD_URLS)
            if r < 0.015:
                return f"{scheme.upper()}://{hp}{path}"
            return f"{scheme}://{hp}{path}{self.pick(_URL_QUERIES)}"
        p = self.zpick(_PEOPLE)
        user = p.user
        pw = self.zpick(_PASSWORDS)
        pw_url = _PASSWORDS_URL[pw]
        k = int(self.rnd() * 14)
        if k == 0 or k == 1:
            return f"{scheme}://{user}:{pw_url}@{hp}{path}"
        if k == 2:
            return f"{scheme}://{hp}{path}?{self.pick(_TOKEN_PARAMS)}={self.zpick(_TOKENS)}"
        if k == 3:
            return f"{scheme}://{hp}{path}?{self.pick(_SESSION_PARAMS)}={self.zpick(_SESSIONS)}&lang=en"
        if k == 4:
            return (f"{scheme}://{hp}/oauth2/callback#access_token={self.zpick(_TOKENS)}"
                    f"&token_type=Bearer&expires_in=3600")
        if k == 5:
            return f"{scheme}://{quote(user + '@' + p.mail_domain, safe='')}:{pw_url}@{hp}/"
        if k == 6:
            return f"{scheme}://{user}@{p.mail_domain}:{pw}@{hp}{path}"
        if k == 7:
            return f"ftp://{user}:{pw_url}@{host}/pub/backup_{int(self.rnd() * 999)}.zip"
        if k == 8:
            return f"{scheme}://{hp}/login?user={user}&password={pw_url}"
        if k == 9:
            return f"{scheme}://{hp}/reset?email={user}%40{p.mail_domain}&code={self.zpick(_SESSIONS)}"
        if k == 10:
            return f"{scheme}://{user}@{hp}{path}"
        if k == 11:
            return f"{scheme}://{hp}{path};jsessionid={self.zpick(_SESSIONS).upper()}?x=1#top"
        if k == 12:
            return f"http://{user}:{pw_url}@[2001:db8::{int(self.rnd() * 200) + 1:x}]:8080/admin"
        tok = self.zpick(_TOKENS)
        return f"{scheme}://{hp}/redirect?to=https%3A%2F%2F{host}%2Fcb%3Ftoken%3D{tok}"

    # -- command lines ---------------------------------------------------------
    def command(self, dev: _Device, user: str, prof: str) -> tuple[str, str, str]:
        """(image, command_line, parent_image) for a process on `dev`, often carrying credentials."""
        templates = _WIN_COMMANDS if dev.os == "win" else _NIX_COMMANDS
        image, cmdline, parent = templates[int(self.rnd() * len(templates))]
        if "{" not in image + cmdline + parent:
            return image, cmdline, parent
        values = {
            "user": user, "prof": prof,
            "pw": self.zpick(_PASSWORDS_PLAIN), "pw2": self.zpick(_PASSWORDS_PLAIN),
            "tok": self.zpick(_TOKENS), "ntlm": self.pick(_NTLM), "email": dev.person.email,
            "dom": dev.tenant[1] if dev.tenant else "WORKGROUP",
            "shell": "/usr/bin/bash" if dev.os == "lin" else "/bin/zsh",
        }
        return image.format_map(values), cmdline.format_map(values), parent.format_map(values)

    def account(self, dev: _Device) -> str:
        user = dev.person.user
        r = self.rnd()
        if dev.os == "win":
            if r < 0.2:
                return self.pick(_BUILTIN_ACCOUNTS)
            if dev.tenant:
                return f"{dev.tenant[1]}\\{user}" if r < 0.9 else f"{user}@{dev.tenant[1].lower()}.example"
            if r < 0.55:
                return user
            if r < 0.85:
                return f"{dev.hostname}\\{user}"
            return f"MicrosoftAccount\\{dev.person.email}"
        if r < 0.2:
            return "root"
        return user

    # -- data builders ---------------------------------------------------------
    def _d_url_visit(self, dev: _Device) -> dict:
        data: dict[str, Any] = {"url": self.url(self.rnd() < CRED_URL_FRACTION)}
        r = self.rnd()
        if r < 0.55:
            data["referrer"] = self.url(self.rnd() < 0.1)
        elif r < 0.6:
            data["referrer"] = None
        data["browser"] = self.pick(_BROWSERS)
        data["verdict"] = self.pick(_VERDICTS)
        if self.rnd() < 0.8:
            data["category"] = self.pick(_CATEGORIES)
        return data

    def _d_os_event(self, dev: _Device) -> dict:
        r = self.rnd()
        kind = ("process_start" if r < 0.5 else "network_connect" if r < 0.75 else
                "file_write" if r < 0.9 or dev.os != "win" else "registry_set")
        user = dev.person.user if self.rnd() < 0.9 else self.zpick(_PEOPLE).user
        prof = self.profile(dev, user)
        image, cmdline, parent = self.command(dev, user, prof)
        pid = 4 * int(self.rnd() * 16000) + 4
        data: dict = {"event_kind": kind, "image": image}
        if kind == "process_start":
            data["command_line"] = cmdline
            data["user"] = self.account(dev)
            data["pid"] = pid
            data["parent_pid"] = 4 * int(self.rnd() * 16000) + 4
            data["parent_image"] = parent
        elif kind == "network_connect":
            if self.rnd() < 0.5:
                data["command_line"] = cmdline
            data["user"] = self.account(dev)
            data["pid"] = pid
            data["remote_ip"] = self.pick(_REMOTE_IPS)
            data["remote_port"] = self.pick(_REMOTE_PORTS)
        elif kind == "file_write":
            data["user"] = self.account(dev)
            data["pid"] = pid
            if dev.os == "win":
                data["target_path"] = self.pick((
                    f"{prof}\\AppData\\Roaming\\Microsoft\\Windows\\Start Menu\\Programs\\Startup\\upd.lnk",
                    f"{prof}\\Documents\\Belastingaangifte 2025.pdf", f"{prof}\\Desktop\\README_DECRYPT.txt",
                    "C:\\Windows\\Temp\\~DF3A1.tmp", f"{prof}\\AppData\\Local\\Temp\\{user}_session.log",
                    f"\\\\fs01.corp.local\\home$\\{user}\\report.xlsx"))
            else:
                data["target_path"] = self.pick((
                    f"{prof}/.bashrc", "/tmp/.X11-unix/.x", f"{prof}/.ssh/authorized_keys",
                    f"{prof}/Library/LaunchAgents/com.apple.update.plist", "/etc/crontab"))
        else:
            data["user"] = self.account(dev)
            data["pid"] = pid
            sid = self.pick(_SIDS)
            data["target_path"] = self.pick((
                "HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\Updater",
                f"HKEY_USERS\\{sid}\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\OneDrive",
                f"HKU\\{sid}\\Environment\\UserInitMprLogonScript",
                "HKLM\\SYSTEM\\CurrentControlSet\\Services\\WinDefend\\Start"))
        return data

    def _d_detection(self, dev: _Device) -> dict:
        threat = _THREATS[_THREAT_Z[int(self.rnd() * len(_THREAT_Z))]] if self.skew else self.pick(_THREATS)
        prof = self.profile(dev, dev.person.user)
        if dev.os == "win":
            fname = self.pick(("invoice_2026.pdf.exe", "setup.exe", "crack.exe", "document.docm", "update.js",
                               "Factuur-11-2026.zip", "photo.scr", "KMSpico.exe"))
            folder = self.pick(("\\Downloads\\", "\\Desktop\\", "\\AppData\\Local\\Temp\\", "\\Documents\\"))
            path = f"{prof}{folder}{fname}" if self.rnd() < 0.85 else f"C:\\Windows\\Temp\\{fname}"
        elif dev.os == "and":
            fname = self.pick(("app-release.apk", "WhatsApp_Plus.apk", "flashlight.apk"))
            path = f"{prof}/Download/{fname}"
        else:
            fname = self.pick(("payload.bin", "mirai.x86", "update.sh", "Installer.dmg", "libssl.so.3"))
            path = f"{prof}/{self.pick(('Downloads', 'Desktop', '.cache', 'Documents'))}/{fname}" \
                if self.rnd() < 0.8 else f"/tmp/{fname}"
        data = {"threat_name": threat, "file_path": path,
                "sha256": f"{self.bits(256):064x}" if self.rnd() < 0.97 else f"{self.bits(248):062X}",
                "action": self.pick(("deleted", "quarantined", "disinfected", "blocked", "skipped"))}
        r = self.rnd()
        if r < 0.25:
            data["source_url"] = self.url(True)
        elif r < 0.6:
            data["source_url"] = self.url(False)
        return data

    def _d_wifi(self, dev: _Device) -> dict:
        ssid = self.zpick(_PEOPLE).ssid if self.rnd() < 0.4 else self.pick(_GENERIC_SSIDS)
        r = self.rnd()
        sec = ("WPA2" if r < 0.55 else "WPA3" if r < 0.7 else "OPEN" if r < 0.88 else
               "WPA" if r < 0.95 else "WEP")
        data = {"ssid": ssid, "bssid": self.pick(_BSSIDS), "security": sec,
                "signal_dbm": -30 - int(self.rnd() * 60)}
        if self.rnd() < 0.8:
            data["captive_portal"] = sec == "OPEN" and self.rnd() < 0.6
        return data

    def _d_installed_app(self, dev: _Device) -> dict:
        apps = {"win": _WIN_APPS, "and": _AND_APPS, "mac": _MAC_APPS, "lin": _LIN_APPS}[dev.os]
        name, version, publisher, path = self.pick(apps)
        if "%PROFILE%" in path:
            path = path.replace("%PROFILE%", self.profile(dev, dev.person.user))
        elif dev.os == "and":
            path = f"/data/app/{path}-{int(self.rnd() * 3) + 1}/base.apk"
        data: dict = {"name": name, "version": version, "publisher": publisher, "install_path": path}
        if self.rnd() < 0.02:
            data["version"] = int(self.rnd() * 20) + 1     # numbers where text is expected
        return data

    def _d_product_usage(self, dev: _Device) -> dict:
        feature = self.pick(("full_scan", "quick_scan", "vpn", "safe_money", "password_manager", "firewall",
                             "web_protection", "update", "anti_banner", "privacy_protection"))
        return {"feature": feature, "duration_ms": int(self.rng.lognormvariate(9, 1.6)),
                "scan_type": self.pick(("full", "quick", "custom", "removable", "idle")),
                "result": self.pick(("ok", "ok", "ok", "threats_found", "cancelled", "error"))}

    def _d_device(self, dev: _Device) -> dict:
        os_name, os_version = self.pick(_OS[dev.os])
        return {"device_type": self.pick(_DEVICE_TYPES[dev.os]), "os_name": os_name, "os_version": os_version,
                "hostname": dev.hostname, "mac_address": dev.mac}

    def _d_license(self, dev: _Device) -> dict:
        product = self.pick(_PRODUCTS[dev.os])
        name, _, version = product.rpartition(" ")
        expires_at = self.t0 + int((30 + self.rnd() * 700) * 86400)
        expires = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(expires_at))
        return {"license_key": self.zpick(_LICENSES), "product": name, "product_version": version,
                "expires": expires}

    def _d_suspicious_file(self, dev: _Device) -> dict:
        prof = self.profile(dev, dev.person.user)
        if dev.os == "win":
            fname = self.pick(("a.exe", "setup_x64.exe", "install.msi", "svch0st.exe", "invoice.pdf.lnk",
                               "keygen.exe", "payload.dll", "Update.zip"))
            path = f"{prof}\\{self.pick(_WIN_DROP_DIRS)}\\{fname}"
        else:
            fname = self.pick(("libcrypt.so.1", "run.sh", "Update.app.zip", "a.out", ".sysupdate"))
            path = f"{prof}/{self.pick(('Downloads', '.local/bin', 'Download'))}/{fname}"
        return {"file_name": fname, "file_path": path,
                "sha256": f"{self.bits(256):064x}", "size": int(self.rng.lognormvariate(12, 2)),
                "is_executable": not fname.endswith((".zip", ".lnk", ".sh"))}

    def _d_contact(self, dev: _Device) -> dict:
        p = dev.person if self.rnd() < 0.8 else self.zpick(_PEOPLE)
        data = {"email": p.email}
        if self.rnd() < 0.7:
            data["nickname"] = p.nickname
        return data

    def _d_dump(self, dev: _Device) -> dict:
        prof = self.profile(dev, dev.person.user)
        module = self.pick(_DUMP_MODULES)
        if self.rnd() < 0.5:
            path = f"{prof}\\AppData\\Local\\CrashDumps\\{module}.{int(self.rnd() * 20000)}.dmp"
        else:
            path = f"C:\\ProgramData\\Kaspersky Lab\\AVP21.3\\Dumps\\{module}_{int(self.rnd() * 99999)}.dmp"
        if dev.os != "win":
            path = f"{prof}/.local/share/kaspersky/dumps/core.{int(self.rnd() * 40000)}"
        return {"module": module, "exception_code": self.pick(_EXC_CODES),
                "stack_hash": f"{self.bits(64):016x}", "dump_path": path}

    def _d_spam_email(self, dev: _Device) -> dict:
        if self.rnd() < 0.3:
            sender = self.zpick(_PEOPLE).email
        else:
            sender = self.pick(("noreply@deals-today.example", "support@paypa1-secure.example",
                                "info@pakket-bezorging.example", "service@dhl-zustellung.example",
                                "admin@banque-alerte.example", "no-reply@crypto-win.example"))
        return {"sender": sender, "subject": self.pick(_SPAM_SUBJECTS), "body": self.pick(_SPAM_BODIES),
                "verdict": self.pick(("spam", "spam", "phishing", "probable_spam", "malicious_attachment"))}

    def _d_antitheft(self, dev: _Device) -> dict:
        lat, lon = self.pick(_COORDS)
        return {"lat": lat, "lon": lon, "accuracy_m": 5 + int(self.rnd() * 60),
                "command": self.pick(("locate", "locate", "lock", "alarm", "wipe", "mugshot"))}

    def _d_child_protection(self, dev: _Device) -> dict:
        lat, lon = self.pick(_COORDS)
        data: dict = {"lat": lat, "lon": lon}
        if self.rnd() < 0.6:
            data["blocked_url"] = self.url(self.rnd() < 0.15)
        data["app_name"] = self.pick(_APP_NAMES)
        return data

    # -- extras ------------------------------------------------------------------
    def special_value(self, cat: str):
        r = self.rnd()
        v = self.pick(_SPECIAL_VALUES[cat])
        if r < 0.7:
            return v
        if r < 0.8:
            return {"value": v, "confidence": 0.87, "source": "survey"}
        if r < 0.9:
            return [v, self.pick(_SPECIAL_VALUES[cat])]
        return self.pick((True, 1, "unknown"))

    def add_special(self, rec: dict) -> None:
        cat, key = self.pick(_SPECIAL_KEY_LIST)
        value = self.special_value(cat)
        r = self.rnd()
        if r < 0.35:
            rec[key] = value
        elif r < 0.7:
            rec["data"][key] = value
        elif r < 0.8:
            rec["extra_debug"] = {"profile": {"attrs": [{"k": "segment", "v": 3}, {key: value}]}}
        elif r < 0.9:
            rec["data"]["meta"] = [{"source": "crm"}, {"person": {key: value, "age": 41}}]
        else:
            node: dict = {key: value}
            for _ in range(int(self.rnd() * 30) + 3):
                node = {"nested": node}
            rec["context"] = node

    def add_extra(self, rec: dict, dev: _Device) -> None:
        r = self.rnd()
        if r < 0.3:
            rec["extra_debug"] = {"build": "21.3.10.391-rel", "machine": dev.hostname,
                                  "user": dev.person.user, "cwd": self.profile(dev, dev.person.user),
                                  "flags": ["beta", "fastscan"]}
        elif r < 0.5:
            rec["os_build"] = self.pick(("19045.3693", "22631.4460", "17763.6532"))
        elif r < 0.65:
            rec["hostname"] = dev.hostname
            rec["user_name"] = dev.person.user
        elif r < 0.8:
            rec["data"]["email"] = dev.person.email
            rec["data"]["local_ip"] = "192.168.1." + str(int(self.rnd() * 250) + 2)
        else:
            rec["agent"] = {"trace_id": f"{self.bits(64):016x}", "queue": int(self.rnd() * 100),
                            "mac": dev.mac, "sid": self.pick(_SIDS)}

    # -- records -----------------------------------------------------------------
    def record(self, i: int) -> dict:
        rtype = self.type_table[int(self.rnd() * len(self.type_table))]
        dev = self.device(rtype)
        bases = dev.bases
        base = bases[1] if len(bases) > 1 and i / self.n > dev.switch else bases[0]
        rec = base.copy()
        rec["type"] = rtype
        rec["event_id"] = (f"e-{self.bits(48):012x}" if self.rnd() < 0.85 else
                           f"{self.bits(32):08x}-{self.bits(16):04x}-4{self.bits(12):03x}-"
                           f"a{self.bits(12):03x}-{self.bits(48):012x}")
        rec["ts"] = self.ts(self.event_time(i))
        rec["data"] = self.builders[rtype](dev)
        r = self.rnd()
        if r < SPECIAL_FRACTION:
            self.add_special(rec)
        elif r < SPECIAL_FRACTION + EXTRA_FRACTION:
            self.add_extra(rec, dev)
        return rec

    # -- dirty lines ---------------------------------------------------------------
    def dirty_line(self, i: int) -> bytes:
        rec = self.record(i)
        r = self.rnd()
        dev_id = rec["device_id"]
        if r < 0.04:
            return self.pick((b"", b"", b"   ", b"\t"))
        if r < 0.16:
            p = self.zpick(_PEOPLE)
            return self.pick((
                b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
                b"ERROR upload failed: connection reset by peer",
                f"2026-11-20 10:04:05 WARN retry device_id={dev_id} user={p.user} "
                f"password={self.zpick(_PASSWORDS)}".encode(),
                b"\x00\x00\x00\x00\x00\x00",
                b"{{{",
                b"undefined",
                f"type=url_visit url=https://{p.user}:{self.zpick(_PASSWORDS_PLAIN)}@www.google.com/".encode(),
                b"[" * 3000 + b"]" * 3000,
            ))
        if r < 0.36:
            raw = orjson.dumps(rec)
            cut = int(len(raw) * (0.3 + self.rnd() * 0.65))
            return raw[:max(cut, 1)]
        if r < 0.44:
            k = int(self.rnd() * 6)
            if k == 0:
                return orjson.dumps([rec, self.record(i)])
            return self.pick((b'"hello"', b"42", b"null", b"true", b"[]"))
        if r < 0.52:
            rec["type"] = self.pick(("url_visit_v2", "URL_VISIT", "telemetry", "", "heartbeat", None, 7))
            return orjson.dumps(rec)
        if r < 0.60:
            v = self.pick((2, "1", None, 0, 1.5, "v1", "missing"))
            if v == "missing":
                del rec["schema_version"]
            else:
                rec["schema_version"] = v
            return orjson.dumps(rec)
        if r < 0.74:
            return orjson.dumps(self.wrong_type(rec))
        if r < 0.84:
            rec["ts"] = self.pick(_BAD_TIMESTAMPS)
            return orjson.dumps(rec)
        if r < 0.90:
            del rec[self.pick(("event_id", "device_id", "ts", "type", "data", "consent"))]
            return orjson.dumps(rec)
        if r < 0.96:
            k = int(self.rnd() * 3)
            if k == 0:
                return b"\xff\xfe" + orjson.dumps(rec).decode().encode("utf-16-le")
            if k == 1:
                return orjson.dumps(rec).replace(b'"data":{', b'"data":{"note":"Caf\xe9 r\xe9seau",', 1)
            return b"\x80\x81\xfe\xff" + bytes(range(0x80, 0xA0))
        if r < 0.98:
            raw = orjson.dumps(rec)
            return raw[:-1] + b',"signal":NaN,"ratio":Infinity}'
        return orjson.dumps(rec) + orjson.dumps(self.record(i))

    def wrong_type(self, rec: dict) -> dict:
        data = rec["data"]
        t = rec["type"]
        k = int(self.rnd() * 8)
        if t == "product_usage" and k < 4:
            data["duration_ms"] = self.pick(("abc", "1.5s", "", [12]))
        elif t == "wifi" and k < 4:
            data["signal_dbm"] = self.pick(("strong", "-40dBm", None, 12.5))
            if data["signal_dbm"] is None:
                data["captive_portal"] = "false"
        elif t == "os_event" and k < 3:
            data["pid"] = str(data.get("pid", 4))
        elif t in ("antitheft", "child_protection") and k < 4:
            data["lat"] = str(data["lat"])
        elif k in (0, 1):
            rec["consent"] = self.pick(("yes", True, ["eula", "ksn"], {"eula": "true", "ksn": 1}))
        elif k == 2:
            rec["ts"] = self.pick((12345, 1763633045, None, 1763633045.5))
        elif k == 3:
            rec["is_child"] = self.pick(("no", "false", 0, "yes"))
        elif k == 4:
            rec["data"] = self.pick(("url=https://www.google.com/", None, [data], 17))
        elif k == 5:
            rec["device_id"] = self.pick((123456, None, ["D-1"], {"id": rec["device_id"]}))
        elif k == 6:
            rec["event_id"] = self.pick((None, 42, ""))
        else:
            rec["consent"] = None
        return rec

    def huge_line(self, i: int) -> bytes:
        rec = self.record(i)
        dev_pw = self.zpick(_PASSWORDS_PLAIN)
        chunk = "".join(self.rng.choice(_ALNUM + "+/") for _ in range(4096))
        blob = chunk * (HUGE_LINE_BYTES // len(chunk) + 1)
        if self.rnd() < 0.5:
            rec["type"] = "os_event"
            rec["data"] = {"event_kind": "process_start",
                           "image": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                           "command_line": f"powershell.exe -Password {dev_pw} -NoP -EncodedCommand {blob}",
                           "user": "CORP\\" + self.zpick(_PEOPLE).user, "pid": 4242}
        else:
            rec["type"] = "url_visit"
            rec["data"] = {"url": f"https://www.google.com/search?token={self.zpick(_TOKENS)}&q={blob}",
                           "browser": "chrome", "verdict": "clean"}
        return orjson.dumps(rec)


def generate_lines(n: int, seed: int = 7, dirty: bool = True, start: str = "2026-11-20T00:00:00Z",
                   days: int = 3, skew: bool = True) -> Iterator[bytes]:
    """Yield `n` NDJSON lines (no trailing newline), deterministic for `seed`.

    With `dirty`, about 4% of lines are broken (listed in the module
    docstring), some lines end in "\\r", the first line starts with a UTF-8
    BOM, and files of 5000+ lines get one line over 1 MiB per 20 000 lines.
    `start` is the first event time (RFC 3339, UTC when it has no offset) and
    `days` the period the event times spread over; `skew` makes devices,
    hosts and secrets Zipf-like instead of uniform. Without `dirty` every
    line is a JSON object that follows the input contract (still carrying
    credentials, special categories, consent gaps, retries and odd clocks).
    """
    if n <= 0:
        return
    ctx = _Ctx(seed, start, days, skew, n)
    rnd = ctx.rnd
    dumps = orjson.dumps
    record = ctx.record
    huge: set[int] = set()
    if dirty and n >= 5000:
        huge = set(ctx.rng.sample(range(1, n), max(1, n // HUGE_EVERY)))
    recent: list[bytes] = []
    for i in range(n):
        r = rnd()
        if i in huge:
            line = ctx.huge_line(i)
        elif dirty and r < DIRTY_FRACTION and i > 0:
            line = ctx.dirty_line(i)
        elif r > 1.0 - DUPLICATE_FRACTION and recent:
            line = recent[int(rnd() * len(recent))]
        else:
            line = dumps(record(i))
            if len(recent) < 256:
                recent.append(line)
            else:
                recent[int(rnd() * 256)] = line
        if dirty:
            if i == 0:
                line = b"\xef\xbb\xbf" + line
            elif rnd() < CRLF_FRACTION:
                line += b"\r"
        yield line


def write_sample(path: str, n: int, seed: int = 7, dirty: bool = True, **kw) -> int:
    """Write `n` generated lines to `path`, each ending in '\\n'; gzip (reproducible bytes) when the
    path ends in .gz. `kw` goes to `generate_lines` (start, days, skew) or sets `compresslevel`.
    Returns the number of lines written."""
    count = 0
    buf: list[bytes] = []
    level = kw.pop("compresslevel", 1)      # fast: the big files feed benchmarks
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    out: Any
    if path.endswith(".gz"):
        raw = open(path, "wb")
        out = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=level)
    else:
        raw = None
        out = open(path, "wb")
    try:
        for line in generate_lines(n, seed=seed, dirty=dirty, **kw):
            buf.append(line)
            count += 1
            if len(buf) >= 8192:
                buf.append(b"")
                out.write(b"\n".join(buf))
                buf.clear()
        if buf:
            buf.append(b"")
            out.write(b"\n".join(buf))
    finally:
        out.close()
        if raw is not None:
            raw.close()
    return count


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    return _write(args)


def build_parser() -> argparse.ArgumentParser:
    from pipeline.cli import add_common
    from pipeline.cliparse import Parser, positive_int

    ap = Parser(
        prog="telemetry-sanitizer sample",
        description="Write deterministic, realistic (dirty) endpoint telemetry as NDJSON.",
        epilog="example:\n  telemetry-sanitizer sample --records 100000 --output /tmp/day.ndjson.gz --seed 3")
    ap.add_argument("--records", type=int, required=True, help="number of lines to write")
    ap.add_argument("--output", required=True, help="output file (gzip when it ends in .gz)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--clean", action="store_true", help="only contract-valid JSON objects, no broken lines")
    ap.add_argument("--start", default="2026-11-20T00:00:00Z", help="first event time (RFC 3339)")
    ap.add_argument("--days", type=positive_int, default=3, help="days the event times spread over")
    ap.add_argument("--no-skew", action="store_true", help="uniform devices and hosts instead of Zipf-like")
    add_common(ap)
    return ap


def _write(args: argparse.Namespace) -> int:
    if args.records < 0:
        print(f"error: --records {args.records}: must be >= 0", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        written = write_sample(args.output, args.records, seed=args.seed, dirty=not args.clean, start=args.start,
                               days=args.days, skew=not args.no_skew)
    except (OSError, ValueError) as exc:
        print(f"error: --output {args.output}: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 2
    secs = time.perf_counter() - t0
    print(f"wrote {written} lines to {args.output} (seed={args.seed}, {'clean' if args.clean else 'dirty'}) "
          f"in {secs:.2f}s, {written / secs if secs else 0:.0f} lines/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
