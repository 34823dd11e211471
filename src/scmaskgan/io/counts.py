"""Reading counts files into AnnData, checking their values, attaching labels, writing h5ad.

Supported inputs (:func:`read_counts`):

* ``.h5ad`` (X, obs and var are read; layers, raw and embeddings are ignored);
* a 10x Cell Ranger folder: ``matrix.mtx``, ``features.tsv`` (or v2 ``genes.tsv``) and
  ``barcodes.tsv``, each optionally gzipped and optionally with a common file-name prefix
  (GEO's ``GSM..._matrix.mtx.gz``); only "Gene Expression" features are kept;
* a 10x ``.h5`` (Cell Ranger v2 or v3, read with :func:`scanpy.read_10x_h5`);
* delimited text ``.csv``, ``.tsv`` or ``.txt`` (tab, comma or white space, sniffed), genes in
  rows (the usual GEO layout, first column gene ids) or cells in rows, see
  :func:`guess_genes_in_rows` for the automatic choice.

Any of these files may also be gzipped (``.gz``). Matrices stay sparse (text is parsed in
row chunks straight into CSR). The result always has cells in rows, X as float32 CSR, and
unique obs/var names.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from scmaskgan.errors import InputError

log = logging.getLogger(__name__)

#: obs column holding the conditioning labels (written by QC, read by PREPARE).
LABEL_COLUMN = "scmaskgan_label"

ORIENTATIONS = ("auto", "genes-rows", "cells-rows")
INPUT_SCALES = ("counts", "lognorm")

#: File extensions (before an optional ``.gz``) and the format they hold.
EXTENSIONS = {".h5ad": "h5ad", ".h5": "10x-h5", ".csv": "csv", ".tsv": "tsv", ".txt": "txt"}

_TEXT_VALUES_PER_CHUNK = 10_000_000
_VALIDATE_BLOCK = 10_000_000
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
_MITO = re.compile(r"^(MT|mt)-")
_BARCODE = re.compile(r"[ACGT]{8,}")


def detect_format(path: str | Path) -> str:
    """The input format of ``path``: ``10x-mtx`` (a folder), ``h5ad``, ``10x-h5``, ``csv``, ``tsv`` or ``txt``.

    Raises
    ------
    InputError
        For an extension not in :data:`EXTENSIONS` (optionally followed by ``.gz``).
    """
    path = Path(path)
    if path.is_dir():
        return "10x-mtx"
    name = path.name.lower().removesuffix(".gz")
    for ext, fmt in EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    allowed = ", ".join(EXTENSIONS)
    raise InputError(f"{path}: unknown file type (expected {allowed}, optionally .gz, or a 10x folder)")


def read_counts(path: str | Path, *, orientation: str = "auto", input_scale: str = "counts") -> ad.AnnData:
    """Read a counts matrix from any supported file into a cells x genes AnnData.

    Parameters
    ----------
    path
        A file (see the module docstring for formats) or a 10x Cell Ranger folder.
    orientation
        Delimited text only: ``'genes-rows'``, ``'cells-rows'`` or ``'auto'`` (default; see
        :func:`guess_genes_in_rows`).
    input_scale
        ``'counts'`` (default): values must be non-negative integers. ``'lognorm'``:
        non-integer values are accepted (they must still be finite and non-negative).

    Returns
    -------
    AnnData with X float32 CSR (cells x genes), obs/var names made unique (with a warning),
    and the obs/var columns the file carries.

    Raises
    ------
    InputError
        Missing file, unknown extension, incomplete 10x folder, unreadable or empty matrix,
        or a NaN/infinite/negative/non-integer value (the message names the file and the
        first offending cell and gene).
    """
    path = Path(path)
    if orientation not in ORIENTATIONS:
        raise InputError(f"orientation={orientation!r} is not one of {', '.join(ORIENTATIONS)}")
    if input_scale not in INPUT_SCALES:
        raise InputError(f"input_scale={input_scale!r} is not one of {', '.join(INPUT_SCALES)}")
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    fmt = detect_format(path)
    if fmt == "10x-mtx":
        adata = _read_10x_mtx(path)
    elif fmt in ("h5ad", "10x-h5"):
        with _ungzipped(path) as plain:
            adata = _read_hdf5(plain, path, fmt)
    else:
        adata = _read_text(path, fmt, orientation)
    return _finalise(adata, path, input_scale)


# ----------------------------------------------------------------------------- formats


@contextlib.contextmanager
def _ungzipped(path: Path) -> Iterator[Path]:
    """``path`` itself, or a decompressed temporary copy of a ``.gz`` file (HDF5 needs random access)."""
    if path.suffix.lower() != ".gz":
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="scmaskgan-") as tmp:
        plain = Path(tmp) / path.name[:-3]
        try:
            with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: cannot decompress ({exc})") from exc
        yield plain


def _read_hdf5(plain: Path, path: Path, fmt: str) -> ad.AnnData:
    """An h5ad (X, obs, var only) or a 10x h5; an h5ad named ``.h5`` is recognised too."""
    from anndata.io import read_elem

    try:
        with h5py.File(plain, "r") as f:
            if "X" in f and "obs" in f and "var" in f:
                return ad.AnnData(X=read_elem(f["X"]), obs=read_elem(f["obs"]), var=read_elem(f["var"]))
            # Cell Ranger v3 keeps a 'matrix' group, v2 one group per genome
            is_10x = any(isinstance(g, h5py.Group) and "indptr" in g for g in f.values())
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc})") from exc
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: not a readable h5ad file ({exc})") from exc
    if fmt == "h5ad":
        raise InputError(f"{path}: not an AnnData file (no X/obs/var)")
    if not is_10x:
        raise InputError(f"{path}: not a 10x Cell Ranger h5 file (no matrix group)")
    import scanpy as sc

    try:
        return sc.read_10x_h5(plain)
    except (KeyError, ValueError, OSError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: not a 10x Cell Ranger h5 file ({exc})") from exc


def _find_10x_file(folder: Path, stems: Sequence[str]) -> Path | None:
    """The one file in ``folder`` named ``[prefix]<stem>[.gz]`` for the first stem that matches."""
    for stem in stems:
        hits = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith((stem, stem + ".gz")))
        if len(hits) > 1:
            names = ", ".join(p.name for p in hits)
            raise InputError(f"{folder}: several 10x '{stem}' files ({names}); put one sample per folder")
        if hits:
            return hits[0]
    return None


def _read_tsv_column_frame(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False)
    except (OSError, EOFError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc


def _read_10x_mtx(folder: Path) -> ad.AnnData:
    """A Cell Ranger matrix folder (v2 genes.tsv or v3 features.tsv, gzipped or not)."""
    files = {
        "matrix": _find_10x_file(folder, ["matrix.mtx"]),
        "features": _find_10x_file(folder, ["features.tsv", "genes.tsv"]),
        "barcodes": _find_10x_file(folder, ["barcodes.tsv"]),
    }
    missing = [name for name, p in files.items() if p is None]
    if missing:
        raise InputError(
            f"{folder}: not a complete 10x folder, missing {', '.join(missing)} "
            "(expects matrix.mtx, features.tsv or genes.tsv, barcodes.tsv, each optionally .gz)"
        )
    found = {name: p for name, p in files.items() if p is not None}
    try:
        matrix = scipy.io.mmread(str(found["matrix"]))
    except (OSError, EOFError, ValueError) as exc:
        raise InputError(f"{found['matrix']}: not a readable Matrix Market file ({exc})") from exc
    features = _read_tsv_column_frame(found["features"])
    barcodes = _read_tsv_column_frame(found["barcodes"])
    if matrix.shape != (len(features), len(barcodes)):
        raise InputError(
            f"{folder}: matrix.mtx is {matrix.shape[0]} x {matrix.shape[1]} but there are "
            f"{len(features)} features and {len(barcodes)} barcodes"
        )
    x = sp.csr_matrix(matrix.T)
    var = pd.DataFrame({"gene_ids": features[0].to_numpy()})
    var.index = features[1 if features.shape[1] > 1 else 0].to_numpy()
    if features.shape[1] > 2:
        var["feature_types"] = features[2].to_numpy()
    adata = ad.AnnData(X=x, obs=pd.DataFrame(index=barcodes[0].to_numpy()), var=var)
    if "feature_types" in adata.var and (adata.var["feature_types"] == "Gene Expression").any():
        adata = adata[:, (adata.var["feature_types"] == "Gene Expression").to_numpy()].copy()
    return adata


def _open_text(path: Path):
    return gzip.open(path, "rt", newline="") if path.suffix.lower() == ".gz" else open(path, newline="")


def _split(line: str, sep: str | None) -> list[str]:
    line = line.rstrip("\r\n")
    if sep is None:  # white space, as R's write.table writes it (names quoted)
        return [field.strip('"') for field in line.split()]
    return next(csv.reader([line], delimiter=sep))


def _head_lines(path: Path) -> tuple[str | None, str | None]:
    try:
        with _open_text(path) as handle:
            return handle.readline() or None, handle.readline() or None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc


def _read_text(path: Path, fmt: str, orientation: str) -> ad.AnnData:
    """Delimited text, parsed in row chunks into CSR; orientation fixed or guessed."""
    header, first = _head_lines(path)
    if header is None or not header.strip():
        raise InputError(f"{path}: empty file")
    if first is None or not first.strip():
        raise InputError(f"{path}: no data rows after the header (empty matrix)")
    sep = {"csv": ",", "tsv": "\t"}.get(fmt)
    if sep is None:  # .txt: sniff tab, then comma, else runs of white space
        sep = "\t" if "\t" in header else "," if "," in header else None
    header_fields, first_fields = _split(header, sep), _split(first, sep)
    if len(first_fields) == len(header_fields) + 1:  # R's write.table: no header for the row names
        col_names = header_fields
    elif len(first_fields) == len(header_fields):
        col_names = header_fields[1:]
    else:
        raise InputError(
            f"{path}: the header has {len(header_fields)} fields but the first data row has {len(first_fields)}"
        )
    if not col_names:
        raise InputError(f"{path}: no value columns after the row names (empty matrix)")
    chunk_rows = max(16, _TEXT_VALUES_PER_CHUNK // len(col_names))
    row_names: list[str] = []
    blocks: list[sp.csr_matrix] = []
    try:
        reader = pd.read_csv(
            path, sep=r"\s+" if sep is None else sep, header=None, skiprows=1, index_col=0,
            chunksize=chunk_rows, dtype={0: str},
        )
        for chunk in reader:
            if chunk.shape[1] != len(col_names):
                raise InputError(
                    f"{path}: a row near data row {len(row_names) + 1} has {chunk.shape[1]} values, "
                    f"expected {len(col_names)}"
                )
            blocks.append(sp.csr_matrix(_numeric(chunk, path)))
            row_names.extend(chunk.index.astype(str))
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot parse as delimited text ({exc})") from exc
    x = sp.vstack(blocks, format="csr")
    if orientation == "auto":
        genes_rows, reason = guess_genes_in_rows(row_names, col_names)
        log.info("%s: %s (%s)", path, "genes in rows" if genes_rows else "cells in rows", reason)
    else:
        genes_rows = orientation == "genes-rows"
    if genes_rows:
        return ad.AnnData(X=sp.csr_matrix(x.T), obs=pd.DataFrame(index=col_names), var=pd.DataFrame(index=row_names))
    return ad.AnnData(X=x, obs=pd.DataFrame(index=row_names), var=pd.DataFrame(index=col_names))


def _numeric(chunk: pd.DataFrame, path: Path) -> np.ndarray:
    """The chunk's values as float64; a non-numeric entry is an error naming its row and column."""
    values = chunk.to_numpy()
    if values.dtype.kind in "biuf":
        return values.astype(np.float64, copy=False)
    numeric = chunk.apply(pd.to_numeric, errors="coerce")
    bad = (numeric.isna() & chunk.notna()).to_numpy()
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise InputError(
            f"{path}: non-numeric value {chunk.iat[i, j]!r} at row {chunk.index[i]!r}, value column {j + 1}"
        )
    return numeric.to_numpy(dtype=np.float64)


def _fraction(names: Sequence[str], pattern: re.Pattern[str], limit: int = 2000) -> float:
    sample = names[:limit]
    return sum(bool(pattern.search(n)) for n in sample) / max(1, len(sample))


def guess_genes_in_rows(row_names: Sequence[str], col_names: Sequence[str]) -> tuple[bool, str]:
    """Decide whether a text matrix holds genes in rows, and say why.

    Rules, first match wins:

    1. names look like genes on one side only: at least half are Ensembl gene ids
       (``ENSG...``, ``ENSMUSG...``), or some carry the mitochondrial prefix ``MT-``/``mt-``;
    2. names look like cell barcodes on one side only (at least half contain a run of 8 or
       more A/C/G/T);
    3. otherwise genes are in rows when there are at least as many rows as columns.

    Returns
    -------
    ``(genes_in_rows, reason)``.
    """
    def gene_like(names: Sequence[str]) -> bool:
        return _fraction(names, _ENSEMBL) >= 0.5 or any(_MITO.match(n) for n in names)

    def barcode_like(names: Sequence[str]) -> bool:
        return _fraction(names, _BARCODE) >= 0.5

    rows, cols = gene_like(row_names), gene_like(col_names)
    if rows != cols:
        return rows, f"{'row' if rows else 'column'} names look like genes"
    rows, cols = barcode_like(row_names), barcode_like(col_names)
    if rows != cols:
        return cols, f"{'column' if cols else 'row'} names look like cell barcodes"
    genes_rows = len(row_names) >= len(col_names)
    return genes_rows, f"{len(row_names)} rows vs {len(col_names)} columns"


# ----------------------------------------------------------------------------- checks


def _finalise(adata: ad.AnnData, path: Path, input_scale: str) -> ad.AnnData:
    """CSR float32 X, values checked, unique names."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"{path}: empty matrix ({adata.n_obs} cells x {adata.n_vars} genes)")
    x = adata.X if sp.issparse(adata.X) else sp.csr_matrix(np.asarray(adata.X))
    x = sp.csr_matrix(x)
    x.sum_duplicates()
    check_values(x, path, input_scale, adata.obs_names, adata.var_names)
    x.eliminate_zeros()
    if x.nnz == 0:
        raise InputError(f"{path}: every value is zero (empty matrix)")
    adata.X = x.astype(np.float32, copy=False)
    for axis, names in (("gene", adata.var_names), ("cell", adata.obs_names)):
        if not names.is_unique:
            dup = names[names.duplicated()]
            log.warning(
                "%s: %d duplicate %s names (e.g. %r) made unique with suffixes -1, -2, ...",
                path, len(dup), axis, dup[0],
            )
            if axis == "gene":
                adata.var_names_make_unique()
            else:
                adata.obs_names_make_unique()
    return adata


def check_values(
    x: sp.csr_matrix, path: str | Path, input_scale: str, cells: Sequence[str], genes: Sequence[str]
) -> None:
    """Raise :class:`InputError` at the first NaN/infinite, negative or (for counts) non-integer value.

    The stored values of ``x`` are scanned in row-major order, in blocks, so the check
    needs little memory on large matrices.
    """
    data = x.data
    checks = [("not finite", lambda d: ~np.isfinite(d)), ("negative", lambda d: d < 0)]
    if input_scale == "counts" and data.dtype.kind == "f":
        checks.append(("not an integer", lambda d: d != np.round(d)))
    for start in range(0, data.size, _VALIDATE_BLOCK):
        block = data[start:start + _VALIDATE_BLOCK]
        for what, test in checks:
            bad = np.flatnonzero(test(block))
            if bad.size:
                k = start + int(bad[0])
                row = int(np.searchsorted(x.indptr, k, side="right")) - 1
                hint = " (log-normalised input needs input_scale 'lognorm')" if what == "not an integer" else ""
                raise InputError(
                    f"{path}: value {float(data[k])!r} is {what} at cell {cells[row]!r}, gene {genes[x.indices[k]]!r}{hint}"
                )


# ----------------------------------------------------------------------------- labels


def _read_labels_file(path: Path) -> pd.Series:
    """``cell,label`` pairs (header optional; comma or tab) as a Series indexed by cell."""
    try:
        table = pd.read_csv(path, sep=None, engine="python", header=None, dtype=str, keep_default_na=False)
    except (OSError, EOFError, csv.Error, pd.errors.ParserError, pd.errors.EmptyDataError,
            UnicodeDecodeError) as exc:
        raise InputError(f"labels file {path}: cannot read ({exc})") from exc
    if table.shape[1] < 2:
        raise InputError(f"labels file {path}: needs two columns, cell and label")
    return pd.Series(table[1].to_numpy(), index=table[0].to_numpy())


def attach_labels(adata: ad.AnnData, label_key: str, *, source: str | Path | None = None) -> str:
    """Copy cell-type labels into ``adata.obs['scmaskgan_label']`` (categorical).

    Parameters
    ----------
    adata
        The sample; modified in place.
    label_key
        An obs column of ``adata``, or the path of a CSV/TSV with columns ``cell,label``
        (a header line is optional; rows for cells not in ``adata`` are ignored).
    source
        The data file, named in error messages.

    Returns
    -------
    The label source as recorded downstream: ``'obs:<column>'`` or ``'csv:<path>'``.

    Raises
    ------
    InputError
        Unknown column and no such file (the message lists the obs columns), unlabelled
        cells (the message gives how many and one example).
    """
    where = f"{source}: " if source else ""
    if label_key in adata.obs.columns:
        labels = adata.obs[label_key]
        empty = labels.isna().to_numpy() | (labels.astype(str).str.strip() == "").to_numpy()
        origin = f"obs:{label_key}"
        what = f"obs column {label_key!r}"
    else:
        path = Path(label_key)
        if not path.is_file():
            columns = ", ".join(map(repr, adata.obs.columns)) or "none"
            raise InputError(
                f"{where}label_key {label_key!r} is neither an obs column (available: {columns}) "
                "nor an existing labels file"
            )
        table = _read_labels_file(path)
        if len(table) and table.index[0] not in adata.obs_names:  # a header line
            table = table.iloc[1:]
        table = table[~table.index.duplicated(keep="first")]
        missing = ~adata.obs_names.isin(table.index)
        if missing.any():
            raise InputError(
                f"{where}labels file {path} has no label for {int(missing.sum())} of {adata.n_obs} cells "
                f"(e.g. {adata.obs_names[missing][0]!r})"
            )
        labels = table.reindex(adata.obs_names)
        empty = (labels.astype(str).str.strip() == "").to_numpy()
        origin = f"csv:{path}"
        what = f"labels file {path}"
    if empty.any():
        raise InputError(
            f"{where}{what} has an empty label for {int(empty.sum())} cells (e.g. {adata.obs_names[empty][0]!r})"
        )
    adata.obs[LABEL_COLUMN] = pd.Categorical(labels.astype(str).to_numpy())
    return origin
