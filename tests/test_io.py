"""Reading telemetry files: lines come out exactly as plain splitting would give them."""

from __future__ import annotations

import io as stdio
import random

from pipeline import io


def reference_lines(data: bytes, max_bytes: int) -> list[bytes]:
    """What reading must give, written the plain way: lines split at "\\n", one trailing "\\r"
    removed, lines over max_bytes cut to max_bytes + 1 bytes."""
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()  # a final newline ends the last line; it does not start another
    out = []
    for piece in pieces:
        if piece.endswith(b"\r"):
            piece = piece[:-1]
        out.append(piece if len(piece) <= max_bytes else piece[:max_bytes + 1])
    return out


def test_reading_lines_equals_plain_splitting_whatever_the_read_size(monkeypatch):
    """Lines cut across reads, "\\r" and "\\n" on either side of a read boundary, overlong
    lines with or without a newline yet, blank lines, a last line without newline."""
    rnd = random.Random(5)
    for _ in range(3000):
        data = bytes(rnd.choice(b"ab{}\r\n\n") for _ in range(rnd.randrange(0, 60)))
        max_bytes = rnd.randrange(1, 12)
        monkeypatch.setattr(io, "READ_BUFFER", rnd.randrange(1, 9))
        got = list(io.iter_lines(stdio.BytesIO(data), max_bytes))
        assert got == list(enumerate(reference_lines(data, max_bytes), 1)), (data, max_bytes, io.READ_BUFFER)
