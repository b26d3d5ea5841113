"""`python -m pipeline policy`: the enforced policy as Markdown, for people who read policies, not code."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from schemas.policy import Policy, PolicyError, load_policy


def render(policy: Policy) -> str:
    """Markdown tables: regions, then per type its fields, transforms, consent and retention."""
    out = [
        f"Policy version `{policy.version}` (sha256 `{policy.sha256[:12]}`). Every record needs consent "
        f"`{', '.join(policy.base_consent) or 'none'}` plus the flags of its type; a field not listed is "
        "never written. Envelope fields kept for every type: "
        + ", ".join(f"`{r.name}` ({r.describe()})" for r in policy.envelope)
        + "; plus `event_time`, `country`, `user_region`, `processing_locations`.",
        "",
        "| region | countries | processing locations |",
        "|---|---|---|",
    ]
    for region in policy.regions:
        if region.countries is None:
            countries = "every other valid ISO 3166-1 code"
        elif not region.countries:
            countries = "missing or invalid country (strictest rule)"
        else:
            countries = ", ".join(sorted(region.countries))
        out.append(f"| {region.name} | {countries} | {', '.join(region.processing_locations)} |")
    out += ["", "| type | field | kept as | consent | retention | children |", "|---|---|---|---|---|---|"]
    for t in policy.types.values():
        consent = ", ".join((*policy.base_consent, *t.consent))
        retention = f"{t.retention_days} days, then {'locked' if t.on_expiry == 'lock' else 'deleted'}"
        children = "allowed" if t.children_allowed else "dropped"
        for i, f in enumerate(t.fields):
            first = i == 0
            out.append(
                f"| {t.name if first else ''} | `{f.name}` | {f.describe()} | {consent if first else ''} "
                f"| {retention if first else ''} | {children if first else ''} |"
            )
    return "\n".join(out) + "\n"


DOC = Path(__file__).resolve().parent.parent / "docs" / "policy.md"
DOC_HEAD = """# The enforced policy

Generated from `schemas/policy.toml` by `telemetry-sanitizer policy --write-docs`; a test fails when
this file is stale. The policy file is what the pipeline does; this page is the same thing for people
who read policies, not code. See [design.md](design.md) for why the rules are what they are.

"""


def document(policy: Policy) -> str:
    """The full text of docs/policy.md."""
    return DOC_HEAD + render(policy)


def build_parser() -> argparse.ArgumentParser:
    from pipeline.cli import add_common
    from pipeline.cliparse import Parser

    parser = Parser(prog="telemetry-sanitizer policy", description=__doc__,
                    epilog="examples:\n  telemetry-sanitizer policy | less\n"
                           "  telemetry-sanitizer policy --policy my-policy.toml > my-policy.md\n"
                           "  telemetry-sanitizer policy --write-docs   # refresh docs/policy.md")
    parser.add_argument("--policy", default=None, help="policy TOML file (default: the built-in one)")
    parser.add_argument("--write-docs", action="store_true", help="refresh docs/policy.md of a source checkout")
    add_common(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.write_docs:
        sys.stdout.write(render(policy))
        return 0
    if not DOC.parent.is_dir():
        print(f"error: {DOC.parent}: not a source checkout (no docs/ directory)", file=sys.stderr)
        return 2
    DOC.write_text(document(policy), encoding="utf-8")
    return 0
