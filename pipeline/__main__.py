"""`python -m pipeline`: a sanitizing run, or one of the helper commands."""

from __future__ import annotations

import os
import sys

# Arrow's allocator (mimalloc) returns freed pages to the system at once instead of after a
# delay: a run frees its batch and partition tables continually, and with the delay the
# in-process peak RSS at 1M records was 463-482 MiB, without it 337 MiB, at the same speed.
# Set before pyarrow loads (the variable is read then); Beam's worker processes inherit it.
# An explicit setting in the environment wins.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")



def main(argv: list[str] | None = None) -> int:
    """The `telemetry-sanitizer` command (pipeline/cli.py)."""
    from pipeline.cli import main as cli_main

    return cli_main(argv)


def _exit_now(code: int) -> None:
    """End a command that used an object store without the interpreter's teardown. deltalake reads
    remote tables through a pyarrow file system implemented in Python; an Arrow I/O thread still
    inside it when the interpreter finalizes is made to exit through C++ frames, and the process
    aborts after its work is done ("terminate called without an active exception", exit -6; about
    half of the `subject export` runs on S3 did). Every command has written, committed and closed
    what it opened before it returns, so only the exit handlers are skipped: logs and standard
    streams are flushed here."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    code = main()
    if any("://" in arg for arg in sys.argv[1:]):  # an s3:// or abfss:// output (pipeline/location.py)
        _exit_now(code if isinstance(code, int) else 1)
    sys.exit(code)
