"""Static stand-ins for the parts of Nextflow and nf-schema the pipeline tests need.

* :func:`main_functions`: main.nf's helper functions run with Groovy
  (``tests/nextflow/ResolveSamplesheets.groovy``), with ``s3://`` and ``gs://`` paths that
  behave as Nextflow's (``toString()`` drops the scheme).
* :func:`nf_schema_errors`: a samplesheet checked as nf-schema's ``samplesheetToList`` does
  (JSON Schema plus ``exists``, ``directory-path`` and ``uniqueEntries``; empty cells are
  missing values; relative paths resolved by ``Nextflow.file()``, i.e. against the launch
  folder, the current directory).
* :func:`config_settings` and :func:`process_settings`: the ``process`` settings of the
  config files and the value each process ends up with, in the order of Nextflow's
  ``ProcessConfig.applyConfig``: ``withLabel`` selectors, then ``withName`` on the simple
  name, then on the fully qualified name (each in config order, the last match wins), then
  the generic ``process.<directive>`` settings for directives still unset.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema

REPO = Path(__file__).resolve().parents[1]
NF = REPO / "tests" / "nextflow"
INPUT_SCHEMA = json.loads((REPO / "assets" / "schema_input.json").read_text())


def jar() -> str:
    """The Nextflow language server jar (downloaded once by fetch_jar.sh)."""
    return subprocess.run(["bash", str(NF / "fetch_jar.sh")], capture_output=True, text=True, check=True).stdout.strip()


def main_functions(exprs: list[str], work: Path, cloud_root: Path, cwd: Path) -> list[str]:
    """Evaluate Groovy expressions over main.nf's functions; one output line per expression."""
    result = subprocess.run(
        ["java", "-XX:TieredStopAtLevel=1", "-cp", jar(), "groovy.ui.GroovyMain", str(NF / "ResolveSamplesheets.groovy"),
         str(REPO / "main.nf"), str(work), str(cloud_root), *exprs],
        capture_output=True, text=True, cwd=cwd, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(exprs), result.stdout
    return lines


# ------------------------------------------------------------------ nf-schema
def _directory_path(value: object) -> bool:
    return not isinstance(value, str) or not Path(value).exists() or Path(value).is_dir()


def _exists(validator, exists, instance, schema):
    if exists and isinstance(instance, str) and not Path(instance).exists():
        yield jsonschema.ValidationError(f"{instance!r} does not exist")


def _unique_entries(validator, fields, instance, schema):
    seen = set()
    for row in instance if isinstance(instance, list) else []:
        key = tuple(row.get(f) for f in fields)
        if key in seen:
            yield jsonschema.ValidationError(f"{dict(zip(fields, key, strict=True))} is not unique")
        seen.add(key)


FORMATS = jsonschema.FormatChecker()
FORMATS.checks("directory-path")(_directory_path)
FORMATS.checks("path")(lambda value: True)
FORMATS.checks("file-path")(lambda value: not isinstance(value, str) or not Path(value).is_dir())
NfSchemaValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"exists": _exists, "uniqueEntries": _unique_entries}
)


def nf_schema_errors(sheet: Path, schema: dict[str, Any] = INPUT_SCHEMA) -> list[str]:
    """Errors nf-schema would raise for the rows of a samplesheet (relative paths: from the cwd)."""
    delimiter = "\t" if sheet.name.endswith(".tsv") else ","
    with open(sheet, newline="") as handle:
        rows = [{k: v for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle, delimiter=delimiter)]
    return [e.message for e in NfSchemaValidator(schema, format_checker=FORMATS).iter_errors(rows)]


# ------------------------------------------------------------------ config files
_TOKEN = re.compile(r"""
    (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<string>'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")
  | (?P<newline>\n)
  | (?P<open>[{\[(])
  | (?P<close>[}\])])
  | (?P<other>[^\s{}\[\]()'"/]+|/)
  | (?P<space>[ \t\r]+)
""", re.S | re.X)


def _statements(text: str) -> list[tuple[str, str | None]]:
    """Top-level statements of a config block: (text, body of a trailing ``{ }`` block or None)."""
    out: list[tuple[str, str | None]] = []
    depth, start, head_end = 0, 0, None
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "open":
            if depth == 0 and m.group() == "{" and "=" not in text[start:m.start()]:
                head_end = m.start()
            depth += 1
        elif kind == "close":
            depth -= 1
            if depth == 0 and head_end is not None:
                out.append((text[start:head_end].strip(), text[head_end + 1:m.start()]))
                start, head_end = m.end(), None
        elif kind == "newline" and depth == 0:
            if text[start:m.start()].strip():
                out.append((text[start:m.start()].strip(), None))
            start = m.end()
    if text[start:].strip():
        out.append((text[start:].strip(), None))
    return out


def config_settings(path: Path, scope: tuple[str, ...] = (), text: str | None = None) -> list[tuple[tuple[str, ...], str, str]]:
    """Every ``name = value`` of a config file as (scope, name, value text), includes expanded.

    Scopes are block names (``profiles``, ``gpu``, ``process``, ``withLabel:process_gpu``);
    a dotted name is split into scopes (``process.executor`` -> scope ``process``).
    """
    if text is None:
        text = "".join(m.group() for m in _TOKEN.finditer(path.read_text()) if m.lastgroup != "comment")
    found: list[tuple[tuple[str, ...], str, str]] = []
    for head, body in _statements(text):
        if body is not None:
            selector = re.fullmatch(r"(withName|withLabel)\s*:\s*['\"](.*)['\"]", head)
            found += config_settings(path, (*scope, f"{selector[1]}:{selector[2]}" if selector else head), body)
        elif head.startswith("includeConfig"):
            found += config_settings(path.parent / re.search(r"['\"](.+)['\"]", head)[1], scope)
        elif "=" in head:
            name, value = (s.strip() for s in head.split("=", 1))
            *outer, key = name.split(".")
            found.append(((*scope, *outer), key, value))
    return found


def process_settings(
    process: str, labels: list[str], profiles: list[str], qualified: str | None = None
) -> dict[str, str]:
    """Directive -> value text a process ends up with (``process`` settings of nextflow.config).

    Profiles are taken in the order the config file defines them, as Nextflow does.
    """
    settings = config_settings(REPO / "nextflow.config")
    defined = [s[0][1] for s in settings if s[0][:1] == ("profiles",) and len(s[0]) >= 2]
    order = sorted(profiles, key=lambda p: [s[0][1] for s in settings if s[0][:1] == ("profiles",)].index(p))
    assert set(profiles) <= set(defined), profiles
    chosen = [(scope, k, v) for scope, k, v in settings if scope[:1] != ("profiles",)]
    for profile in order:
        chosen += [(scope[2:], k, v) for scope, k, v in settings if scope[:2] == ("profiles", profile)]
    generic: dict[str, str] = {}
    selectors: dict[str, dict[str, str]] = {}  # first definition fixes a selector's position
    for scope, key, value in chosen:
        if scope[:1] != ("process",) or len(scope) > 2:
            continue
        if len(scope) == 1:
            generic[key] = value
        else:
            selectors.setdefault(scope[1], {})[key] = value
    result: dict[str, str] = {}

    def apply(kind: str, targets: list[str]) -> None:
        for rule, values in selectors.items():
            if not rule.startswith(f"{kind}:"):
                continue
            pattern = rule.split(":", 1)[1]
            negated = pattern.startswith("!")
            matched = any(re.fullmatch(pattern.lstrip("!"), t) for t in targets)
            if matched != negated:
                result.update(values)

    apply("withLabel", labels or [""])
    apply("withName", [process])
    if qualified:
        apply("withName", [qualified])
    for key, value in generic.items():
        result.setdefault(key, value)
    return result
