"""The Nextflow samplesheet check and the Python reader accept and reject the same samplesheets.

Nextflow side: ``main.nf``'s ``resolvedSamplesheet`` (run with Groovy, relative paths made
absolute against the samplesheet's folder), then ``assets/schema_input.json`` with
``jsonschema`` plus the rules nf-schema adds to JSON Schema: empty cells are missing
values, ``exists`` (the path must exist), the ``directory-path`` format (an existing path
must be a folder) and ``uniqueEntries``. Python side: ``scmaskgan.io.samplesheet.read_samplesheet``.
Both run from a launch folder that is not the samplesheet's folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scmaskgan.errors import InputError
from scmaskgan.io.samplesheet import read_samplesheet

pytest.importorskip("jsonschema")
from nfharness import REPO, main_functions, nf_schema_errors  # noqa: E402  (needs jsonschema)

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="java (17+) runs main.nf's samplesheet code")


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
    exprs = [f"resolvedSamplesheet('{sheet}')" for sheet in sheets]
    copies = [Path(line) for line in main_functions(exprs, root / "work", root / "cloud", cwd=launch)]
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
