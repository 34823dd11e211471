"""Samplesheet reading and validation; the demo data and its samplesheet."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from scmaskgan.errors import InputError
from scmaskgan.io.counts import attach_labels, read_counts
from scmaskgan.io.samplesheet import LABEL_FILE_PATTERN, Sample, labels_file, read_samplesheet


@pytest.fixture
def data(tmp_path):
    """A folder with two counts files and a 10x folder (contents are not read here)."""
    (tmp_path / "a.h5ad").write_text("x")
    (tmp_path / "b.csv.gz").write_text("x")
    (tmp_path / "tenx").mkdir()
    (tmp_path / "notes.xlsx").write_text("x")
    return tmp_path


def _sheet(folder, text: str, name: str = "samplesheet.csv"):
    path = folder / name
    path.write_text(text)
    return path


def test_valid_sheet_resolves_paths_and_keeps_metadata(data):
    sub = data / "sheets"
    sub.mkdir()
    sheet = _sheet(sub, "sample,path,label_key,batch,risk\n"
                        "s1,../a.h5ad,cell_type,b1,high\n"
                        f"s2,{data / 'b.csv.gz'},,b1,low\n"
                        "s_3.x-y,../tenx,,,\n")
    samples = read_samplesheet(sheet)
    assert samples == [
        Sample("s1", data / "a.h5ad", "cell_type", "b1", {"risk": "high"}),
        Sample("s2", data / "b.csv.gz", None, "b1", {"risk": "low"}),
        Sample("s_3.x-y", data / "tenx", None, None, {"risk": None}),
    ]


def test_minimal_columns_and_tsv(data):
    sheet = _sheet(data, "path\tsample\na.h5ad\tonly\n", "sheet.tsv")
    assert read_samplesheet(sheet) == [Sample("only", data / "a.h5ad")]


@pytest.mark.parametrize(
    "text,match",
    [
        ("sample,file\ns1,a.h5ad\n", r"missing column\(s\) path"),
        ("sample,path,path\ns1,a.h5ad,a.h5ad\n", "duplicate column"),
        ("sample,path\n", "no samples after the header"),
        ("\n\n", "empty file"),
        ("sample,path\ns1,a.h5ad\ns1,b.csv.gz\n", r"row 2, column 'sample': 's1' already used in row 1"),
        ("sample,path\nmy sample,a.h5ad\n", r"row 1, column 'sample': 'my sample' may only hold"),
        ("sample,path\n,a.h5ad\n", r"row 1, column 'sample': missing"),
        ("sample,path\ns1,\n", r"row 1, column 'path': missing"),
        ("sample,path\ns1,missing.h5ad\n", r"row 1, column 'path': 'missing.h5ad' does not exist"),
        ("sample,path\ns1,notes.xlsx\n", r"row 1, column 'path': 'notes.xlsx' is not a \.h5ad"),
        ("sample,path\ns1,a.h5ad,extra\n", r"row 1: 3 fields, the header has 2"),
    ],
)
def test_errors_name_row_and_column(data, text, match):
    with pytest.raises(InputError, match=match):
        read_samplesheet(_sheet(data, text))


def test_all_problems_reported_at_once(data):
    sheet = _sheet(data, "sample,path\nbad id,a.h5ad\ns2,gone.csv\n")
    with pytest.raises(InputError) as err:
        read_samplesheet(sheet)
    message = str(err.value)
    assert "row 1, column 'sample'" in message and "row 2, column 'path'" in message
    assert "\n" not in message
    with pytest.raises(InputError, match="no such file"):
        read_samplesheet(data / "nope.csv")


def test_demo_data_command_round_trip(pbmc_counts, tmp_path, capsys):
    from scmaskgan.cli import main
    from scmaskgan.io.demo_data import write_demo

    assert main(["demo-data", str(tmp_path / "demo")]) == 0
    printed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    samples = read_samplesheet(printed["samplesheet"])
    assert [s.sample for s in samples] == ["sampleA", "sampleB"]
    assert [s.path.name for s in samples] == ["sampleA.h5ad", "sampleB.csv.gz"]
    assert [s.batch for s in samples] == ["batch1", "batch2"]
    parts = []
    for s in samples:
        adata = read_counts(s.path)
        attach_labels(adata, s.label_key)
        parts.append(adata)
    assert sum(p.n_obs for p in parts) == pbmc_counts.n_obs
    assert all(list(p.var_names) == list(pbmc_counts.var_names) for p in parts)
    for part in parts:  # counts and labels survive both formats unchanged
        ref = pbmc_counts[part.obs_names]
        np.testing.assert_array_equal(part.X.toarray(), ref.X.toarray())
        assert list(part.obs["scmaskgan_label"]) == list(ref.obs["cell_type"])
        # stratified: every cell type is split evenly (sizes differ by at most one)
        share = part.obs["scmaskgan_label"].value_counts()
        total = pbmc_counts.obs["cell_type"].value_counts()
        assert ((share.reindex(total.index) - total / 2).abs() <= 0.5).all()
    with pytest.raises(InputError, match="1 to 7 samples"):
        write_demo(tmp_path / "x", n_samples=0)


def test_shipped_gse192906_samplesheet_has_the_papers_ten_samples_in_the_checked_format():
    """The neuroblastoma samplesheet passes every rule but file existence (its data is not shipped)."""
    import json
    import re
    from pathlib import Path

    import jsonschema

    from scmaskgan.io.samplesheet import PATH_PATTERN, SAMPLE_PATTERN

    assets = Path(__file__).resolve().parents[1] / "assets"
    sheet = assets / "samplesheet_gse192906.csv"
    samples = read_samplesheet(sheet, check_paths=False)
    assert [s.sample for s in samples] == [f"GSM57687{n}" for n in range(43, 53)]
    assert all(re.search(SAMPLE_PATTERN, s.sample) and re.search(PATH_PATTERN, str(s.path)) for s in samples)
    risks = [s.meta["risk"] for s in samples]
    assert risks.count("high") == 5 and len(set(risks)) >= 2
    schema = json.loads((assets / "schema_input.json").read_text())
    rows = [{"sample": s.sample, "path": str(s.path), **{k: v for k, v in s.meta.items() if v}} for s in samples]
    for rule in schema["items"]["properties"].values():  # existence is nf-schema's check, not JSON schema's
        rule.pop("exists", None)
    jsonschema.validate(rows, schema)
    with pytest.raises(InputError, match="does not exist"):
        read_samplesheet(sheet)


def test_the_labels_file_rule_is_one_expression_shared_with_main_nf(tmp_path: Path) -> None:
    main_nf = (Path(__file__).resolve().parents[1] / "main.nf").read_text()
    assert re.search(r"key ==~ /(.*)/", main_nf).group(1) == LABEL_FILE_PATTERN
    counts = tmp_path / "counts.h5ad"
    for name in ("labels.csv", "labels.tsv.gz", "labels.txt.gz"):
        (tmp_path / name).write_text("cell,label\n")
        assert labels_file(name, counts) == (tmp_path / name).resolve()
    assert labels_file("cell_type", counts) is None  # an obs column
    assert labels_file("missing.csv", counts) is None  # not a file: tried as a column, QC names both
    assert labels_file(str(tmp_path / "labels.csv"), None) == (tmp_path / "labels.csv").resolve()
