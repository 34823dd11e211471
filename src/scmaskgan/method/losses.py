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


def thin(values: torch.Tensor, mask: torch.Tensor, rate: float, uniform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide a fraction ``rate`` of the pixels (observed genes become dropouts): the discriminator's
    augmentation.

    Differentiable in ``values`` and ``mask`` (a product with a 0/1 draw), so the generator
    learns through it. Thinning keeps the distribution identifiable: the probability that a
    set of genes is observed is multiplied by ``(1 - rate)`` to the set's size and values are
    unchanged, so a generator whose thinned cells look real has real cells (the augmentation
    does not leak into what it generates).
    """
    if rate <= 0.0:
        return values, mask
    keep = (uniform >= rate).to(values.dtype)
    return values * keep, mask * keep


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean binary cross-entropy of per-cell logits ``(B,)`` against a constant target."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


#: Floor of the moment loss's relative errors: a target below it counts as absolute error / floor.
_RELATIVE_FLOOR = 0.05


def r1_penalty(d_real: torch.Tensor, real_values: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """R1 penalty (Mescheder et al. 2018): half the mean squared norm of the discriminator's
    gradient with respect to the observed values of the real cells.

    Penalising the slope of the discriminator on the real cells stops it from building a
    sharp boundary around each training cell, which a sample of a few hundred cells
    otherwise lets it do (the generator then chases that boundary and over-disperses).
    ``real_values`` must require grad and ``d_real`` be computed from it.
    """
    (grad,) = torch.autograd.grad(d_real.sum(), real_values, create_graph=True)
    return 0.5 * (grad * masks).pow(2).flatten(1).sum(1).mean()


def _cross_term(a: torch.Tensor, b: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Unbiased estimate of ``sum(weight * ((E[a] - target) / (target + f))^2) / sum(weight)`` from two
    independent halves (``f`` = :data:`_RELATIVE_FLOOR`), over the last axis (one value per row).

    Relative errors weigh a 20 % drift of a lowly expressed gene like that of a high one; an
    absolute error on the [0, 1] scale let the adversarial term lower the generator's mean
    level by 20-25 % at ``lambda_rec`` = 10 (``docs/method.md``).

    Squaring one batch mean would also penalise the spread of the generated cells (its
    variance), pushing the generator towards one mean cell; multiplying the errors of
    two independent halves keeps the gradient of the squared bias only.
    """
    scale = target + _RELATIVE_FLOOR
    ea, eb = (a - target) / scale, (b - target) / scale
    cross = 0.5 * (ea.detach() * eb + eb.detach() * ea)
    weight = weight.expand_as(cross)
    return (weight * cross).sum(-1) / weight.sum(-1).clamp_min(1e-8)


def moment_loss(
    level: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, stats: LabelStats, genes: torch.Tensor
) -> torch.Tensor:
    """``rec_loss='moments'``: match each label's detection rates, observed mean levels and second moments.

    For every label with at least two generated cells in the batch, the cells are split
    into two halves (alternately, in batch order); the detection term compares the mean
    detection probability with
    the label's detection rate on gene pixels, the level term compares the
    detection-weighted mean level with the label's mean over observed pixels, weighted
    by the detection rate (genes never observed in the label do not count), and the
    second-moment term compares the mean squared sampled value (zeros included) with the
    label's, so that a gene's spread across the generated cells is held to the real
    cells' by this term too, not by the adversarial term alone. Every error is relative
    to its target (see :func:`_cross_term`). Labels are averaged weighted by their number of cells.

    All labels are computed at once: the sums over each half of each label are one
    matrix product of a ``(2 x labels, cells)`` membership matrix with the maps.
    """
    n_labels = stats.detection.shape[0]
    onehot = F.one_hot(labels, n_labels).to(level.dtype)
    rank = (onehot.cumsum(0) * onehot).sum(1) - 1  # order of each cell among its label's cells in the batch
    half = (rank % 2).long()
    member = F.one_hot(2 * labels + half, 2 * n_labels).to(level.dtype).T  # (2L, B): row 2l + h = half h of label l
    counts = member.sum(1).view(n_labels, 2)
    used = torch.nonzero(counts.sum(1) >= 2).flatten()
    if len(used) == 0:
        return level.new_zeros(())
    prob = torch.sigmoid(logits).flatten(1)
    flat = level.flatten(1)
    sums = member @ torch.cat([prob, flat * prob, flat**2 * prob], dim=1)  # (2L, 3P)
    sums = sums.view(n_labels, 2, 3, -1)[used]  # (U, 2, 3, P)
    n = counts[used][:, :, None]
    p, weighted, squares = sums.unbind(2)
    lev = weighted / p.clamp_min(1e-6)
    p, squares = p / n, squares / n
    g = genes.flatten()[None]
    det_rate = stats.detection.flatten(1)[used]
    det = _cross_term(p[:, 0], p[:, 1], det_rate, g)
    lvl = _cross_term(lev[:, 0], lev[:, 1], stats.level.flatten(1)[used], det_rate * g)
    spread = _cross_term(squares[:, 0], squares[:, 1], stats.second.flatten(1)[used], g)
    size = counts[used].sum(1)
    return (size * (det + lvl + spread)).sum() / size.sum()


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
