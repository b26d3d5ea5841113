"""Refuse to mix pseudonym keys: a command that takes a key checks it against the data's.

Each run records `key_fingerprint` (transforms.pseudonym.key_fingerprint: a keyed hash that
names the key without revealing it) in its report. Pseudonyms made with another key do not
match the data's: a run appending with it would mix unlinkable pseudonyms into the tables,
and an export or erase would find nothing while looking successful. So such a command stops
before it does anything, with exit code 2 and one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from transforms.pseudonym import key_fingerprint


class KeyMismatchError(ValueError):
    """The key given is not the one the data was written with: one line, exit code 2."""


def _reports(data_dir: Path) -> list[Path]:
    latest = data_dir / "_report.json"
    older = sorted((data_dir / "_reports").glob("*.json"), reverse=True) if (data_dir / "_reports").is_dir() else []
    return ([latest] if latest.is_file() else []) + older


def data_key(data_dir: str | Path) -> tuple[str | None, str | None]:
    """(fingerprint, key mode) of the newest run report of an output directory that has one;
    (None, None) when no report records a fingerprint (an empty directory, an older output)."""
    for path in _reports(Path(data_dir)):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        fingerprint = report.get("key_fingerprint") or (report.get("key") or {}).get("fingerprint")
        if fingerprint:
            return str(fingerprint), (report.get("key") or {}).get("mode")
    return None, None


def check_key(data_dir: str | Path, key: bytes | None, option: str = "--pseudonym-key-file") -> None:
    """Raise KeyMismatchError when `key` (None: a random per-run key) differs from the data's key.
    Data written with a random per-run key is linkable to nothing, so any key may follow it."""
    fingerprint, mode = data_key(data_dir)
    if fingerprint is None or mode == "random-per-run":
        return
    if key is None:
        raise KeyMismatchError(f"{data_dir} was written with a key file (fingerprint {fingerprint}); give the same "
                               f"{option} (a random per-run key would mix unlinkable pseudonyms into it)")
    mine = key_fingerprint(key)
    if mine != fingerprint:
        raise KeyMismatchError(f"{option}: key fingerprint {mine} does not match the data in {data_dir} "
                               f"(written with {fingerprint}); use the key the data was written with")
