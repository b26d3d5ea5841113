"""Run the sanitizer on the hostile corpus and report every planted value that survives anywhere in its output.

    python bench/hostile_scan.py [--report FILE] [--workdir DIR] [--tree CHECKOUT] [--seed N]

Generates the corpus (bench/hostile_corpus.py), runs `python -m pipeline` on it as an operator would
(the bundled development key, --as-of 2026-11-25), then reads EVERYTHING under the output: every Parquet
file (tables, _locked, _quarantine; values, schema metadata and column statistics), every other file (Delta
logs, reports) and the run's stdout/stderr. A planted value leaks when a fragment of one of its cores
(8 characters holding a letter past `f`; 12 characters for cores made of hex digits, digits and
punctuation) appears in any of them, compared case-insensitively after NFKC and with zero-width / bidi /
soft-hyphen characters removed, also after percent-decoding. A hit in a table row or quarantine row is
attributed to the plant of that row's input line (event_id / line_number) when it has one.
Writes a Markdown report (planted vs leaked per class and kind, one example per leaking template, per field).
Exit 0 when nothing leaked, 1 when something did, 2 when the run itself failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pyarrow.parquet as pq

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

from hostile_corpus import AS_OF, norm, write_corpus  # noqa: E402

HEX_PUNCT = set("0123456789abcdef-:._ /+=")
Location = tuple[str, str, str]  # (file relative to the output, column or "", row key)


def grams(core: str) -> tuple[int, list[str]]:
    """(fragment length, fragments) searched for one core; none when the core is too short to be distinctive."""
    if any(c.isalpha() and c not in "abcdef" for c in core):
        if len(core) < 8:
            return 8, []
        out = [core[i:i + 8] for i in range(len(core) - 7)]
        return 8, [g for g in out if any(c.isalpha() and c not in "abcdef" for c in g)]
    if len(core) < 10:
        return 0, []
    size = min(len(core), 12)
    return size, [core[i:i + size] for i in range(len(core) - size + 1)]


class Index:
    """Fragment -> plants, and the searched fragment lengths. A fragment that the plant's own template
    words hold (its value with the planted cores cut out: `fetch origin` of one template in the value
    that holds all of them shares `h origin` with the core `Kurdish origin`) is no leak of that plant."""

    def __init__(self, plants: list[dict[str, Any]]) -> None:
        self.by_gram: dict[str, set[int]] = defaultdict(set)
        self.sizes: set[int] = set()
        self.unsearchable: list[int] = []
        self.decor: dict[int, str] = {}
        for pid, plant in enumerate(plants):
            decor = norm(plant.get("value", ""))
            for core in plant["cores"]:
                decor = decor.replace(core["core"], "\n")
            self.decor[pid] = decor
            found = False
            for core in plant["cores"]:
                size, frags = grams(core["core"])
                if frags:
                    found = True
                    self.sizes.add(size)
                    for g in frags:
                        self.by_gram[g].add(pid)
            if not found:
                self.unsearchable.append(pid)

    def search(self, text: str) -> dict[int, str]:
        """plant id -> first matching fragment, over the normalised text and its percent-decoded form."""
        hits: dict[int, str] = {}
        variants = {norm(text)}
        if "%" in text:
            variants.add(norm(unquote(text)))
        for n in variants:
            for size in self.sizes:
                for i in range(len(n) - size + 1):
                    frag = n[i:i + size]
                    pids = self.by_gram.get(frag)
                    if pids:
                        for pid in pids:
                            if pid not in hits and frag not in self.decor[pid]:
                                hits[pid] = frag
        return hits


def _strings(value: Any) -> Iterator[str]:
    if value is None:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes):
        yield value.decode("utf-8", "replace")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)
    else:
        yield str(value)


def parquet_strings(path: str) -> Iterator[tuple[str, str, str]]:
    """(column, row key, text) of every value, schema metadata entry and column statistic of one Parquet file."""
    pf = pq.ParquetFile(path)
    meta = pf.metadata
    for key, val in (pf.schema_arrow.metadata or {}).items():
        yield "<schema metadata>", "", key.decode("utf-8", "replace") + "=" + val.decode("utf-8", "replace")
    for rg in range(meta.num_row_groups):
        group = meta.row_group(rg)
        for c in range(group.num_columns):
            col = group.column(c)
            stats = col.statistics
            if stats is not None and stats.has_min_max:
                yield f"<stats {col.path_in_schema}>", "", f"{stats.min} {stats.max}"
    table = pf.read()
    names = table.column_names
    data = {name: table.column(name).to_pylist() for name in names}
    keys = [""] * table.num_rows
    if "event_time" in data:  # the corpus gives every line its own event time
        keys = ["ts=" + v.strftime("%Y-%m-%dT%H:%M:%SZ") if v is not None else "" for v in data["event_time"]]
    elif "line_number" in data:
        keys = ["line_number=" + str(v) for v in data["line_number"]]
    for name in names:
        for row, value in enumerate(data[name]):
            for text in _strings(value):
                yield name, keys[row], text


def file_strings(path: str) -> Iterator[tuple[str, str, str]]:
    """(column, row key, text) of a non-Parquet file: JSON values and keys where it parses, else the raw text."""
    with open(path, "rb") as fh:
        raw = fh.read()
    text = raw.decode("utf-8", "replace")
    try:
        docs = [json.loads(text)]
    except ValueError:
        try:
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            docs = []
    for doc in docs:
        for s in _strings(doc):
            yield "<json>", "", s
    yield "<raw>", "", text


def scan_output(out_dir: str, log_files: list[str], index: Index) -> dict[int, list[tuple[Location, str, str]]]:
    """plant id -> [(location, matching fragment, surviving text)]."""
    seen: dict[str, list[Location]] = defaultdict(list)
    paths = []
    for base, _, files in os.walk(out_dir):
        paths += [os.path.join(base, f) for f in files]
    for path in sorted(paths) + log_files:
        rel = os.path.relpath(path, out_dir) if path.startswith(out_dir) else "log:" + os.path.basename(path)
        rows = parquet_strings(path) if path.endswith(".parquet") else file_strings(path)
        for column, key, text in rows:
            if len(text) >= 8:
                locs = seen[text]
                if len(locs) < 4:
                    locs.append((rel, column, key))
    hits: dict[int, list[tuple[Location, str, str]]] = defaultdict(list)
    for text, locs in seen.items():
        for pid, frag in index.search(text).items():
            for loc in locs:
                hits[pid].append((loc, frag, text))
    return hits


def attribute(hits: dict[int, list[tuple[Location, str, str]]], plants: list[dict[str, Any]], index: Index
              ) -> tuple[dict[int, list[tuple[Location, str, str]]], dict[tuple[Location, str], str]]:
    """(leaks, ambiguous hits): a row hit counts only for the plant of that row's input line; a hit outside
    planted rows counts for its plant when the fragment belongs to one plant, else it is listed as ambiguous."""
    owners = index.by_gram
    ambiguous: dict[tuple[Location, str], str] = {}
    by_ts = {p["ts"]: p["line"] for p in plants if p.get("ts")}
    lines_with_plants = {p["line"] for p in plants}
    out: dict[int, list[tuple[Location, str, str]]] = defaultdict(list)
    for pid, items in hits.items():
        plant = plants[pid]
        for loc, frag, text in items:
            key = loc[2]
            line = None
            if key.startswith("ts="):
                line = by_ts.get(key[3:])
            elif key.startswith("line_number="):
                line = int(key[len("line_number="):])
            if line is not None and line in lines_with_plants and line != plant["line"]:
                continue
            if line is None and len(owners[frag]) > 1:
                # not a row of a planted line (statistics, metadata, report, log) and the fragment is shared
                # (a special-category phrase): which plant it came from is unknown, keep it aside
                ambiguous[(loc, frag)] = text
                continue
            out[pid].append((loc, frag, text))
    return out, ambiguous


def _cell(text: str, frag: str, width: int = 110) -> str:
    n = norm(text)
    at = max(0, n.find(frag) - 30)
    shown = n[at:at + width] if len(n) > width else n
    for raw, shown_as in (("\n", "⏎"), ("\r", "␍"), ("\t", "⇥"), ("|", "¦"), ("`", "'")):
        shown = shown.replace(raw, shown_as)
    shown = "".join(ch if ch.isprintable() or ch == " " else f"\\x{ord(ch):02x}" for ch in shown)
    return "`" + shown + "`"


def _label(plant: dict[str, Any]) -> str:
    """`type.field` for a data field, `type.envelope.field` for an envelope field."""
    field = plant["field"]
    return f"{plant['type']}.{field[5:]}" if field.startswith("data.") else f"{plant['type']}.envelope.{field}"


def previous_counts(path: str) -> dict[str, str]:
    """class -> "leaked/planted" from the class table of an earlier report at `path` (empty when none)."""
    if not os.path.exists(path):
        return {}
    out = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("## "):
                break
            if len(cells) >= 4 and cells[1].isdigit() and cells[2].isdigit():
                out[cells[0]] = f"{cells[2]}/{cells[1]}"
    return out


def report(plants: list[dict[str, Any]], leaks: dict[int, list[tuple[Location, str, str]]], header: list[str],
           unsearchable: list[int], ambiguous: dict[tuple[Location, str], str],
           previous: dict[str, str] | None = None) -> str:
    """The Markdown findings."""
    out = list(header)
    planted_c, leaked_c = Counter(p["class"] for p in plants), Counter[str]()
    kind_planted: Counter[str] = Counter()
    kind_leaked: Counter[str] = Counter()
    for pid, p in enumerate(plants):
        kinds = {c["kind"] for c in p["cores"]}
        for k in kinds:
            kind_planted[k] += 1
        if pid in leaks:
            leaked_c[p["class"]] += 1
            leaked_kinds = set()
            for _, frag, _ in leaks[pid]:
                for c in p["cores"]:
                    if frag in c["core"]:
                        leaked_kinds.add(c["kind"])
            for k in leaked_kinds:
                kind_leaked[k] += 1
    total_leaked = sum(leaked_c.values())
    out += ["", f"**{total_leaked} of {len(plants)} planted values leaked** "
                f"({len({p['template'] for i, p in enumerate(plants) if i in leaks})} templates).", "",
            "| class | planted | leaked | % | previous report (leaked/planted) |", "|---|---:|---:|---:|---:|"]
    previous = previous or {}
    for cls in sorted(planted_c):
        pl, lk = planted_c[cls], leaked_c[cls]
        out.append(f"| {cls} | {pl} | {lk} | {100 * lk / pl:.1f} | {previous.get(cls, '')} |")
    plain_leaks = {(p["template"], p["type"], p["field"]) for pid, p in enumerate(plants)
                   if pid in leaks and p["class"] != "parser_trick"}
    tricks = [pid for pid, p in enumerate(plants) if p["class"] == "parser_trick" and p.get("planted_template") != "*"]
    structural = [pid for pid in tricks if pid in leaks and (
        plants[pid].get("planted_template"), plants[pid]["type"], plants[pid]["field"]) not in plain_leaks]
    name = "parser_trick (one template each): leaks not seen for its template in a plain record"
    out.append(f"| {name} | {len(tricks)} | {len(structural)} | {100 * len(structural) / max(1, len(tricks)):.1f} | "
               f"{previous.get(name, '')} |")
    out += ["", "By kind of core (a plant counts once per kind it holds): ", "",
            "| kind | planted | leaked |", "|---|---:|---:|"]
    out += [f"| {k} | {kind_planted[k]} | {kind_leaked[k]} |" for k in sorted(kind_planted)]

    by_tpl: dict[tuple[str, str], list[int]] = defaultdict(list)
    for pid, p in enumerate(plants):
        by_tpl[(p["class"], p["template"])].append(pid)
    out += ["", "## Leaking templates", "",
            "One example per template: the field it was planted in, where it survived (file / column), what survived "
            "(normalised output text around the fragment).", "",
            "| class | template | leaked/planted | fields that leak | example field | survived in | survived text |",
            "|---|---|---:|---|---|---|---|"]
    for (cls, tpl), pids in sorted(by_tpl.items()):
        leaking = [pid for pid in pids if pid in leaks]
        if not leaking:
            continue
        fields = sorted({_label(plants[pid]) for pid in leaking})
        shown = ", ".join(fields[:6]) + (f" (+{len(fields) - 6})" if len(fields) > 6 else "")
        ex = leaking[0]
        loc, frag, text = min(leaks[ex], key=lambda item: item[0][1].startswith("<"))  # a row value first
        where = loc[0].split("/user_region=")[0].split("/part-")[0] + (f" / {loc[1]}" if loc[1] else "")
        planted_in = _label(plants[ex])
        out.append(f"| {cls} | {tpl} | {len(leaking)}/{len(pids)} | {shown} | {planted_in} | {where} | "
                   f"{_cell(text, frag)} |")

    found_in: Counter[str] = Counter()
    for items in leaks.values():
        for table, column in {(i[0][0].removeprefix("_locked/").split("/")[0], i[0][1]) for i in items}:
            found_in[f"{table} / {column}" if column else table] += 1
    out += ["", "## Where survivals were found (plants per output file / column)", "",
            "| output | plants |", "|---|---:|"]
    out += [f"| {w} | {n} |" for w, n in found_in.most_common(40)]

    by_field: dict[str, list[int]] = defaultdict(list)
    for pid, p in enumerate(plants):
        if p["class"] != "parser_trick":
            by_field[_label(p)].append(pid)
    out += ["", "## Per field (parser tricks excluded)", "", "| field | planted | leaked |", "|---|---:|---:|"]
    for field, pids in sorted(by_field.items()):
        lk = sum(pid in leaks for pid in pids)
        if lk:
            out.append(f"| {field} | {len(pids)} | {lk} |")
    clean = [f for f, pids in sorted(by_field.items()) if not any(pid in leaks for pid in pids)]
    out += ["", f"Fields with no leak ({len(clean)}): " + ", ".join(clean)]
    outside = [(loc, frag, text) for (loc, frag), text in ambiguous.items() if not loc[1].startswith("<stats")]
    stats = len(ambiguous) - len(outside)
    out += ["", f"Shared fragments (special-category phrases) found outside planted rows: {stats} in Parquet column "
                f"statistics (the same values are in the rows, counted above), {len(outside)} elsewhere"
                + (":" if outside else ".")]
    for loc, frag, text in outside[:20]:
        out.append(f"- {loc[0]} {loc[1]}: {_cell(text, frag)}")
    if unsearchable:
        out += ["", f"{len(unsearchable)} planted values have no core long enough to search for (not counted)."]
    return "\n".join(out) + "\n"


def run_pipeline(tree: str, corpus: str, out_dir: str, logs: str, extra: list[str]) -> tuple[int, float, list[str]]:
    """Run the CLI as an operator would; returns (exit code, seconds, log file paths)."""
    python = os.path.join(tree, ".venv", "bin", "python")
    if not os.path.exists(python):
        python = sys.executable
    os.makedirs(logs, exist_ok=True)
    stdout, stderr = os.path.join(logs, "stdout.txt"), os.path.join(logs, "stderr.txt")
    cmd = [python, "-m", "pipeline", "--input", corpus, "--output", out_dir,
           "--pseudonym-key-file", os.path.join(tree, "sample", "dev-pseudonym.key"), "--as-of", AS_OF, *extra]
    t0 = time.monotonic()
    with open(stdout, "wb") as so, open(stderr, "wb") as se:
        code = subprocess.run(cmd, cwd=tree, stdout=so, stderr=se, check=False).returncode
    return code, time.monotonic() - t0, [stdout, stderr]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--report", default=None, help="Markdown findings (default: WORKDIR/HOSTILE_LEAKS.md)")
    ap.add_argument("--workdir", default=None, help="keep corpus, output and logs here (default: a temp dir)")
    ap.add_argument("--tree", default=ROOT, help="checkout whose pipeline is run (default: this one)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--pipeline-arg", action="append", default=[],
                    help="extra argument for the run, repeatable (e.g. --pipeline-arg=--log-level=DEBUG)")
    args = ap.parse_args(argv)
    work = args.workdir or tempfile.mkdtemp(prefix="hostile-")
    report_path = args.report or os.path.join(work, "HOSTILE_LEAKS.md")
    corpus, man_path = write_corpus(os.path.join(work, "corpus"), args.seed)
    with open(man_path, encoding="utf-8") as fh:
        plants = json.load(fh)["plants"]
    out_dir = os.path.join(work, "out")
    shutil.rmtree(out_dir, ignore_errors=True)  # files of an earlier run stay on disk and would be scanned too
    code, secs, logs = run_pipeline(args.tree, corpus, out_dir, os.path.join(work, "logs"), args.pipeline_arg)
    with open(logs[0], encoding="utf-8", errors="replace") as fh:
        summary = fh.read().strip().splitlines()
    commit = subprocess.run(["git", "-C", args.tree, "log", "-1", "--format=%h %s"], capture_output=True,
                            text=True, check=False).stdout.strip()
    index = Index(plants)
    t0 = time.monotonic()
    leaks, ambiguous = attribute(scan_output(out_dir, logs, index), plants, index)
    scan_secs = time.monotonic() - t0
    header = ["# Hostile corpus: planted values that survive the sanitizer", "",
              f"Generated by `python bench/hostile_scan.py` at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
              f"tree `{args.tree}` at `{commit[:100]}`; seed {args.seed}"
              + (f"; extra arguments `{' '.join(args.pipeline_arg)}`." if args.pipeline_arg else "."),
              f"Pipeline exit code {code} in {secs:.0f}s; scan {scan_secs:.0f}s. Summary: "
              f"`{summary[0] if summary else '(no stdout)'}`"]
    header += ["", "```"] + summary[1:6] + ["```", "",
               "Classes: provider_token (tokens in their providers' shapes), tool_command_line (credentials on "
               "command lines and in tool output), key_value_header (config, headers, key=value in many spellings and "
               "languages), url_userinfo (user info and tokens in URLs of odd forms), unicode_trick (zero-width, "
               "fullwidth, homoglyph, bidi spellings), special_category_kv (a special-category value after its key, "
               "several languages), special_category_prose (the same values in a sentence, no key), raw_identifier "
               "(e-mail, SID, MAC, serials, IMEI, account names in profile paths), parser_trick (a value carried by "
               "the line's structure; counted where it was planted, see the template column). Every template is "
               "planted once in every kept string field of every type (data) and once per envelope string field."]
    text = report(plants, leaks, header, index.unsearchable, ambiguous, previous_counts(report_path))
    with open(report_path, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(text.split("## Leaking templates")[0])
    print(f"report: {report_path}; work dir: {work}")
    if code not in (0, 3):
        return 2
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
