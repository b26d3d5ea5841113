"""`python -m pipeline --watch LANDING --output DIR`: local continuous mode, as scheduled micro-batches.

    python -m pipeline --watch /data/landing --output /data/out \\
        --pseudonym-key-file /etc/telemetry/pseudonym.key [--idle-timeout 60] [--poll-interval 1.0] \\
        [--max-files-per-batch 50] [--settle-seconds 2] [any option of a batch run: --policy, --as-of, ...]

Why micro-batches and not a continuous Beam source
--------------------------------------------------
On the local FnApiRunner an unbounded source (e.g. a file-watching
`MatchContinuously` read) runs the pipeline as one never-ending bundle: the
windows and the per-partition finalisation that writes Parquet only fire when
the source ends, so nothing would be published while the watcher runs. Here
every poll that finds closed files runs the batch pipeline itself (the tested
`pipeline.run.run_files` with `--append`, not a second implementation of the
sanitizing) over just those files. Latency is then bounded by the poll interval
plus one batch run, and every guarantee of a batch run (policy, quarantine,
exact report identity, atomic staging) holds per micro-batch. The ledger
records the latency from a file's landing (its mtime; the replay tool fsyncs
before it renames a file into place) to the end of the publish of its Parquet.

Loop
----
Closed files are the regular files in LANDING whose names do not start with
'.' or '_' and end in .ndjson, .ndjson.gz, .jsonl or .jsonl.gz; a producer writes
elsewhere (e.g. LANDING/.incoming/) and renames a finished file into LANDING. A
file is claimed only when complete (see pipeline/claim.py): unchanged for
--settle-seconds (default 2) and ending in a newline (gzip: a whole member), so a
producer appending in place is not cut short. A claimed file that changes while
its batch reads it fails that run (nothing is published) and the batch is run
again once the file has settled; one that grows after its batch was published has
the added bytes landed again as a new file (<name>.rest-<batch_id>.ndjson); one
rewritten or cut after it was read stops the watcher with exit 1. Oldest first (by
mtime, then name), at most --max-files-per-batch files are claimed by renaming
them into LANDING/_processing/<batch_id>/, run with `--append` into DIR (each
run's files carry its run id, its report goes to DIR/_reports/<run_id>.json),
then the batch is appended to LANDING/_ledger.jsonl (files with size and
sha256, exit code, records in/out/dropped/quarantined from the run's report,
start/end, latency) and its files are moved to LANDING/_done/<batch_id>/.
One line per batch goes to stdout. Without --idle-timeout the watcher runs until
SIGINT/SIGTERM: the current batch is finished, then it exits 0 (a second signal
aborts the batch; it is re-run on the next start).

Restarts: nothing lost, nothing written twice
---------------------------------------------
A lock file (LANDING/_watch.lock, DIR/.watch.lock) keeps a second watcher off
the same directories. Each batch's run commits one Delta transaction per table,
naming the batch's run (inputs, policy, key) as an app transaction, and writes its
report after the last commit. What a crash can leave behind is handled at start,
before new files are claimed, from the tables' logs rather than from bookkeeping
of files:
  * a batch directory in LANDING/_processing/:
      - already in the ledger (crash while moving to _done): the move is finished;
      - a report in DIR/_reports whose "inputs" are exactly this batch's files
        (the report lists absolute input paths, and _processing/<batch_id>/ paths
        are unique): the batch is wholly committed (crash after the report, before
        the ledger entry); the ledger entry is written from that report
        ("recovered": true), the batch is not run again;
      - otherwise the batch is run again: tables whose log already holds the
        batch's app transaction are not committed again, the others are.
  * a torn last ledger line (crash while appending) is cut off; that batch is then
    recovered from its report as above.
  * DIR/.staging-<run_id>/ of a killed run is removed by the next run; data files a
    killed run wrote but did not commit are not part of any table (vacuum removes them).
So every landed file is committed exactly once and appears once in the ledger.

Duplicates: producer retries (same device_id and event_id) are removed within a
run, and every micro-batch, being an appending run, also drops the rows already
committed to the output (pipeline/dedupe.py): a retry that lands in a later batch
than its original is not written again, so the output equals a batch run over the
same files. Pseudonyms, and so this look-up, match across batches only with
--pseudonym-key-file.

For message sources (Pub/Sub, Kafka) on a runner that fires windows while the
source runs (Dataflow, Flink), see `python -m pipeline stream`; this module is
the local, file-based continuous mode.

Pseudonyms are only joinable across micro-batches with --pseudonym-key-file;
without it every batch gets its own random key (a warning says so).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import os
import signal
import sys
import time
import uuid
from datetime import UTC, datetime
from statistics import mean, median

from pipeline.claim import Settler, after_run
from pipeline.tables import not_local

PROCESSING = "_processing"
DONE = "_done"
LEDGER = "_ledger.jsonl"
LANDING_LOCK = "_watch.lock"
OUTPUT_LOCK = ".watch.lock"
SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")
SLEEP_SLICE = 0.1
REPORTS = "_reports"


class WatchConfigError(ValueError):
    """A bad command line or configuration: one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise WatchConfigError(message)


def _now_iso(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).isoformat(timespec="milliseconds")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_closed_file_name(name: str) -> bool:
    return not name.startswith((".", "_")) and name.endswith(SUFFIXES)


def list_closed(landing: str) -> list[str]:
    """Closed landing files, oldest first (mtime, then name)."""
    found = []
    with os.scandir(landing) as it:
        for entry in it:
            if not is_closed_file_name(entry.name):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                found.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name, entry.path))
            except FileNotFoundError:
                continue
    return [path for _, _, path in sorted(found)]


def add_watch_arguments(ap: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The watcher's own options (any other option goes to each batch run)."""
    ap.add_argument("--watch", required=True, metavar="LANDING_DIR", help="landing directory to watch")
    ap.add_argument("--output", required=True, metavar="DIR", help="output directory; each batch is appended")
    ap.add_argument("--idle-timeout", "--idle_timeout", dest="idle_timeout", type=float, default=None,
                    metavar="SECONDS", help="stop after this long without new files (default: run until SIGINT)")
    ap.add_argument("--poll-interval", "--poll_interval", dest="poll_interval", type=float, default=1.0,
                    metavar="SECONDS", help="seconds between looks at the landing directory (default 1)")
    ap.add_argument("--max-files-per-batch", "--max_files_per_batch", dest="max_files", type=int, default=50,
                    metavar="N", help="files claimed per micro-batch at most (default 50)")
    ap.add_argument("--settle-seconds", "--settle_seconds", dest="settle_seconds", type=float, default=2.0,
                    metavar="SECONDS", help="a landed file is claimed once unchanged for this long (default 2)")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    ap = _Parser(prog="python -m pipeline --watch", allow_abbrev=False, add_help=False)
    add_watch_arguments(ap)
    args, rest = ap.parse_known_args(argv)
    for arg in rest:
        if arg == "--input" or arg.startswith("--input="):
            raise WatchConfigError("--input cannot be combined with --watch: the landing directory is the input")
    if args.idle_timeout is not None and args.idle_timeout < 0:
        raise WatchConfigError(f"--idle-timeout {args.idle_timeout}: must be >= 0")
    if not args.poll_interval > 0:
        raise WatchConfigError(f"--poll-interval {args.poll_interval}: must be > 0")
    if args.max_files < 1:
        raise WatchConfigError(f"--max-files-per-batch {args.max_files}: must be >= 1")
    if not args.settle_seconds >= 0:
        raise WatchConfigError(f"--settle-seconds {args.settle_seconds}: must be >= 0")
    return args, [a for a in rest if a != "--append"]


def check_run_options(extra: list[str]) -> bool:
    """Validate policy, key, --as-of and --withdrawals once, before any file is claimed (each batch run
    checks them again); True when a key file is used."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.options import SanitizerOptions
    from pipeline.run import load_key, parse_as_of
    from schemas.policy import load_policy
    from transforms.records import SanitizeContext
    from transforms.withdrawals import load_withdrawals

    opts = PipelineOptions(extra).view_as(SanitizerOptions)
    policy = load_policy(opts.policy)
    key, _ = load_key(opts.pseudonym_key_file)
    as_of = parse_as_of(opts.as_of)
    if getattr(opts, "withdrawals", None):
        ctx = SanitizeContext(policy=policy, key=key, as_of=as_of)
        load_withdrawals(os.path.abspath(opts.withdrawals), ctx.device_hash)
    if getattr(opts, "input_format", None):  # the mapping files and the consent profile (docs/input-formats.md)
        from schemas.formats import load_formats, load_profile

        load_formats([opts.input_format], policy)
        if getattr(opts, "consent_profile", None):
            load_profile(opts.consent_profile)
    return bool(opts.pseudonym_key_file)


class _Lock:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fh = open(path, "a+")
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise WatchConfigError(f"{path}: another watcher is running on this directory") from None

    def release(self) -> None:
        fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
        self.fh.close()


class Watcher:
    def __init__(self, landing: str, output: str, extra: list[str], idle_timeout: float | None,
                 poll_interval: float, max_files: int, settle_seconds: float = 2.0) -> None:
        self.settler = Settler(settle_seconds)
        self.landing = os.path.realpath(landing)
        self.output = os.path.realpath(output)
        self.extra = extra
        self.idle_timeout = idle_timeout
        self.poll_interval = poll_interval
        self.max_files = max_files
        self.processing = os.path.join(self.landing, PROCESSING)
        self.done = os.path.join(self.landing, DONE)
        self.ledger = os.path.join(self.landing, LEDGER)
        self.reports = os.path.join(self.output, REPORTS)
        self.stop_requested = False
        self.signals = 0
        self.exit_code = 0
        self.batches = 0
        self.files = 0
        self.records_in = 0
        self.busy = 0.0
        self.latencies: list[float] = []

    # ---------------------------------------------------------------- ledger

    def ledger_entries(self) -> list[dict]:
        entries = []
        try:
            with open(self.ledger, encoding="utf-8") as fh:
                for line in fh:
                    with contextlib.suppress(ValueError):
                        entries.append(json.loads(line))
        except FileNotFoundError:
            pass
        return entries

    def repair_ledger(self) -> None:
        """Cut a torn last line (a crash while appending); its batch is recovered from its report."""
        try:
            with open(self.ledger, "rb+") as fh:
                data = fh.read()
                if data and not data.endswith(b"\n"):
                    fh.truncate(data.rfind(b"\n") + 1)
                    self.log("watch: cut a torn last line off the ledger")
        except FileNotFoundError:
            pass

    def append_ledger(self, entry: dict) -> None:
        with open(self.ledger, "ab") as fh:
            fh.write(json.dumps(entry, sort_keys=False).encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())

    # ---------------------------------------------------------------- output bookkeeping

    def find_report(self, inputs: list[str]) -> dict | None:
        """The report of the run whose inputs are exactly `inputs` (newest run ids first)."""
        try:
            names = sorted((n for n in os.listdir(self.reports) if n.endswith(".json")), reverse=True)
        except FileNotFoundError:
            return None
        want = sorted(inputs)
        for name in names:
            try:
                with open(os.path.join(self.reports, name), encoding="utf-8") as fh:
                    report = json.load(fh)
            except (OSError, ValueError):
                continue
            if sorted(report.get("inputs") or []) == want:
                return report
        return None

    # ---------------------------------------------------------------- recovery

    def recover(self) -> list[tuple[str, list[str]]]:
        """Settle what a crash left behind; returns the batches that must run again.

        A batch's run writes its report only after every table's commit, so a report means the
        batch is wholly in the output. Without one, the batch runs again: each table's log holds
        the app transaction of the batch's run if its commit landed, and that table is not
        committed twice (pipeline/commit.py). Staging directories of killed runs are removed by
        the next run; their uncommitted data files are invisible to table readers until vacuum."""
        in_ledger = {e.get("batch_id") for e in self.ledger_entries()}
        rerun = []
        for batch_id in sorted(os.listdir(self.processing)):
            bdir = os.path.join(self.processing, batch_id)
            if not os.path.isdir(bdir):
                continue
            files = sorted(os.path.join(bdir, n) for n in os.listdir(bdir) if os.path.isfile(os.path.join(bdir, n)))
            if not files:
                os.rmdir(bdir)
                continue
            if batch_id in in_ledger:
                self.move_done(batch_id, files)
                self.log(f"watch: batch {batch_id} was already in the ledger: moved to {DONE}/")
                continue
            report = self.find_report(files)
            if report is not None:
                infos = [self.file_info(f) for f in files]
                started = datetime.fromisoformat(report["started_at"]).timestamp()
                ended = started + float(report.get("duration_seconds") or 0)
                code = 0 if report["identity"]["holds"] else 1
                entry = self.ledger_entry(batch_id, infos, report, code, started, ended, recovered=True)
                self.append_ledger(entry)
                self.move_done(batch_id, files)
                self.count(entry)
                self.log(f"watch: batch {batch_id} had been committed by run {report['run_id']} before a crash: "
                         "ledger entry written from its report, not run again")
                continue
            self.log(f"watch: batch {batch_id} was interrupted before its report: run again (tables that "
                     "committed it already are not committed twice)")
            rerun.append((batch_id, files))
        return rerun

    def _read_report(self, run_id: str) -> dict | None:
        try:
            with open(os.path.join(self.reports, f"{run_id}.json"), encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None

    # ---------------------------------------------------------------- batches

    def claim(self, paths: list[str]) -> tuple[str, list[str]] | None:
        batch_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
        bdir = os.path.join(self.processing, batch_id)
        os.makedirs(bdir)
        claimed = []
        for path in paths:
            target = os.path.join(bdir, os.path.basename(path))
            try:
                os.rename(path, target)
            except FileNotFoundError:  # taken away since the listing
                continue
            claimed.append(target)
        if not claimed:
            os.rmdir(bdir)
            return None
        return batch_id, sorted(claimed)

    def move_done(self, batch_id: str, files: list[str]) -> None:
        target = os.path.join(self.done, batch_id)
        os.makedirs(target, exist_ok=True)
        for path in files:
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, os.path.join(target, os.path.basename(path)))
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(self.processing, batch_id))

    @staticmethod
    def file_info(path: str) -> dict:
        st = os.stat(path)
        return {"name": os.path.basename(path), "size": st.st_size, "sha256": _sha256(path),
                "mtime": st.st_mtime}

    def ledger_entry(self, batch_id: str, infos: list[dict], report: dict | None, code: int, started: float,
                     ended: float, recovered: bool = False) -> dict:
        latencies = [max(0.0, ended - i["mtime"]) for i in infos]
        entry = {
            "batch_id": batch_id,
            "run_id": report["run_id"] if report else None,
            "files": [{**{k: v for k, v in i.items() if k != "mtime"}, "landed_at": _now_iso(i["mtime"])}
                      for i in infos],
            "exit_code": code,
            "records_in": report["input_records"] if report else None,
            "records_out": sum(report["output_records"].values()) if report else None,
            "dropped": sum(report["dropped"].values()) if report else None,
            "quarantined": sum(report["quarantined"].values()) if report else None,
            "blank_lines": report.get("blank_lines") if report else None,
            "identity_holds": report["identity"]["holds"] if report else None,
            "started_at": _now_iso(started),
            "ended_at": _now_iso(ended),
            "run_seconds": round(ended - started, 3),
            "latency_seconds": {"min": round(min(latencies), 3), "mean": round(mean(latencies), 3),
                                "max": round(max(latencies), 3)},
            "output_dir": self.output,
        }
        if recovered:
            entry["recovered"] = True
        return entry

    def count(self, entry: dict) -> None:
        self.batches += 1
        self.files += len(entry["files"])
        self.records_in += entry["records_in"] or 0
        self.busy += entry["run_seconds"]

    def process(self, batch_id: str, files: list[str]) -> bool:
        """Run one batch; False when the watcher must stop (the batch stays in _processing)."""
        while True:
            outcome = self._process(batch_id, files)
            if not isinstance(outcome, list):
                return outcome
            # The run failed because a file changed while it was read: nothing was published.
            self.log(f"watch: batch {batch_id}: {', '.join(outcome)} changed while it was read (a producer still "
                     "writing?): nothing was published; the batch runs again once its files have settled")
            if not self.wait_settled(files):
                self.exit_code = self.exit_code or 1
                return False

    @staticmethod
    def _state(path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return st.st_size, st.st_mtime_ns

    def wait_settled(self, files: list[str]) -> bool:
        """Wait until every file of a claimed batch is complete again; False when asked to stop."""
        settler = Settler(self.settler.settle)
        while not self.stop_requested:
            ready, _, stuck = settler.sort(files)
            if len(ready) == len(files):
                return True
            for path in settler.newly_stuck(stuck):
                self.log(f"watch: {path}: unchanged for {settler.settle:g}s but it does not end in a newline "
                         "(gzip: a whole member); waiting for the producer to finish it")
            self._sleep(self.poll_interval)
        return False

    def _process(self, batch_id: str, files: list[str]) -> bool | list[str]:
        """Run one batch once; the names of the files that changed when the run failed because of
        that (it then published nothing)."""
        from pipeline.run import run_files

        states = {f: self._state(f) for f in files}
        infos = [self.file_info(f) for f in files]
        captured = io.StringIO()
        started = time.time()
        try:
            with contextlib.redirect_stdout(captured):
                code = run_files(files, self.output, [*self.extra, "--append"])
        except Exception as exc:  # noqa: BLE001 - report and stop; the next start completes the batch
            self.log(f"watch: batch {batch_id} failed ({exc.__class__.__name__}: {exc}); its files stay in "
                     f"{PROCESSING}/{batch_id}/ and are run again on the next start")
            self.exit_code = 1
            return False
        ended = time.time()
        report = self.find_report(files) if code in (0, 1, 3) else None
        changed = [os.path.basename(f) for f in files if self._state(f) != states[f]]
        if report is None and code == 1 and changed:
            return changed
        if report is None:
            self.log(f"watch: batch {batch_id}: the run exited {code} without committing all of it; its files stay in "
                     f"{PROCESSING}/{batch_id}/\n{captured.getvalue().strip()}")
            self.exit_code = code or 1
            return False
        entry = self.ledger_entry(batch_id, infos, report, code, started, ended)
        problems = self.check_after_run(batch_id, files, report, entry)
        self.append_ledger(entry)
        self.move_done(batch_id, files)
        self.count(entry)
        self.latencies.extend(ended - i["mtime"] for i in infos)
        lat = entry["latency_seconds"]
        print(f"batch {batch_id}: {len(files)} files, {entry['records_in']} records in, {entry['records_out']} out "
              f"({entry['dropped']} dropped, {entry['quarantined']} quarantined) in {entry['run_seconds']:.1f}s; "
              f"latency {lat['mean']:.1f}s (max {lat['max']:.1f}s)", flush=True)
        if code == 3:
            if self.exit_code == 0:
                self.exit_code = 3
            self.log(f"watch: batch {batch_id}: PARTIAL INPUT, part of its files could not be read (exit 3):\n"
                     f"{captured.getvalue().strip()}")
        elif code != 0:
            self.exit_code = 1
            self.log(f"watch: batch {batch_id}: report identity does not hold (exit {code}):\n"
                     f"{captured.getvalue().strip()}")
        if problems:
            self.exit_code = 1
            return False
        return True

    def check_after_run(self, batch_id: str, files: list[str], report: dict, entry: dict) -> list[str]:
        """Claimed files that changed after the run read them (its report has what it read): bytes
        appended at a record boundary are landed again as a new file; any other change is named
        in the ledger entry and returned (the watcher stops: the output may miss data)."""
        read = report.get("input_files") or {}
        problems = []
        for path in files:
            was = read.get(path)
            if was is None:
                continue
            what, detail = after_run(path, (was["size"], was["mtime_ns"]), self.landing, batch_id)
            if what == "appended":
                entry.setdefault("appended_after_read", []).append({"name": os.path.basename(path), "rest": detail})
                self.log(f"watch: {os.path.basename(path)} grew after batch {batch_id} read it: the bytes added "
                         f"are landed again as {detail}")
            elif what == "changed":
                problems.append(f"{os.path.basename(path)}: {detail}")
        if problems:
            entry["changed_after_read"] = problems
            self.log(f"watch: batch {batch_id}: ERROR: {'; '.join(problems)}; the published output holds what was "
                     "read before; stopping")
        return problems

    # ---------------------------------------------------------------- main loop

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def _on_signal(self, signum, frame) -> None:
        self.signals += 1
        if self.signals == 1:
            self.stop_requested = True
            self.log(f"watch: {signal.Signals(signum).name}: stopping after the current batch "
                     "(send it again to abort the batch)")
        else:
            raise KeyboardInterrupt

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stop_requested and time.monotonic() < end:
            time.sleep(min(SLEEP_SLICE, max(0.0, end - time.monotonic())))

    def run(self) -> int:
        os.makedirs(self.processing, exist_ok=True)
        os.makedirs(self.done, exist_ok=True)
        os.makedirs(self.output, exist_ok=True)
        locks = [_Lock(os.path.join(self.landing, LANDING_LOCK))]
        try:
            locks.append(_Lock(os.path.join(self.output, OUTPUT_LOCK)))
        except WatchConfigError:
            locks[0].release()
            raise
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        wall = time.monotonic()
        current = None
        try:
            self.repair_ledger()
            pending = self.recover()
            print(f"watch: {self.landing} -> {self.output} (poll {self.poll_interval:g}s, "
                  f"<= {self.max_files} files per batch"
                  + (f", idle timeout {self.idle_timeout:g}s" if self.idle_timeout is not None else "")
                  + (f", {len(pending)} interrupted batch(es) to run again" if pending else "") + ")", flush=True)
            for batch_id, files in pending:
                if self.stop_requested:
                    break
                current = batch_id
                if not self.process(batch_id, files):
                    return self.exit_code
                current = None
            last_activity = time.monotonic()
            stuck: list[str] = []
            while not self.stop_requested:
                ready, waiting, stuck = self.settler.sort(list_closed(self.landing))
                for path in self.settler.newly_stuck(stuck):
                    self.log(f"watch: {path}: unchanged for {self.settler.settle:g}s but it does not end in a "
                             "newline (gzip: a whole member): not claimed until it does")
                if waiting:
                    last_activity = time.monotonic()  # a producer is still writing
                paths = ready
                if paths:
                    claimed = self.claim(paths[: self.max_files])
                    if claimed:
                        current = claimed[0]
                        if not self.process(*claimed):
                            return self.exit_code
                        current = None
                    last_activity = time.monotonic()
                    continue
                if (self.idle_timeout is not None and not waiting
                        and time.monotonic() - last_activity >= self.idle_timeout):
                    break
                self._sleep(self.poll_interval)
            if stuck:
                self.log(f"watch: PARTIAL INPUT: {len(stuck)} file(s) left unclaimed, incomplete: "
                         + ", ".join(os.path.basename(p) for p in stuck))
                self.exit_code = self.exit_code or 3
            return self.exit_code
        except KeyboardInterrupt:
            self.log(f"watch: aborted; batch {current} stays in {PROCESSING}/ and is run again on the next start"
                     if current else "watch: aborted")
            return 130
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for lock in reversed(locks):
                lock.release()
            self.print_summary(time.monotonic() - wall)

    def print_summary(self, wall: float) -> None:
        lat = self.latencies
        latency = (f"; latency file->parquet mean {mean(lat):.1f}s, median {median(lat):.1f}s, max {max(lat):.1f}s"
                   if lat else "")
        print(f"watch: {self.batches} batches, {self.files} files, {self.records_in} records in {wall:.1f}s "
              f"({self.records_in / self.busy if self.busy else 0:,.0f} records/s while running batches, "
              f"{self.records_in / wall if wall else 0:,.0f} records/s overall){latency}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from pipeline.run import ConfigError
    from schemas.formats import FormatError
    from schemas.policy import PolicyError
    from transforms.withdrawals import WithdrawalsError

    try:
        args, extra = parse_args(argv)
        landing, output = args.watch, args.output
        if os.path.exists(landing) and not os.path.isdir(landing):
            raise WatchConfigError(f"--watch {landing}: exists and is not a directory")
        if os.path.exists(output) and not os.path.isdir(output):
            raise WatchConfigError(f"--output {output}: exists and is not a directory")
        if not_local("--output", output) or not_local("--watch", landing):
            raise WatchConfigError(str(not_local("--output", output) or not_local("--watch", landing)))
        if os.path.realpath(output) == os.path.realpath(landing):
            raise WatchConfigError("--output must not be the landing directory")
        has_key = check_run_options(extra)
        if not has_key:
            print("warning: no --pseudonym-key-file: every micro-batch uses its own random key, so pseudonyms "
                  "of different batches cannot be joined", file=sys.stderr)
        os.makedirs(landing, exist_ok=True)
        watcher = Watcher(landing, output, extra, args.idle_timeout, args.poll_interval, args.max_files,
                          args.settle_seconds)
        return watcher.run()
    except (WatchConfigError, ConfigError, PolicyError, WithdrawalsError, FormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
