"""Seeded count simulations with known truth, for tests and benchmarks (numpy only).

:func:`simulate` makes cells whose given labels hide structure inside them:

1. **Genes.** Every gene has a base log-frequency drawn from a normal distribution
   (sigma :data:`BASE_SIGMA`), so a few genes are highly and most lowly expressed, as in
   real data.
2. **Labels.** Each label up-regulates its own marker program (a random set of
   ``program_genes`` genes, log fold changes around :data:`LABEL_LFC`).
3. **Hidden sub-states** (``structure`` ``'substates'`` or ``'both'``). Every cell of a
   label is, with probability 1/2, in sub-state 0 or 1; each sub-state of each label
   up-regulates its own gene program (distinct genes from the label's markers and from the
   other sub-state's), log fold changes around :data:`SUBSTATE_LFC`.
4. **Trajectory** (``structure`` ``'trajectory'`` or ``'both'``). Every cell has a
   pseudotime ``t ~ U(0, 1)``; one more program per label moves with it, log fold change
   ``lfc * (2 t - 1)`` (down at the start, up at the end).
5. **Truth.** A cell's true frequencies are the softmax of its log-expression; its true
   means are the frequencies times its library size, drawn from a log-normal
   (``mean_library``, ``library_sigma``), as real depths are.
6. **Counts.** Negative binomial around the true means (gamma-Poisson with dispersion
   ``theta``; ``theta=None`` gives Poisson), then optional extra dropout that hits low
   expression most: a count is zeroed with probability ``dropout * exp(-mu)``. The truth
   is the mean *before* that dropout.

:func:`simulate_null` makes the null data of the false-signal check: one cell type,
independent genes (NB given the cell's library size), so that the gene-gene correlations
of library-normalised counts are zero up to sampling noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Standard deviation of the genes' base log-frequencies.
BASE_SIGMA = 1.5
#: Mean log fold change of a label's marker program (natural log).
LABEL_LFC = 1.5
#: Mean log fold change of a hidden sub-state's program.
SUBSTATE_LFC = 1.2
#: Log fold change of the trajectory program at either end of pseudotime.
TRAJECTORY_LFC = 1.5
#: Spread (SD) of the log fold changes of the genes of one program.
LFC_SD = 0.3
STRUCTURES = ("substates", "trajectory", "both", "none")


@dataclass(frozen=True)
class Simulation:
    """Simulated counts with their truth.

    Attributes
    ----------
    counts
        (cells, genes) integer counts (int64).
    truth
        (cells, genes) true means (expected counts before extra dropout).
    labels
        (cells,) given coarse label of every cell, 0..n_labels-1.
    substate
        (cells,) hidden sub-state, 0 or 1 (-1 without sub-states).
    pseudotime
        (cells,) hidden pseudotime in [0, 1] (NaN without a trajectory).
    library
        (cells,) library sizes the truth was scaled to.
    programs
        Gene indices of every program: ``programs['label'][l]``, ``programs['substate'][l][s]``
        and ``programs['trajectory'][l]`` (empty lists when the structure is absent).
    """

    counts: np.ndarray
    truth: np.ndarray
    labels: np.ndarray
    substate: np.ndarray
    pseudotime: np.ndarray
    library: np.ndarray
    programs: dict[str, list]


def _nb(rng: np.random.Generator, mu: np.ndarray, theta: float | None) -> np.ndarray:
    """Negative binomial (gamma-Poisson) counts with means ``mu``; Poisson when ``theta`` is None."""
    lam = mu if theta is None else rng.gamma(theta, mu / theta)
    return rng.poisson(lam).astype(np.int64)


def _libraries(rng: np.random.Generator, n: int, mean_library: float, sigma: float) -> np.ndarray:
    """Log-normal library sizes with mean ``mean_library``."""
    return rng.lognormal(np.log(mean_library) - sigma**2 / 2, sigma, n)


def _check(n_cells: int, n_genes: int, mean_library: float, theta: float | None) -> None:
    if n_cells < 2 or n_genes < 2:
        raise ValueError(f"need at least 2 cells and 2 genes, got {n_cells} x {n_genes}")
    if mean_library <= 0 or (theta is not None and theta <= 0):
        raise ValueError(f"mean_library={mean_library} and theta={theta} must be positive")


def simulate(
    n_cells: int = 400,
    n_genes: int = 200,
    n_labels: int = 4,
    structure: str = "both",
    seed: int = 0,
    program_genes: int | None = None,
    mean_library: float = 2000.0,
    library_sigma: float = 0.5,
    theta: float | None = 10.0,
    dropout: float = 0.0,
) -> Simulation:
    """Counts of labelled cells with hidden sub-states and/or a trajectory inside each label.

    Parameters
    ----------
    n_cells, n_genes
        Shape of the counts.
    n_labels
        Number of given (coarse) labels.
    structure
        ``'substates'``, ``'trajectory'``, ``'both'`` or ``'none'`` (labels only).
    seed
        Seed of every draw: the same arguments give the same data.
    program_genes
        Genes per program; default ``max(3, n_genes // 20)``. Every program has its own genes,
        so ``n_labels * 4 * program_genes`` must not exceed ``n_genes``.
    mean_library, library_sigma
        Mean and log-scale SD of the log-normal library sizes.
    theta
        NB dispersion (variance ``mu + mu**2 / theta``); ``None`` for Poisson counts.
    dropout
        Extra dropout strength in [0, 1): a count is zeroed with probability ``dropout * exp(-mu)``.

    Returns
    -------
    The :class:`Simulation`.
    """
    _check(n_cells, n_genes, mean_library, theta)
    if structure not in STRUCTURES:
        raise ValueError(f"structure={structure!r} is not one of {', '.join(STRUCTURES)}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout} is not in [0, 1)")
    size = program_genes or max(3, n_genes // 20)
    if n_labels < 1 or n_labels * 4 * size > n_genes:
        raise ValueError(f"{n_labels} labels x 4 programs x {size} genes do not fit in {n_genes} genes")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_genes)
    block = order[: n_labels * 4 * size].reshape(n_labels, 4, size)
    with_sub = structure in ("substates", "both")
    with_traj = structure in ("trajectory", "both")

    labels = rng.integers(0, n_labels, n_cells)
    substate = rng.integers(0, 2, n_cells) if with_sub else np.full(n_cells, -1)
    pseudotime = rng.uniform(0.0, 1.0, n_cells) if with_traj else np.full(n_cells, np.nan)

    log_expr = np.tile(rng.normal(0.0, BASE_SIGMA, n_genes), (n_cells, 1))
    cells = np.arange(n_cells)

    def up(rows: np.ndarray, genes: np.ndarray, lfc: float, weight: np.ndarray | float = 1.0) -> None:
        effect = rng.normal(lfc, LFC_SD, genes.size)
        log_expr[np.ix_(rows, genes)] += np.asarray(weight).reshape(-1, 1) * effect

    for lab in range(n_labels):
        rows = cells[labels == lab]
        up(rows, block[lab, 0], LABEL_LFC)
        if with_sub:
            for s in (0, 1):
                up(rows[substate[rows] == s], block[lab, 1 + s], SUBSTATE_LFC)
        if with_traj:
            up(rows, block[lab, 3], TRAJECTORY_LFC, 2.0 * pseudotime[rows] - 1.0)

    freq = np.exp(log_expr - log_expr.max(axis=1, keepdims=True))
    freq /= freq.sum(axis=1, keepdims=True)
    library = _libraries(rng, n_cells, mean_library, library_sigma)
    truth = freq * library[:, None]
    counts = _nb(rng, truth, theta)
    if dropout > 0:
        counts[rng.random(counts.shape) < dropout * np.exp(-truth)] = 0
    programs = {
        "label": [block[lab, 0].tolist() for lab in range(n_labels)],
        "substate": [[block[lab, 1].tolist(), block[lab, 2].tolist()] if with_sub else [] for lab in range(n_labels)],
        "trajectory": [block[lab, 3].tolist() if with_traj else [] for lab in range(n_labels)],
    }
    return Simulation(counts, truth, labels, substate, pseudotime, library, programs)


def simulate_null(
    n_cells: int = 400,
    n_genes: int = 200,
    seed: int = 0,
    mean_library: float = 2000.0,
    library_sigma: float = 0.5,
    theta: float | None = 10.0,
) -> Simulation:
    """Null data: one cell type, independent NB genes (only the library size is shared).

    Given its library size, every count is drawn independently, so the library-normalised
    values of two genes are uncorrelated: any gene-gene correlation beyond sampling noise
    that an imputation shows on these cells was made by the imputation.

    Returns
    -------
    A :class:`Simulation` with one label, no sub-states and no pseudotime.
    """
    _check(n_cells, n_genes, mean_library, theta)
    rng = np.random.default_rng(seed)
    freq = np.exp(rng.normal(0.0, BASE_SIGMA, n_genes))
    freq /= freq.sum()
    library = _libraries(rng, n_cells, mean_library, library_sigma)
    truth = library[:, None] * freq[None, :]
    counts = _nb(rng, truth, theta)
    programs: dict[str, list] = {"label": [[]], "substate": [[]], "trajectory": [[]]}
    return Simulation(counts, truth, np.zeros(n_cells, dtype=np.int64), np.full(n_cells, -1),
                      np.full(n_cells, np.nan), library, programs)
