"""The generator's data-initialised factor loadings: what a label's cells share beyond its mean.

The generator starts at each label's mean profile (its label bias) with independent per-gene
level noise. Real cells of one label also vary *together*: sub-types, states and programmes
move many genes at once. Measured on Zeisel's brain cells (docs/method.md), the trained
candidates had 4-8x too little variance along each label's top within-label principal
components and 2x too much outside them: the latent code had not learned the shared variation,
and the independent noise, set at each gene's whole spread, stood in for it.

:func:`label_factors` measures that shared variation on the training cells, label by label,
as a factor model in the generator's own terms:

* the label's significant principal components of its encoded cells (for count input each
  cell's depth regressed out: the generator is given it): those whose variance exceeds, by a
  margin, the largest a component reaches when every gene is permuted across the cells on its
  own (parallel analysis; so a label of independent genes gets none and its candidates no
  invented correlations);
* their unit-variance scores ``t`` per cell, and, gene by gene, the regression on ``t`` of the
  level logit where the gene is observed (ridge, in the masked cells only) and of the detection
  (a linear probability slope divided by ``p (1 - p)``: a slope on the logit scale).

The generator adds ``loadings @ u`` to its level and detection logits, ``u`` being the first
``rank`` coordinates of its latent code (:class:`~scmaskgan.method.model.Generator`); the
loadings are kept through training, as the level noise is (trained, the adversarial term wore
the hidden structure they carry down, ``docs/method.md``), the generator's other paths see
neither ``u`` nor, by default, any other latent coordinate (``learned_latent``), so the
factors are all the shared variation its candidates have, and the level noise keeps the
variance the factors do not explain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import logit
from sklearn.utils.extmath import randomized_svd

from scmaskgan.method.train_data import TrainingCells

#: Most cells of one label the factors are measured on (a seeded random subset beyond).
FACTOR_CELLS = 2000
#: Fewest training cells a label needs for factors: fewer cannot tell shared variation from chance
#: (a label of 6 cells passed 2 components).
MIN_FACTOR_CELLS = 30
#: Gene-wise permutations of a label's cells whose largest component sets the noise level.
PERMUTATIONS = 2
#: A component counts when its variance exceeds the noise level by this factor (the permuted level
#: varies by 2-3 % between permutations, and a chance component of null data came out up to 5 %
#: above it, docs/method.md).
MARGIN = 1.1
#: Ridge added to the per-gene normal equations of the level regression (in units of cells).
RIDGE = 1.0
#: Detection rates are clipped to this range before the slope is divided by ``p (1 - p)``.
_P_CLIP = (0.02, 0.98)
_LOGIT_CLIP = 1e-4


@dataclass
class LabelFactors:
    """Per-label factor loadings ``(n_labels, rank, N, N)`` on the level and on the detection
    logit (zero beyond each label's significant components, ``ranks``), and the training cells'
    unit-variance scores on them, ``scores`` ``(n_labels, FACTOR_CELLS, rank)`` (the first
    ``counts[label]`` rows of each label filled)."""

    level: torch.Tensor
    detection: torch.Tensor
    ranks: list[int]
    scores: torch.Tensor
    counts: torch.Tensor


def significant_scores(x: np.ndarray, max_rank: int, depth: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Unit-variance scores ``(cells, r)`` of the principal components of ``x`` (cells x genes, on
    the encoded scale; centred here) that stand above noise, at most ``max_rank``.

    A component stands above noise when its variance exceeds :data:`MARGIN` times that of the
    largest component of the same cells with every gene permuted across cells on its own
    (:data:`PERMUTATIONS` times, the largest kept): parallel analysis (Horn 1965). The
    permutation keeps each gene's distribution and breaks only what genes share, so the level
    holds for genes of any noise, unlike the Marchenko-Pastur edge, which needs every gene
    standardised to unit variance, and standardising weighs a gene that barely varies as much
    as one that carries a sub-state (measured in ``docs/method.md``).

    With ``depth`` (each cell's log depth) its linear effect is removed from every gene first:
    the generator is given each cell's depth, and how many genes a deeper cell detects is not a
    factor it should learn again.
    """
    n = len(x)
    used = x.std(0) > 0
    if n < 3 or used.sum() < 2 or max_rank < 1:
        return np.zeros((n, 0))
    z = x[:, used] - x[:, used].mean(0)
    if depth is not None and np.ptp(depth) > 0:
        c = (depth - depth.mean()) / np.linalg.norm(depth - depth.mean())
        z -= np.outer(c, c @ z).astype(z.dtype)
    k = min(max_rank, n - 1, int(used.sum()) - 1)
    u, s, _ = randomized_svd(z, k, n_iter=4, random_state=0)
    rng = np.random.default_rng(seed)
    noise = 0.0
    for _ in range(PERMUTATIONS):  # permuted in place: the cells' copy is not needed any more
        rng.permuted(z, axis=0, out=z)
        noise = max(noise, float(randomized_svd(z, 1, n_iter=4, random_state=0)[1][0]) ** 2)
    rank = int((s**2 > MARGIN * noise).sum())
    return u[:, :rank] * np.sqrt(n - 1)


def loadings(values: np.ndarray, masks: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Level and detection-logit loadings ``(r, genes)`` of one label's cells on their ``scores``.

    ``values`` and ``masks`` are ``(cells, genes)``, values encoded in (0, 1) where observed.
    """
    r = scores.shape[1]
    y = logit(np.clip(values, _LOGIT_CLIP, 1 - _LOGIT_CLIP))
    mean = (y * masks).sum(0) / np.maximum(masks.sum(0), 1.0)
    outer = (scores[:, :, None] * scores[:, None, :]).reshape(len(scores), r * r)
    normal = (masks.T @ outer).reshape(-1, r, r) + RIDGE * np.eye(r)[None]
    target = (masks * (y - mean)).T @ scores
    level = np.linalg.solve(normal, target[..., None])[..., 0].T
    p = masks.mean(0)
    slope = scores.T @ (masks - p) / len(masks)
    clipped = np.clip(p, *_P_CLIP)
    detection = slope / (clipped * (1 - clipped))
    return level, detection


def label_factors(
    cells: TrainingCells, n_labels: int, max_rank: int, seed: int, depth_input: bool = True
) -> LabelFactors:
    """Factor loadings of every label from its training cells (at most :data:`FACTOR_CELLS` each).

    Parameters
    ----------
    cells
        The training cells (the validation cells are never used); a label's cells are taken
        from memory, or read from the file when the cells are streamed.
    n_labels
        Number of labels.
    max_rank
        Most factors per label (the width of the loadings).
    seed
        Seeds the subset of cells of large labels.
    depth_input
        The generator is given each cell's depth (count input), so the depth is regressed out
        before the components are sought; a generator without it (log-normalised input) has to
        produce what depth explains itself.
    """
    store = cells.store
    side, n_genes = store.encoding.side, store.encoding.n_genes
    level = torch.zeros(n_labels, max_rank, side, side)
    detection = torch.zeros_like(level)
    bank = torch.zeros(n_labels, FACTOR_CELLS, max_rank)
    counts = torch.zeros(n_labels, dtype=torch.long)
    ranks = []
    rng = np.random.default_rng(seed)
    labels = store.labels[cells.index]
    for label in range(n_labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) > FACTOR_CELLS:
            rows = np.sort(rng.choice(rows, FACTOR_CELLS, replace=False))
        if len(rows) < MIN_FACTOR_CELLS:
            ranks.append(0)
            continue
        part = cells.subset(rows)
        values = part.values.reshape(len(part), -1)[:, :n_genes].numpy()
        masks = part.masks.reshape(len(part), -1)[:, :n_genes].numpy()
        scores = significant_scores(values, max_rank, part.depth.numpy() if depth_input else None, seed)
        ranks.append(scores.shape[1])
        if scores.shape[1] == 0:
            continue
        lv, det = loadings(values, masks, scores)
        r = scores.shape[1]
        level[label, :r].view(r, -1)[:, :n_genes] = torch.from_numpy(lv).float()
        detection[label, :r].view(r, -1)[:, :n_genes] = torch.from_numpy(det).float()
        bank[label, :len(rows), :r] = torch.from_numpy(scores).float()
        counts[label] = len(rows)
    return LabelFactors(level, detection, ranks, bank, counts)
