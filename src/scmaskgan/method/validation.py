"""TRAIN's validation signal: candidate quality on held-out cells (:class:`Validator`) and
the early-stopping score (:func:`validation_score`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from scmaskgan.core.config import TrainParams
from scmaskgan.method.depth import LabelDepths
from scmaskgan.method.generate import Views, sample_views
from scmaskgan.method.losses import thin
from scmaskgan.method.model import Discriminator, Generator, pixel_scaled
from scmaskgan.method.train_data import CellTensors

#: Candidates generated per validation (spread over the labels).
VALIDATION_CANDIDATES = 2000
#: Training cells (a seeded random subset) given to the quality reference as the real level.
REFERENCE_CELLS = 4000
#: Held-out cells scored (a seeded subset, stratified by label, when there are more): the cost of
#: an epoch's validation grows with them, while its scores' noise is set mostly by the candidates.
VALIDATION_CELLS = 500


def stratified_subset(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of about ``limit`` cells (all when there are no more), every label keeping
    its share and at least one cell; seeded."""
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [
        rng.choice(idx, size=max(1, round(limit * len(idx) / len(labels))), replace=False)
        for idx in (np.flatnonzero(labels == label) for label in np.unique(labels))
    ]
    return np.sort(np.concatenate(keep))


class Validator:
    """Candidate quality on held-out cells: the validation signal for early stopping.

    Scores at most about :data:`VALIDATION_CELLS` of the held-out cells (:func:`stratified_subset`).
    Generates a fixed set of candidates per label (fixed noise; ``per_label``, fewer when
    there are many labels so that an epoch's validation generates at most
    :data:`VALIDATION_CANDIDATES`, scaled by :func:`~scmaskgan.method.model.pixel_scaled` for
    large images, but never fewer than 10) as GENERATE would, and scores them against
    the held-out real cells with :class:`~scmaskgan.method.quality.QualityReference` (energy
    distance, precision/recall/density/coverage, classifier two-sample AUC, ...), each
    beside the level that real training cells reach.

    The early-stopping score (lower is better) is :func:`validation_score`: it punishes
    candidates a classifier tells apart from real cells *and* candidates that cover too
    little of the real cells' variety, so label prototypes cannot win it.
    """

    def __init__(
        self,
        val: CellTensors,
        reference: CellTensors,
        pool: CellTensors | None,
        n_genes: int,
        params: TrainParams,
        per_label: int = 100,
    ) -> None:
        from scmaskgan.method.quality import QualityReference

        val = val.subset(torch.from_numpy(stratified_subset(val.labels.numpy(), VALIDATION_CELLS, params.seed)))
        self.labels = val.labels.numpy()
        self.real_values = val.values.reshape(len(val), -1)[:, :n_genes].float()
        self.real_depth = val.depth
        if len(reference) > REFERENCE_CELLS:  # the reference uses at most 2 x 2,000: no float copy of all cells
            pick = torch.randperm(len(reference), generator=torch.Generator().manual_seed(params.seed))
            reference = reference.subset(pick[:REFERENCE_CELLS].sort().values)
        ref_values = reference.values.reshape(len(reference), -1)[:, :n_genes].float()
        self.quality = QualityReference(
            self.real_values.numpy(), self.labels, ref_values.numpy(), reference.labels.numpy(), seed=params.seed
        )
        self.pool, self.n_genes, self.params = pool, n_genes, params
        self.depths = LabelDepths(reference.labels.numpy(), reference.depth.numpy())
        present = np.unique(self.labels)
        side = val.values.shape[-1]
        budget = pixel_scaled(VALIDATION_CANDIDATES, side, floor=10 * len(present))
        per_label = max(10, min(per_label, budget // len(present)))
        self.cand_labels = np.repeat(present, per_label)
        #: The candidates the discriminator judges for ``d_accuracy``: as many as the held-out cells
        #: it judges, every label keeping its share (judging all 2,000 took a third of a validation).
        self.judged_candidates = stratified_subset(self.cand_labels, len(self.labels), params.seed)
        self.batch_size = pixel_scaled(256, side)

    def candidates(self, generator: Generator, device: torch.device) -> Views:
        """The fixed-noise validation candidates of the generator as it is now (at the depths of
        training cells of their label)."""
        return sample_views(
            generator, self.cand_labels, batch_size=self.batch_size, seed=self.params.seed + 1, device=device,
            pool=self.pool, inpaint_fraction=self.params.inpaint_fraction, n_genes=self.n_genes, with_expected=False,
            depths=self.depths,
        )

    def __call__(
        self, generator: Generator, discriminator: Discriminator, device: torch.device, augment_p: float = 0.0
    ) -> dict[str, Any]:
        """Quality scores of this epoch's candidates, ``val_score``, ``d_accuracy`` and ``d_auc``: the
        discriminator's accuracy at telling held-out real cells from the candidates at its own
        threshold (logit 0; 0.5 = chance) and the ROC AUC of its logits (the same without the
        threshold: a discriminator that ranks well but calls everything unseen fake scores an
        accuracy of 0.5 and a high AUC). Both sets are thinned as in training (``augment_p`` of
        their observed genes hidden, fixed draws): the task it is trained on. Unthinned cells,
        which it never sees while ``augment_p`` > 0, would measure how it extrapolates instead."""
        from scmaskgan.method.quality import auc

        views = self.candidates(generator, device)
        scores = self.quality.score(views.values, self.cand_labels)
        real = self._judged(discriminator, self.real_values, self.labels, self.real_depth, device, augment_p)
        judged = self.judged_candidates
        fake_depth = None if views.depth is None else torch.from_numpy(views.depth[judged])
        fake = self._judged(
            discriminator, torch.from_numpy(views.values[judged]), self.cand_labels[judged], fake_depth, device,
            augment_p,
        )
        scores["d_accuracy"] = 0.5 * (float((real > 0).float().mean()) + float((fake < 0).float().mean()))
        logits = torch.cat([real, fake]).numpy()
        scores["d_auc"] = auc(logits, np.arange(len(logits)) < len(real))
        scores["val_score"] = validation_score(scores)
        return scores

    @torch.no_grad()
    def _judged(
        self,
        discriminator: Discriminator,
        vectors: torch.Tensor,
        labels: np.ndarray,
        depth: torch.Tensor | None,
        device: torch.device,
        augment_p: float,
    ) -> torch.Tensor:
        """Discriminator logits of gene vectors (observed = positive) at log depths ``depth``, thinned
        at ``augment_p`` (:func:`~scmaskgan.method.losses.thin`, seeded draws), in batches, in eval mode."""
        discriminator.eval()
        side, n_labels = discriminator.cfg.side, discriminator.cfg.n_labels
        gen = torch.Generator().manual_seed(self.params.seed + 2)
        out = []
        for start in range(0, len(vectors), self.batch_size):
            part = vectors[start:start + self.batch_size]
            images = F.pad(part, (0, side * side - part.shape[1])).view(-1, side, side)
            images, mask = thin(images, (images > 0).float(), augment_p, torch.rand(images.shape, generator=gen))
            onehot = F.one_hot(torch.as_tensor(labels[start:start + self.batch_size]), n_labels).float().to(device)
            part_depth = None if depth is None else depth[start:start + self.batch_size]
            out.append(discriminator(images.to(device), mask.to(device), onehot, part_depth).float().cpu())
        discriminator.train()
        return torch.cat(out)


def validation_score(scores: dict[str, Any]) -> float:
    """Early-stopping score of candidate quality, 0 when candidates are as good as real cells.

    ``2 * (c2st_auc - c2st_auc_real)`` (how much better than for real cells a classifier
    tells candidates from held-out cells: location and spread) plus
    ``1 - coverage / coverage_real`` (the share of the real cells' variety that real
    cells cover and the candidates miss: high for prototypes), each floored at 0.
    """
    auc = max(scores["c2st_auc"] - scores["c2st_auc_real"], 0.0)
    coverage = 1.0 - scores["coverage"] / max(scores["coverage_real"], 1e-6)
    return 2.0 * auc + max(coverage, 0.0)
