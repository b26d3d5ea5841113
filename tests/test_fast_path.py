"""The fast path (`sanitize_lines`) gives exactly what the plain reference path gives.

`transforms.reference` applies the same rules one record at a time with none
of the fast path's shortcuts (pre-checks, memos kept across batches, whole
columns at once). Tables, quarantine rows and every count must be equal, on the
bundled dirty sample and on freshly generated dirty data.
"""

from __future__ import annotations

import copy
import gzip
from pathlib import Path

import orjson
import pytest

from pipeline.sample import generate_lines
from transforms.records import SanitizeContext, sanitize_lines
from transforms.reference import sanitize_lines_reference

SAMPLE = Path(__file__).resolve().parent.parent / "sample" / "telemetry-sample.ndjson"
SAMPLE_GZ = SAMPLE.with_name("telemetry-sample-2.ndjson.gz")


def normalised(result):
    tables = {key: table.sort_by("_origin") for key, table in result.outputs.items()}
    quarantine = None
    if result.quarantine is not None:
        quarantine = result.quarantine.sort_by([("line_number", "ascending")])
    return tables, quarantine, +result.stats


def assert_same(fast, reference) -> None:
    f_tables, f_quarantine, f_stats = normalised(fast)
    r_tables, r_quarantine, r_stats = normalised(reference)
    assert f_stats == r_stats
    assert sorted(f_tables) == sorted(r_tables)
    for key, table in f_tables.items():
        assert table.schema.equals(r_tables[key].schema, check_metadata=True), key
        assert table.equals(r_tables[key]), key
    if r_quarantine is None:
        assert f_quarantine is None
    else:
        assert f_quarantine.equals(r_quarantine)


def compare_in_batches(policy, key, as_of, lines: list[bytes], batch: int) -> int:
    """Both paths over the same batches; fresh contexts, so the fast path's memos start empty
    and are then shared across batches as in a run. Returns the rows written."""
    fast_ctx = SanitizeContext(policy=policy, key=key, as_of=as_of)
    ref_ctx = SanitizeContext(policy=policy, key=key, as_of=as_of)
    rows = 0
    for start in range(0, len(lines), batch):
        numbered = list(enumerate(lines[start:start + batch], start + 1))
        fast = sanitize_lines(fast_ctx, "in.ndjson", 3, numbered)
        assert_same(fast, sanitize_lines_reference(ref_ctx, "in.ndjson", 3, numbered))
        rows += sum(t.num_rows for t in fast.outputs.values())
    return rows


def test_bundled_dirty_sample_is_identical(ctx):
    lines = SAMPLE.read_bytes().split(b"\n") + gzip.decompress(SAMPLE_GZ.read_bytes()).split(b"\n")
    rows = compare_in_batches(ctx.policy, ctx.key, ctx.as_of, lines, batch=1000)
    assert rows > 5000  # the comparison covered real output, not just rejects


@pytest.mark.parametrize("seed", [11, 12])
def test_generated_dirty_data_is_identical(ctx, seed):
    lines = list(generate_lines(8000, seed=seed, dirty=True, days=400))
    # 2500-line batches: large enough that the "values never repeat" switch turns on
    compare_in_batches(ctx.policy, ctx.key, ctx.as_of, lines, batch=2500)


BASE = {
    "schema_version": 1, "type": "os_event", "event_id": "e-1", "device_id": "D-1", "ts": "2026-11-20T10:04:05Z",
    "country": "NL", "consent": {"eula": True, "ksn": True},
    "data": {"event_kind": "process_start", "image": "C:\\x.exe", "command_line": "x.exe /all"},
}


def record(i: int, **data) -> bytes:
    rec = copy.deepcopy(BASE)
    rec["event_id"] = f"e-{i}"
    rec["data"].update(data)
    return orjson.dumps(rec)


def make_fragile(monkeypatch, cls: type, method: str) -> None:
    """Make a transform method raise for any value containing "boom" (a rule bug)."""
    real = getattr(cls, method)

    def fragile(self, value, *args, **kwargs):
        if "boom" in value:
            raise RuntimeError("rule bug")
        return real(self, value, *args, **kwargs)

    monkeypatch.setattr(cls, method, fragile)


def test_a_failing_transform_quarantines_every_record_with_that_value(ctx, monkeypatch):
    """The memo keeps results across batches; a value whose transform raised must cost
    its record every time it comes back, never be written with a null in its place."""
    fresh = SanitizeContext(policy=ctx.policy, key=ctx.key, as_of=ctx.as_of)
    make_fragile(monkeypatch, fresh.scrubber.__class__, "__call__")
    for batch in ([record(1, command_line="run boom"), record(2, command_line="run boom"), record(3)],
                  [record(4, command_line="run boom"), record(5)]):
        result = sanitize_lines(fresh, "f", 0, list(enumerate(batch, 1)))
        reasons = result.quarantine.column("reason").to_pylist()
        assert reasons == ["transform_error"] * (len(batch) - 1)
        assert result.stats["quarantined/transform_error"] == len(batch) - 1
        assert sum(t.num_rows for t in result.outputs.values()) == 1


def test_equal_numbers_of_different_types_keep_their_own_text(ctx):
    """1 and 1.0 are equal dictionary keys; a text field must still show each as sent."""
    base = {**orjson.loads(record(0)), "type": "detection", "data": {"threat_name": "x"}}
    lines = [orjson.dumps({**base, "event_id": f"e-{i}", "data": {"threat_name": v}})
             for i, v in enumerate([1, 1.0, "1", 1], 1)]
    result = sanitize_lines(ctx, "f", 0, list(enumerate(lines, 1)))
    [table] = result.outputs.values()
    assert table.sort_by("_origin").column("threat_name").to_pylist() == ["1", "1.0", "1", "1"]
    assert_same(result, sanitize_lines_reference(ctx, "f", 0, list(enumerate(lines, 1))))


def test_type_only_checks_accept_only_what_check_accepts():
    """fast_validate tests some fields by type alone; `check` is the authority for each, so
    every type the fast path lets through must pass `check` (anything else goes to validate())."""
    from schemas.policy import FieldRule
    from transforms.fields import FieldTypeError, check
    from transforms.records import _SIMPLE_TYPES, _STRING_CHECKED

    samples = [0, 7, -3, 2**63 - 1, 1.5, 2.0, -0.0, True, False, "x", "", "a" * 300, [], {}, [1], {"a": 1}]
    transforms = {**_SIMPLE_TYPES, **dict.fromkeys(_STRING_CHECKED, frozenset({str}))}
    for name, types in transforms.items():
        rule = FieldRule("f", name, values=("x",) if name == "enum" else ())
        for value in samples:
            if type(value) in types:
                try:
                    check(rule, value)
                except FieldTypeError as exc:
                    raise AssertionError(f"{name} fast path accepts {value!r}, check does not: {exc}") from None
