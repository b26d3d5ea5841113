"""Logging of the command line: stderr, text or JSON lines; Beam's own loggers at WARNING by default."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

_state = {"format": "text", "quiet": False}

# Loggers of libraries that are chatty at INFO (Beam's runners and workers, Dask's cluster, the
# Google API client Beam pulls in); they follow --log-level, default WARNING.
NOISY = ("apache_beam", "distributed", "apitools", "google", "urllib3", "absl")


class _DropKnownNoise(logging.Filter):
    """Beam warns on every import that the Google API client is missing (nothing here uses it) and
    on every worker start about a directory nobody needs. A failing step is logged by Beam with
    its stack and then re-raised: the command reports it as one line, so the log record is
    dropped (kept with --debug); no other record carries a traceback without --debug."""

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self.debug = debug

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if text.startswith("apitools not found") or "No semi_persistent_directory found" in text:
            return False
        if self.debug:
            return True
        if record.exc_info and record.name.startswith("apache_beam"):
            return False
        record.exc_info, record.exc_text = None, None
        return True


def json_entry(level: str, logger: str, message: str, created: float | None = None, **extra: str) -> str:
    """One log line of --log-format json: every writer (log handler, plain stderr lines, Beam's
    worker lines) gives the same keys."""
    doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)), "level": level, "logger": logger,
           "message": message, **extra}
    return json.dumps(doc, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = {"traceback": self.formatException(record.exc_info)} if record.exc_info else {}
        return json_entry(record.levelname.lower(), record.name, record.getMessage(), record.created, **extra)


def configure_logging(level: str | None, fmt: str = "text", quiet: bool = False, debug: bool = False) -> None:
    """One stderr handler on the root logger; level WARNING unless asked (ERROR with --quiet)."""
    _state["format"], _state["quiet"] = fmt, quiet
    if fmt == "json" and not isinstance(sys.stderr, JsonLines):
        sys.stderr = JsonLines(sys.stderr)
    chosen = getattr(logging, level) if level else (logging.ERROR if quiet else logging.WARNING)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_DropKnownNoise(debug))
    root.addHandler(handler)
    root.setLevel(chosen)
    for name in NOISY:
        logging.getLogger(name).setLevel(chosen)
    if fmt == "json" or level:
        logging.captureWarnings(True)


class JsonLines:
    """sys.stderr with --log-format json: the plain `error: ...` / `warning: ...` lines that commands
    print become JSON objects too; lines that already are JSON (the log handler's) pass unchanged."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            self.stream.write(self._convert(line) + "\n")
        return len(text)

    def _convert(self, line: str) -> str:
        if not line.strip() or line.lstrip().startswith("{"):
            return line
        level, _, rest = line.partition(": ")
        if level not in ("error", "warning", "note") or not rest:
            level, rest = "info", line
        return json_entry(level, "telemetry-sanitizer", rest)

    def flush(self) -> None:
        if self.pending:
            self.stream.write(self._convert(self.pending) + "\n")
            self.pending = ""
        self.stream.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.stream.fileno()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def json_logs() -> bool:
    return _state["format"] == "json"


def quiet() -> bool:
    return bool(_state["quiet"])


def log_error(message: str) -> None:
    """One error line on stderr: `error: ...`, or a JSON object with --log-format json."""
    if json_logs():
        print(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "level": "error",
                          "logger": "telemetry-sanitizer", "message": message}, ensure_ascii=False),
              file=sys.stderr, flush=True)
    else:
        print(f"error: {message}", file=sys.stderr, flush=True)


def log_status(message: str, **fields: object) -> None:
    """A progress or status line on stderr (not with --quiet)."""
    if quiet():
        return
    if json_logs():
        print(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "level": "info",
                          "logger": "telemetry-sanitizer", "message": message, **fields}, ensure_ascii=False),
              file=sys.stderr, flush=True)
    else:
        print(message, file=sys.stderr, flush=True)
