"""One runner per benchmarked method: counts in, denoised counts out.

Every runner takes an AnnData whose X holds integer counts (cells x genes, CSR) and
returns a dense float array of the same shape on the count scale (a cell's values
summing to about its library size), so that MCV and clustering treat all methods
alike (optionally with a dict of what the method reported about itself). Settings follow ``docs/evaluation.md``:

* ``none``: the counts as they are (the "no denoising" control).
* ``knn``: kNN smoothing written here: PCA-50 of log-normalised counts (target sum
  1e4), the k = 15 nearest cells in that space (the cell itself included), and each
  cell's output = the mean of its neighbours' library-normalised counts times its own
  library size.
* ``magic``: ``magic-impute`` on the square root of library-normalised counts
  (target sum 1e4), ``t=3``, ``solver='exact'``, other settings at their defaults;
  the output is squared and scaled back to each cell's library size.
* ``alra``: ``halra`` on log-normalised counts (target sum 1e4), default rank
  selection; the output is ``expm1`` -ed and scaled back to each cell's library size.
  Genes or cells ALRA drops (all zeros) are returned as zeros.
* ``scvi``: ``scvi-tools`` SCVI with default model and training settings; the output
  is the normalised expression (library size 1) times each cell's library size.
* ``scmaskgan-zeros`` / ``scmaskgan-denoise``: the project's public API,
  ``scmaskgan.impute(adata, mode=...)`` with its defaults (run as the estimator it wraps,
  ``ScMaskGAN(mode=...).fit(adata).transform(adata)``, to read the training record) (no labels are given: the
  method finds its own labels, like every peer here works without them).
* ``scmaskgan-cli``: the command a user runs, ``scmaskgan impute in.h5ad -o out.h5ad``
  with its defaults, timed as a whole process (start-up and file IO included).

A runner whose package is missing reports why through :func:`unavailable`, and the
benchmark prints a "not available" row instead of failing.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp

TARGET_SUM = 1e4
KNN_K = 15
KNN_PCS = 50


def _dense(x: np.ndarray | sp.spmatrix) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def _library(counts: np.ndarray) -> np.ndarray:
    lib = counts.sum(axis=1, keepdims=True)
    lib[lib == 0] = 1.0
    return lib


def _lognorm(counts: np.ndarray) -> np.ndarray:
    return np.log1p(counts / _library(counts) * TARGET_SUM)


def run_none(adata: ad.AnnData) -> np.ndarray:
    """The counts unchanged (no denoising)."""
    return _dense(adata.X)


def run_knn(adata: ad.AnnData) -> np.ndarray:
    """kNN smoothing: mean library-normalised profile of the 15 nearest cells in PCA-50."""
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    counts = _dense(adata.X)
    lib = _library(counts)
    n_pcs = min(KNN_PCS, min(counts.shape) - 1)
    pcs = PCA(n_components=n_pcs, random_state=0).fit_transform(_lognorm(counts))
    k = min(KNN_K, counts.shape[0])
    _, idx = NearestNeighbors(n_neighbors=k).fit(pcs).kneighbors(pcs)
    fractions = counts / lib
    return fractions[idx].mean(axis=1) * lib


def run_magic(adata: ad.AnnData) -> np.ndarray:
    """MAGIC (t=3, exact solver) on sqrt library-normalised counts, squared back x library."""
    import magic

    counts = _dense(adata.X)
    lib = _library(counts)
    sqrt_norm = np.sqrt(counts / lib * TARGET_SUM)
    smoothed = magic.MAGIC(t=3, solver="exact", random_state=0, verbose=0).fit_transform(sqrt_norm)
    return np.asarray(smoothed, dtype=np.float64) ** 2 / TARGET_SUM * lib


def run_alra(adata: ad.AnnData) -> np.ndarray:
    """ALRA (halra) on log-normalised counts, expm1 and scaled back x library."""
    from halra import halra

    counts = _dense(adata.X)
    lib = _library(counts)
    cells = np.arange(counts.shape[0]).astype(str)
    genes = np.arange(counts.shape[1]).astype(str)
    imputed, kept_cells, kept_genes = halra(
        sp.csr_matrix(_lognorm(counts)), cells, genes, seed=0, verbose=False
    )
    lognorm = np.zeros_like(counts)
    rows = kept_cells.astype(int)
    cols = kept_genes.astype(int)
    lognorm[np.ix_(rows, cols)] = _dense(imputed)
    return np.expm1(np.clip(lognorm, 0.0, None)) / TARGET_SUM * lib


def run_scvi(adata: ad.AnnData) -> np.ndarray:
    """scVI with default settings: normalised expression x library size."""
    import scvi

    data = ad.AnnData(X=sp.csr_matrix(adata.X, dtype=np.float32), obs=adata.obs[[]].copy())
    scvi.settings.seed = 0
    scvi.model.SCVI.setup_anndata(data)
    model = scvi.model.SCVI(data)
    model.train(accelerator="cpu", enable_progress_bar=False)
    norm = np.asarray(model.get_normalized_expression(library_size=1.0, return_numpy=True))
    return norm.astype(np.float64) * _library(_dense(adata.X))


def _scmaskgan(mode: str) -> Callable[[ad.AnnData], tuple[np.ndarray, dict]]:
    def run(adata: ad.AnnData) -> tuple[np.ndarray, dict]:
        import scmaskgan

        data = ad.AnnData(X=sp.csr_matrix(adata.X, dtype=np.float32), obs=adata.obs[[]].copy(),
                          var=adata.var[[]].copy())
        # exactly scmaskgan.impute(data, mode=mode, copy=True), kept as an estimator to read its training record
        model = scmaskgan.ScMaskGAN(mode=mode).fit(data)
        result = model.transform(data)
        return _dense(result.X), {"train": model.train_record_, "impute": result.uns.get("scmaskgan", {})}

    run.__doc__ = (f"scMASKGAN with its defaults: ``ScMaskGAN(mode={mode!r}).fit(adata).transform(adata)``, "
                   "which is what ``scmaskgan.impute(adata, mode=..., copy=True)`` runs; also returns the "
                   "training record (seconds per epoch, device) and ``uns['scmaskgan']``.")
    return run


def fit_scmaskgan_with_types(counts: np.ndarray | sp.spmatrix, cell_types: np.ndarray, seed: int,
                             **params: object) -> tuple[Any, float, str]:
    """``ScMaskGAN(seed, label_key='cell_type', **params)`` fitted on ``counts`` (cells x genes) with the
    known ``cell_types`` as its labels (the ablation's and the quality benchmark's candidate sources).

    Returns
    -------
    The fitted estimator, its wall seconds, and a note of its training (epochs run, best epoch,
    candidates kept).
    """
    import time

    import pandas as pd

    import scmaskgan

    data = ad.AnnData(
        X=sp.csr_matrix(counts, dtype=np.float32),
        obs=pd.DataFrame({"cell_type": cell_types}, index=[f"c{i}" for i in range(len(cell_types))]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(counts.shape[1])]),
    )
    start = time.perf_counter()
    model = scmaskgan.ScMaskGAN(seed, label_key="cell_type", **params).fit(data)
    seconds = time.perf_counter() - start
    record = model.train_record_
    note = (f"{record.get('epochs_run')} epochs (best {record.get('best_epoch')}), "
            f"{len(model.candidates_)} candidates kept")
    return model, seconds, note


def _scmaskgan_missing() -> str | None:
    try:
        import scmaskgan
    except ImportError as exc:  # pragma: no cover - the package is the project itself
        return f"not installed ({exc})"
    return None if callable(getattr(scmaskgan, "impute", None)) else "not available yet (no scmaskgan.impute)"


def scmaskgan_cli(input_h5ad: Path, output_h5ad: Path) -> list[str]:
    """The user's command: ``scmaskgan impute INPUT -o OUTPUT`` with default settings."""
    return [str(Path(sys.executable).parent / "scmaskgan"), "impute", str(input_h5ad), "-o", str(output_h5ad)]


def _scmaskgan_cli_missing() -> str | None:
    argv = scmaskgan_cli(Path("in.h5ad"), Path("out.h5ad"))[:2] + ["--help"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        return f"not installed ({exc})"
    return None if done.returncode == 0 else "not available yet (no `scmaskgan impute` command)"


@dataclass(frozen=True)
class Method:
    """A benchmarked method: its name, its runner (or its command line), the module it needs and the ones
    imported before timing."""

    name: str
    label: str
    run: Callable[[ad.AnnData], np.ndarray | tuple[np.ndarray, dict]] | None
    module: str | None = None
    uses_torch: bool = False
    imports: tuple[str, ...] = ()
    cli: Callable[[Path, Path], list[str]] | None = None

    def unavailable(self) -> str | None:
        """Why the method cannot run here, or ``None`` when it can."""
        if self.cli is not None:
            return _scmaskgan_cli_missing()
        if self.name.startswith("scmaskgan"):
            return _scmaskgan_missing()
        if self.module is None:
            return None
        try:
            importlib.import_module(self.module)
        except Exception as exc:  # noqa: BLE001 - any import failure means "cannot run"
            return f"not installed ({type(exc).__name__}: {exc}); pip install '.[bench]'"
        return None


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("none", "no imputation", run_none),
        Method("knn", "kNN smoothing (k=15, PCA-50)", run_knn,
               imports=("sklearn.decomposition", "sklearn.neighbors")),
        Method("magic", "MAGIC (t=3, exact)", run_magic, "magic", imports=("magic",)),
        Method("alra", "ALRA (halra)", run_alra, "halra", imports=("halra",)),
        Method("scvi", "scVI (defaults)", run_scvi, "scvi", uses_torch=True, imports=("scvi",)),
        Method("scmaskgan-zeros", "scMASKGAN mode=zeros (default)", _scmaskgan("zeros"), uses_torch=True,
               imports=("scmaskgan",)),
        Method("scmaskgan-denoise", "scMASKGAN mode=denoise", _scmaskgan("denoise"), uses_torch=True,
               imports=("scmaskgan",)),
        Method("scmaskgan-cli", "scMASKGAN `scmaskgan impute` (defaults)", None, cli=scmaskgan_cli),
    )
}
