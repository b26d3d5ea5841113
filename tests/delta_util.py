"""Helpers of the erase and maintain tests: Delta output of a real run, and a scan of every byte."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import write_deltalake

from pipeline import tables


def to_delta(out: Path) -> None:
    """Make each table directory of a run's output a Delta table in the shared layout (a no-op for a
    run that already writes Delta tables)."""
    dirs = [p for p in sorted(out.iterdir()) if p.is_dir() and p.name not in (tables.REPORTS, tables.LOCKED)]
    if (out / tables.LOCKED).is_dir():
        dirs += sorted(p for p in (out / tables.LOCKED).iterdir() if p.is_dir())
    for d in dirs:
        if (d / tables.DELTA_LOG).is_dir():
            continue
        name = str(d.relative_to(out))
        part = tables.partition_by(name)
        fmt = ds.partitioning(pa.schema([(c, pa.string()) for c in part]), flavor="hive") if part else None
        data = ds.dataset(d, format="parquet", partitioning=fmt).to_table().replace_schema_metadata(None)
        tmp = d.with_name(d.name + ".to-delta")
        write_deltalake(str(tmp), data, partition_by=part, configuration=tables.table_config(name))
        shutil.rmtree(d)
        tmp.rename(d)


def _decoded(path: Path) -> str:
    try:
        return str(pq.read_table(path).to_pylist())
    except Exception:
        return ""


def leaks(root: Path, needles: list[str]) -> list[str]:
    """Files anywhere under `root` (data files, table logs, reports, logs, leftovers of every kind)
    holding one of `needles` in their bytes, or in the decoded values of a Parquet file (its pages
    are compressed)."""
    raw = [n.encode() for n in needles]
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        text = _decoded(path) if data[:4] == b"PAR1" else ""
        if any(n in data for n in raw) or any(n in text for n in needles):
            found.append(str(path.relative_to(root)))
    return found
