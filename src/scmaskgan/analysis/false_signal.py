"""False-signal check: does an imputation create gene-gene correlations the counts do not hold?

Imputation that averages each cell with its neighbours (or reconstructs it from a few
components) makes genes co-vary that never did (Andrews & Hemberg 2018, "False signals
induced by single-cell imputation"). :func:`correlation_inflation` compares the
distribution of ``|Pearson r|`` over gene pairs in the output with that in the raw
counts, both log-normalised. On null data (one cell type, independent genes) the raw
counts hold only sampling noise, so any rise is invented: :func:`passes_null_check`
is the test.

Which library size the output is normalised by matters. A denoiser that removes most of a
gene's noise leaves a near-constant gene, and dividing every gene of a cell by the output's
own total (dominated by the few genes that keep their counts) gives all such genes one shared
factor: |r| rises with no change in the estimates. scMASKGAN's outputs are compared through
their ``layers['imputed_lognorm']``, normalised by the cell's observed library size
(:data:`~scmaskgan.core.matrix.IMPUTED_LOGNORM`); on null data with the default training (seed 1)
the posterior mode's 95th percentile |r| is 0.081 there (``benchmarks/results/null.md``; the counts
0.091), and was 0.165 after renormalising by the output's totals when last measured (2026-11-30,
``docs/method.md``). On real data, denoising may legitimately strengthen true correlations;
read the numbers beside the other metrics.
"""

from __future__ import annotations

import numpy as np

from scmaskgan.errors import InputError

#: Largest relative rise of the median or 95th percentile of ``|r|`` that :func:`passes_null_check` accepts.
INFLATION_TOLERANCE = 0.2


def abs_gene_correlations(x: np.ndarray, genes: np.ndarray) -> np.ndarray:
    """``|Pearson r|`` of every pair of the columns ``genes`` of ``x`` (upper triangle; NaN for constant genes)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.atleast_2d(np.corrcoef(np.asarray(x, dtype=np.float64)[:, genes], rowvar=False))
    return np.abs(corr[np.triu_indices(len(genes), k=1)])


def correlation_inflation(original: np.ndarray, imputed: np.ndarray, *, n_genes: int = 300) -> dict[str, float]:
    """Distribution of ``|r|`` over gene pairs, imputed against original.

    Parameters
    ----------
    original, imputed
        Cells x genes on one scale (log-normalised, as in :mod:`scmaskgan.analysis.evaluate`).
    n_genes
        The genes with the highest mean in ``original`` that vary in both matrices are
        used (at most this many; pairs grow with the square).

    Returns
    -------
    ``abs_corr_median_original``/``_imputed``, ``abs_corr_p95_original``/``_imputed``
    (median and 95th percentile of ``|r|`` over the gene pairs), and
    ``abs_corr_median_inflation``, ``abs_corr_p95_inflation`` (imputed minus original).
    """
    original, imputed = np.asarray(original, dtype=np.float64), np.asarray(imputed, dtype=np.float64)
    if original.shape != imputed.shape:
        raise InputError(f"original {original.shape} and imputed {imputed.shape} shapes differ")
    varying = np.flatnonzero((original.std(0) > 0) & (imputed.std(0) > 0))
    if len(varying) < 2 or len(original) < 3:
        raise InputError(f"{len(varying)} genes vary in both matrices over {len(original)} cells; need 2 and 3")
    genes = varying[np.argsort(-original[:, varying].mean(0), kind="stable")[:n_genes]]
    out: dict[str, float] = {}
    for name, x in (("original", original), ("imputed", imputed)):
        r = abs_gene_correlations(x, genes)
        out[f"abs_corr_median_{name}"], out[f"abs_corr_p95_{name}"] = (float(v) for v in np.nanquantile(r, [0.5, 0.95]))
    for stat in ("median", "p95"):
        out[f"abs_corr_{stat}_inflation"] = out[f"abs_corr_{stat}_imputed"] - out[f"abs_corr_{stat}_original"]
    return out


def passes_null_check(inflation: dict[str, float], tolerance: float = INFLATION_TOLERANCE) -> bool:
    """True when neither the median nor the 95th percentile of ``|r|`` rose by more than ``tolerance`` (relative).

    Meaningful on null data (independent genes), where the raw counts' correlations are
    sampling noise, about ``2 / sqrt(cells)`` at the 95th percentile: a relative bound
    holds at any number of cells. Adding noise (e.g. thinning the counts) moves both by
    about 1 %; averaging each cell with 30 random others raises both by about 40 %.
    """
    return all(
        inflation[f"abs_corr_{stat}_imputed"] <= (1 + tolerance) * inflation[f"abs_corr_{stat}_original"]
        for stat in ("median", "p95")
    )
