"""When `--watch` may claim a landing file, and what it does when a claimed file changes.

A file is claimed only when it is complete. Producers should write elsewhere
(e.g. LANDING/.incoming/) and rename the finished file into LANDING; for producers
that append in place, a file counts as complete once its size and modification
time have not changed for `--settle-seconds` and it ends where a record ends: a
plain file in a newline, a gzip file at the end of a whole member. A file that
is stable but does not end there is never claimed (an unfinished last line); the
watcher names it on stderr and, when it stops, exits 3 (partial input).

A claimed file can still change (a producer that paused longer than the settle
time): see `after_run`.
"""

from __future__ import annotations

import os
import time

from pipeline.files import is_telemetry_name

State = tuple[int, int]  # size, mtime in ns


def ends_complete(path: str, size: int) -> bool:
    """Whether the file ends where a record ends: in a newline, or (gzip) at the end of a member."""
    from pipeline.reading import GZIP_MAGIC, GzipMembers

    if size == 0:
        return False
    with open(path, "rb") as fh:
        if fh.read(2) != GZIP_MAGIC:
            fh.seek(size - 1)
            return fh.read(1) == b"\n"
    with GzipMembers(path) as stream:
        while stream.read(1 << 20):
            pass
        return stream.fault is None


class Settler:
    """Tracks landing files across polls: which are ready to claim, which are still being
    written, which are stable but incomplete."""

    def __init__(self, settle_seconds: float) -> None:
        self.settle = settle_seconds
        self.seen: dict[str, tuple[State, float]] = {}  # path -> (state, wall time it was first seen so)
        self.complete: dict[str, tuple[State, bool]] = {}  # ends_complete, per state
        self.reported: dict[str, State] = {}  # stuck files already named on stderr

    def sort(self, paths: list[str], now: float | None = None) -> tuple[list[str], list[str], list[str]]:
        """(ready, waiting, stuck) among `paths`, in their order."""
        now = time.time() if now is None else now
        ready, waiting, stuck = [], [], []
        for path in paths:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            state = (st.st_size, st.st_mtime_ns)
            previous = self.seen.get(path)
            if previous is None or previous[0] != state:
                self.seen[path] = previous = (state, now)
            stable_since = min(previous[1], st.st_mtime_ns / 1e9)  # a future mtime (clock skew) counts from now
            if now - stable_since < self.settle:
                waiting.append(path)
                continue
            known = self.complete.get(path)
            if known is None or known[0] != state:
                known = self.complete[path] = (state, ends_complete(path, st.st_size))
            (ready if known[1] else stuck).append(path)
        for path in list(self.seen):
            if path not in paths:
                self.seen.pop(path, None)
                self.complete.pop(path, None)
                self.reported.pop(path, None)
        return ready, waiting, stuck

    def newly_stuck(self, stuck: list[str]) -> list[str]:
        """The stuck files not named yet in their present state."""
        out = []
        for path in stuck:
            state = self.seen[path][0]
            if self.reported.get(path) != state:
                self.reported[path] = state
                out.append(path)
        return out


def rest_name(name: str, batch_id: str) -> str:
    """Landing name of the part appended to `name` after its batch read it."""
    for suffix in (".ndjson.gz", ".jsonl.gz", ".ndjson", ".jsonl"):
        if name.endswith(suffix):
            return f"{name[:-len(suffix)]}.rest-{batch_id}{suffix}"
    return f"{name}.rest-{batch_id}.ndjson"


def after_run(path: str, read: State, landing: str, batch_id: str) -> tuple[str, str | None]:
    """What to do about a claimed file after its batch was published, given the (size, mtime)
    the run read (from its report): ("same", None); ("appended", landing file holding the bytes
    added since, to be processed by a later batch); or ("changed", what happened) when the
    file was rewritten or cut, which cannot be made good (the caller fails loudly)."""
    st = os.stat(path)
    size, mtime = read
    if (st.st_size, st.st_mtime_ns) == (size, mtime):
        return "same", None
    if st.st_size < size:
        return "changed", f"cut from {size} to {st.st_size} bytes after it was read"
    if st.st_size == size:
        return "changed", "rewritten (same size, new modification time) after it was read"
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
        fh.seek(size - 1 if size else 0)
        boundary = size == 0 or (not gz and fh.read(1) == b"\n")
        if gz:
            fh.seek(size)
            boundary = fh.read(2) == b"\x1f\x8b"  # a new member starts where the read stopped
        if not boundary:
            return "changed", f"grew from {size} to {st.st_size} bytes after it was read, not at a record boundary"
        fh.seek(size)
        rest = fh.read(st.st_size - size)
    name = os.path.basename(path)
    if not is_telemetry_name(name):
        name += ".ndjson"
    incoming = os.path.join(landing, ".incoming")
    os.makedirs(incoming, exist_ok=True)
    target = rest_name(name, batch_id)
    tmp = os.path.join(incoming, target)
    with open(tmp, "wb") as fh:
        fh.write(rest)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, os.path.join(landing, target))
    return "appended", target
