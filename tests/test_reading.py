"""Damaged and changing input: every line that can be decoded is processed, the rest is
counted with its byte offset, and the exit code says the input was partial.

Faults are real: gzip files cut short, with junk appended, with a damaged CRC or data
byte; EIO injected by strace into the Nth read of a real run; a file cut short by
another writer while the run reads it.
"""

from __future__ import annotations

import errno
import glob
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import reading
from pipeline.lease import LEASE_FILE
from transforms.records import Unreadable

ROOT = Path(__file__).resolve().parent.parent
AS_OF = "2026-11-25T00:00:00Z"
MAX = 1 << 20


def record(i: int) -> bytes:
    """A record that passes every gate and is written (its event_id shows which line it was)."""
    return json.dumps({
        "schema_version": 1, "type": "product_usage", "event_id": f"e{i}", "device_id": f"D-{i % 37}",
        "ts": "2026-11-20T10:04:05Z", "country": "NL", "product": "KIS 21.3",
        "consent": {"eula": True, "ksn": True, "marketing": True},
        "data": {"feature": "scan", "duration_ms": i, "scan_type": "quick", "result": "ok"},
    }, separators=(",", ":")).encode()


def ndjson(n: int) -> bytes:
    return b"".join(record(i) + b"\n" for i in range(n))


def read_all(path) -> tuple[list[bytes], Unreadable | None, list[int]]:
    """(lines, the Unreadable marker or None, line numbers) of a whole file."""
    items = list(reading.read_chunk(str(path), 0, -1, 1, MAX))
    fault = items[-1][1] if items and isinstance(items[-1][1], Unreadable) else None
    lines = [line for _, line in items if isinstance(line, bytes)]
    return lines, fault, [n for n, _ in items]


def gunzip_prefix(data: bytes) -> bytes:
    """What gzip(1) decodes from a damaged file before it gives up (an independent reference)."""
    done = subprocess.run(["gzip", "-dc"], input=data, capture_output=True)
    return done.stdout


def complete_lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")[:-1]


# ------------------------------------------------------------------ the readers


def test_gzip_with_junk_after_the_end_gives_every_line_and_counts_the_junk(tmp_path):
    gz = gzip.compress(ndjson(20_000))
    path = tmp_path / "junk.ndjson.gz"
    path.write_bytes(gz + b"JUNKJUNKJ")  # 9 bytes: on main 1,226 lines were lost
    lines, fault, numbers = read_all(path)
    assert lines == complete_lines(ndjson(20_000))
    assert fault == Unreadable(len(gz), 9, "bytes after the last gzip member are not gzip data")
    assert numbers == list(range(1, 20_002))  # the marker takes the next line number


def test_gzip_cut_in_half_gives_every_complete_line_before_the_cut(tmp_path):
    gz = gzip.compress(ndjson(1000))
    cut = gz[: len(gz) // 2]
    path = tmp_path / "cut.ndjson.gz"
    path.write_bytes(cut)
    lines, fault, _ = read_all(path)
    expected = complete_lines(gunzip_prefix(cut))
    assert len(expected) > 400 and lines == expected  # main wrote none of them
    assert fault.offset == len(cut) and fault.lost_bytes == 0
    assert "cut short" in fault.reason and "decoded bytes of the line it cut" in fault.reason


def test_gzip_with_a_bad_crc_gives_its_lines_and_says_they_may_be_damaged(tmp_path):
    data = ndjson(1000)
    gz = bytearray(gzip.compress(data))
    gz[-8] ^= 0xFF  # first byte of the CRC-32 in the trailer
    path = tmp_path / "crc.ndjson.gz"
    path.write_bytes(bytes(gz))
    lines, fault, _ = read_all(path)
    assert lines == complete_lines(data)
    assert "CRC check failed" in fault.reason and fault.offset == len(gz) - 5 and fault.lost_bytes == 5


def test_gzip_damaged_inside_its_data_gives_the_lines_before_the_damage(tmp_path):
    data = ndjson(3000)
    plain = gzip.compress(data, compresslevel=1)
    for at in (len(plain) // 3, len(plain) // 2, 2 * len(plain) // 3):
        gz = bytearray(plain)
        gz[at] ^= 0x55
        path = tmp_path / f"bad{at}.ndjson.gz"
        path.write_bytes(bytes(gz))
        lines, fault, _ = read_all(path)
        reference = complete_lines(gunzip_prefix(bytes(gz)))
        # a flipped data byte usually still decodes (to wrong bytes): the CRC at the end says so
        assert fault is not None and "CRC check failed" in fault.reason
        assert lines == reference  # exactly the lines gzip(1) decodes
        intact = data.split(b"\n")  # all lines before the damage come through
        assert sum(a == b for a, b in zip(lines, intact, strict=False)) >= len(intact) // 3


def test_gzip_member_that_zlib_cannot_decode_keeps_the_members_and_lines_before_it(tmp_path):
    import zlib

    data = ndjson(3000)
    half = data[: len(data) // 2].rfind(b"\n") + 1
    first = gzip.compress(data[:half], compresslevel=1)
    plain = first + gzip.compress(data[half:], compresslevel=1)
    for at in range(len(first) + 10, len(first) + 60):  # a byte of the second member's first block
        gz = bytearray(plain)
        gz[at] ^= 0xFF
        try:
            zlib.decompressobj(31).decompress(bytes(gz[len(first):]))
        except zlib.error as exc:
            if "data check" not in str(exc):
                break
    else:
        pytest.fail("no damage zlib rejects")
    path = tmp_path / "bad.ndjson.gz"
    path.write_bytes(bytes(gz))
    lines, fault, _ = read_all(path)
    assert lines == complete_lines(gunzip_prefix(bytes(gz)))
    assert lines[: data[:half].count(b"\n")] == complete_lines(data[:half])
    assert fault.reason.startswith("damaged gzip data (") and len(first) < fault.offset < len(gz)
    assert fault.lost_bytes == len(gz) - fault.offset


def test_gzip_members_are_read_one_after_another_and_zero_padding_is_not_damage(tmp_path):
    first, second = ndjson(10), b"".join(record(i) + b"\n" for i in range(10, 25))
    path = tmp_path / "members.ndjson.gz"
    path.write_bytes(gzip.compress(first) + gzip.compress(second) + b"\0" * 700)
    lines, fault, _ = read_all(path)
    assert fault is None and lines == complete_lines(first + second)


@pytest.mark.parametrize("read_size", [1, 7, 4096])
def test_gzip_reader_equals_gzip_module_whatever_the_read_size(tmp_path, monkeypatch, read_size):
    data = ndjson(300) + b"no newline at the end"
    path = tmp_path / "a.gz"
    path.write_bytes(gzip.compress(data) + gzip.compress(b"\n" + data))
    monkeypatch.setattr(reading, "GZIP_FEED", read_size)
    with reading.open_telemetry(str(path)) as stream:
        out = b"".join(iter(lambda: stream.read(999), b""))
        assert stream.fault is None
    assert out == gzip.decompress(path.read_bytes())


def test_a_read_error_in_a_plain_chunk_keeps_the_lines_before_it(tmp_path, monkeypatch):
    """Unit-level reader fault: the third read() of the file raises EIO (the subprocess test
    below injects the same fault into a real run with strace)."""
    data = ndjson(400)
    path = tmp_path / "plain.ndjson"
    path.write_bytes(data)
    monkeypatch.setattr(reading, "READ_BUFFER", 4096)
    real_open = open
    calls = [0]

    class Failing:
        def __init__(self, fh):
            self.fh = fh

        def read(self, size):
            calls[0] += 1
            if calls[0] == 3:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            return self.fh.read(size)

        def __getattr__(self, name):
            return getattr(self.fh, name)

    def fake_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return Failing(fh) if str(file) == str(path) and kwargs.get("buffering") == 0 else fh

    monkeypatch.setattr(reading, "open", fake_open, raising=False)
    lines, fault, _ = read_all(path)
    read = 2 * 4096
    good = data[:read].rfind(b"\n") + 1  # the line cut by the error belongs to what was lost
    assert lines == complete_lines(data[:good])
    assert fault == Unreadable(good, len(data) - good, "read error: Input/output error (errno 5)")


# ------------------------------------------------------------------ whole runs


def run_cli(*args: str, strace: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(strace or []), sys.executable, "-m", "pipeline", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def written_ids(out: Path) -> list[int]:
    ids = []
    for f in glob.glob(str(out / "product_usage" / "**" / "*.parquet"), recursive=True):
        ids.extend(int(e[1:]) for e in pq.read_table(f).column("event_id").to_pylist())
    return sorted(ids)


def quarantine(out: Path) -> list[dict]:
    rows = []
    for f in glob.glob(str(out / "_quarantine" / "*.parquet")):
        rows.extend(pq.read_table(f).to_pylist())
    return rows


def test_damaged_gzip_run_writes_the_readable_lines_and_exits_3(tmp_path):
    gz = gzip.compress(ndjson(1000))
    path = tmp_path / "junk.ndjson.gz"
    path.write_bytes(gz + b"JUNK")
    proc = run_cli("--input", str(path), "--output", str(tmp_path / "o"), "--as-of", AS_OF)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "PARTIAL INPUT" in proc.stdout and "identity holds only for what could be read" in proc.stdout
    report = json.loads((tmp_path / "o" / "_report.json").read_text())
    assert written_ids(tmp_path / "o") == list(range(1000))  # main: 0 written
    assert report["input_complete"] is False
    assert report["unreadable_input"] == {"parts": 1, "bytes_not_read": 4, "files": {str(path): 4}}
    [row] = quarantine(tmp_path / "o")
    assert (row["reason"], row["line_number"], row["line_bytes"]) == ("unreadable_input", 1001, 4)
    assert f"not read from byte {len(gz)}: 4 bytes" in row["detail"]
    allowed = run_cli("--input", str(path), "--output", str(tmp_path / "o2"), "--as-of", AS_OF,
                      "--allow-partial-input")
    assert allowed.returncode == 0 and "PARTIAL INPUT" in allowed.stdout


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_eio_on_the_nth_read_of_a_real_run_is_partial_input_not_identity_holds(tmp_path):
    data = ndjson(3000)
    path = tmp_path / "plain.ndjson"
    path.write_bytes(data)
    out = tmp_path / "o"
    # reads of this file: 1 the chunk planner's peek, 2 the gzip check, 3.. the 1 MiB blocks; with
    # the file below 1 MiB the 3rd read would be the whole file: fail the 3rd.
    strace = ["strace", "-f", "-qq", "-o", os.devnull, "-P", str(path), "-e", "trace=read",
              "-e", "inject=read:error=EIO:when=3"]
    probe = subprocess.run([*strace, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here: {probe.stderr.decode()[-200:]}")
    proc = run_cli("--input", str(path), "--output", str(out), "--as-of", AS_OF, strace=strace)
    assert proc.returncode == 3, proc.stdout + proc.stderr[-2000:]
    assert "identity holds)" not in proc.stdout and "PARTIAL INPUT" in proc.stdout
    assert written_ids(out) == []
    [row] = quarantine(out)
    assert row["reason"] == "unreadable_input" and row["line_number"] == 1
    assert row["line_bytes"] == len(data) and "Input/output error" in row["detail"]


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_eio_in_the_middle_of_a_file_keeps_the_lines_before_it(tmp_path):
    data = ndjson(9000)  # > 2 MiB: the 4th read is the second 1 MiB block
    assert len(data) > 2 * reading.READ_BUFFER
    path = tmp_path / "plain.ndjson"
    path.write_bytes(data)
    out = tmp_path / "o"
    strace = ["strace", "-f", "-qq", "-o", os.devnull, "-P", str(path), "-e", "trace=read",
              "-e", "inject=read:error=EIO:when=4"]
    if subprocess.run([*strace, "true"], capture_output=True).returncode != 0:
        pytest.skip("strace cannot trace here")
    proc = run_cli("--input", str(path), "--output", str(out), "--as-of", AS_OF, strace=strace)
    assert proc.returncode == 3, proc.stdout + proc.stderr[-2000:]
    good = data[: reading.READ_BUFFER].rfind(b"\n") + 1
    n_good = data[:good].count(b"\n")
    assert written_ids(out) == list(range(n_good))
    [row] = quarantine(out)
    assert (row["line_number"], row["line_bytes"]) == (n_good + 1, len(data) - good)
    assert f"not read from byte {good}:" in row["detail"]
    report = json.loads((out / "_report.json").read_text())
    assert report["identity"]["holds"] and not report["input_complete"]
    assert report["input_records"] == n_good + 1


def test_a_file_cut_short_while_it_is_read_fails_the_run_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    """Another writer truncates the file after the reader's first block (a real truncation of
    the real file, at a fixed point of the read): the run exits 1 and publishes nothing."""
    from pipeline.run import run

    data = ndjson(5000)
    path = tmp_path / "live.ndjson"
    path.write_bytes(data)
    monkeypatch.setattr(reading, "READ_BUFFER", 64 << 10)
    real_read = reading.PlainChunk.read

    def read_then_truncate(self, size):
        block = real_read(self, size)
        if self.offset == len(block):  # the first block
            os.truncate(path, len(data) // 2)
        return block

    monkeypatch.setattr(reading.PlainChunk, "read", read_then_truncate)
    out = tmp_path / "o"
    code = run(["--input", str(path), "--output", str(out), "--as-of", AS_OF])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{path}: size changed from {len(data)} to {len(data) // 2} bytes while it was read" in err
    assert "nothing was written" in err
    assert set(os.listdir(out)) <= {LEASE_FILE}  # no report, no data, no staging left (the lock file may stay)


def test_a_file_appended_to_while_it_is_read_fails_the_run(tmp_path, monkeypatch, capsys):
    from pipeline.run import run

    path = tmp_path / "live.ndjson"
    path.write_bytes(ndjson(100))
    real_read = reading.PlainChunk.read
    appended = []

    def read_then_append(self, size):
        block = real_read(self, size)
        if not appended:
            appended.append(True)
            with open(path, "ab") as fh:
                fh.write(record(100) + b"\n")
        return block

    monkeypatch.setattr(reading.PlainChunk, "read", read_then_append)
    code = run(["--input", str(path), "--output", str(tmp_path / "o"), "--as-of", AS_OF])
    assert code == 1 and "while it was read" in capsys.readouterr().err
    assert not (tmp_path / "o" / "_report.json").exists()

