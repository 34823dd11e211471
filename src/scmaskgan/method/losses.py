"""TRAIN's masked losses: straight-through sampling of cells, the adversarial cross-entropy
and the reconstruction terms (``rec_loss='moments'`` and ``'inpaint'``).

Losses never see padding pixels: real cells are multiplied by their observed mask and
the gene mask, generated cells by the gene mask (see :class:`~scmaskgan.method.trainer.GanTrainer`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scmaskgan.method.train_data import CellTensors, LabelStats


def sample_cells(
    level: torch.Tensor, logits: torch.Tensor, uniform: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled cells from level and detection maps, differentiable by straight-through.

    The forward pass draws a binary detection mask ``uniform < sigmoid(logits)``;
    gradients reach the detection logits as if the mask were its probability.

    Returns
    -------
    ``(values, mask)``, both ``(B, N, N)``.
    """
    prob = torch.sigmoid(logits)
    hard = (uniform < prob).to(prob.dtype)
    mask = hard + prob - prob.detach()
    return level * mask, mask


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean binary cross-entropy of per-cell logits ``(B,)`` against a constant target."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _cross_term(a: torch.Tensor, b: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Unbiased estimate of ``sum(weight * (E[a] - target)^2) / sum(weight)`` from two independent halves.

    Squaring one batch mean would also penalise the spread of the generated cells (its
    variance), pushing the generator towards one mean cell; multiplying the errors of
    two independent halves keeps the gradient of the squared bias only.
    """
    ea, eb = a - target, b - target
    cross = 0.5 * (ea.detach() * eb + eb.detach() * ea)
    return (weight * cross).sum() / weight.sum().clamp_min(1e-8)


def moment_loss(
    level: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, stats: LabelStats, genes: torch.Tensor
) -> torch.Tensor:
    """``rec_loss='moments'``: match each label's detection rates and observed mean levels.

    For every label with at least two generated cells in the batch, the cells are split
    into two halves; the detection term compares the mean detection probability with
    the label's detection rate on gene pixels, the level term compares the
    detection-weighted mean level with the label's mean over observed pixels, weighted
    by the detection rate (genes never observed in the label do not count). Labels are
    averaged weighted by their number of cells.
    """
    prob = torch.sigmoid(logits)
    total = level.new_zeros(())
    n_used = 0
    for label in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == label).flatten()
        if len(idx) < 2:
            continue
        halves = (idx[0::2], idx[1::2])
        p = [prob[h].mean(0) for h in halves]
        lev = [(level[h] * prob[h]).sum(0) / prob[h].sum(0).clamp_min(1e-6) for h in halves]
        det_rate = stats.detection[label]
        det = _cross_term(p[0], p[1], det_rate, genes)
        lvl = _cross_term(lev[0], lev[1], stats.level[label], det_rate * genes)
        total = total + len(idx) * (det + lvl)
        n_used += len(idx)
    return total / max(n_used, 1)


def inpaint_split(masks: torch.Tensor, fraction: float, uniform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide ``fraction`` of the observed pixels: returns ``(kept, held_out)`` masks."""
    kept = masks * (uniform >= fraction).to(masks.dtype)
    return kept, masks - kept


def inpaint_loss(
    level: torch.Tensor,
    logits: torch.Tensor,
    cells: CellTensors,
    kept: torch.Tensor,
    held: torch.Tensor,
    genes: torch.Tensor,
) -> torch.Tensor:
    """``rec_loss='inpaint'``: predict the held-out observed pixels of the conditioning cell.

    Squared error of the level on held-out observed pixels, plus the cross-entropy of the
    detection logits against the observed mask on every gene pixel the generator did
    not see (held-out observed = 1, dropouts = 0).
    """
    value_err = (held * (level - cells.values) ** 2).sum() / held.sum().clamp_min(1.0)
    unseen = genes * (1.0 - kept)
    det_err = F.binary_cross_entropy_with_logits(logits, cells.masks, weight=unseen, reduction="sum")
    return value_err + det_err / unseen.sum().clamp_min(1.0)
