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
