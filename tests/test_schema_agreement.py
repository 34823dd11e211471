"""The Nextflow samplesheet check and the Python reader accept and reject the same samplesheets.

Nextflow side: ``main.nf``'s ``resolvedSamplesheet`` (run with Groovy, relative paths made
absolute against the samplesheet's folder), then ``assets/schema_input.json`` with
``jsonschema`` plus the rules nf-schema adds to JSON Schema: empty cells are missing
values, ``exists`` (the path must exist), the ``directory-path`` format (an existing path
must be a folder) and ``uniqueEntries``. Python side: ``scmaskgan.samplesheet.read_samplesheet``.
Both run from a launch folder that is not the samplesheet's folder.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from scmaskgan.errors import InputError
from scmaskgan.samplesheet import read_samplesheet

jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "assets" / "schema_input.json").read_text())
NF = REPO / "tests" / "nextflow"

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="java (17+) runs main.nf's samplesheet code")


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
NfSchemaValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"exists": _exists, "uniqueEntries": _unique_entries}
)


def nf_schema_errors(sheet: Path) -> list[str]:
    """Errors nf-schema's samplesheetToList would raise for a (resolved) samplesheet."""
    delimiter = "\t" if sheet.name.endswith(".tsv") else ","
    with open(sheet, newline="") as handle:
        rows = [{k: v for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle, delimiter=delimiter)]
    return [e.message for e in NfSchemaValidator(SCHEMA, format_checker=FORMATS).iter_errors(rows)]


def reader_error(sheet: Path) -> str | None:
    try:
        read_samplesheet(sheet)
    except InputError as exc:
        return str(exc)
    return None


# name -> (samplesheet text, valid?); the samplesheets are in `sheets/`, the data in
# `data/` beside it, and both sides run from the folder holding the two.
CASES = {
    "minimal": ("sample,path\na,../data/a.h5ad\n", True),
    "all columns and metadata": ("sample,path,label_key,batch,risk\na,../data/a.h5ad,cell_type,b1,high\n"
                                 "b,../data/b.csv.gz,labels.csv,b1,low\n", True),
    "empty optional cells": ("sample,path,label_key,batch\na,../data/a.h5ad,,\n", True),
    "10x folder": ("sample,path\na,../data/filtered_feature_bc_matrix\n", True),
    "tsv and txt counts": ("sample,path\na,../data/a.tsv\nb,../data/b.txt.gz\n", True),
    "absolute path": ("sample,path\na,{data}/a.h5ad\n", True),
    "id with dots, dashes, underscores": ("sample,path\nS-1.a_2,../data/a.h5ad\n", True),
    "missing file": ("sample,path\na,../data/nope.h5ad\n", False),
    "path relative to the launch folder": ("sample,path\na,data/a.h5ad\n", False),
    "unsupported extension": ("sample,path\na,../data/a.xlsx\n", False),
    "duplicate sample": ("sample,path\na,../data/a.h5ad\na,../data/b.csv.gz\n", False),
    "space in sample": ("sample,path\nmy sample,../data/a.h5ad\n", False),
    "slash in sample": ("sample,path\na/b,../data/a.h5ad\n", False),
    "empty sample": ("sample,path\n,../data/a.h5ad\n", False),
    "empty path": ("sample,path\na,\n", False),
    "no path column": ("sample,counts\na,../data/a.h5ad\n", False),
    "no sample column": ("id,path\na,../data/a.h5ad\n", False),
    "header only": ("sample,path\n", False),
}
DATA_FILES = ("a.h5ad", "b.csv.gz", "a.tsv", "b.txt.gz", "a.xlsx")


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], str | None]]:
    """Case -> (nf-schema errors, reader error), from a launch folder that is not the sheets' folder."""
    root = tmp_path_factory.mktemp("agreement")
    data = root / "data"
    (data / "filtered_feature_bc_matrix").mkdir(parents=True)
    for name in DATA_FILES:
        (data / name).write_bytes(b"\0")
    sheets = []
    for i, (text, _) in enumerate(CASES.values()):
        sheet = root / "sheets" / f"case{i}.csv"
        sheet.parent.mkdir(exist_ok=True)
        sheet.write_text(text.format(data=data))
        sheets.append(sheet)
    launch = root  # where data/ is: a path relative to it, not to sheets/, must not be found
    jar = subprocess.run(["bash", str(NF / "fetch_jar.sh")], capture_output=True, text=True, check=True).stdout.strip()
    resolved = subprocess.run(
        ["java", "-XX:TieredStopAtLevel=1", "-cp", jar, "groovy.ui.GroovyMain", str(NF / "ResolveSamplesheets.groovy"),
         str(REPO / "main.nf"), str(root / "work"), *map(str, sheets)],
        capture_output=True, text=True, cwd=launch, timeout=300,
    )
    assert resolved.returncode == 0, resolved.stderr
    copies = [Path(line) for line in resolved.stdout.split()]
    assert len(copies) == len(sheets)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(launch)  # nf-schema resolves what is still relative against the launch folder
        return {
            name: (nf_schema_errors(copy), reader_error(sheet))
            for name, copy, sheet in zip(CASES, copies, sheets, strict=True)
        }


@pytest.mark.parametrize("case", CASES)
def test_nextflow_and_python_agree(verdicts: dict[str, tuple[list[str], str | None]], case: str) -> None:
    nf_errors, py_error = verdicts[case]
    valid = CASES[case][1]
    assert (not nf_errors) is valid, f"nf-schema: {nf_errors}"
    assert (py_error is None) is valid, f"reader: {py_error}"


def test_the_test_profile_samplesheet_is_valid_for_both() -> None:
    sheet = REPO / "assets" / "test" / "samplesheet.csv"
    assert reader_error(sheet) is None
    samples = read_samplesheet(sheet)
    assert [s.sample for s in samples] == ["pbmc_a", "pbmc_b"]
    assert all(s.path.is_file() for s in samples)
