"""Consent withdrawals: "opt-in statements can be withdrawn at any time" (POLICY.md promise 4).

A withdrawal names a device, a consent basis and a time. A record of that
device that needs that basis and is dated at or after the withdrawal is
dropped as `consent_withdrawn` (choice: the instant of withdrawal already
counts as withdrawn). Devices are held as 64-bit keyed hashes, never raw.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import orjson

from schemas.policy import CONSENT_FLAGS
from transforms.fields import FieldTypeError, parse_rfc3339

FIELDS = ("device_id", "basis", "withdrawn_at")


class WithdrawalsError(ValueError):
    """A withdrawals file that cannot be used; names file, line and problem."""


def _rows(path: str, text: str) -> Iterator[tuple[int, dict]]:
    stripped = text.lstrip("\ufeff").lstrip()
    if path.endswith(".csv") or (stripped and not stripped.startswith("{")):
        reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
        missing = [f for f in FIELDS if f not in (reader.fieldnames or [])]
        if missing:
            raise WithdrawalsError(f"{path}:1: CSV header must have columns {', '.join(FIELDS)}; missing "
                                   + ", ".join(missing))
        for row in reader:
            yield reader.line_num, row
        return
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise WithdrawalsError(f"{path}:{no}: not a JSON object") from None
        if not isinstance(row, dict):
            raise WithdrawalsError(f"{path}:{no}: not a JSON object")
        yield no, row


def load_withdrawals(path: str, device_hash: Callable[[str], int]) -> dict[int, dict[str, int]]:
    """{device hash: {basis: earliest withdrawal, in microseconds since the epoch}}."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise WithdrawalsError(f"{path}: cannot read withdrawals file: {exc.__class__.__name__}") from None
    out: dict[int, dict[str, int]] = {}
    for no, row in _rows(path, text):
        device, basis, when = (row.get(f) for f in FIELDS)
        if not isinstance(device, str) or not device.strip():
            raise WithdrawalsError(f"{path}:{no}: device_id must be a non-empty string")
        if basis not in CONSENT_FLAGS:
            raise WithdrawalsError(f"{path}:{no}: basis must be one of {', '.join(CONSENT_FLAGS)}")
        try:
            at = micros(parse_rfc3339(when))
        except FieldTypeError as exc:
            raise WithdrawalsError(f"{path}:{no}: withdrawn_at: {exc}") from None
        entry = out.setdefault(device_hash(device), {})
        entry[basis] = min(at, entry.get(basis, at))
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(dt: datetime) -> int:
    """Microseconds since the epoch, exact on both sides of it (as Arrow's timestamp[us] holds them)."""
    return (dt - _EPOCH) // timedelta(microseconds=1)


def withdrawn_basis(entry: dict[str, int] | None, needed: tuple[str, ...], event_micros: int) -> str | None:
    """The first needed basis withdrawn at or before the event time, if any."""
    if entry:
        for basis in needed:
            at = entry.get(basis)
            if at is not None and event_micros >= at:
                return basis
    return None


def earliest_withdrawal(entry: dict[str, int] | None, needed: tuple[str, ...]) -> int | None:
    """When a device withdrew the first of the needed bases (microseconds), if it did: a record
    at or after it is withdrawn, exactly when `withdrawn_basis` names a basis. For callers
    that compare many records of one device at once."""
    times = [entry[basis] for basis in needed if basis in entry] if entry else []
    return min(times) if times else None
