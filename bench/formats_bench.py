"""Throughput of each --input-format against the contract format, in one benchmark run.

    python bench/formats_bench.py [--records 100000] [--repeat 2] [--formats contract,windows-events,ecs,ocsf]

Each format gets an input of --records lines: the contract one from `pipeline.sample` (clean
lines, seed 1), the others by cycling the sample events of tests/format_samples.py (every
export shape, the deliberately unmapped events included) with a distinct event id per line.
Each run is `python -m pipeline` as a subprocess (default runner, development key, a consent
profile granting eula and ksn), so wall time includes interpreter start-up, Beam, the mapping
step and the writes. Formats run in rotating rounds (a b c d, b c d a, ...) so each meets the
machine's drift alike; the table shows each format's median and its ratio to the contract's
median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import format_samples as fs  # noqa: E402

AS_OF = "2026-11-25T00:00:00Z"
PROFILE = 'default_country = "NL"\n[default]\nconsent = ["eula", "ksn"]\n'


def write_input(fmt: str, n: int, path: Path) -> None:
    if fmt == "contract":
        from pipeline.sample import generate_lines

        path.write_bytes(b"\n".join(generate_lines(n, seed=1, dirty=False)) + b"\n")
        return
    with path.open("wb") as fh:
        for obj in fs.many(fmt, n):
            fh.write(orjson.dumps(obj) + b"\n")


def run_once(fmt: str, source: Path, profile: Path, out: Path) -> tuple[float, dict]:
    args = [sys.executable, "-m", "pipeline"]
    if fmt != "contract":
        args += ["--input-format", fmt]
    args += ["--input", str(source), "--output", str(out), "--as-of", AS_OF, "--quiet",
             "--pseudonym-key-file", str(ROOT / "sample" / "dev-pseudonym.key")]
    if fmt != "contract":
        args += ["--consent-profile", str(profile)]
    started = time.perf_counter()
    subprocess.run(args, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    return seconds, json.loads((out / "_report.json").read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--formats", default="contract,windows-events,ecs,ocsf")
    args = ap.parse_args(argv)
    formats = args.formats.split(",")
    times: dict[str, list[float]] = {f: [] for f in formats}
    reports: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="formats-bench-") as tmp:
        work = Path(tmp)
        profile = work / "profile.toml"
        profile.write_text(PROFILE, encoding="utf-8")
        sources = {}
        for fmt in formats:
            sources[fmt] = work / f"{fmt}.ndjson"
            write_input(fmt, args.records, sources[fmt])
            sources[fmt].read_bytes()  # into the page cache
        for round_no in range(args.repeat):
            order = formats[round_no % len(formats):] + formats[:round_no % len(formats)]
            for fmt in order:
                out = work / f"out-{fmt}-{round_no}"
                seconds, report = run_once(fmt, sources[fmt], profile, out)
                times[fmt].append(seconds)
                reports[fmt] = report
                print(f"round {round_no + 1} {fmt}: {seconds:.1f} s", file=sys.stderr)
                subprocess.run(["rm", "-rf", str(out)], check=True)
    base = statistics.median(times[formats[0]])
    print(f"{args.records} lines per format, {args.repeat} round(s), {os.cpu_count()} cores, median wall time\n")
    print("| format | MB | seconds | lines/s | vs contract | written | dropped | quarantined |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for fmt in formats:
        med = statistics.median(times[fmt])
        rep = reports[fmt]
        size = sum(v["size"] for v in rep["input_files"].values()) / 1e6
        print(f"| {fmt} | {size:.0f} | {med:.1f} | {args.records / med:,.0f} | {base / med:.2f}x "
              f"| {sum(rep['output_records'].values())} | {sum(rep['dropped'].values())} "
              f"| {sum(rep['quarantined'].values())} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
