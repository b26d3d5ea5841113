"""Progress of a batch run on stderr: lines and bytes read, rate and ETA.

The readers run inside Beam's workers, which may be other processes (multi-processing,
Dask), so they report through a file: the command names it in the environment variable
PROGRESS_ENV before the run starts (worker processes inherit it), and each reader appends
one 16-byte record (lines, bytes) per batch it reads, with O_APPEND so concurrent writers
never tear a record. Without the variable (tests, library use) reporting costs nothing.

The command's side, `Progress`, polls the file in a thread: on a terminal a live bar
(tqdm), otherwise one line every --progress-interval seconds; nothing with --quiet.
"""

from __future__ import annotations

import os
import struct
import sys
import threading
import time
from types import TracebackType

PROGRESS_ENV = "TELEMETRY_SANITIZER_PROGRESS_FILE"
_RECORD = struct.Struct("<QQ")


def report(lines: int, nbytes: int) -> None:
    """Called by a reader after each batch of lines (any process)."""
    path = os.environ.get(PROGRESS_ENV)
    if not path:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except OSError:
        return
    try:
        os.write(fd, _RECORD.pack(lines, nbytes))
    except OSError:
        pass
    finally:
        os.close(fd)


def report_batch(batch: list) -> None:
    """report() for a reader's batch of (line number, bytes or Unreadable) items."""
    if PROGRESS_ENV in os.environ:
        report(len(batch), sum(len(raw) + 1 for _, raw in batch if isinstance(raw, bytes)))  # + newline


def expected_bytes(files: list[str]) -> int:
    """Bytes of lines the inputs hold: plain files by size, .gz files by their trailer's length
    field (exact for a single member below 4 GiB; at least the compressed size otherwise).
    Positioned reads (pread) of a few bytes: the files' own reading is left exactly as it is."""
    total = 0
    for path in files:
        try:
            size = os.path.getsize(path)
            fd = os.open(path, os.O_RDONLY)
            try:
                magic = os.pread(fd, 2, 0)
                trailer = os.pread(fd, 4, max(0, size - 4)) if magic == b"\x1f\x8b" else b""
            finally:
                os.close(fd)
            if len(trailer) == 4:
                total += max(struct.unpack("<I", trailer)[0], size)
            else:
                total += size
        except OSError:
            continue
    return total


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} GB"


def _fmt_eta(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Context manager around a run: sets PROGRESS_ENV, shows progress until the run ends."""

    def __init__(self, files: list[str], work_dir: str, interval: float = 10.0, enabled: bool = True,
                 tty: bool | None = None, json_lines: bool = False) -> None:
        self.total = expected_bytes(files)
        self.path = os.path.join(work_dir, f".progress-{os.getpid()}-{time.time_ns()}")
        self.interval = interval
        self.enabled = enabled
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.json_lines = json_lines
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous: str | None = None
        self.lines = 0
        self.bytes = 0
        self._offset = 0

    def __enter__(self) -> Progress:
        if not self.enabled:
            return self
        try:
            with open(self.path, "wb"):
                pass
        except OSError:
            self.enabled = False
            return self
        self._previous = os.environ.get(PROGRESS_ENV)
        os.environ[PROGRESS_ENV] = self.path
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self.enabled:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._previous is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = self._previous
        try:
            os.remove(self.path)
        except OSError:
            pass

    def poll(self) -> None:
        """Add the records appended since the last poll."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return
        whole = len(data) - len(data) % _RECORD.size
        for lines, nbytes in _RECORD.iter_unpack(data[:whole]):
            self.lines += lines
            self.bytes += nbytes
        self._offset += whole

    def line(self) -> str:
        """One progress line: records, bytes (of the expected total), rate, ETA."""
        elapsed = max(1e-6, time.monotonic() - self.started)
        rate = self.lines / elapsed
        text = f"progress: {self.lines:,} records, {_fmt_bytes(self.bytes)}"
        if self.total:
            share = min(1.0, self.bytes / self.total)
            text += f" of {_fmt_bytes(self.total)} ({share:.0%})"
            if share >= 0.995:
                return text + ", read; writing the tables"
            if self.bytes:
                text += f", ETA {_fmt_eta(elapsed * (self.total - self.bytes) / self.bytes)}"
        return text + f", {rate:,.0f} records/s"

    def _loop(self) -> None:
        bar = None
        if self.tty:
            try:
                from tqdm import tqdm

                try:
                    columns = os.get_terminal_size(sys.stderr.fileno()).columns
                except (OSError, ValueError):
                    columns = 0
                # a terminal that reports no width (e.g. under script(1)) would get an empty bar
                sized = {"dynamic_ncols": True} if columns >= 40 else {"ncols": 100}
                bar = tqdm(total=self.total or None, unit="B", unit_scale=True, desc="reading", file=sys.stderr,
                           leave=False, mininterval=0.5, **sized)
            except ImportError:
                bar = None
        next_line = time.monotonic() + self.interval
        while not self._stop.wait(0.5):
            before = self.bytes
            self.poll()
            if bar is not None:
                bar.update(self.bytes - before)
                rate = self.lines / max(1e-6, time.monotonic() - self.started)
                bar.set_postfix_str(f"{self.lines:,} records, {rate:,.0f} records/s", refresh=False)
            elif time.monotonic() >= next_line:
                next_line += self.interval
                self._emit(self.line())
        if bar is not None:
            bar.close()

    def _emit(self, text: str) -> None:
        from pipeline.logs import log_status

        log_status(text, records=self.lines, bytes=self.bytes, expected_bytes=self.total)
