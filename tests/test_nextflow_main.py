"""main.nf's parameter check and samplesheet handling, and the workflow's joins, without Nextflow.

main.nf's functions run with Groovy (``tests/nextflow/ResolveSamplesheets.groovy``), with
cloud paths that behave as Nextflow's S3 and GCS paths; nf-schema's rules are those of
``tests/nfharness.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("jsonschema")
from nfharness import REPO, main_functions, nf_schema_errors  # noqa: E402  (needs jsonschema)

from scmaskgan.io.layout import SAMPLE_STEPS, STEP_INPUTS  # noqa: E402

SCHEMA = json.loads((REPO / "nextflow_schema.json").read_text())
PROPERTIES = {name: entry for g in SCHEMA["$defs"].values() for name, entry in g["properties"].items()}
TEST_SHEET = REPO / "assets" / "test" / "samplesheet.csv"

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="java (17+) runs main.nf's functions")


def validate_parameters(params: dict[str, str]) -> list[str]:
    """What nf-schema's validateParameters() checks of file parameters, from the current folder:
    ``exists`` of the path, and the rows of a file whose entry names a ``schema``."""
    errors = []
    for name, value in params.items():
        entry = PROPERTIES[name]
        if entry.get("exists") and not Path(value).exists():
            errors.append(f"--{name}: {value} does not exist")
        if "schema" in entry:
            errors += nf_schema_errors(Path(value), json.loads((REPO / entry["schema"]).read_text()))
    return errors


@needs_java
def test_test_profile_passes_validation_from_another_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """validateParameters() on the test profile's --input, then samplesheetToList on main.nf's copy."""
    launch = tmp_path / "launch"
    launch.mkdir()
    monkeypatch.chdir(launch)  # nf-schema resolves relative paths against the launch folder
    assert validate_parameters({"input": str(TEST_SHEET), "outdir": "results"}) == []
    copy = Path(main_functions([f"resolvedSamplesheet('{TEST_SHEET}')"], tmp_path / "work", tmp_path / "cloud", launch)[0])
    assert nf_schema_errors(copy) == []
    assert PROPERTIES["input"]["format"] == "file-path" and "assets/schema_input.json" in PROPERTIES["input"]["help_text"]


@needs_java
def test_cloud_paths_keep_their_scheme(tmp_path: Path) -> None:
    cloud = tmp_path / "cloud"
    for scheme in ("s3", "gs"):
        sheets = cloud / scheme / "bucket" / "sheets"
        sheets.mkdir(parents=True)
        (sheets / "samples.csv").write_text("sample,path,label_key\na,../data/a.h5ad,labels.csv\nb,s3://other/b.h5ad,\n")
        (cloud / scheme / "bucket" / "data").mkdir()
        (cloud / scheme / "bucket" / "data" / "labels.csv").write_text("cell,label\n")
    out = main_functions([
        "resolvedSamplesheet('s3://bucket/sheets/samples.csv')",
        "resolvedSamplesheet('gs://bucket/sheets/samples.csv')",
        "withLabels([id: 'a', label_key: 'labels.csv'], file('s3://bucket/data/a.h5ad'), null)[2]",
        "withLabels([id: 'a', label_key: null], file('gs://bucket/data/a.h5ad'), 'labels.csv')[2]",
    ], tmp_path / "work", cloud, tmp_path)
    for copy, scheme in zip(out[:2], ("s3", "gs"), strict=True):
        assert Path(copy).read_text().splitlines()[1:] == [f"a,{scheme}://bucket/data/a.h5ad,labels.csv",
                                                           "b,s3://other/b.h5ad,"]
    assert out[2:] == ["s3://bucket/data/labels.csv", "gs://bucket/data/labels.csv"]


@needs_java
def test_resolved_samplesheet_is_written_once_for_resume(tmp_path: Path) -> None:
    """A second launch finds the same copy untouched (-resume hashes path, size and mtime)."""
    sheets = tmp_path / "sheets"
    sheets.mkdir()
    sheet = sheets / "samples.csv"
    sheet.write_text("sample,path\na,a.h5ad\n")
    expr = [f"resolvedSamplesheet('{sheet}')"]
    first = Path(main_functions(expr, tmp_path / "work", tmp_path / "cloud", tmp_path)[0])
    os.utime(first, (1_000_000_000, 1_000_000_000))
    second = Path(main_functions(expr, tmp_path / "work", tmp_path / "cloud", tmp_path)[0])
    assert second == first and first.stat().st_mtime == 1_000_000_000
    sheet.write_text("sample,path\na,b.h5ad\n")  # a changed sheet gets a new copy
    third = Path(main_functions(expr, tmp_path / "work", tmp_path / "cloud", tmp_path)[0])
    assert third != first and f"{sheets}/b.h5ad" in third.read_text()


def test_per_sample_joins_fail_on_a_missing_or_repeated_sample() -> None:
    text = (REPO / "workflows" / "scmaskgan.nf").read_text()
    joins = re.findall(r"\.join\(([^()]*)\)", text)
    # one join per extra upstream input of a per-sample step (GENERATE 1, FILTER 1, IMPUTE 2)
    extra_inputs = sum(len(STEP_INPUTS[step]) - 1 for step in SAMPLE_STEPS if step != "qc")
    assert len(joins) == extra_inputs == 4
    for args in joins:
        assert "failOnMismatch: true" in args and "failOnDuplicate: true" in args, args


def declared_output(process: str, emit: str) -> str:
    """The file name a module declares for one of its emits."""
    text = (REPO / "modules" / "local" / process.lower() / "main.nf").read_text()
    return re.search(rf"path\(?\s*\"([^\"]+)\"\)?, emit: {emit}\b", text)[1]


def test_report_stages_only_small_files() -> None:
    """REPORT gets summaries, logs, tables and figures: no h5/h5ad/pt data."""
    text = (REPO / "workflows" / "scmaskgan.nf").read_text()
    call = text[text.index("    REPORT("):]
    call = call[:call.index("\n    )\n")]
    emits = re.findall(r"\b([A-Z]+)\.out\.(\w+)", call)
    names = {declared_output(process, emit) for process, emit in emits}
    assert {"${meta.id}.filter.json", "${meta.id}.evaluation", "integration_summary.json"} <= names
    small = re.compile(r".*\.(json|csv|png)$|figures|\$\{meta\.id\}\.evaluation")
    assert all(small.fullmatch(name) for name in names), sorted(names)
