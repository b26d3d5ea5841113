"""The independent hostile corpus (bench/hostile_corpus.py) leaks nothing through the sanitizer.

`bench/hostile_scan.py` runs the CLI on the whole corpus and searches every output file; this is
the in-process slice the suite can afford: one planted record in three (every class, template and
field still appear) and every parser trick, through the columnar path, every string of each output and quarantine row
searched for the fragments of the value planted on that row's input line (not those the
template's own words hold: `medication=` is no leak of `medicatie`). Parser tricks are read by
the columnar reader here; what only the file reader sees (a line past the length limit) is the
scanner's. No template is left out.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime

import pyarrow as pa

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import hostile_corpus  # noqa: E402
import hostile_scan  # noqa: E402

from schemas.policy import load_policy  # noqa: E402
from transforms.columnar import sanitize_columnar  # noqa: E402
from transforms.records import ORIGIN_LINE_BITS, SanitizeContext  # noqa: E402

LINE_MASK = (1 << ORIGIN_LINE_BITS) - 1


def _row_strings(table: pa.Table) -> dict[int, list[str]]:
    """Line number -> the strings of its row (quarantine rows carry the number, output rows `_origin`)."""
    out: dict[int, list[str]] = {}
    key = "line_number" if "line_number" in table.column_names else "_origin"
    rows = table.to_pylist()
    for row in rows:
        line = row[key] & LINE_MASK if key == "_origin" else row[key]
        out.setdefault(line, []).extend(hostile_scan._strings([v for k, v in row.items() if k != "_key"]))
    return out


def test_the_hostile_corpus_leaks_nothing():
    lines, manifest = hostile_corpus.build(seed=13)
    plants = [m for i, m in enumerate(manifest) if m["class"] == "parser_trick" or i % 3 == 0]
    by_line = {m["line"]: pid for pid, m in enumerate(plants)}
    index = hostile_scan.Index(plants)
    ctx = SanitizeContext(policy=load_policy(), key=b"hostile-corpus-test-key-0123456789ab",
                          as_of=datetime.fromisoformat(hostile_corpus.AS_OF.replace("Z", "+00:00")))
    numbered = [(m["line"], lines[m["line"] - 1]) for m in plants]
    rows: dict[int, list[str]] = {}
    for start in range(0, len(numbered), 2000):
        result = sanitize_columnar(ctx, "hostile.ndjson", 0, numbered[start:start + 2000])
        for table in [*result.outputs.values(), *([result.quarantine] if result.quarantine is not None else [])]:
            for line, strings in _row_strings(table).items():
                rows.setdefault(line, []).extend(strings)
    assert len(rows) > 0.9 * len(plants)            # nearly every planted record is written
    leaked = []
    for line, strings in rows.items():
        pid = by_line.get(line)
        if pid is None:
            continue
        frag = index.search("\n".join(strings)).get(pid)
        if frag is not None:
            plant = plants[pid]
            decor = hostile_corpus.norm(plant["value"])
            for core in plant["cores"]:
                decor = decor.replace(core["core"], "\n")
            if frag in decor:
                continue    # the template's own words (`medication=` shares `medicati` with `medicatie`)
            leaked.append(f"{plant['template']} in {plant['type']}.{plant['field']}")
    assert leaked == []
