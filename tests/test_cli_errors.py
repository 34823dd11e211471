"""Bad inputs through the CLI: one line 'scmaskgan: error: ...' on stderr, a non-zero exit, no traceback."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from scmaskgan.cli import main

GOOD_CSV = "gene,c1,c2\nG1,1,2\nG2,3,0\n"


def _file(folder, name: str, text: str):
    path = folder / name
    path.write_text(text)
    return path


def _cases(tmp, pbmc):
    """(argv, expected fragment of the message, exit code) for every bad input."""
    h5ad = tmp / "pb.h5ad"
    pbmc[:40].copy().write_h5ad(h5ad)
    tenx = tmp / "tenx"
    tenx.mkdir()
    _file(tenx, "matrix.mtx", "%%MatrixMarket matrix coordinate integer general\n1 1 1\n1 1 1\n")
    _file(tenx, "features.tsv", "G1\tG1\tGene Expression\n")
    labels = _file(tmp, "labels.csv", "cell,label\n" + "".join(f"{c},T\n" for c in pbmc.obs_names[:30]))
    not_hdf5 = _file(tmp, "x.qc.h5ad", "plain text")
    foreign_h5 = tmp / "foreign.h5"
    with h5py.File(foreign_h5, "w") as f:
        f["x"] = np.arange(3)
    sheet = _file(tmp, "sheet.csv", f"sample,path\nmy sample,{h5ad}\n")
    out = ["--outdir", str(tmp / "out")]
    return [
        (["qc", str(tmp / "missing.h5ad"), *out], "no such file", 2),
        (["qc", str(_file(tmp, "counts.xlsx", "x")), *out], "unknown file type", 2),
        (["qc", str(_file(tmp, "neg.csv", "gene,c1,c2\nG1,1,2\nG2,-3,0\n")), *out],
         "is negative at cell 'c1', gene 'G2'", 2),
        (["qc", str(_file(tmp, "frac.csv", "gene,c1,c2\nG1,1,2.5\nG2,3,0\n")), *out], "not an integer", 2),
        (["qc", str(_file(tmp, "word.csv", "gene,c1,c2\nG1,1,two\nG2,3,0\n")), *out], "non-numeric value 'two'", 2),
        (["qc", str(_file(tmp, "empty.csv", "")), *out], "empty file", 2),
        (["qc", str(tenx), *out], "missing barcodes", 2),
        (["qc", str(foreign_h5), *out], "not a 10x Cell Ranger h5", 2),
        (["qc", str(h5ad), "--label-key", "celltype", *out], "neither an obs column", 2),
        (["qc", str(h5ad), "--label-key", str(labels), *out], "no label for 10 of 40 cells", 2),
        (["qc", str(h5ad), "--min-genes", "100000", *out], "QC left 0 cells", 3),
        (["qc", str(_file(tmp, "ok.csv", GOOD_CSV)), "--orientation", "sideways", *out], "orientation='sideways'", 2),
        (["prepare", str(not_hdf5), *out], "not a readable h5ad", 2),
        (["prepare", str(tmp / "gone.qc.h5ad"), *out], "no such file", 2),
        (["demo-data", str(tmp / "demo"), "--n-samples", "0"], "1 to 7 samples", 2),
        (["run", "--input", str(sheet), *out], "row 1, column 'sample'", 2),
    ]


def test_at_least_ten_bad_inputs_each_give_one_error_line(pbmc_counts, tmp_path, capsys):
    cases = _cases(tmp_path, pbmc_counts)
    assert len(cases) >= 10
    for argv, fragment, code in cases:
        capsys.readouterr()
        rc = main(argv)
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert rc == code, (argv, captured.err)
        assert len(lines) == 1 and lines[0].startswith("scmaskgan: error:"), (argv, captured.err)
        assert fragment in lines[0], (argv, lines[0])
        assert "Traceback" not in captured.err + captured.out


@pytest.mark.parametrize("argv", [["qc"], ["prepare", "--no-such-option"]])
def test_usage_errors_exit_non_zero(argv, capsys):
    assert main(argv) != 0
    assert "Traceback" not in capsys.readouterr().err
