#!/usr/bin/env python3
"""Render ``nextflow_schema.json`` as the Markdown parameter reference ``docs/parameters.md``.

Usage: ``python scripts/schema_to_docs.py [SCHEMA] [OUTPUT] [--check]`` (defaults:
``nextflow_schema.json`` and ``docs/parameters.md`` of the repository). ``--check``
writes nothing and exits 1 when the output is out of date.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

HEADER = """# Parameters

Every parameter of the pipeline, for `nextflow run` (`--name value` or `-params-file`) and
for the embedded runner (`scmaskgan run --params-file`, step parameters only). Generated
from `nextflow_schema.json` by `scripts/schema_to_docs.py`; do not edit by hand (the step
parameters come from `src/scmaskgan/core/config.py` through `scripts/make_nextflow_schema.py`).
"""


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(entry: dict[str, Any]) -> str:
    if "default" not in entry:
        return "unset"
    value = entry["default"]
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`" if value != "" else "`''`"


def _type(entry: dict[str, Any]) -> str:
    if "enum" in entry:
        return " \\| ".join(f"`{v}`" for v in entry["enum"])
    return entry["type"] + (f" ({entry['format']})" if "format" in entry else "")


def render(schema: dict[str, Any]) -> str:
    """The Markdown text: one section and table per schema group, in schema order."""
    parts = [HEADER]
    for group in schema["$defs"].values():
        required = set(group.get("required", []))
        parts.append(f"\n## {group['title']}\n")
        if group.get("description"):
            parts.append(f"{group['description']}\n")
        parts.append("\n| Parameter | Type | Default | Description |\n|---|---|---|---|\n")
        for name, entry in group["properties"].items():
            flag = " (required)" if name in required else ""
            parts.append(
                f"| `--{name}`{flag} | {_type(entry)} | {_default(entry)} | {_cell(entry['description'])} |\n"
            )
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` verify) the Markdown reference; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("schema", nargs="?", type=Path, default=ROOT / "nextflow_schema.json")
    parser.add_argument("output", nargs="?", type=Path, default=ROOT / "docs" / "parameters.md")
    parser.add_argument("--check", action="store_true", help="fail if the output is out of date")
    args = parser.parse_args(argv)
    text = render(json.loads(args.schema.read_text()))
    if args.check:
        if not args.output.is_file() or args.output.read_text() != text:
            print(f"{args.output} is out of date: run scripts/schema_to_docs.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
