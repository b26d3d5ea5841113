"""`telemetry-sanitizer schema`: each record type's output schema as a table, JSON or SQL DDL.

The schema comes from the policy (schemas/policy.toml), the same function the writers use, so
what this prints is what a reader of the output tables sees, partition columns included.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import pyarrow as pa

from pipeline.cliparse import Parser
from schemas.policy import PARTITION_COLUMNS, Policy, PolicyError, load_policy

QUARANTINE = "_quarantine"

_SQL = {
    pa.string(): "STRING", pa.int64(): "BIGINT", pa.int32(): "INT", pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN", pa.date32(): "DATE",
}


def sql_type(t: pa.DataType) -> str:
    """Spark / Delta Lake SQL type of an Arrow type."""
    if t in _SQL:
        return _SQL[t]
    if pa.types.is_timestamp(t):
        return "TIMESTAMP"
    if pa.types.is_list(t):
        return f"ARRAY<{sql_type(t.value_type)}>"
    raise ValueError(f"no SQL type for {t}")


def schemas_of(policy: Policy, types: list[str]) -> dict[str, pa.Schema]:
    from transforms.records import QUARANTINE_SCHEMA

    out = {}
    for name in types:
        out[name] = QUARANTINE_SCHEMA if name == QUARANTINE else policy.dataset_schema(name)
    return out


def as_json(schemas: dict[str, pa.Schema]) -> dict[str, Any]:
    return {name: {"columns": [{"name": f.name, "type": str(f.type), "sql_type": sql_type(f.type),
                                "nullable": f.nullable} for f in schema],
                   "partition_columns": [] if name == QUARANTINE else list(PARTITION_COLUMNS)}
            for name, schema in schemas.items()}


def as_table(schemas: dict[str, pa.Schema]) -> str:
    out = []
    for name, schema in schemas.items():
        width = max(len(f.name) for f in schema)
        out.append(f"{name} ({len(schema)} columns)")
        for f in schema:
            part = "  (partition)" if name != QUARANTINE and f.name in PARTITION_COLUMNS else ""
            out.append(f"  {f.name:<{width}}  {str(f.type)}{part}")
        out.append("")
    return "\n".join(out)


def as_sql(schemas: dict[str, pa.Schema]) -> str:
    out = []
    for name, schema in schemas.items():
        cols = ",\n".join(f"  `{f.name}` {sql_type(f.type)}" for f in schema)
        part = "" if name == QUARANTINE else f"\nPARTITIONED BY ({', '.join(PARTITION_COLUMNS)})"
        out.append(f"CREATE TABLE IF NOT EXISTS `{name}` (\n{cols}\n) USING DELTA{part};\n")
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    from pipeline.cli import add_common

    parser = Parser(prog="telemetry-sanitizer schema",
                    description="Print the output schema of each record type (partition columns included) and "
                                "of the quarantine table, as the policy defines them.",
                    epilog="examples:\n  telemetry-sanitizer schema --type url_visit\n"
                           "  telemetry-sanitizer schema --format sql > tables.sql\n"
                           "  telemetry-sanitizer schema --format json | jq '.detection.columns[].name'")
    parser.add_argument("--format", choices=("table", "json", "sql"), default="table",
                        help="table (default), json, or sql (CREATE TABLE ... USING DELTA)")
    parser.add_argument("--type", dest="types", action="append", metavar="TYPE",
                        help="only this record type (repeat for several; `_quarantine` for the quarantine)")
    parser.add_argument("--policy", default=None, help="policy TOML file (default: the built-in policy)")
    add_common(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    known = [*policy.types, QUARANTINE]
    for name in args.types or []:
        if name not in known:
            parser.error(f"--type {name}: unknown record type (known: {', '.join(known)})")
    schemas = schemas_of(policy, args.types or known)
    if args.format == "json":
        sys.stdout.write(json.dumps(as_json(schemas), indent=2) + "\n")
    elif args.format == "sql":
        sys.stdout.write(as_sql(schemas))
    else:
        sys.stdout.write(as_table(schemas))
    return 0


if __name__ == "__main__":
    sys.exit(main())
