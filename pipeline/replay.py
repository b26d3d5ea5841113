"""`python -m pipeline replay`: write telemetry into a landing directory as closed files, at a controlled pace.

    python -m pipeline replay --from 'sample/*.ndjson.gz' --into /tmp/landing --rate 5000/s
    python -m pipeline replay --from day.ndjson.gz --into /tmp/landing --speedup 60 --rewrite-timestamps
    python -m pipeline replay --generate 100000 --seed 3 --into /tmp/landing --rate 20000/s

Lines are copied byte for byte (dirty lines, CRLF endings and the BOM included;
a missing final newline is added), `--file-records` lines per landing file.
Each file is written under LANDING/.incoming/, fsynced, and only then renamed
to LANDING/<yyyymmddThhmmss>-<seq>.ndjson (never over an existing file), so a
watcher listing LANDING only ever sees complete files.

Pacing (at most one of):
  --rate N/s     at most N lines per second (token bucket, bursts of at most 50 ms worth of lines).
  --speedup X    follow the records' own `ts`: a record goes out when (ts - first ts) / X seconds
                 have passed. Lines without a parsable ts go out right away; a record with an earlier
                 ts than one already sent (late arrival) goes out right away; a jump forward in ts is
                 counted as at most --max-gap seconds of record time, so one broken clock cannot stall
                 the replay.
  neither        as fast as the disk allows.

--rewrite-timestamps shifts every parsable top-level `ts` (RFC 3339 with an offset, the pipeline's
own definition) by the same whole number of seconds, so that the first parsable one becomes "now";
gaps between records stay exact and each value keeps its offset and precision. Only the ts value's
bytes are replaced; lines whose ts is missing or unparsable, and lines that are not JSON objects,
are written unchanged.

--generate N writes N lines of the synthetic dirty telemetry of `pipeline.sample` (with --seed)
instead of reading files.

Progress goes to stderr every ~2 s on long runs; a summary line goes to stdout at the end.
Bad arguments exit with code 2 and one line naming the problem.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

import orjson

from pipeline.cliparse import Parser
from pipeline.files import InputError, expand_inputs
from transforms.fields import FieldTypeError, parse_rfc3339

BOM = b"\xef\xbb\xbf"
PROGRESS_EVERY = 2.0   # seconds between progress lines on stderr
MIN_SLEEP = 0.005      # pacing sleeps shorter than this are folded into the next one
SLEEP_SLICE = 0.5      # long waits are cut in slices so files can close on time and progress shows
INCOMING = ".incoming"
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_RATE_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_TS_RE = re.compile(r"(\d{4}-\d{2}-\d{2})([Tt ])(\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
# Strings (with escapes) and the structural characters of a JSON text; everything else is skipped.
_JSON_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\],:]', re.S)


class UsageError(ValueError):
    """A bad command line: reported as one line, exit code 2."""


class _Parser(Parser):
    def error(self, message: str):  # one line, no usage dump
        raise UsageError(message)


def parse_rate(text: str) -> float:
    """'5000/s' -> 5000.0 lines per second ('/min' and '/h' work too)."""
    m = _RATE_RE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--rate {text!r}: expected a positive number of lines per second, e.g. 5000/s")
    return float(m.group(1)) / _RATE_UNITS[m.group(2)]


def expand_sources(patterns: list[str]) -> list[str]:
    """The --from files (same rules as a run's --input); a glob matching nothing is a usage error."""
    try:
        return expand_inputs(patterns, option="--from")
    except InputError as exc:
        raise UsageError(str(exc)) from None


# ------------------------------------------------------------------ reading


def read_lines(path: str, warnings: list[str]) -> Iterator[bytes]:
    """Lines of a plain or gzip file (by content), each ending in exactly the bytes it had plus a final
    '\\n' when the file's last line lacked one. A damaged or cut-off file yields every line before the
    damage (the pipeline's own reader, pipeline/reading.py), and a warning says how much was not read."""
    from pipeline.reading import open_telemetry  # imports Beam: only when a file is replayed

    with open_telemetry(path) as stream:
        tail = b""
        while block := stream.read(1 << 20):
            lines = (tail + block).split(b"\n")
            tail = lines.pop()
            for line in lines:
                yield line + b"\n"
        if tail:
            yield tail + b"\n"
        if stream.fault is not None:
            at, lost, reason = stream.fault
            rest = f", the {lost} bytes from there on were not" if lost else ""
            warnings.append(f"{path}: {reason} (byte {at} of the file); the lines before it were replayed{rest}")


# ------------------------------------------------------------------ timestamps


def record_ts(line: bytes) -> tuple[str, datetime] | None:
    """(raw ts string, parsed UTC time) of a line that is a JSON object with a parsable top-level ts."""
    body = line.rstrip(b"\r\n")
    if body.startswith(BOM):
        body = body[3:]
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        rec = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    value = rec.get("ts") if isinstance(rec, dict) else None
    if not isinstance(value, str):
        return None
    try:
        return value, parse_rfc3339(value)
    except FieldTypeError:
        return None


def shift_ts(value: str, delta: timedelta) -> str | None:
    """`value` moved by `delta`, keeping its offset, separator and fraction digits; None if out of range."""
    dt = datetime.fromisoformat(value.replace("z", "Z"))
    try:
        moved = dt + delta
    except OverflowError:
        return None
    m = _TS_RE.fullmatch(value)
    if m is None:  # another ISO 8601 spelling the parser accepts: write it the standard way
        return moved.isoformat()
    date, sep, _, frac, offset = m.groups()
    return f"{moved:%Y-%m-%d}{sep}{moved:%H:%M:%S}{frac or ''}{offset}"


def top_level_value_span(body: bytes, key: bytes = b'"ts"') -> tuple[int, int] | None:
    """Byte span of the value of the last top-level `key` of a JSON object text (the one a parser keeps).
    Only string values are reported: (start, end) includes the quotes."""
    depth = 0
    expect_key = False
    pending = False
    span = None
    for m in _JSON_TOKEN.finditer(body):
        tok = m.group()
        c = tok[:1]
        if c == b'"':
            if depth == 1:
                if expect_key:
                    pending = tok == key
                    expect_key = False
                elif pending:
                    span = m.span()
                    pending = False
        elif c in (b"{", b"["):
            depth += 1
            pending = False
            if depth == 1:
                expect_key = c == b"{"
        elif c in (b"}", b"]"):
            depth -= 1
        elif c == b"," and depth == 1:
            expect_key = True
            pending = False
    return span


def rewrite_line(line: bytes, value: str, new_value: str) -> bytes | None:
    """`line` with the top-level ts string `value` replaced by `new_value`; None if it cannot be located."""
    span = top_level_value_span(line)
    if span is None or line[span[0] + 1:span[1] - 1] != value.encode():
        return None
    return line[:span[0] + 1] + new_value.encode() + line[span[1] - 1:]


# ------------------------------------------------------------------ pacing


class TokenBucket:
    """At most `rate` lines per second on average, bursts of at most `capacity` lines."""

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        self.rate = rate
        self.capacity = max(1.0, capacity if capacity is not None else rate / 20)
        self.tokens = self.capacity
        self.last = time.monotonic()

    def wait_seconds(self, n: int = 1) -> float:
        """Take `n` tokens; how long to wait before sending (0 when a token was there)."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= n
        return -self.tokens / self.rate if self.tokens < 0 else 0.0


class RecordClock:
    """Paces by the records' own times, `speedup` times faster; see the module docstring."""

    def __init__(self, speedup: float, max_gap: float) -> None:
        self.speedup = speedup
        self.max_gap = max_gap
        self.first: float | None = None
        self.clock = 0.0
        self.wall0 = 0.0

    def due(self, ts: float | None) -> float:
        """Monotonic time at which a record with epoch seconds `ts` (None: unparsable) may go out."""
        if ts is None:
            return 0.0
        if self.first is None:
            self.first = self.clock = ts
            self.wall0 = time.monotonic()
            return 0.0
        if ts <= self.clock:
            return 0.0
        self.clock += min(ts - self.clock, self.max_gap)
        return self.wall0 + (self.clock - self.first) / self.speedup


# ------------------------------------------------------------------ writing


class LandingWriter:
    """Closed files in a landing directory: write under .incoming/, fsync, rename into place."""

    def __init__(self, into: str, file_records: int, file_seconds: float | None) -> None:
        self.into = os.path.abspath(into)
        self.incoming = os.path.join(self.into, INCOMING)
        os.makedirs(self.incoming, exist_ok=True)
        self.file_records = file_records
        self.file_seconds = file_seconds
        self.fh: BinaryIO | None = None
        self.tmp = ""
        self.in_file = 0
        self.opened = 0.0
        self.seq = 0
        self.files: list[str] = []
        self.lines = 0

    def write(self, line: bytes) -> None:
        if self.fh is None:
            self.tmp = os.path.join(self.incoming, f"{os.getpid()}-{self.seq:06d}.tmp")
            self.fh = open(self.tmp, "wb", buffering=1 << 20)
            self.opened = time.monotonic()
        self.fh.write(line)
        self.in_file += 1
        self.lines += 1
        if self.in_file >= self.file_records:
            self.close_file()

    def tick(self) -> None:
        """Close the open file when it has been open --file-seconds."""
        if self.fh is not None and self.file_seconds and time.monotonic() - self.opened >= self.file_seconds:
            self.close_file()

    def close_file(self) -> None:
        if self.fh is None:
            return
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        self.fh = None
        self.in_file = 0
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        while True:
            final = os.path.join(self.into, f"{stamp}-{self.seq:06d}.ndjson")
            self.seq += 1
            if self._place(self.tmp, final):
                break
        self.files.append(final)
        _fsync_dir(self.into)

    @staticmethod
    def _place(tmp: str, final: str) -> bool:
        """Atomically give `tmp` the name `final` unless that name is taken (then False)."""
        try:
            os.link(tmp, final)  # fails if `final` exists: never replaces a file a watcher may be reading
        except FileExistsError:
            return False
        except OSError:  # no hard links here: fall back to a plain rename after a check
            if os.path.exists(final):
                return False
            os.rename(tmp, final)
            return True
        os.unlink(tmp)
        return True

    def close(self) -> None:
        self.close_file()  # .incoming/ stays: another replay may be writing there


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Progress:
    def __init__(self, writer: LandingWriter) -> None:
        self.writer = writer
        self.start = self.last = time.monotonic()
        self.last_lines = 0

    def maybe_print(self) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY:
            return
        lines = self.writer.lines
        rate = (lines - self.last_lines) / (now - self.last)
        print(f"replay: {lines} lines, {len(self.writer.files)} files, {rate:,.0f} lines/s",
              file=sys.stderr, flush=True)
        self.last, self.last_lines = now, lines


def _wait_until(deadline: float, writer: LandingWriter, progress: Progress) -> None:
    while True:
        left = deadline - time.monotonic()
        if left < MIN_SLEEP:
            return
        time.sleep(min(left, SLEEP_SLICE))
        writer.tick()
        progress.maybe_print()


# ------------------------------------------------------------------ command


def build_parser() -> argparse.ArgumentParser:
    from pipeline.cli import add_common

    ap = _Parser(prog="telemetry-sanitizer replay",
                 description="Write telemetry lines into a landing directory as closed files, at a controlled pace.",
                 epilog="examples:\n"
                        "  telemetry-sanitizer replay --from 'sample/*.ndjson.gz' --into /tmp/landing --rate 5000/s\n"
                        "  telemetry-sanitizer replay --generate 100000 --seed 3 --into /tmp/landing")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--from", dest="sources", action="append", metavar="FILE_OR_GLOB",
                     help="NDJSON or NDJSON.gz file(s) to replay; repeat for several")
    src.add_argument("--generate", type=int, metavar="N", help="replay N synthetic lines of pipeline.sample instead")
    ap.add_argument("--into", required=True, metavar="LANDING_DIR", help="landing directory (created if missing)")
    pace = ap.add_mutually_exclusive_group()
    pace.add_argument("--rate", help="at most this many lines per second, e.g. 5000/s")
    pace.add_argument("--speedup", type=float, help="follow the records' ts gaps, this many times faster")
    ap.add_argument("--max-gap", type=float, default=300.0, metavar="SECONDS",
                    help="with --speedup: largest forward jump in ts counted (record seconds, default 300)")
    ap.add_argument("--rewrite-timestamps", action="store_true",
                    help="shift every parsable ts so that the first one becomes now (gaps kept)")
    ap.add_argument("--file-records", type=int, default=1000, help="lines per landing file (default 1000)")
    ap.add_argument("--file-seconds", type=float, default=None,
                    help="also close a landing file once it has been open this long")
    ap.add_argument("--seed", type=int, default=7, help="seed of --generate (default 7)")
    add_common(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        rate = parse_rate(args.rate) if args.rate is not None else None
        if args.speedup is not None and not args.speedup > 0:
            raise UsageError(f"--speedup {args.speedup}: must be > 0")
        if args.file_records < 1:
            raise UsageError(f"--file-records {args.file_records}: must be >= 1")
        if args.file_seconds is not None and not args.file_seconds > 0:
            raise UsageError(f"--file-seconds {args.file_seconds}: must be > 0")
        if args.max_gap <= 0:
            raise UsageError(f"--max-gap {args.max_gap}: must be > 0")
        if args.generate is not None and args.generate < 0:
            raise UsageError(f"--generate {args.generate}: must be >= 0")
        files = expand_sources(args.sources) if args.sources else []
        if os.path.exists(args.into) and not os.path.isdir(args.into):
            raise UsageError(f"--into {args.into}: exists and is not a directory")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return replay(args, files, rate)


def _source_lines(args, files: list[str], warnings: list[str]) -> Iterator[bytes]:
    if args.generate is not None:
        from pipeline.sample import generate_lines

        for line in generate_lines(args.generate, seed=args.seed):
            yield line + b"\n"
        return
    for path in files:
        yield from read_lines(path, warnings)


def replay(args, files: list[str], rate: float | None) -> int:
    started = time.monotonic()
    warnings: list[str] = []
    writer = LandingWriter(args.into, args.file_records, args.file_seconds)
    progress = Progress(writer)
    bucket = TokenBucket(rate) if rate else None
    clock = RecordClock(args.speedup, args.max_gap) if args.speedup else None
    need_ts = clock is not None or args.rewrite_timestamps
    delta: timedelta | None = None
    shifted = unshifted = 0
    interrupted = False
    try:
        for line in _source_lines(args, files, warnings):
            if need_ts:
                found = record_ts(line)
                if clock is not None:
                    due = clock.due(found[1].timestamp() if found else None)
                    if due:
                        _wait_until(due, writer, progress)
                if found and args.rewrite_timestamps:
                    if delta is None:
                        delta = timedelta(seconds=round(time.time() - found[1].timestamp()))
                    new_value = shift_ts(found[0], delta)
                    new_line = rewrite_line(line, found[0], new_value) if new_value is not None else None
                    if new_line is None:
                        unshifted += 1
                    else:
                        line = new_line
                        shifted += 1
            if bucket is not None:
                wait = bucket.wait_seconds()
                if wait >= MIN_SLEEP:
                    _wait_until(time.monotonic() + wait, writer, progress)
            writer.write(line)
            if writer.file_seconds:
                writer.tick()
            if not writer.lines & 1023:
                progress.maybe_print()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        writer.close()
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    secs = time.monotonic() - started
    extra = ""
    if args.rewrite_timestamps:
        extra = f"; {shifted} timestamps shifted by {delta.total_seconds() if delta else 0:+.0f}s"
        if unshifted:
            extra += f" ({unshifted} parsable ones left as they were: could not be moved in place)"
    print(f"replay: {writer.lines} lines in {len(writer.files)} files into {writer.into} in {secs:.2f}s "
          f"({writer.lines / secs if secs else 0:,.0f} lines/s){extra}"
          + (" (interrupted)" if interrupted else ""), flush=True)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
