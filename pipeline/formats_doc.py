"""`telemetry-sanitizer formats`: the source-format mappings as Markdown tables, one per mapping
file, for people who review what a Windows, ECS or OCSF event becomes before they send it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from schemas.formats import AUTO, MAPPED_FORMATS, FormatError, FormatMapping, Source, Spec, load_formats
from schemas.policy import PolicyError, load_policy


def _source(src: Source) -> str:
    return f"`{src.path}`" + (f" ({src.convert})" if src.convert else "")


def describe(spec: Spec) -> str:
    """One cell: where a value comes from, in words."""
    if spec.value is not None:
        text = f"always `{spec.value}`"
    elif spec.join:
        parts = [" or ".join(_source(s) for s in group) for group in spec.join]
        text = f" + `{spec.sep}` + ".join(parts) if spec.sep else " + ".join(parts)
        if spec.complete:
            text += " (only when every part is present)"
    else:
        text = " or ".join(_source(s) for s in spec.sources)
    if spec.convert == "map":
        text += " mapped: " + ", ".join(f"{k} → {v}" for k, v in spec.table)
    elif spec.convert == "kv":
        text += f" (its `{spec.key} = ...` line)"
    elif spec.convert:
        text += f" ({spec.convert})"
    return text.replace("|", "\\|")


def _when(mapping: FormatMapping, when: tuple) -> str:
    parts = []
    for name, values in when:
        shown = " or ".join(str(v) for v in values)
        parts.append(f"{name} = {shown}")
    return ", ".join(parts).replace("|", "\\|")


def render(mapping: FormatMapping) -> str:
    """The tables of one mapping file: keys, envelope, then one row per contract field of each event."""
    roots = ", ".join(f"`{r}`" if r else "the event itself" for r in mapping.data_roots)
    out = [f"## `{mapping.name}`", "", mapping.description + ".", "",
           f"Mapping file: `schemas/formats/{mapping.name}.toml`. Consent: only from `--consent-profile`. "
           f"Detected by `auto` when an object has: {', '.join(f'`{p}`' for p in mapping.detect)}. "
           f"`data:` paths are read in the first object of: {roots}.",
           "", "| key | from | values |", "|---|---|---|"]
    for key in mapping.keys:
        values = ", ".join(f"{src} → {alias}" for src, alias in key.aliases) or (key.convert or "text")
        out.append(f"| {key.name} | {' or '.join(_source(s) for s in key.sources)} | {values} |")
    out += ["", "| envelope field | from |", "|---|---|"]
    names = {"tenant": "tenant_id (and the profile's tenant)", "device_group": "the profile's device group only",
             "country": "country (else the profile's)"}
    for role, spec in mapping.envelope:
        out.append(f"| {names.get(role, role)} | {describe(spec)} |")
    out += ["", "| source event | when | record type | field | from |", "|---|---|---|---|---|"]
    for ev in mapping.events:
        rows = [(f"envelope `{r}`", describe(s)) for r, s in ev.envelope]
        rows += [(f"`{f}`", describe(s)) for f, s in ev.fields]
        for i, (field, source) in enumerate(rows):
            first = i == 0
            out.append(f"| {ev.name if first else ''} | {_when(mapping, ev.when) if first else ''} "
                       f"| {ev.record_type if first else ''} | {field} | {source} |")
    if mapping.references:
        out += ["", "References: " + "; ".join(mapping.references)]
    return "\n".join(out) + "\n"


DOC = Path(__file__).resolve().parent.parent / "docs" / "formats.md"
DOC_HEAD = """# Source-format mappings

Generated from `schemas/formats/*.toml` by `telemetry-sanitizer formats --write-docs`; a test fails when
this file is stale. How these mappings are applied, the consent profile and the coverage: see
[input-formats.md](input-formats.md). Every mapped record then goes through the policy of
[policy.md](policy.md) like contract input; a source field not named here is dropped and counted,
a source event not named here is dropped as `unmapped_event:<format>:<id>`.

"""


def document(mappings: dict[str, FormatMapping]) -> str:
    """The full text of docs/formats.md."""
    return DOC_HEAD + "\n".join(render(mappings[n]) for n in MAPPED_FORMATS if n in mappings)


def build_parser() -> argparse.ArgumentParser:
    from pipeline.cli import add_common
    from pipeline.cliparse import Parser

    parser = Parser(prog="telemetry-sanitizer formats", description=__doc__,
                    epilog="examples:\n  telemetry-sanitizer formats | less\n"
                           "  telemetry-sanitizer formats --write-docs   # refresh docs/formats.md")
    parser.add_argument("--policy", default=None, help="policy TOML file the mappings are checked against")
    parser.add_argument("--write-docs", action="store_true", help="refresh docs/formats.md of a source checkout")
    add_common(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        mappings = load_formats([AUTO], load_policy(args.policy))  # every mapping file there is
    except (PolicyError, FormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.write_docs:
        sys.stdout.write(document(mappings))
        return 0
    if not DOC.parent.is_dir():
        print(f"error: {DOC.parent}: not a source checkout (no docs/ directory)", file=sys.stderr)
        return 2
    DOC.write_text(document(mappings), encoding="utf-8")
    return 0
