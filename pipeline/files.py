"""Input files of a run (and of replay): what is read, and whether it stayed as it was.

Kept free of Beam imports so tools start fast.

What an --input names: a directory means its telemetry files (not its subdirectories);
a glob or a path means the regular files it matches. Telemetry files are named
*.ndjson, *.ndjson.gz, *.jsonl or *.jsonl.gz; any other file matched is skipped with a
warning that names it, and the pseudonym key file is never read as telemetry, however
it is named.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Callable

TELEMETRY_SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")


class InputError(ValueError):
    """No input matched, or an input cannot be opened: a configuration problem."""


def is_telemetry_name(path: str) -> bool:
    return path.endswith(TELEMETRY_SUFFIXES)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def expand_inputs(patterns: list[str], option: str = "--input", never: dict[str, str] | None = None,
                  warn: Callable[[str], None] = _warn) -> list[str]:
    """Absolute paths of the telemetry files the patterns name (each pattern sorted, in
    argument order, de-duplicated). A pattern that names no telemetry file is an error naming
    `option`; other files it matches are skipped with a warning naming them. `never` maps files
    that are not telemetry whatever their name (the key file, the withdrawals file) to what they
    are: they are skipped with a warning, or refused when they are all a pattern names."""
    banned = {os.path.realpath(p): what for p, what in (never or {}).items()}
    files: list[str] = []
    for pattern in patterns:
        path = os.path.expanduser(pattern)
        if os.path.isdir(path):
            matched = sorted(os.path.join(path, n) for n in os.listdir(path))
            matched = [p for p in matched if os.path.isfile(p)]
        else:
            matched = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        if not matched:
            raise InputError(f"{option} {pattern!r}: no file matches")
        keys = [p for p in matched if os.path.realpath(p) in banned]
        others = [p for p in matched if p not in keys and not is_telemetry_name(p)]
        kept = [p for p in matched if p not in keys and p not in others]
        for key in keys:
            what = banned[os.path.realpath(key)]
            if not kept and not others:
                raise InputError(f"{option} {pattern!r}: {key} is {what}, never read as telemetry")
            warn(f"{option} {pattern!r}: skipped {key}: it is {what}, never read as telemetry")
        if others:
            warn(f"{option} {pattern!r}: skipped {len(others)} file(s) not named like telemetry "
                 f"({', '.join('*' + s for s in TELEMETRY_SUFFIXES)}): {', '.join(others)}")
        if not kept:
            raise InputError(f"{option} {pattern!r}: no telemetry file matches "
                             f"({', '.join('*' + s for s in TELEMETRY_SUFFIXES)})")
        files.extend(kept)
    return list(dict.fromkeys(os.path.abspath(f) for f in files))


FileState = tuple[int, int, int]  # inode, size, mtime in ns


def snapshot(files: list[str]) -> dict[str, FileState]:
    """What each input looks like before it is read; `changed_since` compares after."""
    states = {}
    for path in files:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InputError(f"--input {path}: cannot read: {exc.strerror or exc}") from None
        states[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return states


def changed_since(before: dict[str, FileState]) -> list[str]:
    """One line per input that is not as it was when the run started (written to, cut short,
    replaced or removed while it was read): its lines cannot be trusted to be what was read."""
    changed = []
    for path, (ino, size, mtime) in before.items():
        try:
            st = os.stat(path)
        except OSError as exc:
            changed.append(f"{path}: gone while it was read ({exc.strerror or exc})")
            continue
        if st.st_ino != ino:
            changed.append(f"{path}: replaced by another file while it was read")
        elif st.st_size != size:
            changed.append(f"{path}: size changed from {size} to {st.st_size} bytes while it was read")
        elif st.st_mtime_ns != mtime:
            changed.append(f"{path}: modified while it was read (same size, new modification time)")
    return changed
