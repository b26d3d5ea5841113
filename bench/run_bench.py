"""Throughput and memory benchmark of the sanitizer against a stock-Beam peer and a no-policy floor.

    python bench/run_bench.py [--records 1000000] [--only a,b,c,d,e,f] [--keep] [--repeat 1]
    python bench/run_bench.py --sizes 100000,1000000,5000000 [--only a]

Variants, each run as its own subprocess on the same input file:

  (a) this pipeline, default runner (FnApiRunner, in-process):
      python -m pipeline --input F --output D --as-of ... --pseudonym-key-file sample/dev-pseudonym.key
  (b) the same with --runner=FnApiRunner --direct_num_workers=N --direct_running_mode=multi_processing
  (f) the same with --runner=DaskRunner (a LocalCluster of N single-threaded worker processes for the run)
  (c) bench/peer_stock_beam.py: the obvious per-element stock-Beam design, same policy code, same runner
  (d) bench/floor_arrow.py: parse + write zstd Parquet with no policy at all, plain Python, no Beam
  (e) bench/upper_bound.py: the pipeline's own reading machinery (screen, route by type, Arrow with
      the narrow schemas, bad lines isolated) and the writing its Delta output needs (rows split by
      partition, one Parquet file per partition and process, the tables opened at start and one
      commit per table), no policy, no Beam, in N processes: what this design could reach if the
      policy cost nothing

Wall time includes interpreter start-up. Peak RSS is the largest sum of VmRSS over the process
and all its descendants, sampled every 0.1 s (shared pages are counted once per process, so a
tree of forked or spawned workers is over- rather than under-stated). The input is generated
once per (size, seed, generator source) and cached under bench/.data/; it is read once before
the runs so every variant starts with the file in the page cache.

With --repeat N the variants run in N rounds (a b c d, b c d a, c d a b, ...): the machine's
speed drifts over minutes, and rounds let every variant meet the same drift. The table shows
each variant's median run, and as ratios the median of the ratios within each round (listed
under it).

With --sizes, only the scaling runs are done: each variant in --only (default: a) at every
size, to show records/s (linearity) and peak RSS (flatness) against input size.

Results are printed as Markdown and written to bench/results/latest.md (latest-sizes.md with
--sizes). Output directories live in a temporary directory removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

DATA_DIR = os.path.join(BENCH, ".data")
RESULTS_DIR = os.path.join(BENCH, "results")
AS_OF = "2026-11-25T00:00:00Z"
KEY_FILE = os.path.join("sample", "dev-pseudonym.key")
SAMPLE_EVERY = 0.1  # seconds between RSS samples
PY = sys.executable

LABELS = {
    "a": "(a) pipeline, FnApiRunner in-process (pinned: --direct_num_workers=1)",
    "b": "(b) pipeline, FnApiRunner multi_processing x{workers}",
    "c": "(c) stock Beam per-element peer",
    "d": "(d) floor: orjson/Arrow -> Parquet, no policy",
    "e": "(e) upper bound: the pipeline's reading and partitioned Delta writing, no policy, {workers} processes",
    "f": "(f) pipeline, DaskRunner on a LocalCluster of {workers} single-threaded worker processes",
}
PIPELINE_VARIANTS = ("a", "b", "f")


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, str]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                    break
    except OSError:
        pass

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "nproc": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "cpu": model,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "apache-beam": version("apache-beam"),
        "pyarrow": version("pyarrow"),
        "orjson": version("orjson"),
        "pandas": version("pandas"),
    }


# --------------------------------------------------------------------------- input data


def _generator_digest() -> str:
    with open(os.path.join(ROOT, "pipeline", "sample.py"), "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:10]


def source_fingerprint() -> str:
    """Short digest of the code and policy under test, to notice edits made while the benchmark ran."""
    digest = hashlib.sha256()
    for pattern in ("pipeline/*.py", "transforms/*.py", "schemas/*.py", "schemas/*.toml", "bench/*.py"):
        for path in sorted(glob.glob(os.path.join(ROOT, pattern))):
            if path.endswith(os.path.join("pipeline", "sample.py")):
                continue  # the generator: covered by the input cache key, not run by any variant
            digest.update(os.path.relpath(path, ROOT).encode())
            with open(path, "rb") as fh:
                digest.update(fh.read())
    return digest.hexdigest()[:12]


def fingerprint_line(before: str, after: str) -> str:
    if before == after:
        return f"- sources under test (pipeline/, transforms/, schemas/, bench/): fingerprint {before}, " \
               "unchanged during the run"
    return (f"- **WARNING: sources changed while the benchmark ran** (fingerprint {before} -> {after}); "
            "variants may have measured different code")


def ensure_input(n: int, seed: int) -> tuple[str, float | None]:
    """(path, generation seconds or None when cached) of the dirty sample of `n` lines.

    The cache key is n, seed and the generator's source, so a changed generator regenerates."""
    os.makedirs(DATA_DIR, exist_ok=True)
    path = os.path.join(DATA_DIR, f"telemetry-n{n}-seed{seed}-gen{_generator_digest()}.ndjson")
    if os.path.exists(path):
        return path, None
    from pipeline.sample import write_sample

    tmp = f"{path}.tmp-{os.getpid()}"
    started = time.perf_counter()
    try:
        write_sample(tmp, n, seed=seed, dirty=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    for stale in glob.glob(os.path.join(DATA_DIR, f"telemetry-n{n}-seed{seed}-gen*.ndjson")):
        if stale != path:  # made by an earlier version of the generator
            os.remove(stale)
    return path, time.perf_counter() - started


def warm_cache(path: str) -> None:
    with open(path, "rb", buffering=0) as fh:
        while fh.read(16 << 20):
            pass


# --------------------------------------------------------------------------- measuring


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss(root: int) -> tuple[int, int]:
    """(sum of VmRSS in KiB, number of processes) of `root` and all its descendants."""
    children = _children_map()
    todo, total, count = [root], 0, 0
    while todo:
        pid = todo.pop()
        total += _rss_kib(pid)
        count += 1
        todo.extend(children.get(pid, ()))
    return total, count


@dataclass
class Run:
    variant: str
    records: int
    wall: float
    peak_rss_kib: int
    max_procs: int
    cpu_user: float
    cpu_sys: float
    largest_rss_kib: int
    returncode: int
    out_dir: str
    stdout: str
    stderr_tail: str
    checks: dict = field(default_factory=dict)


def measure(variant: str, records: int, argv: list[str], out_dir: str, log_dir: str) -> Run:
    """Run `argv` from the repository root; wall time from fork to exit, tree RSS sampled meanwhile."""
    name = os.path.basename(out_dir)  # one log per run: out-<variant>[-<size>]-<round>
    out_path = os.path.join(log_dir, f"{name}.stdout")
    err_path = os.path.join(log_dir, f"{name}.stderr")
    peak = [0, 0]
    done = threading.Event()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err)

        def sample() -> None:
            while not done.is_set():
                rss, procs = tree_rss(proc.pid)
                peak[0] = max(peak[0], rss)
                peak[1] = max(peak[1], procs)
                done.wait(SAMPLE_EVERY)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    with open(out_path, encoding="utf-8", errors="replace") as fh:
        stdout = fh.read()
    with open(err_path, encoding="utf-8", errors="replace") as fh:
        stderr_tail = fh.read()[-3000:]
    # ru_maxrss: the largest single process (the child or a waited-for descendant), in KiB.
    return Run(variant, records, wall, peak[0], peak[1], usage.ru_utime, usage.ru_stime, usage.ru_maxrss,
               proc.returncode, out_dir, stdout, stderr_tail)


BURN = "x = 0\nfor i in range(25_000_000):\n    x += i"


def parallel_speedup(workers: int) -> float:
    """Throughput of `workers` CPU-bound processes at once relative to one alone (ideal: `workers`).

    A VM can list more CPUs than it can run at once; this shows how much parallel hardware (b) gets."""
    def burn(k: int) -> float:
        started = time.perf_counter()
        procs = [subprocess.Popen([PY, "-c", BURN], stdout=subprocess.DEVNULL) for _ in range(k)]
        for p in procs:
            p.wait()
        return time.perf_counter() - started

    one = min(burn(1) for _ in range(2))
    many = min(burn(workers) for _ in range(2))
    return workers * one / many


def startup_seconds() -> float:
    """Wall time of an interpreter that only imports apache_beam and pyarrow (best of 3)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([PY, "-c", "import apache_beam, pyarrow"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - started)
    return best


# --------------------------------------------------------------------------- variants


def command(variant: str, input_path: str, out_dir: str, workers: int) -> list[str]:
    pipeline = [PY, "-m", "pipeline", "--input", input_path, "--output", out_dir, "--as-of", AS_OF,
                "--pseudonym-key-file", KEY_FILE]
    if variant == "a":  # pinned: the command's default spreads big inputs over every core
        return pipeline + ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
    if variant == "f":
        return pipeline + ["--runner=DaskRunner"]
    if variant == "b":
        return pipeline + ["--runner=FnApiRunner", f"--direct_num_workers={workers}",
                           "--direct_running_mode=multi_processing"]
    if variant == "c":
        return [PY, os.path.join(BENCH, "peer_stock_beam.py"), "--input", input_path, "--output", out_dir,
                "--as-of", AS_OF, "--pseudonym-key-file", KEY_FILE]
    if variant == "d":
        return [PY, os.path.join(BENCH, "floor_arrow.py"), "--input", input_path, "--output", out_dir]
    if variant == "e":
        return [PY, os.path.join(BENCH, "upper_bound.py"), "--input", input_path, "--output", out_dir,
                "--processes", str(workers), "--as-of", AS_OF]
    raise ValueError(variant)


def parquet_rows(pattern: str) -> tuple[int, int]:
    """(rows, files) of the Parquet files matching a recursive glob (footers only)."""
    import pyarrow.parquet as pq

    files = glob.glob(pattern, recursive=True)
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files), len(files)


def count_outputs(run: Run, types: list[str]) -> dict:
    """Rows actually written: per record type (data area only), quarantine, and all files."""
    d = run.out_dir
    if run.variant in ("d", "e"):
        rows, files = parquet_rows(os.path.join(d, "**", "*.parquet"))
        return {"rows_total": rows, "files": files}
    per_type = {t: parquet_rows(os.path.join(d, t, "**", "*.parquet"))[0] for t in types}
    quarantine, _ = parquet_rows(os.path.join(d, "_quarantine", "**", "*.parquet"))
    _, files = parquet_rows(os.path.join(d, "**", "*.parquet"))
    return {"rows_by_type": per_type, "rows": sum(per_type.values()), "quarantine_rows": quarantine,
            "files": files}


def check_run(run: Run, types: list[str], input_lines: int, reference: dict | None) -> dict:
    """Work actually done, compared with the pipeline's own report where one is available."""
    if run.returncode != 0:
        return {"ok": False, "note": f"exit code {run.returncode}"}
    counted = count_outputs(run, types)
    if run.variant in PIPELINE_VARIANTS:
        with open(os.path.join(run.out_dir, "_report.json"), encoding="utf-8") as fh:
            report = json.load(fh)
        out = sum(report["output_records"].values())
        quarantined = sum(report["quarantined"].values())
        ok = (counted["rows"] == out and counted["quarantine_rows"] == quarantined
              and report["identity"]["holds"]
              and report["input_records"] + report["blank_lines"] == input_lines)
        return {"ok": ok, "rows": counted["rows"], "files": counted["files"], "report_output": out,
                "report_quarantined": quarantined, "quarantine_rows": counted["quarantine_rows"],
                "duplicates": report["dropped"].get("duplicate", 0), "runner": report["runner"],
                "input_records": report["input_records"], "blank_lines": report["blank_lines"],
                "note": (f"report output_records={out}, Parquet rows under <type>/={counted['rows']}; "
                         f"report quarantined={quarantined}, _quarantine rows={counted['quarantine_rows']}; "
                         f"identity holds={report['identity']['holds']}; runner={report['runner']}")}
    if run.variant == "c":
        note = (f"Parquet rows under <type>/={counted['rows']}, _quarantine rows={counted['quarantine_rows']}")
        if reference is None:
            return {"ok": True, "rows": counted["rows"], "files": counted["files"], "note": note}
        expected = reference["report_output"] + reference["duplicates"]
        ok = counted["rows"] == expected and counted["quarantine_rows"] == reference["report_quarantined"]
        note += (f"; expected = pipeline output {reference['report_output']} + retries the pipeline removed "
                 f"{reference['duplicates']} = {expected}; pipeline quarantined {reference['report_quarantined']}")
        return {"ok": ok, "rows": counted["rows"], "files": counted["files"], "note": note}
    summary = {}
    for line in run.stdout.splitlines():
        if line.startswith("{"):
            summary = json.loads(line)
    ok = summary.get("rows_written") == counted["rows_total"]
    if run.variant == "e":
        return {"ok": ok, "rows": counted["rows_total"], "files": counted["files"],
                "note": (f"Parquet rows={counted['rows_total']} (every plainly well-formed line of a known type); "
                         f"lines skipped={summary.get('skipped_lines')}; seconds summed over processes: "
                         f"route+screen {summary.get('route_s')}, Arrow parse {summary.get('parse_s')}, "
                         f"partition split {summary.get('partition_s')}, Parquet write {summary.get('write_s')}; "
                         f"in the parent: opening the tables {summary.get('open_s')}, Delta commit "
                         f"{summary.get('commit_s')}")}
    return {"ok": ok, "rows": counted["rows_total"], "files": counted["files"],
            "note": (f"Parquet rows={counted['rows_total']} (every line that is a JSON object); "
                     f"lines dropped={summary.get('lines_dropped')}; blocks read by Arrow="
                     f"{summary.get('blocks_arrow')}, by the orjson fallback={summary.get('blocks_fallback')}")}


# --------------------------------------------------------------------------- reporting


def mib(kib: int) -> float:
    return kib / 1024


def fmt_ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}x"


def fmt_pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def machine_lines(info: dict[str, str], startup: float | None) -> list[str]:
    lines = [f"- machine: nproc={info['nproc']}, CPU {info['cpu']}, memory {info['memory']}, {info['os']}",
             f"- python {info['python']}, apache-beam {info['apache-beam']}, pyarrow {info['pyarrow']}, "
             f"orjson {info['orjson']}"]
    if info.get("pandas", "not installed") != "not installed":
        # Beam imports pandas at start-up whenever it is installed (a development venv has it for the tests)
        lines.append(f"- pandas {info['pandas']} is installed here, so every Beam process imports it: about 0.3 s "
                     "and 70 MiB more per process than an installed sanitizer, which has no pandas")
    if "speedup" in info:
        lines.append(f"- parallel capacity: {info['workers']} CPU-bound processes at once do "
                     f"{info['speedup']} the work of one in the same time (ideal {info['workers']}.00x)")
    if startup is not None:
        lines.append(f"- fixed cost in every Beam variant: interpreter start + `import apache_beam, pyarrow` "
                     f"= {startup:.2f} s")
    return lines


def ratios(all_runs: dict[str, list[Run]], v: str, ref: str) -> list[float]:
    """wall(ref) / wall(v) in each round where both ran and succeeded (runs minutes apart)."""
    if v not in all_runs or ref not in all_runs:
        return []
    return [r.wall / w.wall for r, w in zip(all_runs[ref], all_runs[v], strict=True)
            if r.returncode == 0 and w.returncode == 0]


def comparison_table(runs: dict[str, Run], all_runs: dict[str, list[Run]], records: int, workers: int) -> list[str]:
    lines = ["| variant | records | wall s | records/s | peak RSS MiB | ratio vs (c) | share of floor (d) | "
             "share of upper bound (e) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for v, run in runs.items():
        label = LABELS[v].format(workers=workers)
        if run.returncode != 0:
            label += f" **FAILED (exit {run.returncode})**"
        vs_c, vs_d, vs_e = ratios(all_runs, v, "c"), ratios(all_runs, v, "d"), ratios(all_runs, v, "e")
        lines.append(
            f"| {label} | {records:,} | {run.wall:.1f} | {records / run.wall:,.0f} | {mib(run.peak_rss_kib):,.0f} | "
            f"{fmt_ratio(statistics.median(vs_c) if vs_c else None)} | "
            f"{fmt_pct(statistics.median(vs_d) if vs_d else None)} | "
            f"{fmt_pct(statistics.median(vs_e) if vs_e else None)} |")
    lines += ["",
              "wall s, records/s, peak RSS: the variant's median run. "
              "ratio vs (c) = wall(c) / wall(variant) within a round, median over the rounds: above 1 is faster "
              "than the per-element peer. share of floor = wall(d) / wall(variant) likewise: the fraction of the "
              "no-policy floor's throughput reached; share of upper bound = wall(e) / wall(variant), the same against "
              "the pipeline's own reading and writing with no policy on all processes. records = input lines."]
    return lines


def details_table(runs: dict[str, Run], all_runs: dict[str, list[Run]]) -> list[str]:
    lines = ["| variant | CPU s (user+sys) | CPU / wall | largest process RSS MiB | processes | rows written | "
             "files | walls (round by round) |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for v, run in runs.items():
        cpu = run.cpu_user + run.cpu_sys
        rows = run.checks.get("rows")
        lines.append(f"| ({v}) | {cpu:.1f} | {cpu / run.wall:.2f} | {mib(run.largest_rss_kib):,.0f} | "
                     f"{run.max_procs} | {'–' if rows is None else f'{rows:,}'} | {run.checks.get('files', '–')} | "
                     f"{', '.join(f'{r.wall:.1f}' for r in all_runs[v])} |")
    lines.append("")
    lines.append("CPU s include waited-for child processes (the multi-processing workers). "
                 "processes = most processes seen at once in the tree.")
    lines.append("")
    lines.append("Checks (same work):")
    for v, run in runs.items():
        mark = "ok" if run.checks.get("ok") else "MISMATCH"
        lines.append(f"- ({v}) {mark}: {run.checks.get('note', '')}")
    return lines


def write_result(name: str, text: str) -> str:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, name)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


# --------------------------------------------------------------------------- modes


def run_rounds(variants: list[str], n: int, input_path: str, tmp: str, workers: int, repeat: int, keep: bool,
               tag: str = "") -> tuple[dict[str, Run], dict[str, list[Run]]]:
    """Run every variant `repeat` times, a round of all variants after another, so a change in the
    machine's speed meets every variant alike; each round starts one variant later (a b c d,
    b c d a, ...) so no variant always follows the same one. Returns each variant's median-wall
    run (of an even number, the faster middle one) and all its runs in round order."""
    runs: dict[str, list[Run]] = {v: [] for v in variants}
    for i in range(repeat):
        shift = i % len(variants)
        for v in variants[shift:] + variants[:shift]:
            out_dir = os.path.join(tmp, f"out-{v}{tag}-{i}")
            shutil.rmtree(out_dir, ignore_errors=True)
            print(f"  running ({v}) on {n:,} records{f' [round {i + 1}/{repeat}]' if repeat > 1 else ''} ...",
                  flush=True)
            run = measure(v, n, command(v, input_path, out_dir, workers), out_dir, tmp)
            print(f"    {run.wall:.1f} s, peak tree RSS {mib(run.peak_rss_kib):,.0f} MiB, exit {run.returncode}",
                  flush=True)
            if run.returncode != 0:
                print("    stderr (tail):\n" + "\n".join("      " + ln for ln in run.stderr_tail.splitlines()[-25:]))
            runs[v].append(run)
    medians: dict[str, Run] = {}
    for v, done in runs.items():
        medians[v] = sorted(done, key=lambda r: r.wall)[(len(done) - 1) // 2]
        for r in done:
            if r is not medians[v] and not keep:
                shutil.rmtree(r.out_dir, ignore_errors=True)
    return medians, runs


def round_ratios(all_runs: dict[str, list[Run]]) -> list[str]:
    """The ratios of every round, whose medians the table shows."""
    if len(next(iter(all_runs.values()))) < 2:
        return []
    lines = []
    for ref, what in (("c", "vs (c)"), ("d", "share of floor (d)"), ("e", "share of upper bound (e)")):
        parts = []
        for v in ("a", "b"):
            found = ratios(all_runs, v, ref)
            if found:
                shown = ", ".join(f"{x:.2f}x" if ref == "c" else f"{x:.0%}" for x in found)
                parts.append(f"({v}) {shown}")
        if parts:
            lines.append(f"- {what}, round by round: " + "; ".join(parts))
    return ["Ratios within each round (the table shows their medians):", *lines] if lines else []


def count_lines(path: str) -> int:
    count = 0
    with open(path, "rb", buffering=0) as fh:
        while block := fh.read(16 << 20):
            count += block.count(b"\n")
    return count


def comparison(args, variants: list[str], info: dict[str, str], tmp: str) -> str:
    from schemas.policy import load_policy

    types = list(load_policy().types)
    n = args.records
    input_path, gen = ensure_input(n, args.seed)
    size_mb = os.path.getsize(input_path) / 1e6
    print(f"input: {input_path} ({size_mb:,.0f} MB, {n:,} lines, seed {args.seed}) "
          + (f"generated in {gen:.1f} s" if gen is not None else "(cached)"), flush=True)
    warm_cache(input_path)
    lines_in_file = count_lines(input_path)
    startup = startup_seconds() if set(variants) & {"a", "b", "c", "f"} else None

    before = source_fingerprint()
    runs, all_runs = run_rounds(variants, n, input_path, tmp, args.workers, args.repeat, args.keep)
    # Checked after all runs, pipeline first: its report is the reference the peer is compared with.
    reference = None
    for v in sorted(runs, key=lambda v: v not in PIPELINE_VARIANTS):
        runs[v].checks = check_run(runs[v], types, lines_in_file, reference)
        if v in PIPELINE_VARIANTS and runs[v].checks.get("ok") and reference is None:
            reference = runs[v].checks
    if not args.keep:
        for run in runs.values():
            shutil.rmtree(run.out_dir, ignore_errors=True)

    header = [f"# Sanitizer benchmark, {n:,} records",
              "",
              f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; input {os.path.basename(input_path)} "
              f"({size_mb:,.0f} MB NDJSON, dirty, seed {args.seed}"
              + (f", generated in {gen:.1f} s" if gen is not None else ", cached") + "); "
              f"`--as-of {AS_OF}`; repeats {args.repeat} (median shown)",
              ""]
    body = header + machine_lines(info, startup) + [fingerprint_line(before, source_fingerprint()), ""] \
        + comparison_table(runs, all_runs, n, args.workers) + [""] + round_ratios(all_runs) + [""] \
        + details_table(runs, all_runs)
    return "\n".join(body) + "\n"


def scaling(args, variants: list[str], info: dict[str, str], tmp: str) -> str:
    from schemas.policy import load_policy

    types = list(load_policy().types)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    inputs = {}
    for n in sizes:
        path, gen = ensure_input(n, args.seed)
        inputs[n] = path
        print(f"input {n:,}: {path} ({os.path.getsize(path) / 1e6:,.0f} MB) "
              + (f"generated in {gen:.1f} s" if gen is not None else "(cached)"), flush=True)
    startup = startup_seconds()
    before = source_fingerprint()
    header = [f"# Sanitizer scaling, sizes {', '.join(f'{n:,}' for n in sizes)}", "",
              f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; dirty input, seed {args.seed}; "
              f"`--as-of {AS_OF}`; repeats {args.repeat} (median shown)", ""]
    body: list[str] = []
    for v in variants:
        rows = []
        for n in sizes:
            warm_cache(inputs[n])
            medians, _ = run_rounds([v], n, inputs[n], tmp, args.workers, args.repeat, args.keep, tag=f"-{n}")
            run = medians[v]
            run.checks = check_run(run, types, count_lines(inputs[n]), None)
            if not args.keep:
                shutil.rmtree(run.out_dir, ignore_errors=True)
            rows.append((n, run))
        first_rate = rows[0][0] / rows[0][1].wall
        body += [f"## {LABELS[v].format(workers=args.workers)}", "",
                 "| records | input MB | wall s | records/s | records/s vs smallest | s per 1M records | "
                 "peak RSS MiB | CPU s | check |",
                 "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for n, run in rows:
            rate = n / run.wall
            body.append(f"| {n:,} | {os.path.getsize(inputs[n]) / 1e6:,.0f} | {run.wall:.1f} | {rate:,.0f} | "
                        f"{rate / first_rate:.2f} | {run.wall / n * 1e6:.1f} | {mib(run.peak_rss_kib):,.0f} | "
                        f"{run.cpu_user + run.cpu_sys:.1f} | {'ok' if run.checks.get('ok') else 'MISMATCH'} |")
        if len(rows) >= 2:
            xs = [n for n, _ in rows]
            ys = [r.wall for _, r in rows]
            slope, intercept = statistics.linear_regression(xs, ys)
            body += ["", f"Least-squares fit: wall = {intercept:.1f} s + n / {1 / slope:,.0f} records/s "
                         f"(fixed cost {intercept:.1f} s, marginal rate {1 / slope:,.0f} records/s)."]
        body.append("")
    machine = machine_lines(info, startup) + [fingerprint_line(before, source_fingerprint()), ""]
    return "\n".join(header + machine + body) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="run_bench.py", description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000, help="input lines for the comparison run")
    ap.add_argument("--sizes", default=None,
                    help="comma-separated sizes: run the scaling table instead of the comparison")
    ap.add_argument("--only", default=None, help="variants to run, e.g. a,c (default: a,b,c,d,e; with --sizes: a)")
    ap.add_argument("--keep", action="store_true", help="keep the output directories (path is printed)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of all variants; each variant's median wall time is reported")
    ap.add_argument("--seed", type=int, default=7, help="generator seed of the input")
    ap.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2),
                    help="--direct_num_workers of (b), processes of (e) (default: CPU count, at least 2)")
    args = ap.parse_args(argv)

    default = "a" if args.sizes else "a,b,c,d,e"
    variants = [v.strip().lower().strip("()") for v in (args.only or default).split(",") if v.strip()]
    unknown = [v for v in variants if v not in LABELS]
    if unknown or not variants:
        ap.error(f"--only: unknown variant(s) {unknown}; choose from a,b,c,d,e,f")
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")

    info = machine_info()
    if {"b", "e"} & set(variants):
        info["workers"] = str(args.workers)
        info["speedup"] = f"{parallel_speedup(args.workers):.2f}x"
    tmp = tempfile.mkdtemp(prefix="sanitizer-bench-")
    try:
        if args.sizes:
            text = scaling(args, variants, info, tmp)
            path = write_result("latest-sizes.md", text)
        else:
            text = comparison(args, variants, info, tmp)
            path = write_result("latest.md", text)
    finally:
        if args.keep:
            print(f"outputs and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(text)
    print(f"(written to {os.path.relpath(path, ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
