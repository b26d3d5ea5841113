"""Benchmark (a) of two commits back to back: how much slower or faster one is than the other.

    python bench/back_to_back.py --base 9645f46 [--new HEAD] [--rounds 5] [--records 1000000]

Each commit is checked out into a temporary git worktree and run as variant (a) of
bench/run_bench.py (`python -m pipeline`, FnApiRunner in-process, one worker) on the same
generated input, alternating base, new, base, new ...: the machine's speed drifts over
minutes, and alternating lets both meet the same drift. Both run with this interpreter and
its packages, so only the code differs (a development venv with pandas makes Beam import it
at start-up, about 0.3 s per run; comparing two venvs would measure that too). The base
must therefore run with today's packages.

Prints each round's wall and CPU seconds (user+sys of the run, from the kernel) with the
new/base ratios, and the ratio of the sums; and each run's summary line, so a difference in
the work done shows. Exit 0 when every run succeeded.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)

from run_bench import AS_OF, ensure_input  # noqa: E402

_SUMMARY = re.compile(r"(\d+ records in, [^\n]*?\))(?: in [\d.]+s|\n|$)")  # the run's counts, not its time


def checkout(rev: str, path: str) -> str:
    """A detached worktree of `rev` at `path`; returns the path."""
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", path, rev], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path


def run_a(tree: str, input_path: str, out_dir: str) -> tuple[float, int, str]:
    """(wall s, exit code, summary line) of one run of variant (a) in `tree`; its CPU time is
    what the children's totals grow by (the caller reads them)."""
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "pipeline", "--input", input_path, "--output", out_dir, "--as-of", AS_OF,
           "--pseudonym-key-file", os.path.join(tree, "sample", "dev-pseudonym.key"),
           "--direct_num_workers=1", "--direct_running_mode=in_memory", "--quiet"]
    env = dict(os.environ, PYTHONPATH=tree)  # the tree's code, whatever this venv has installed
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - start
    shutil.rmtree(out_dir, ignore_errors=True)
    found = _SUMMARY.search(proc.stdout.decode("utf-8", "replace"))
    return wall, proc.returncode, found.group(1) if found else "no summary line"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the commit to compare against")
    ap.add_argument("--new", default="HEAD", help="the commit measured (default HEAD)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.records < 1:
        ap.error("--rounds and --records must be at least 1")

    input_path, _ = ensure_input(args.records, args.seed)
    work = tempfile.mkdtemp(prefix="back-to-back-")
    trees: dict[str, str] = {}
    failed = False
    try:
        for label, rev in (("base", args.base), ("new", args.new)):
            trees[label] = checkout(rev, os.path.join(work, label))
        print(f"# Benchmark (a), {args.records:,} records: {args.new} against {args.base}, {args.rounds} rounds\n")
        print("| round | base wall s | new wall s | wall new/base | base CPU s | new CPU s | CPU new/base |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        sums = {"base": [0.0, 0.0], "new": [0.0, 0.0]}
        summaries: dict[str, set[str]] = {"base": set(), "new": set()}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        for n in range(1, args.rounds + 1):
            got = {}
            for label in ("base", "new"):
                wall, code, summary = run_a(trees[label], input_path, os.path.join(work, "out"))
                after = resource.getrusage(resource.RUSAGE_CHILDREN)  # this run's CPU: the children's totals grew by it
                cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
                before = after
                failed |= code != 0
                got[label] = (wall, cpu)
                sums[label][0] += wall
                sums[label][1] += cpu
                summaries[label].add(summary)
            (bw, bc), (nw, nc) = got["base"], got["new"]
            print(f"| {n} | {bw:.2f} | {nw:.2f} | {nw / bw:.3f} | {bc:.2f} | {nc:.2f} | {nc / bc:.3f} |")
        (bw, bc), (nw, nc) = sums["base"], sums["new"]
        print(f"| sum | {bw:.2f} | {nw:.2f} | **{nw / bw:.3f}** | {bc:.2f} | {nc:.2f} | **{nc / bc:.3f}** |\n")
        for label in ("base", "new"):
            print(f"- {label} ({args.base if label == 'base' else args.new}): " + " / ".join(sorted(summaries[label])))
    finally:
        for path in trees.values():
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", path],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
