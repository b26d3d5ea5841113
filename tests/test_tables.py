"""Layout helpers and table configuration of the Delta output (pipeline/tables.py)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from pipeline import tables
from schemas.policy import load_policy
from transforms.pseudonym import key_fingerprint


def test_key_fingerprint_is_keyed_and_never_the_key():
    key = b"k" * 32
    fp = key_fingerprint(key)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert fp == hmac.new(key, b"telemetry-sanitizer/key-fingerprint/v1", hashlib.sha256).hexdigest()[:16]
    assert fp != key_fingerprint(b"j" * 32)
    assert key.hex()[:16] != fp and hashlib.sha256(key).hexdigest()[:16] != fp


def test_table_names_and_layout():
    policy = load_policy()
    names = tables.table_names(policy)
    assert names[0] == "_quarantine"
    assert set(policy.types) <= set(names)
    locking = {t for t, tp in policy.types.items() if tp.on_expiry == "lock"}
    assert locking and {f"_locked/{t}" for t in locking} <= set(names)
    assert not {f"_locked/{t}" for t in set(policy.types) - locking} & set(names)
    assert tables.table_kind("_locked/dns") == "locked" and tables.record_type_of("_locked/dns") == "dns"
    assert tables.table_kind("_quarantine") == "quarantine" and tables.record_type_of("_quarantine") is None
    assert tables.partition_by("_quarantine") is None and tables.partition_by("dns") == ["user_region", "event_date"]
    assert tables.join("s3://bucket/out/", "_locked/dns") == "s3://bucket/out/_locked/dns"
    assert tables.join("/tmp/out", "dns") == "/tmp/out/dns"
    name = tables.data_file_name("20261202T000000Z-abcd", "ff00", 3)
    assert name.startswith("part-20261202T000000Z-abcd-") and name.endswith("-00003.parquet")
    some = sorted(policy.types)[0]
    schema = tables.table_schema(policy, some)
    assert schema.names[-2:] == ["user_region", "event_date"]


def _leaks(directory: Path, needle: bytes) -> list[str]:
    return [str(p) for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_table_config_keeps_pseudonyms_out_of_the_log_also_after_compaction(tmp_path):
    schema = pa.schema([("device_id_pseudonym", pa.string()), ("event_time", pa.timestamp("us", tz="UTC")),
                        ("command_line", pa.string()), ("user_region", pa.string()), ("event_date", pa.string())])
    uri = str(tmp_path / "t")
    DeltaTable.create(uri, schema, partition_by=tables.PARTITION_BY, configuration=tables.DATA_TABLE_CONFIG)
    for i in range(3):
        write_deltalake(uri, pa.table({"device_id_pseudonym": [f"PSEUDO{i:026d}"],
                                       "event_time": [datetime(2026, 1, 1, tzinfo=UTC)],
                                       "command_line": [f"FREETEXT{i}"], "user_region": ["EEA"],
                                       "event_date": ["2026-01-01"]}, schema=schema), mode="append")
    dt = DeltaTable(uri)
    assert dt.optimize.compact()["numFilesRemoved"] == 3
    log = tmp_path / "t" / "_delta_log"
    assert _leaks(log, b"PSEUDO") == [] and _leaks(log, b"FREETEXT") == []
    assert b"event_time" in b"".join(p.read_bytes() for p in log.glob("*.json"))  # stats still there for time


def test_list_tables_finds_data_locked_and_quarantine(tmp_path):
    policy = load_policy()
    some = sorted(policy.types)[0]
    for name in ("_quarantine", some, tables.locked_name(some)):
        DeltaTable.create(tables.join(str(tmp_path), name), tables.table_schema(policy, name),
                          partition_by=tables.partition_by(name), configuration=tables.table_config(name))
    (tmp_path / "_reports").mkdir()
    (tmp_path / "not_a_table").mkdir()
    assert tables.list_tables(str(tmp_path)) == sorted(["_quarantine", some, f"_locked/{some}"])
    assert tables.list_tables(str(tmp_path / "missing")) == []


def test_parquet_footers_hold_statistics_only_for_the_stats_columns(tmp_path):
    """Data and quarantine files carry min/max only where the Delta statistics do: a footer does
    not copy a pseudonym or free text either."""
    import pyarrow.parquet as pq

    from pipeline.io import write_parquet

    data = pa.table({"device_id_pseudonym": [f"PSEUDO{i:026d}" for i in range(40)],
                     "event_time": pa.array([datetime(2026, 1, 1, tzinfo=UTC)] * 40, pa.timestamp("us", tz="UTC")),
                     "command_line": [f"FREETEXT{i}" for i in range(40)]})
    quarantine = pa.table({"line_number": list(range(3)), "line_bytes": [10, 20, 30], "excerpt": ["EXCERPT"] * 3})
    for table, kept in ((data, {"event_time"}), (quarantine, {"line_number", "line_bytes"})):
        path = str(tmp_path / "f.parquet")
        write_parquet(table, path)
        group = pq.ParquetFile(path).metadata.row_group(0)
        with_stats = {group.column(i).path_in_schema for i in range(group.num_columns)
                      if group.column(i).statistics is not None and group.column(i).statistics.has_min_max}
        assert with_stats == kept
