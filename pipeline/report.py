"""The run report (`_report.json`) and its short human summary.

POLICY.md promise 9: every run states what came in, what went out, and what
was removed or dropped, by rule and by reason. The identity
input_records == sum(output_records) + sum(dropped) + sum(quarantined)
is checked here, and a run whose numbers do not reconcile fails.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from pipeline.options import describe_parallelism


def _group(stats: Counter, prefix: str) -> dict[str, int]:
    return {k[len(prefix):]: v for k, v in sorted(stats.items()) if k.startswith(prefix) and v}


def build_report(stats: Counter, meta: dict[str, Any]) -> dict[str, Any]:
    """Structured report from the summed counters of a run plus run metadata."""
    output = _group(stats, "output/")
    dropped = _group(stats, "dropped/")
    quarantined = _group(stats, "quarantined/")
    special: dict[str, dict[str, int]] = defaultdict(dict)
    for key, n in _group(stats, "special_category/").items():
        category, _, name = key.partition("/")
        special[category][name] = n
    accounted = sum(output.values()) + sum(dropped.values()) + sum(quarantined.values())
    written = _group(stats, "written/")
    types = (set(output) | set(written)) - {"_quarantine"}
    writer_mismatch = {t: (output.get(t, 0), written.get(t, 0))
                       for t in types if output.get(t, 0) != written.get(t, 0)}
    if written.get("_quarantine", 0) != sum(quarantined.values()):
        writer_mismatch["_quarantine"] = (sum(quarantined.values()), written.get("_quarantine", 0))
    report = {
        **meta,
        "input_records": stats.get("input_records", 0),
        "blank_lines": stats.get("blank_lines", 0),
        "output_records": output,
        "dropped": dropped,
        "quarantined": quarantined,
        "identity": {
            "input_records": stats.get("input_records", 0),
            "output_plus_dropped_plus_quarantined": accounted,
            "holds": accounted == stats.get("input_records", 0) and not writer_mismatch,
            "rows_written_match": not writer_mismatch,
        },
        "locked_records": _group(stats, "locked/"),
        "fields_removed": _group(stats, "fields_removed/"),
        "values_scrubbed": _group(stats, "values_scrubbed/"),
        "removed_fields_by_name": _group(stats, "removed_field/"),
        "special_category_fields": {k: dict(sorted(v.items())) for k, v in sorted(special.items())},
        "files_written": stats.get("files_written", 0),
    }
    detected = _group(stats, "input_format/")
    if detected:  # --input-format auto: what each line was read as
        report["auto_detected_formats"] = detected
    lost = {k[len("unreadable_bytes/"):]: v for k, v in sorted(stats.items()) if k.startswith("unreadable_bytes/")}
    report["input_complete"] = not quarantined.get("unreadable_input")
    report["unreadable_input"] = {  # what could not be read; its quarantine rows carry the byte offsets
        "parts": quarantined.get("unreadable_input", 0),
        "bytes_not_read": sum(lost.values()),
        "files": lost,
    }
    if writer_mismatch:
        report["identity"]["writer_mismatch"] = {k: list(v) for k, v in writer_mismatch.items()}
    return report


def summary(report: dict[str, Any]) -> str:
    """A few lines for the terminal: counts by type, drops and quarantine by reason, key mode."""
    lines = [
        f"run {report['run_id']}: {report['input_records']} records in, "
        f"{sum(report['output_records'].values())} written, {sum(report['dropped'].values())} dropped, "
        f"{sum(report['quarantined'].values())} quarantined "
        f"({_identity(report)}) in {report['duration_seconds']:.1f}s "
        f"on {report['runner'].rsplit('.', 1)[-1]}{describe_parallelism(report.get('parallelism') or {})}",
        "  written:     " + _pairs(report["output_records"]),
        "  dropped:     " + _pairs(report["dropped"]),
        "  quarantined: " + _pairs(report["quarantined"]),
        "  removed fields: " + _pairs(report["fields_removed"])
        + (f"; values scrubbed: {_pairs(report['values_scrubbed'])}" if report.get("values_scrubbed") else "")
        + f"; special categories seen: {', '.join(report['special_category_fields']) or 'none'}",
        f"  policy {report['policy']['version']} (sha256 {report['policy']['sha256'][:12]}), "
        f"key: {report['key']['mode']}" + ("" if report["key"]["linkable_across_runs"]
                                           else " (pseudonyms are NOT linkable across runs)"),
        f"  output: {report['output_dir']}  report: {report['output_dir']}/{report.get('report_path', '_report.json')}",
    ]
    if report.get("input_formats"):
        lines.append("  input formats: " + _pairs(dict(Counter(report["input_formats"].values())))
                     + " file(s)" + (f"; auto detected: {_pairs(report['auto_detected_formats'])}"
                                     if report.get("auto_detected_formats") else "")
                     + (f"; consent profile: {report['consent_profile']}" if report.get("consent_profile")
                        else "; no consent profile: mapped records dropped as consent_missing"))
    if report.get("nothing_replaced"):
        lines.append(f"  {report['nothing_replaced']}")
    elif report.get("tables"):
        resumed = report.get("resumed") or []
        lines.append(f"  committed: {len(report['tables']) - len(resumed)} table(s)"
                     + (f", {len(resumed)} already committed by the interrupted run {report['run_id']}"
                        if resumed else ""))
    partial = report.get("unreadable_input") or {}
    if not report.get("input_complete", True):
        lines.append(f"  PARTIAL INPUT: {partial['parts']} part(s) of {len(partial['files'])} file(s) "
                     f"could not be read, {partial['bytes_not_read']} bytes not read (quarantine reason "
                     "unreadable_input, with the byte offset): " + ", ".join(sorted(partial["files"])))
    if report["key"]["mode"] == "development":
        lines.append("  WARNING: the bundled development key is public; never use it for real data")
    return "\n".join(lines)


def _identity(report: dict[str, Any]) -> str:
    if not report["identity"]["holds"]:
        return "IDENTITY BROKEN"
    if not report.get("input_complete", True):
        return "PARTIAL INPUT: identity holds only for what could be read"
    return "identity holds"


def _pairs(d: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"
