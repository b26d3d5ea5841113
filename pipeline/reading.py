"""Reading telemetry files: the Beam read transform and the line splitting under it.

Reads move in batches of lines (one Beam element per few thousand records); only
chunk descriptors are shuffled, lines are read where they are sanitized.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator

import apache_beam as beam

GZIP_MAGIC = b"\x1f\x8b"
READ_BUFFER = 1 << 20


def open_telemetry(path: str):
    """Binary stream of a file, gunzipped when it is gzip (by content, not by name)."""
    raw = open(path, "rb", buffering=READ_BUFFER)
    if raw.peek(2)[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return raw


def iter_lines(stream, max_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without newline); a line over `max_bytes` is cut to max_bytes+1
    bytes, which is enough to quarantine it as too long without holding it whole.

    Reads blocks and splits them in C: a readline() call per line costs more than
    parsing the line does.
    """
    line_no = 0
    carry = b""
    skipping = False  # inside a line already yielded as too long: drop bytes up to its newline
    limit = max_bytes + 1
    while True:
        block = stream.read(READ_BUFFER)
        if not block:
            break
        if skipping:
            cut = block.find(b"\n")
            if cut < 0:
                continue
            block, skipping = block[cut + 1:], False
        if carry:
            block = carry + block
        lines = block.split(b"\n")
        carry = lines.pop()
        for line in lines:
            line_no += 1
            if line.endswith(b"\r"):
                line = line[:-1]
            yield line_no, line if len(line) <= max_bytes else line[:limit]
        if len(carry) > limit:  # no newline yet and already too long
            line_no += 1
            yield line_no, carry[:limit]
            carry, skipping = b"", True
    if carry and not skipping:
        line_no += 1
        if carry.endswith(b"\r"):
            carry = carry[:-1]
        yield line_no, carry if len(carry) <= max_bytes else carry[:limit]


CHUNK_BYTES = 32 << 20  # plain files are split at line boundaries into chunks this size


def plan_chunks(files: list[str], chunk_bytes: int | None = CHUNK_BYTES) -> list[tuple[int, str, int, int, int]]:
    """(file index, path, start byte, end byte or -1, first line number) per chunk.

    Plain files are cut at newlines every `chunk_bytes` and the newlines before
    each cut are counted (a fast scan), so chunks can be read by different
    workers and still report exact line numbers. A gzip file is one chunk, and
    so is every file when `chunk_bytes` is None (one worker: nothing to spread,
    and no newline scan: 0.21-0.26 s for a 547 MB file).
    """
    chunks = []
    for index, path in enumerate(files):
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            if fh.peek(2)[:2] == GZIP_MAGIC:
                chunks.append((index, path, 0, -1, 1))
                continue
            start, line = 0, 1
            while start < size:
                if chunk_bytes is None or start + chunk_bytes >= size:
                    chunks.append((index, path, start, -1, line))
                    break
                fh.seek(start + chunk_bytes)
                end = start + chunk_bytes + len(fh.readline())  # cut after the next newline
                if end >= size:
                    chunks.append((index, path, start, -1, line))
                    break
                chunks.append((index, path, start, end, line))
                fh.seek(start)
                remaining, newlines = end - start, 0
                while remaining:
                    block = fh.read(min(remaining, READ_BUFFER * 8))
                    newlines += block.count(b"\n")
                    remaining -= len(block)
                line += newlines
                start = end
    return chunks


class _ReadLineBatches(beam.DoFn):
    """A chunk of a file -> (path, file index, [(line number, bytes or None), ...]) batches."""

    def __init__(self, batch_lines: int, max_line_bytes: int) -> None:
        self.batch_lines = batch_lines
        self.max_line_bytes = max_line_bytes

    def process(self, chunk: tuple[int, str, int, int, int]):
        index, path, start, end, first_line = chunk
        batch: list[tuple[int, bytes | None]] = []
        last = first_line - 1
        with open_telemetry(path) as stream:
            if start:
                stream.seek(start)
            limited = _Limited(stream, end - start) if end >= 0 else stream
            try:
                for number, line in iter_lines(limited, self.max_line_bytes):
                    last = number + first_line - 1
                    batch.append((last, line))
                    if len(batch) >= self.batch_lines:
                        yield path, index, batch
                        batch = []
            except (OSError, EOFError, zlib.error):  # a cut-off or corrupt .gz: keep what was read; None marks the loss
                batch.append((last + 1, None))
        if batch:
            yield path, index, batch


class _Limited:
    """read() over at most `remaining` bytes of a stream (one chunk of a plain file)."""

    def __init__(self, stream, remaining: int) -> None:
        self.stream = stream
        self.remaining = remaining

    def read(self, size: int) -> bytes:
        if self.remaining <= 0:
            return b""
        data = self.stream.read(min(size, self.remaining))
        self.remaining -= len(data)
        return data


class ReadTelemetry(beam.PTransform):
    """NDJSON / NDJSON.gz files -> batches of numbered raw lines.

    Only the chunk descriptors are shuffled to spread work over workers; the
    lines are read where they are sanitized, so memory stays flat whatever the
    input size.
    """

    def __init__(self, files: list[str], batch_lines: int = 5000, max_line_bytes: int = 1 << 20,
                 chunk_bytes: int | None = CHUNK_BYTES) -> None:
        super().__init__()
        self.chunks = plan_chunks(files, chunk_bytes)
        self.batch_lines = batch_lines
        self.max_line_bytes = max_line_bytes

    def expand(self, pbegin):
        return (
            pbegin
            | "ListChunks" >> beam.Create(self.chunks)
            | "Spread" >> beam.Reshuffle()
            | "ReadBatches" >> beam.ParDo(_ReadLineBatches(self.batch_lines, self.max_line_bytes))
        )
