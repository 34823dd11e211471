"""The generator's depth covariate: each cell's sequencing depth, as a log library size.

A label's cells differ most of all by how many molecules were captured from them. A
generator that is not told a cell's depth has to learn it in its latent code, where it
moves every gene together; its expected values then vary with the depth of the cell they
were drawn for (measured in ``docs/method.md``: on null data the first principal component of
the expected values, 57 % of their variance, followed the sampled cells' detected
fraction), and denoise carries that shared variation into the cells as gene-gene
correlation. Given the depth as an input (as scVI is given the library size), the latent
code is left with the biological variation, candidates are drawn at the depths of real
cells of their label (:meth:`LabelDepths.draw`), and expected values are taken at one
depth per label (:meth:`LabelDepths.reference`).

The covariate is ``log(library size)``, standardised with the training cells' mean and SD
(:func:`standardise`). Log-normalised input has no library sizes (all 1): the covariate
is then 0 for every cell and the generator is as if unconditioned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def log_depth(library_size: np.ndarray) -> np.ndarray:
    """``log(max(library size, 1))`` as float32 (an empty cell counts as depth 1)."""
    return np.log(np.maximum(np.asarray(library_size, dtype=np.float64), 1.0)).astype(np.float32)


def moments(values: np.ndarray) -> tuple[float, float]:
    """``(mean, sd)`` of the training cells' log depths; sd 1 when they all agree (no covariate)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return 0.0, 1.0
    sd = float(values.std())
    return float(values.mean()), sd if sd > 1e-6 else 1.0


def standardise(values: torch.Tensor, centre_sd: torch.Tensor) -> torch.Tensor:
    """``(values - mean) / sd`` as a ``(B, 1)`` column (``centre_sd``: the buffer ``(mean, sd)``)."""
    return ((values.float() - centre_sd[0]) / centre_sd[1])[:, None]


@dataclass
class LabelDepths:
    """The log depths of a sample's real cells, by label: where candidates take their depth from.

    Attributes
    ----------
    labels
        ``(n,)`` label index of each real cell.
    values
        ``(n,)`` its log depth (:func:`log_depth`).
    """

    labels: np.ndarray
    values: np.ndarray

    def draw(self, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """For every entry of ``labels``, the log depth of a random real cell of that label (seeded by ``gen``).

        A label without cells (GENERATE never asks for one; validation may, when its reference
        subset missed a rare label) takes the sample's median.
        """
        rows = random_members(self.labels, labels, gen)
        out = torch.full((len(labels),), self.median())
        known = rows >= 0
        out[known] = torch.from_numpy(np.asarray(self.values, dtype=np.float32))[rows[known]]
        return out

    def reference(self, labels: torch.Tensor) -> torch.Tensor:
        """For every entry of ``labels``, the median log depth of that label's cells: the one depth
        at which its candidates' expected values are taken."""
        medians = {label: self.median(label) for label in torch.unique(labels).tolist()}
        return torch.tensor([medians[label] for label in labels.tolist()], dtype=torch.float32)

    def median(self, label: int | None = None) -> float:
        """Median log depth of ``label``'s cells; of all cells for ``None`` or a label without cells
        (0 when there are no cells at all)."""
        own = self.values if label is None else self.values[self.labels == label]
        values = own if len(own) else self.values
        return float(np.median(values)) if len(values) else 0.0


def random_members(member_labels: np.ndarray, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """For every entry of ``labels``, the index of a random member with that label (seeded by ``gen``).

    Parameters
    ----------
    member_labels
        ``(n,)`` label of each member (real cell).
    labels
        ``(m,)`` labels to draw a member for.
    gen
        The random generator; labels are served in sorted order, one draw of all their entries each.

    Returns
    -------
    ``(m,)`` long member indices, ``-1`` for an entry whose label has no member.
    """
    rows = torch.full((len(labels),), -1, dtype=torch.long)
    member_labels = np.asarray(member_labels)
    for label in torch.unique(labels).tolist():
        where = torch.nonzero(labels == label).flatten()
        members = torch.from_numpy(np.flatnonzero(member_labels == label))
        if len(members):
            rows[where] = members[torch.randint(len(members), (len(where),), generator=gen)]
    return rows
