"""Reading counts in every supported format, value checks, labels and atomic writing."""

from __future__ import annotations

import gzip
import logging

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from scmaskgan.errors import InputError
from scmaskgan.io import counts, h5ad


@pytest.fixture
def small(pbmc_counts: ad.AnnData) -> ad.AnnData:
    """60 real PBMCs x 120 genes (barcode cell names, gene symbols incl. MT-ND3)."""
    genes = list(pbmc_counts.var_names[:119]) + ["MT-ND3"]
    sub = pbmc_counts[:60, genes].copy()
    sub.X = sp.csr_matrix(sub.X)
    return sub


def _dense(adata: ad.AnnData) -> np.ndarray:
    return adata.X.toarray()


def _assert_same(read: ad.AnnData, ref: ad.AnnData) -> None:
    assert sp.isspmatrix_csr(read.X) and read.X.dtype == np.float32
    assert list(read.obs_names) == list(ref.obs_names)
    assert list(read.var_names) == list(ref.var_names)
    np.testing.assert_array_equal(_dense(read), _dense(ref))


def _table(ref: ad.AnnData, genes_rows: bool) -> pd.DataFrame:
    counts = ref.X.toarray().astype(np.int64)
    if genes_rows:
        return pd.DataFrame(counts.T, index=ref.var_names, columns=ref.obs_names)
    return pd.DataFrame(counts, index=ref.obs_names, columns=ref.var_names)


# ----------------------------------------------------------------------------- formats


def test_h5ad_keeps_obs_columns(small, tmp_path):
    path = tmp_path / "s.h5ad"
    small.write_h5ad(path)
    read = counts.read_counts(path)
    _assert_same(read, small)
    assert list(read.obs["cell_type"]) == list(small.obs["cell_type"])


def test_gzipped_h5ad_and_dense_x(small, tmp_path):
    dense = small.copy()
    dense.X = small.X.toarray()
    plain = tmp_path / "d.h5ad"
    dense.write_h5ad(plain)
    gz = tmp_path / "d.h5ad.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    _assert_same(counts.read_counts(gz), small)


@pytest.mark.parametrize("genes_rows", [True, False])
@pytest.mark.parametrize("suffix,sep", [(".csv.gz", ","), (".tsv", "\t"), (".txt.gz", "\t"), (".csv", ",")])
def test_delimited_text_both_orientations_auto_detected(small, tmp_path, genes_rows, suffix, sep):
    path = tmp_path / f"counts{suffix}"
    _table(small, genes_rows).to_csv(path, sep=sep, index_label="gene" if genes_rows else "cell")
    _assert_same(counts.read_counts(path), small)


def test_r_write_table_layout_with_short_header_and_quotes(small, tmp_path):
    """R's write.table: white space, quoted names, no header field for the row names."""
    path = tmp_path / "GSE1_counts.txt"
    table = _table(small, genes_rows=True)
    lines = [" ".join(f'"{c}"' for c in table.columns)]
    lines += [f'"{g}" ' + " ".join(map(str, row)) for g, row in zip(table.index, table.to_numpy(), strict=True)]
    path.write_text("\n".join(lines) + "\n")
    _assert_same(counts.read_counts(path), small)


def test_text_read_in_many_chunks_is_identical(small, tmp_path, monkeypatch):
    path = tmp_path / "c.csv.gz"
    _table(small, genes_rows=True).to_csv(path)
    monkeypatch.setattr(counts, "_TEXT_VALUES_PER_CHUNK", 7 * small.n_obs)  # 16 rows a chunk
    _assert_same(counts.read_counts(path), small)


def test_explicit_orientation_overrides_the_guess(small, tmp_path):
    path = tmp_path / "c.csv"
    _table(small, genes_rows=True).to_csv(path)
    flipped = counts.read_counts(path, orientation="cells-rows")
    assert flipped.shape == (small.n_vars, small.n_obs)
    assert counts.read_counts(path, orientation="genes-rows").shape == small.shape


@pytest.mark.parametrize(
    "rows,cols,genes_rows",
    [
        (["ENSG00000000003", "ENSG00000000005"], ["c1", "c2", "c3"], True),   # Ensembl ids in rows
        (["c1", "c2", "c3"], ["GAPDH", "MT-CO1"], False),                      # mito gene in columns
        (["AAACCTGAGAAGGCCT-1", "AAACGGGTCAAGCCTA-1"], ["x", "y", "z"], False),  # barcodes in rows
        (["g1", "g2", "g3"], ["s1", "s2"], True),                              # no hint: more rows
        (["s1", "s2"], ["g1", "g2", "g3"], False),
    ],
)
def test_orientation_guess_rules(rows, cols, genes_rows):
    guess, reason = counts.guess_genes_in_rows(rows, cols)
    assert guess is genes_rows and reason


def test_10x_folder_v3_gzipped_keeps_gene_expression_only(small, tmp_path):
    folder = tmp_path / "filtered_feature_bc_matrix"
    folder.mkdir()
    n_genes = small.n_vars
    extra = sp.csr_matrix(np.full((small.n_obs, 2), 7.0))  # two antibody-capture features
    full = sp.hstack([small.X, extra]).T.tocoo()
    with gzip.open(folder / "matrix.mtx.gz", "wb") as handle:
        scipy.io.mmwrite(handle, full.astype(np.int64))
    features = pd.DataFrame({
        "id": [f"ENSG{i:011d}" for i in range(n_genes)] + ["AB1", "AB2"],
        "name": list(small.var_names) + ["CD3_TotalSeq", "CD4_TotalSeq"],
        "type": ["Gene Expression"] * n_genes + ["Antibody Capture"] * 2,
    })
    features.to_csv(folder / "features.tsv.gz", sep="\t", header=False, index=False)
    pd.Series(small.obs_names).to_csv(folder / "barcodes.tsv.gz", header=False, index=False)
    read = counts.read_counts(folder)
    _assert_same(read, small)
    assert read.var["gene_ids"].iloc[0] == "ENSG00000000000"


def test_10x_folder_v2_plain_with_geo_prefix(small, tmp_path):
    folder = tmp_path / "GSM1"
    folder.mkdir()
    scipy.io.mmwrite(str(folder / "GSM1_matrix.mtx"), small.X.T.tocoo().astype(np.int64))
    pd.DataFrame({"id": small.var_names, "name": small.var_names}).to_csv(
        folder / "GSM1_genes.tsv", sep="\t", header=False, index=False
    )
    pd.Series(small.obs_names).to_csv(folder / "GSM1_barcodes.tsv", header=False, index=False)
    _assert_same(counts.read_counts(folder), small)


def _write_10x_h5_v3(ref: ad.AnnData, path) -> None:
    """Cell Ranger v3 layout: /matrix with CSC of genes x cells (stored as CSR of cells x genes)."""
    x = sp.csr_matrix(ref.X).astype(np.int32)
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m["data"], m["indices"], m["indptr"] = x.data, x.indices.astype(np.int64), x.indptr.astype(np.int64)
        m["shape"] = np.array([ref.n_vars, ref.n_obs], dtype=np.int32)
        m["barcodes"] = np.array(ref.obs_names, dtype="S")
        feats = m.create_group("features")
        feats["id"] = np.array([f"ENSG{i:011d}" for i in range(ref.n_vars)], dtype="S")
        feats["name"] = np.array(ref.var_names, dtype="S")
        feats["feature_type"] = np.array(["Gene Expression"] * ref.n_vars, dtype="S")
        feats["genome"] = np.array(["GRCh38"] * ref.n_vars, dtype="S")
        feats["_all_tag_keys"] = np.array([b"genome"])


def test_10x_h5_v3(small, tmp_path):
    path = tmp_path / "filtered_feature_bc_matrix.h5"
    _write_10x_h5_v3(small, path)
    _assert_same(counts.read_counts(path), small)


def test_duplicate_gene_names_made_unique_with_warning(small, tmp_path, caplog):
    names = list(small.var_names)
    names[5] = names[4]
    small.var_names = names
    path = tmp_path / "dup.h5ad"
    small.write_h5ad(path)
    with caplog.at_level(logging.WARNING, logger="scmaskgan.io.counts"):
        read = counts.read_counts(path)
    assert read.var_names.is_unique
    assert read.var_names[4] == names[4] and read.var_names[5] == f"{names[4]}-1"
    assert "duplicate gene names" in caplog.text


def test_lognorm_scale_accepts_fractions(tmp_path):
    path = tmp_path / "ln.csv"
    path.write_text("gene,c1,c2\nG1,0.5,0\nG2,1.25,2.0\nG3,0,3\n")
    read = counts.read_counts(path, input_scale="lognorm", orientation="genes-rows")
    np.testing.assert_allclose(read.X.toarray(), [[0.5, 1.25, 0], [0, 2.0, 3]])


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "body,match",
    [
        ("gene,c1,c2\nG1,1,2\nG2,-3,0\n", r"bad\.csv: value -3\.0 is negative at cell 'c1', gene 'G2'"),
        ("gene,c1,c2\nG1,1,2.5\nG2,3,0\n", r"value 2\.5 is not an integer at cell 'c2', gene 'G1'.*lognorm"),
        ("gene,c1,c2\nG1,1,NA\nG2,3,0\n", r"value nan is not finite at cell 'c2', gene 'G1'"),
        ("gene,c1,c2\nG1,1,inf\nG2,3,0\n", r"not finite at cell 'c2', gene 'G1'"),
        ("gene,c1,c2\nG1,1,abc\nG2,3,0\n", r"non-numeric value 'abc' at row 'G1'"),
        ("gene,c1,c2\n", r"no data rows"),
        ("", r"empty file"),
        ("gene\nG1\nG2\n", r"no value columns"),
        ("gene,c1,c2\nG1,0,0\nG2,0,0\n", r"every value is zero"),
        ("gene,c1,c2\nG1,1,2,3,4\n", r"header has 3 fields but the first data row has 5"),
    ],
)
def test_bad_text_inputs_name_the_file_and_position(tmp_path, body, match):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(InputError, match=match):
        counts.read_counts(path, orientation="genes-rows")


def test_lognorm_still_rejects_negative_values(tmp_path):
    path = tmp_path / "ln.csv"
    path.write_text("gene,c1\nG1,-0.5\nG2,1\n")
    with pytest.raises(InputError, match="negative"):
        counts.read_counts(path, input_scale="lognorm")


def test_missing_file_unknown_extension_and_bad_options(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        counts.read_counts(tmp_path / "nope.h5ad")
    xlsx = tmp_path / "counts.xlsx"
    xlsx.write_text("x")
    with pytest.raises(InputError, match="unknown file type"):
        counts.read_counts(xlsx)
    with pytest.raises(InputError, match="orientation"):
        counts.read_counts(xlsx, orientation="sideways")


def test_incomplete_10x_folder_names_the_missing_file(small, tmp_path):
    folder = tmp_path / "tenx"
    folder.mkdir()
    scipy.io.mmwrite(str(folder / "matrix.mtx"), small.X.T.tocoo())
    pd.Series(small.var_names).to_csv(folder / "features.tsv", header=False, index=False)
    with pytest.raises(InputError, match="missing barcodes"):
        counts.read_counts(folder)
    pd.Series(small.obs_names[:-1]).to_csv(folder / "barcodes.tsv", header=False, index=False)
    with pytest.raises(InputError, match=f"{small.n_obs - 1} barcodes"):
        counts.read_counts(folder)


def test_hdf5_that_is_not_10x_or_anndata(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["something"] = np.arange(3)
    with pytest.raises(InputError, match="not a 10x Cell Ranger h5"):
        counts.read_counts(path)
    broken = tmp_path / "broken.h5ad"
    broken.write_text("not hdf5")
    with pytest.raises(InputError, match="not a readable HDF5"):
        counts.read_counts(broken)


# ----------------------------------------------------------------------------- labels


def test_labels_from_obs_column(small):
    assert counts.attach_labels(small, "cell_type") == "obs:cell_type"
    assert small.obs[counts.LABEL_COLUMN].dtype == "category"
    assert list(small.obs[counts.LABEL_COLUMN]) == list(small.obs["cell_type"].astype(str))


@pytest.mark.parametrize("header", [True, False])
def test_labels_from_csv_with_or_without_header(small, tmp_path, header):
    path = tmp_path / "labels.csv"
    rows = [f"{c},type_{i % 3}" for i, c in enumerate(small.obs_names[::-1])]  # order differs
    rows.append("OTHER-SAMPLE-CELL,type_9")  # cells of other samples are ignored
    path.write_text(("cell,label\n" if header else "") + "\n".join(rows) + "\n")
    assert counts.attach_labels(small, str(path)) == f"csv:{path}"
    expected = {c: f"type_{i % 3}" for i, c in enumerate(small.obs_names[::-1])}
    assert list(small.obs[counts.LABEL_COLUMN]) == [expected[c] for c in small.obs_names]


def test_labels_errors(small, tmp_path):
    with pytest.raises(InputError, match=r"'celltype' is neither an obs column \(available: 'cell_type'\)"):
        counts.attach_labels(small, "celltype", source="s.h5ad")
    partial = tmp_path / "partial.csv"
    partial.write_text("\n".join(f"{c},T" for c in small.obs_names[:50]) + "\n")
    with pytest.raises(InputError, match=rf"no label for 10 of 60 cells \(e.g. '{small.obs_names[50]}'\)"):
        counts.attach_labels(small, str(partial))
    small.obs.loc[small.obs_names[3], "cell_type"] = np.nan
    with pytest.raises(InputError, match="empty label for 1 cells"):
        counts.attach_labels(small, "cell_type")


# ----------------------------------------------------------------------------- writing and backed reading


def test_write_h5ad_is_atomic(small, tmp_path, monkeypatch):
    out = h5ad.write_h5ad(small, tmp_path / "out.h5ad")
    _assert_same(ad.read_h5ad(out), small)

    def broken_write(self, path, **_):
        path.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", broken_write)
    with pytest.raises(OSError):
        h5ad.write_h5ad(small, tmp_path / "never.h5ad")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5ad"]


def test_backed_chunks_rebuild_the_matrix(small, tmp_path):
    path = h5ad.write_h5ad(small, tmp_path / "b.h5ad")
    with h5ad.open_backed(path) as backed:
        chunks = list(h5ad.iter_row_chunks(backed, 25))
        loaded = h5ad.load_sparse(backed, 7)
    assert [c.shape[0] for c in chunks] == [25, 25, 10]
    assert all(sp.isspmatrix_csr(c) for c in chunks)
    np.testing.assert_array_equal(sp.vstack(chunks).toarray(), _dense(small))
    _assert_same(loaded, small)
    corrupt = tmp_path / "corrupt.h5ad"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="not a readable h5ad"), h5ad.open_backed(corrupt):
        pass


def test_value_check_finds_the_first_bad_entry_across_blocks(small, monkeypatch):
    monkeypatch.setattr(counts, "_VALIDATE_BLOCK", 5)
    x = small.X.copy()
    x.data[x.nnz - 3] = -1  # in a late block, cell of that entry
    row = int(np.searchsorted(x.indptr, x.nnz - 3, side="right")) - 1
    gene = small.var_names[x.indices[x.nnz - 3]]
    with pytest.raises(InputError, match=f"cell '{small.obs_names[row]}', gene '{gene}'"):
        counts.check_values(x, "m.h5ad", "counts", small.obs_names, small.var_names)
    x.data[x.nnz - 3] = 1
    counts.check_values(x, "m.h5ad", "counts", small.obs_names, small.var_names)
