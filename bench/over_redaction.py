"""Over-redaction check: what the free-text rule changes in the bundled sample, and what must survive.

    python bench/over_redaction.py [--sample FILE ...]

For every kept string field with transform `text` or `scrub`, the share of values the output
changes (a changed value is one whose output differs from the input). Then the kinds of
values threat analysis needs, which must come through unchanged:
  hosts        the host of every URL inside a `scrub` field (`scheme://host` stays)
  threat names detection.threat_name
  executables  the file name of os_event.image / parent_image, and the program a command line starts
  switch names every `-x`, `--name`, `/name` token of a command line (not `-pS3cret`: a value
               glued to a one-letter switch, whose switch letter stays but not the token)
  Wi-Fi        wifi.security
  products     the envelope's product, license.product, installed_app.name and publisher
  GUIDs        every GUID inside a `text`/`scrub` value (`{...}` or bare, dashed)
  versions     installed_app.version, license.product_version, device.os_version
  file names   the last component of a path field (file_path, target_path, dump_path, install_path,
               suspicious_file.file_name) when it has an extension and no account name is in it
Hex digests are not a kind here: the sample's digests inside `text`/`scrub` values are all NTLM
hashes after `/ntlm:` (credentials, removed on purpose); tests/test_secrets.py checks digests,
GUIDs, versions and file names of many shapes against the free-text rule instead.

Runs the real columnar path on the sample. With `PYTHONPATH=/old/tree` the same report is made
for another version of the code (this script only appends its own tree to sys.path).
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime

import orjson

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)

from schemas.policy import load_policy  # noqa: E402
from transforms.columnar import sanitize_columnar  # noqa: E402
from transforms.records import ORIGIN_LINE_BITS, SanitizeContext  # noqa: E402

SAMPLES = [os.path.join(ROOT, "sample", "telemetry-sample.ndjson"),
           os.path.join(ROOT, "sample", "telemetry-sample-2.ndjson.gz")]
KEY = b"over-redaction-key-0123456789abcdef"
AS_OF = datetime(2026, 11, 25, tzinfo=UTC)
_URL_HOST = re.compile(r"(?i)\b[a-z][a-z0-9+.-]{1,31}://(?:[^\s/?#@\"']*@)?([A-Za-z0-9.-]+\.[A-Za-z]{2,63})(?=[:/\s\"'?#]|$)")
_SWITCH = re.compile(r"(?<![^\s\"'])(--?[A-Za-z][A-Za-z0-9-]{0,40}|/[A-Za-z][A-Za-z0-9]{0,20})(?=[\s:=\"']|$)")
_GUID = re.compile(r"(?<![0-9A-Za-z-])[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}(?![0-9A-Za-z-])")
_FILE_NAME = re.compile(r"[^\\/]+\.[A-Za-z0-9]{1,8}$")
_VERSIONS = {"installed_app": [("data.version", "version")], "license": [("data.product_version", "product_version")],
             "device": [("data.os_version", "os_version")]}
_PATHS = {"detection": ["file_path"], "os_event": ["target_path"], "dump": ["dump_path"],
          "installed_app": ["install_path"], "suspicious_file": ["file_path", "file_name"]}
_PROFILE_NAME = re.compile(r"(?i)[\\/](?:users|home)[\\/]")
_PROGRAM = re.compile(r"^\"?(?:[^\"\s]*[\\/])?([A-Za-z0-9_.-]+\.(?:exe|com|bat|cmd|ps1|sh|py))\b", re.IGNORECASE)


def _lines(paths: list[str]) -> list[tuple[int, bytes]]:
    out = []
    for index, path in enumerate(paths):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as fh:
            for n, raw in enumerate(fh.read().split(b"\n"), 1):
                out.append(((index << ORIGIN_LINE_BITS) | n, raw))
    return out


def _fields(policy) -> dict[str, list[tuple[str, str]]]:
    """type -> [(input path, output column)] of every `text`/`scrub` field."""
    out: dict[str, list[tuple[str, str]]] = {}
    for rtype, tpol in policy.types.items():
        pairs = [(rule.name, rule.output_columns()[0].name) for rule in policy.envelope if rule.transform == "text"]
        pairs += [("data." + rule.name, rule.output_columns()[0].name)
                  for rule in tpol.fields if rule.transform in ("text", "scrub")]
        out[rtype] = pairs
    return out


def _get(rec: dict, path: str):
    node = rec
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def run(paths: list[str] | None = None) -> dict:
    """{"changed": {field: Counter(values, changed)}, "kinds": {kind: Counter(seen, lost)}, "lost": examples}."""
    policy = load_policy()
    ctx = SanitizeContext(policy=policy, key=KEY, as_of=AS_OF)
    lines = _lines(paths or SAMPLES)
    raw_by_origin = dict(lines)
    rows: dict[int, tuple[str, dict]] = {}
    # one batch per file part, as the pipeline reads them
    batch = 2000
    for start in range(0, len(lines), batch):
        part = lines[start:start + batch]
        numbered = [(origin & ((1 << ORIGIN_LINE_BITS) - 1), raw) for origin, raw in part]
        index = part[0][0] >> ORIGIN_LINE_BITS
        if any(origin >> ORIGIN_LINE_BITS != index for origin, _ in part):  # a batch spans two files
            for i in {origin >> ORIGIN_LINE_BITS for origin, _ in part}:
                sub = [(o & ((1 << ORIGIN_LINE_BITS) - 1), r) for o, r in part if o >> ORIGIN_LINE_BITS == i]
                _collect(sanitize_columnar(ctx, "sample", i, sub), rows)
            continue
        _collect(sanitize_columnar(ctx, "sample", index, numbered), rows)
    fields = _fields(policy)
    changed: dict[str, Counter] = defaultdict(Counter)
    kinds: dict[str, Counter] = defaultdict(Counter)
    lost: dict[str, list[str]] = defaultdict(list)

    def check(kind: str, needle: str, haystack: str | None) -> None:
        kinds[kind]["seen"] += 1
        if haystack is None or needle not in haystack:
            kinds[kind]["lost"] += 1
            if len(lost[kind]) < 10:
                lost[kind].append(f"{needle!r} not in {haystack!r}")

    for origin, (rtype, row) in rows.items():
        raw = raw_by_origin[origin]
        rec = orjson.loads(raw.removeprefix(b"\xef\xbb\xbf"))
        for path, column in fields[rtype]:
            value = _get(rec, path)
            if not isinstance(value, str) or not value:
                continue
            name = f"{rtype}.{path}" if path.startswith("data.") else path
            changed[name]["values"] += 1
            changed[name]["changed"] += row.get(column) != value
            out = row.get(column)
            if path.startswith("data.") and rtype != "spam_email":
                for host in _URL_HOST.findall(value):
                    check("hosts", host.lower(), (out or "").lower())
            for guid in _GUID.findall(value):
                check("GUIDs", guid, out)
        for path, column in _VERSIONS.get(rtype, []):
            value = _get(rec, path)
            if isinstance(value, str) and value:
                check("versions", value, row.get(column))
        for field in _PATHS.get(rtype, []):
            value = _get(rec, "data." + field)
            if not isinstance(value, str) or not value:
                continue
            m = _FILE_NAME.search(value)
            # a file named after its owner loses the name with the profile folder (`alice_cv.pdf`): not counted
            if m and not _PROFILE_NAME.search(value):
                check("file names", m[0], row.get(field))
        if rtype == "detection" and isinstance(_get(rec, "data.threat_name"), str):
            check("threat names", rec["data"]["threat_name"], row.get("threat_name"))
        if rtype == "os_event":
            for field in ("image", "parent_image"):
                value = _get(rec, "data." + field)
                if isinstance(value, str) and value:
                    check("executables", re.split(r"[\\/]", value)[-1], row.get(field))
            cmd = _get(rec, "data.command_line")
            if isinstance(cmd, str):
                m = _PROGRAM.match(cmd)
                if m:
                    check("executables", m.group(1), row.get("command_line"))
                for switch in _SWITCH.findall(cmd):
                    if switch[1] != "-" and len(switch) > 2 and any(c.isdigit() for c in switch):
                        continue     # `-pS3cret`: a value glued to its switch, not a switch name
                    check("switch names", switch, row.get("command_line"))
        if rtype == "wifi" and isinstance(_get(rec, "data.security"), str):
            check("Wi-Fi security", rec["data"]["security"], row.get("security"))
        for path, column in (("product", "product"), ("data.product", "licensed_product"), ("data.name", "name"),
                             ("data.publisher", "publisher")):
            if path != "product" and rtype not in ("license", "installed_app"):
                continue
            if rtype == "license" and path in ("data.name", "data.publisher"):
                continue
            if rtype == "installed_app" and path == "data.product":
                continue
            value = _get(rec, path)
            if isinstance(value, str) and value:
                check("products", value, row.get(column))
    return {"changed": changed, "kinds": kinds, "lost": lost}


def _collect(result, rows: dict[int, tuple[str, dict]]) -> None:
    for key, table in result.outputs.items():
        if key.area != "data":
            continue
        for row in table.to_pylist():
            rows[row["_origin"]] = (key.record_type, row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", nargs="*", help="NDJSON files (default: the bundled sample)")
    args = ap.parse_args()
    res = run(args.sample or None)
    print("| field | values | changed | share |\n|---|---:|---:|---:|")
    for name in sorted(res["changed"]):
        c = res["changed"][name]
        print(f"| {name} | {c['values']} | {c['changed']} | {c['changed'] / max(c['values'], 1):.1%} |")
    print("\n| must survive | seen | lost |\n|---|---:|---:|")
    for kind in sorted(res["kinds"]):
        c = res["kinds"][kind]
        print(f"| {kind} | {c['seen']} | {c['lost']} |")
    for kind, examples in sorted(res["lost"].items()):
        print(f"lost {kind}: " + "; ".join(examples[:5]))


if __name__ == "__main__":
    main()
