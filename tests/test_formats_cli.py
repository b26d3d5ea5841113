"""`--input-format` / `--consent-profile` end to end: one CLI run per format, mixed runs, usage
errors, and the generated mapping tables (docs/formats.md)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from format_samples import (
    PLANTED,
    SHAPES,
    ecs_events,
    ecs_unmapped,
    ocsf_events,
    ocsf_unmapped,
    windows_events,
    windows_unmapped,
)

from pipeline import cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = str(ROOT / "sample" / "telemetry-sample.ndjson")
AS_OF = "2026-11-25T00:00:00Z"
PROFILE_TOML = """
default_country = "NL"
[default]
consent = ["eula", "ksn"]
"""

SOURCES = {"windows-events": lambda: [s for _, s, _ in windows_events()] + [s for _, s in windows_unmapped()],
           "ecs": lambda: [s for _, s, _ in ecs_events()] + [s for _, s in ecs_unmapped()],
           "ocsf": lambda: [s for _, s, _ in ocsf_events()] + [s for _, s in ocsf_unmapped()]}


def _write(path: Path, objs: list[dict]) -> str:
    path.write_bytes(b"\n".join(orjson.dumps(o) for o in objs) + b"\n")
    return str(path)


def _everything(out: Path) -> str:
    """Every value of every Parquet file under the output, and every other file's text."""
    parts = []
    for p in out.rglob("*"):
        if not p.is_file():
            continue
        if p.suffix == ".parquet":
            for column in pq.read_table(p).columns:
                parts.extend(str(v) for v in column.to_pylist())
        elif p.suffix in (".json", ""):
            parts.append(p.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(parts)


def _report(out: Path) -> dict:
    return json.loads((out / "_report.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("fmt", sorted(SOURCES))
def test_one_run_per_format_end_to_end(tmp_path, capsys, fmt):
    events = SOURCES[fmt]()
    source = _write(tmp_path / "events.ndjson", events)
    profile = tmp_path / "p.toml"
    profile.write_text(PROFILE_TOML, encoding="utf-8")
    out = tmp_path / "out"
    code = cli.main(["--input-format", fmt, "--input", source, "--consent-profile", str(profile),
                     "--output", str(out), "--as-of", AS_OF, "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = _report(out)
    assert report["identity"]["holds"]
    assert report["input_records"] == len(events)
    assert sum(report["output_records"].values()) + sum(report["dropped"].values()) == len(events)
    assert not report["quarantined"]
    assert all(k.startswith(f"unmapped_event:{fmt}:") for k in report["dropped"])
    assert report["input_formats"] == {source: fmt}
    assert report["consent_profile"] == str(profile)
    text = _everything(out) + captured.out + captured.err
    for planted in PLANTED:
        assert planted.lower() not in text.lower(), planted


def test_without_a_profile_every_mapped_record_is_dropped(tmp_path, capsys):
    source = _write(tmp_path / "events.ndjson", [s for _, s, _ in windows_events()])
    out = tmp_path / "out"
    assert cli.main(["--input-format", "windows-events", "--input", source, "--output", str(out),
                     "--as-of", AS_OF, "--quiet"]) == 0
    report = _report(out)
    assert report["dropped"] == {"consent_missing:eula": len(windows_events())}
    assert not report["output_records"]


def test_one_run_mixes_contract_and_mapped_inputs(tmp_path, capsys):
    source = _write(tmp_path / "events.ndjson", [s for _, s, _ in windows_events()])
    profile = tmp_path / "p.toml"
    profile.write_text(PROFILE_TOML, encoding="utf-8")
    out = tmp_path / "out"
    assert cli.main(["--input", SAMPLE, "--input-format", "windows-events", "--input", source,
                     "--consent-profile", str(profile), "--output", str(out), "--as-of", AS_OF, "--quiet"]) == 0
    report = _report(out)
    assert report["identity"]["holds"]
    assert report["input_formats"] == {source: "windows-events"}
    contract_only = tmp_path / "contract"
    assert cli.main(["--input", SAMPLE, "--output", str(contract_only), "--as-of", AS_OF, "--quiet"]) == 0
    alone = _report(contract_only)
    assert report["input_records"] == alone["input_records"] + len(windows_events())
    # 8001 and 8003 in each export shape
    assert report["output_records"]["wifi"] == alone["output_records"]["wifi"] + 2 * len(SHAPES)


def test_auto_counts_what_it_detected(tmp_path, capsys):
    lines = [orjson.dumps(s) for _, s, _ in windows_events()[:3]] + Path(SAMPLE).read_bytes().splitlines()[:5]
    source = tmp_path / "mixed.ndjson"
    source.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    assert cli.main(["--input-format", "auto", "--input", str(source), "--output", str(out), "--as-of", AS_OF,
                     "--quiet"]) == 0
    detected = _report(out)["auto_detected_formats"]
    assert detected["windows-events"] == 3
    assert sum(detected.values()) == 8


@pytest.mark.parametrize("args, message", [
    (["--input-format", "windows-event", "--input", SAMPLE], "did you mean windows-events"),
    (["--input", SAMPLE, "--input-format", "ecs"], "applies to the --input options after it"),
    (["--input-format", "windows-events", "--input", SAMPLE, "--consent-profile", "/nonexistent.toml"],
     "cannot read consent profile"),
])
def test_bad_format_options_exit_2_with_one_line(tmp_path, capsys, args, message):
    code = cli.main([*args, "--output", str(tmp_path / "out"), "--as-of", AS_OF, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "_report.json").exists()


def test_formats_doc_is_current():
    from pipeline.formats_doc import DOC, document
    from schemas.formats import load_formats
    from schemas.policy import load_policy

    assert DOC.read_text(encoding="utf-8") == document(load_formats(["auto"], load_policy())), (
        "docs/formats.md is stale: run telemetry-sanitizer formats --write-docs")


@pytest.mark.parametrize("argv, formats", [
    (["--input", "a"], ["contract"]),
    (["--input", "a", "--input-format", "ecs", "--input=b", "--input", "c", "--input-format=ocsf", "--input", "d"],
     ["contract", "ecs", "ecs", "ocsf"]),
    (["--input-format", "auto", "--output", "o", "--input", "a"], ["auto"]),
])
def test_each_input_takes_the_format_before_it(argv, formats):
    from pipeline.options import input_formats

    assert input_formats(argv) == formats


def test_watch_batches_put_the_format_before_their_inputs(monkeypatch):
    """run_files (each --watch batch) passes the extra options first, so a watcher's --input-format
    applies to every landed file."""
    from pipeline import run as run_module
    from pipeline.options import input_formats

    seen = []
    monkeypatch.setattr(run_module, "run", lambda argv: seen.append(argv) or 0)
    run_module.run_files(["/l/a.ndjson", "/l/b.ndjson"], "out", ["--input-format", "windows-events", "--append"])
    assert input_formats(seen[0]) == ["windows-events", "windows-events"]


def test_stream_refuses_an_input_format_rather_than_ignoring_it(capsys):
    code = cli.main(["stream", "--input-format", "ecs", "--output", "/tmp/never-written"])
    assert code == 2
    assert "stream reads the contract's format only" in capsys.readouterr().err


def test_the_bundled_format_samples_are_the_generators_output():
    from format_samples import sample_files

    for path, data in sample_files().items():
        assert path.read_bytes() == data, f"{path} is stale: run python tests/format_samples.py"


@pytest.mark.parametrize("fmt", ["windows-events", "ecs", "ocsf"])
def test_the_documented_command_on_the_bundled_samples(tmp_path, capsys, fmt):
    sample = ROOT / "sample" / "formats"
    code = cli.main(["--input-format", fmt, "--input", str(sample / f"{fmt}.ndjson"), "--consent-profile",
                     str(sample / "consent-profile.toml"), "--output", str(tmp_path / "out"), "--as-of", AS_OF])
    out = capsys.readouterr().out
    assert code == 0 and "(identity holds)" in out
    assert f"input formats: {fmt}=1 file(s)" in out


def test_auto_on_contract_input_is_the_contract_run(tmp_path, capsys):
    """Every line of the dirty contract sample, damaged records included, is read as contract
    under auto: the same written, dropped and quarantined counts as a contract run."""
    runs = {}
    for fmt in ("contract", "auto"):
        out = tmp_path / fmt
        assert cli.main(["--input-format", fmt, "--input", SAMPLE, "--output", str(out), "--as-of", AS_OF,
                         "--quiet"]) == 0
        report = _report(out)
        runs[fmt] = (report["output_records"], report["dropped"], report["quarantined"])
    assert runs["auto"] == runs["contract"]


def test_watch_checks_the_consent_profile_before_it_claims_a_file(tmp_path, capsys):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "ecs.ndjson").write_bytes((ROOT / "sample" / "formats" / "ecs.ndjson").read_bytes())
    code = cli.main(["watch", str(landing), "--output", str(tmp_path / "out"), "--input-format", "ecs",
                     "--consent-profile", str(tmp_path / "missing.toml"), "--idle-timeout", "1", "--quiet"])
    assert code == 2
    assert "cannot read consent profile" in capsys.readouterr().err
    assert (landing / "ecs.ndjson").exists()  # not claimed
