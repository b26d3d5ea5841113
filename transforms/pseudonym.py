"""Keyed pseudonyms: identifiers that are only needed to link records.

POLICY.md promise 5: device, user, account and MAC identifiers are replaced by
a keyed hash (HMAC-SHA256). The same key gives the same pseudonym, so records
stay linkable; without the key the raw value cannot be recovered or guessed by
hashing candidate values.
"""

from __future__ import annotations

import hashlib
import hmac
import re

PSEUDONYM_HEX_CHARS = 32  # 128 bits: collision-free at telemetry scale, short in Parquet
_CACHE_LIMIT = 200_000
_MAC_SEPARATORS = re.compile(r"[\s:.\-]")


def normalize_mac(value: str) -> str:
    """One spelling per MAC/BSSID, so `AA-BB-..` and `aa:bb:..` link."""
    return _MAC_SEPARATORS.sub("", value).lower()


def key_fingerprint(key: bytes) -> str:
    """A keyed fingerprint naming the pseudonym key in commit metadata and reports: equal
    fingerprints mean linkable pseudonyms; the key cannot be recovered from it."""
    return hmac.new(key, b"telemetry-sanitizer/key-fingerprint/v1", hashlib.sha256).hexdigest()[:16]


class Pseudonymizer:
    """HMAC-SHA256 of `kind:value`, cached per unique input.

    `kind` separates namespaces (a user name and a host name that happen to be
    equal get different pseudonyms).
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("pseudonym key must be at least 16 bytes")
        self._key = key
        self._cache: dict[tuple[str, str], str] = {}

    def __call__(self, kind: str, value: str) -> str:
        cache_key = (kind, value)
        hit = self._cache.get(cache_key)
        if hit is not None:
            return hit
        if kind == "mac":
            value = normalize_mac(value)
        digest = hmac.new(self._key, f"{kind}:{value}".encode("utf-8", "surrogatepass"), hashlib.sha256)
        out = digest.hexdigest()[:PSEUDONYM_HEX_CHARS]
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[cache_key] = out
        return out

    def __getstate__(self) -> dict:
        # Ship the key, not the cache, to Beam workers.
        return {"_key": self._key, "_cache": {}}
