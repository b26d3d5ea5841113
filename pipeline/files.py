"""Input file globs, shared by runs and replay (kept free of Beam imports so tools start fast)."""

from __future__ import annotations

import glob
import os


class InputError(ValueError):
    """No input matched, or an input cannot be opened: a configuration problem."""


def expand_inputs(patterns: list[str], option: str = "--input") -> list[str]:
    """Absolute paths of the files matching the globs (each glob sorted, in argument order,
    de-duplicated); a glob matching nothing is an error naming `option`."""
    files: list[str] = []
    for pattern in patterns:
        matched = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
        if not matched:
            raise InputError(f"{option} {pattern!r}: no file matches")
        files.extend(matched)
    return list(dict.fromkeys(os.path.abspath(f) for f in files))
