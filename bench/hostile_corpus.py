"""Hostile corpus: contract-format NDJSON with planted secrets in every kept string field, plus a manifest.

    python bench/hostile_corpus.py --out DIR [--seed N]

Writes DIR/corpus.ndjson and DIR/manifest.json. Every record is valid per the input contract (all
consents granted, times inside every retention window of --as-of 2026-11-25) unless it is a parser
trick, so the planted value reaches the sanitizer's field transforms. Every template of
`hostile_templates.py` is planted once in every data field of every type whose transform is not a
number, bool or coordinate (read from schemas/policy.toml) and once in each envelope string field
(rotating over types). The manifest lists each planted value with its "cores": the random parts (and
special-category phrases) that must not appear in any output, normalised as the scanner matches them.
Deterministic: the same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import string
import sys
import tomllib
import unicodedata
import uuid
from collections.abc import Callable
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

from hostile_templates import SPECIAL_VALUES, TEMPLATES, Template  # noqa: E402
from hostile_tricks import trick_lines  # noqa: E402

AS_OF = "2026-11-25T00:00:00Z"
ENVELOPE_TEXT = ["event_id", "device_id", "user_id", "tenant_id", "product"]
NON_STRING = {"int", "float", "bool", "coarse_coordinate"}
_PLACEHOLDER = "«"
Segment = tuple[str, str]  # (text, core kind or "" for decor)


def norm(text: str) -> str:
    """What the scanner compares: NFKC, case-folded, format characters (zero-width, bidi, soft hyphen) removed."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if unicodedata.category(ch) != "Cf")


# ------------------------------------------------------------------ unicode tricks
_CYR = str.maketrans("aeopcxyAEOPCXTHKMB", "аеорсхуАЕОРСХТНКМВ")


def _zw(text: str) -> str:
    marks = "\u200b\u200c\u200d\u2060"
    return "".join(ch + marks[i % 4] for i, ch in enumerate(text[:-1])) + text[-1:]


def _fw(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if 0x21 <= ord(c) <= 0x7E else ("\u3000" if c == " " else c) for c in text)


def _math(text: str) -> str:
    def one(c: str) -> str:
        if "A" <= c <= "Z":
            return chr(0x1D400 + ord(c) - 65)
        if "a" <= c <= "z":
            return chr(0x1D41A + ord(c) - 97)
        return c
    return "".join(one(c) for c in text)


def _shy(text: str) -> str:
    return "\u00ad".join(text[i:i + 2] for i in range(0, len(text), 2))


def _comb(text: str) -> str:
    return "".join(c + "\u0301" if c in "aeiou" else c for c in text)


def _rlo(text: str) -> str:
    return "\u202e" + text + "\u202c" if text.strip() else text


TRICKS: dict[str, Callable[[str], str]] = {
    "zw": _zw, "fw": _fw, "cyr": lambda t: t.translate(_CYR), "math": _math, "shy": _shy, "comb": _comb,
    "rlo": _rlo, "nbsp": lambda t: t.replace(" ", "\u00a0"), "ideo": lambda t: t.replace(" ", "\u3000"),
}


# ------------------------------------------------------------------ rendering
MNEMONIC_WORDS = ["abandon", "ability", "absorb", "access", "across", "actress", "advice", "afford", "airport",
                  "alcohol", "almost", "anchor", "animal", "antique", "bamboo", "banana", "barrel", "behave",
                  "blanket", "bracket", "buffalo", "cactus", "canyon", "cherry", "climb", "coconut",
                  "crystal", "dolphin", "dragon", "eagle", "fossil", "galaxy", "giraffe", "harvest", "jungle",
                  "kidney", "lizard", "mango", "number", "oyster", "pumpkin", "quantum", "rhythm", "saddle",
                  "tobacco", "uniform", "velvet", "walnut", "zebra"]
class Renderer:
    """Fills a template's placeholders from one seeded random stream."""

    FIRST = ["anna", "bram", "chloe", "dirk", "emma", "finn", "greta", "hugo", "ines", "joris", "katja", "lars",
             "marit", "niels", "olga", "pieter", "quinten", "roos", "sven", "tamar", "umut", "vera", "wout", "yara"]
    HOSTS = ["db01.corp.example.com", "files.acme-intra.net", "build.example.org", "nas.home.example",
             "vpn.contoso.example", "git.example.net"]
    DOMAINS = ["example.org", "contoso.example", "acme-corp.example", "mail.example.net"]

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def rand(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def password(self, symbols: str = "") -> str:
        """14-18 characters, at least four letters past `f` so every fragment is distinctive."""
        alphabet = string.ascii_letters + string.digits + symbols
        while True:
            pw = self.rand(alphabet, self.rng.randint(14, 18))
            if sum(c.lower() in "ghijklmnopqrstuvwxyz" for c in pw) >= 4 and pw[0].isalnum():
                return pw

    def user(self) -> str:
        """An account name like `kdavorimeku47`: initial, random syllables, digits (no two plants share 8 letters)."""
        syllables = "".join(self.rng.choice("bdfgklmnprstvz") + self.rng.choice("aeiou") for _ in range(5))
        return self.rng.choice(self.FIRST)[0] + syllables + self.rand(string.digits, 2)

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def sid(self) -> str:
        """The machine/domain part and RID of a user SID (the `S-1-5-21-` prefix is common to all)."""
        parts = [str(self.rng.randint(1_000_000_000, 4_294_967_295)) for _ in range(3)]
        return "-".join(parts) + "-" + str(self.rng.randint(1001, 1999))

    def mac(self, style: str) -> str:
        octets = [self.rng.randint(0, 255) for _ in range(6)]
        octets[0] &= 0xFC
        hexes = [f"{o:02x}" for o in octets]
        if style == "dash":
            return "-".join(hexes).upper()
        if style == "dot":
            return ".".join("".join(hexes[i:i + 2]) for i in (0, 2, 4))
        if style == "bare":
            return "".join(hexes).upper()
        if style == "lower":
            return "".join(hexes)
        return ":".join(hexes)

    def imei(self) -> str:
        digits = [self.rng.randint(0, 9) for _ in range(14)]
        total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits))
        return "".join(map(str, digits)) + str((10 - total % 10) % 10)

    def b64url(self, raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def jwt(self) -> list[Segment]:
        header = self.b64url(b'{"alg":"HS256","typ":"JWT"}')
        payload = self.b64url(json.dumps({"sub": self.user(), "jti": self.rand(string.ascii_letters, 16),
                                          "role": "admin"}).encode())
        sig = self.rand(string.ascii_letters + string.digits + "-_", 43)
        return [(header + ".", ""), (payload, "secret"), (".", ""), (sig, "secret")]

    def pem(self, label: str) -> list[Segment]:
        b64 = string.ascii_letters + string.digits + "+/"
        out: list[Segment] = [(f"-----BEGIN {label}-----\n", "")]
        for _ in range(4):
            out += [(self.rand(b64, 64), "secret"), ("\n", "")]
        return out + [(f"-----END {label}-----", "")]

    def one(self, kind: str, arg: str) -> list[Segment]:
        """Segments of one placeholder."""
        alpha = {"alnum": string.ascii_letters + string.digits, "upper": string.ascii_uppercase + string.digits,
                 "lower": string.ascii_lowercase + string.digits, "hex": "0123456789abcdef",
                 "b64": string.ascii_letters + string.digits + "+/", "b32": string.ascii_uppercase + "234567",
                 "b64url": string.ascii_letters + string.digits + "-_", "digits": string.digits}
        r = self.rng
        if kind in alpha:
            return [(self.rand(alpha[kind], int(arg)), "secret")]
        if kind == "pw":
            return [(self.password(), "secret")]
        if kind == "pwsym":
            return [(self.password("!*_.~-"), "secret")]
        if kind == "user":
            return [(self.user(), "identifier")]
        if kind == "email":
            return [(self.user(), "identifier"), ("@" + r.choice(self.DOMAINS), "")]
        if kind == "host":
            return [(r.choice(self.HOSTS), "")]
        if kind == "domain":
            return [(r.choice(self.DOMAINS), "")]
        if kind == "ip":
            return [(f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}", "")]
        if kind == "uuid":
            return [(self.uuid(), "secret")]
        if kind == "basic":
            pair = f"{self.user()}:{self.password()}".encode()
            return [(base64.b64encode(pair).decode(), "secret")]
        if kind == "psenc":
            script = f"$pw='{self.password()}'; net use \\\\srv\\c$ $pw /u:adm".encode("utf-16-le")
            return [(base64.b64encode(script).decode(), "secret")]
        if kind == "jwt":
            return self.jwt()
        if kind == "pem":
            return self.pem(arg)
        if kind == "discord":
            first = self.b64url(str(r.randint(10**17, 10**18 - 1)).encode())
            return [(first + "." + self.rand(alpha["b64url"], 6) + "." + self.rand(alpha["b64url"], 38), "secret")]
        if kind == "sid":
            return [("S-1-5-21-", ""), (self.sid(), "identifier")]
        if kind == "mac":
            return [(self.mac(arg), "identifier")]
        if kind == "serial":
            body = self.rand(alpha["upper"], 9 if arg == "apple" else 8)
            return [(("C02" if arg == "apple" else "PF") + body, "identifier")]
        if kind == "aadsid":  # an Entra ID (Azure AD) user SID after S-1-12-1-
            return [("-".join(str(r.randint(1_000_000_000, 4_294_967_295)) for _ in range(4)), "identifier")]
        if kind == "hostid":  # the random part of a computer name
            return [(self.rand(alpha["upper"], 9), "identifier")]
        if kind == "imei":
            return [(self.imei(), "identifier")]
        if kind == "b58":
            return [(self.rand("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz", int(arg)), "secret")]
        if kind == "mnemonic":
            return [(" ".join(r.choice(MNEMONIC_WORDS) for _ in range(12)), "secret")]
        if kind == "sc":
            return [(r.choice(SPECIAL_VALUES[arg]), "special")]
        raise ValueError(f"unknown placeholder «{kind}»")

    def segments(self, pattern: str) -> list[Segment]:
        out: list[Segment] = []
        rest = pattern
        while _PLACEHOLDER in rest:
            before, _, after = rest.partition(_PLACEHOLDER)
            inner, _, rest = after.partition("»")
            kind, _, arg = inner.partition(":")
            if before:
                out.append((before, ""))
            if kind.startswith("~"):  # decor: random but not a secret
                out += [(text, "") for text, _ in self.one(kind[1:], arg)]
            else:
                out += self.one(kind, arg)
        if rest:
            out.append((rest, ""))
        return out


def render(template: Template, rng: random.Random) -> tuple[str, list[dict[str, str]]]:
    """The planted text of one template and its cores ({kind, core}; core already normalised)."""
    _, _, pattern, trick = template
    segs = Renderer(rng).segments(pattern)
    if trick:
        name, _, target = trick.partition("_")
        fn = TRICKS[name]
        segs = [(fn(text) if (target == "all" or (target == "core") == bool(kind)) else text, kind)
                for text, kind in segs]
    value = "".join(text for text, _ in segs)
    cores = [{"kind": kind, "core": norm(text)} for text, kind in segs if kind]
    return value, cores


# ------------------------------------------------------------------ records
def string_slots(policy_path: str) -> dict[str, list[str]]:
    """type -> data fields whose transform keeps or derives a string (everything but numbers, bools, coordinates)."""
    with open(policy_path, "rb") as fh:
        policy = tomllib.load(fh)
    out: dict[str, list[str]] = {}
    for name, spec in policy["types"].items():
        fields = []
        for field, rule in spec.get("fields", {}).items():
            transform = rule if isinstance(rule, str) else rule["transform"]
            if transform not in NON_STRING:
                fields.append(field)
        out[name] = fields
    return out


def benign_data(rtype: str, rng: random.Random) -> dict[str, Any]:
    """Valid, secret-free `data` for a type (plain values the sanitizer keeps or maps)."""
    sha = "".join(rng.choice("0123456789abcdef") for _ in range(64))
    mac = "02:00:00:" + ":".join(f"{rng.randint(0, 255):02x}" for _ in range(3))
    by_type: dict[str, dict[str, Any]] = {
        "license": {"license_key": f"LK-{rng.randint(0, 99999999):08d}", "product": "Kaspersky Total Security",
                    "product_version": "21.3.10.391", "expires": "2027-06-30"},
        "product_usage": {"feature": "full_scan", "duration_ms": rng.randint(100, 90000), "scan_type": "quick",
                          "result": "ok"},
        "device": {"device_type": "laptop", "os_name": "Windows", "os_version": "10.0.19045",
                   "hostname": f"WS-{rng.randint(0, 99999):05d}", "mac_address": mac},
        "detection": {"threat_name": "HEUR:Trojan.Win32.Generic", "file_path": "C:\\ProgramData\\Temp\\a.exe",
                      "sha256": sha, "action": "deleted", "source_url": "https://cdn.example.net/x.bin"},
        "installed_app": {"name": "7-Zip", "version": "23.01", "publisher": "Igor Pavlov",
                          "install_path": "C:\\Program Files\\7-Zip"},
        "url_visit": {"url": "https://www.example.com/", "referrer": "https://search.example.org/",
                      "browser": "firefox", "verdict": "clean", "category": "news"},
        "os_event": {"event_kind": "process_start", "image": "C:\\Windows\\System32\\cmd.exe",
                     "command_line": "cmd.exe /c dir", "user": "NT AUTHORITY\\SYSTEM", "pid": rng.randint(4, 65000),
                     "parent_pid": 1000, "parent_image": "C:\\Windows\\explorer.exe", "remote_ip": "10.1.2.3",
                     "remote_port": 443, "target_path": "C:\\Windows\\Temp\\x.tmp"},
        "suspicious_file": {"file_name": "invoice.exe", "file_path": "C:\\ProgramData\\invoice.exe", "sha256": sha,
                            "size": rng.randint(1000, 10**7), "is_executable": True},
        "wifi": {"ssid": "CafeGuest", "bssid": mac, "security": "WPA2", "signal_dbm": -60, "captive_portal": False},
        "contact": {"email": "someone@example.com", "nickname": "nick"},
        "dump": {"module": "avp.exe", "exception_code": "0xC0000005", "stack_hash": "a1b2c3d4",
                 "dump_path": "C:\\ProgramData\\Dumps\\avp.dmp"},
        "spam_email": {"sender": "promo@spam.example", "subject": "Win a prize", "body": "Click here",
                       "verdict": "spam"},
        "antitheft": {"lat": 52.3702, "lon": 4.8952, "accuracy_m": 30, "command": "locate"},
        "child_protection": {"lat": 52.3702, "lon": 4.8952, "blocked_url": "https://casino.example/",
                             "app_name": "TikTok"},
    }
    return by_type[rtype]


COUNTRIES = ["NL", "DE", "FR", "GB", "US", "JP", "BR", "PL", "CH", "CA"]
CONSENT = {"eula": True, "ksn": True, "marketing": True, "dumps": True, "antispam": True, "antitheft": True,
           "child_protection": True}


def benign_record(rtype: str, line: int, rng: random.Random) -> dict[str, Any]:
    """A record that passes every gate: all consents, a time inside every retention window."""
    day, sec = 20 + line % 4, line % 86400
    rec: dict[str, Any] = {
        "schema_version": 1, "type": rtype, "event_id": f"h-{line:06d}", "device_id": f"D-{line:06d}",
        "user_id": f"U-{line:06d}", "ts": f"2026-11-{day}T{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}Z",
        "country": COUNTRIES[line % len(COUNTRIES)], "product": "KIS 21.3.10.391",
        "is_child": rtype == "child_protection" and line % 2 == 0, "consent": dict(CONSENT),
    }
    if line % 3 == 0:
        rec["tenant_id"] = f"T-{line % 97:04d}"
    rec["data"] = benign_data(rtype, rng)
    return rec


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def build(seed: int = 13, policy_path: str | None = None) -> tuple[list[bytes], list[dict[str, Any]]]:
    """(lines, manifest). Manifest entries: line, event_id, class, template, type, field, value, cores."""

    rng = random.Random(seed)
    slots = string_slots(policy_path or os.path.join(ROOT, "schemas", "policy.toml"))
    types = sorted(slots)
    lines: list[bytes] = []
    manifest: list[dict[str, Any]] = []

    def plant(rtype: str, field: str, template: Template, envelope: bool) -> None:
        line = len(lines) + 1
        rec = benign_record(rtype, line, rng)
        value, cores = render(template, rng)
        (rec if envelope else rec["data"])[field] = value
        lines.append(_dump(rec))
        manifest.append({"line": line, "ts": rec["ts"], "event_id": None if envelope and field == "event_id"
                         else rec["event_id"], "class": template[0], "template": template[1], "type": rtype,
                         "field": field if envelope else "data." + field, "value": value, "cores": cores})

    for t_index, template in enumerate(TEMPLATES):
        for rtype in types:
            for field in slots[rtype]:
                plant(rtype, field, template, envelope=False)
        for e_index, field in enumerate(ENVELOPE_TEXT):
            plant(types[(t_index + e_index) % len(types)], field, template, envelope=True)

    for raw, entry in trick_lines(rng, len(lines) + 1, benign_record, render):
        entry["line"] = len(lines) + 1
        lines.append(raw)
        manifest.append(entry)
    return lines, manifest


def write_corpus(out_dir: str, seed: int = 13) -> tuple[str, str]:
    """Write corpus.ndjson and manifest.json into out_dir; returns their paths."""
    lines, manifest = build(seed)
    os.makedirs(out_dir, exist_ok=True)
    corpus = os.path.join(out_dir, "corpus.ndjson")
    with open(corpus, "wb") as fh:
        for raw in lines:
            fh.write(raw if raw.endswith(b"\n") else raw + b"\n")
    man = os.path.join(out_dir, "manifest.json")
    with open(man, "w", encoding="utf-8") as fh:
        json.dump({"seed": seed, "as_of": AS_OF, "records": len(lines), "plants": manifest}, fh, ensure_ascii=False)
    return corpus, man


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args(argv)
    corpus, man = write_corpus(args.out, args.seed)
    print(f"{corpus}\n{man}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
