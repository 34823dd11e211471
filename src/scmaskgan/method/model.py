"""The scMASKGAN networks: a label-conditioned generator and a masked patch discriminator.

Pure torch modules (no data handling, no IO). Images are ``(B, N, N)`` for any side N;
internally the networks work on a side ``S = 4 * ceil(N / 4)`` and crop or pad at
their boundaries, so N need not be a multiple of 4. Their convolutions run at most at
half that side: the generator's last convolution gives four sub-pixels per position
(``pixel_shuffle``) and the discriminator's first one sees 4 x 4 pixels per position
(``pixel_unshuffle``), so it computes at a quarter of the side. Convolutions with a few
channels over many pixels had been most of a training step on CPU, and the pixels are
unrelated genes, so no spatial detail is lost.

The generator describes a cell by two maps: the *level* (sigmoid, the encoded value a
gene has when it is detected) and the *detection* logit (the probability that the gene
is observed), plus a per-label, per-gene *level noise* ``sigma``. A sampled cell
is ``sigmoid(logit(level) + sigma * eps) * Bernoulli(sigmoid(detection))`` with ``eps``
standard normal and independent for every entry: the detected values of a real cell
scatter around their expectation by noise that no other gene shares (counting, bursts),
and without a noise term of its own the generator can only imitate that scatter through
its latent code, which moves many genes together (measured in ``docs/method.md``: on
independent genes it invented gene-gene correlations). ``sigma`` is fixed at the spread
of each label's observed values (:meth:`Generator.init_label_bias`), not learned: the
adversarial term, free to choose, lowered it and moved the scatter back into the code. The discriminator sees a sampled
cell together with its detection mask, exactly as it sees a real cell with its observed mask.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from scmaskgan.errors import InputError
from scmaskgan.method.depth import standardise

#: Values of :attr:`ModelConfig.learned_latent`.
LEARNED_LATENT = ("none", "free", "all")


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters that fix the networks' shapes.

    Attributes
    ----------
    side
        Image side N (genes are laid out row-wise on N x N pixels).
    n_labels
        Number of cell-type labels (the one-hot width).
    latent_dim
        Noise dimension (the paper uses N).
    base_channels
        Channels of the generator's first convolution block (paper: 32); its second
        block and the discriminator use ``base_channels // 2``, the discriminator's
        last blocks ``// 4``.
    label_channels
        Channels of the spatial label map (paper: 8).
    attn_side
        Self-attention runs on the feature map average-pooled to at most this side,
        so its matrix has at most ``attn_side**4`` entries per cell.
    global_hidden
        Width of the fully connected paths that see the whole cell: the generator's
        latent MLP and the discriminator's projection of the whole gene vector.
    global_rank
        Rank of the generator's whole-cell output layer (its gene loadings), as in a
        factor model of expression.
    inpaint
        The generator is also conditioned on a masked real cell (``rec_loss='inpaint'``).
    depth_input
        Both networks are given each cell's log depth (:mod:`scmaskgan.method.depth`); TRAIN
        turns it on for count input.
    factor_rank
        Width of the generator's per-label factor loadings, driven by the first ``factor_rank``
        latent coordinates (:mod:`scmaskgan.method.factors`; at most ``latent_dim``; 0: none).
    score_bank
        Training cells per label whose factor scores the generator keeps and draws its first
        ``factor_rank`` latent coordinates from (:meth:`Generator.latent`; 0: they are drawn
        from a standard normal).
    learned_latent
        Latent coordinates the learned (convolutional and whole-cell) paths see when there are
        factor loadings: ``'none'`` (the label and depth only; the factor coordinates drive the
        loadings, the other coordinates nothing), ``'free'`` (those beyond the first
        ``factor_rank``) or ``'all'``. Without factor loadings the learned paths see every
        coordinate. The paths' input layers are built for the coordinates they see
        (:attr:`seen_latent`), so hidden ones cost no weights.
    """

    side: int
    n_labels: int
    latent_dim: int
    base_channels: int = 32
    label_channels: int = 8
    attn_side: int = 8
    global_hidden: int = 256
    global_rank: int = 64
    inpaint: bool = False
    depth_input: bool = False
    factor_rank: int = 0
    score_bank: int = 0
    learned_latent: str = "none"

    def __post_init__(self) -> None:
        if self.side < 1 or self.n_labels < 1 or self.latent_dim < 1:
            raise InputError(
                f"model needs side, n_labels and latent_dim >= 1 (got {self.side}, {self.n_labels}, {self.latent_dim})"
            )
        if not 0 <= self.factor_rank <= self.latent_dim:
            raise InputError(f"factor_rank={self.factor_rank} must be between 0 and latent_dim={self.latent_dim}")
        if self.base_channels < 4:
            raise InputError(f"base_channels={self.base_channels} must be at least 4")
        if self.learned_latent not in LEARNED_LATENT:
            raise InputError(f"learned_latent={self.learned_latent!r} is not one of {', '.join(LEARNED_LATENT)}")

    @property
    def base_side(self) -> int:
        """Side of the generator's first feature map, ``ceil(N / 4)``."""
        return math.ceil(self.side / 4)

    @property
    def work_side(self) -> int:
        """Side S the networks compute on (``4 * base_side >= N``)."""
        return 4 * self.base_side

    @property
    def seen_latent(self) -> int:
        """How many latent coordinates, the last ones, the learned paths see (``learned_latent``)."""
        if not self.factor_rank or self.learned_latent == "all":
            return self.latent_dim
        return self.latent_dim - self.factor_rank if self.learned_latent == "free" else 0

    @property
    def code_dim(self) -> int:
        """Size of the masked-cell code in inpainting mode (0 otherwise)."""
        return max(self.latent_dim // 2, 1) if self.inpaint else 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-types dict (stored in the model file)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys are an :class:`InputError`."""
        names = {f.name for f in fields(cls)}
        unknown, missing = sorted(set(values) - names), sorted(names - set(values))
        if unknown or missing:
            problems = ([f"has unknown key(s) {', '.join(unknown)}"] if unknown else []) + (
                [f"lacks {', '.join(missing)}"] if missing else [])
            raise InputError(f"model config {' and '.join(problems)} (a model file of another version?)")
        return cls(**values)


#: Image side up to which batch and epoch sizes are used as given (see :func:`pixel_scaled`).
REFERENCE_SIDE = 64


def pixel_scaled(cells: int, side: int, floor: int = 8) -> int:
    """A number of cells per batch (or epoch) for images of ``side``: as given up to
    :data:`REFERENCE_SIDE`, above it shrunk by ``(REFERENCE_SIDE / side)**2`` so that it
    holds as many pixels as at the reference side (never below ``floor`` nor above ``cells``).

    Compute and activation memory of a batch grow with its pixels: at N = 184 (33,514
    genes) a batch of 64 cells needed 3.2 GB and an epoch of 900 cells 30 s on 2 cores.
    """
    if side <= REFERENCE_SIDE:
        return cells
    return min(cells, max(floor, round(cells * (REFERENCE_SIDE / side) ** 2)))


def gene_mask(side: int, n_genes: int, device: torch.device | None = None) -> torch.Tensor:
    """``(N, N)`` float mask: 1 on the ``n_genes`` gene pixels, 0 on the padding."""
    flat = torch.zeros(side * side, device=device)
    flat[:n_genes] = 1.0
    return flat.view(side, side)


_SN_EPS = 1e-12  # torch's spectral_norm eps


def _full_precision(weight: torch.Tensor) -> contextlib.AbstractContextManager[Any]:
    """A context computing in the weight's own precision even inside CUDA's ``torch.autocast``
    (the only place training uses mixed precision; torch < 2.5 has no autocast for MPS at all)."""
    return torch.autocast(device_type="cuda", enabled=False) if weight.is_cuda else contextlib.nullcontext()


def _pad_to(x: torch.Tensor, side: int) -> torch.Tensor:
    extra = side - x.shape[-1]
    return F.pad(x, (0, extra, 0, extra)) if extra else x


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class SelfAttention(nn.Module):
    """SAGAN self-attention with a learnable residual weight ``gamma`` (starts at 0).

    The attention is computed on the feature map average-pooled to at most
    ``max_side x max_side`` positions and its output is upsampled back, so the cost
    is bounded whatever the image size (never N^2 x N^2).
    """

    def __init__(self, channels: int, max_side: int) -> None:
        super().__init__()
        inner = max(channels // 2, 4)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.max_side = max_side
        self.scale = inner**-0.5

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, c, height, width = h.shape
        small = h
        if max(height, width) > self.max_side:
            small = F.adaptive_avg_pool2d(h, (min(height, self.max_side), min(width, self.max_side)))
        q = self.query(small).flatten(2)  # (b, inner, n)
        k = self.key(small).flatten(2)
        v = self.value(small).flatten(2)  # (b, c, n)
        attn = torch.softmax(q.transpose(1, 2) @ k * self.scale, dim=-1)  # (b, n, n)
        out = (v @ attn.transpose(1, 2)).view(b, c, small.shape[2], small.shape[3])
        if small is not h:
            out = F.interpolate(out, size=(height, width), mode="nearest")
        return h + self.gamma * out


class LabelMap(nn.Module):
    """One-hot label -> ``channels`` spatial maps: a learned coarse map, upsampled, then a 3x3 conv."""

    def __init__(self, n_labels: int, channels: int, coarse_side: int, out_side: int) -> None:
        super().__init__()
        self.embed = nn.Linear(n_labels, channels * coarse_side * coarse_side)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.shape = (channels, coarse_side, coarse_side)
        self.out_side = out_side

    def forward(self, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Label maps of one-hot labels ``(B, n_labels)`` and the one-hot rows that pick each cell's map.

        With more cells than labels, the map of every label is computed once
        (``(n_labels, channels, out_side, out_side)``, each cell's is ``onehot @ maps``, exact
        for one-hot rows) so that the convolutions run on ``n_labels`` maps instead of ``B``;
        otherwise the maps are the cells' own ``(B, ...)`` and the selector is None.
        """
        n_labels = onehot.shape[1]
        if onehot.shape[0] <= n_labels:
            return self._maps(onehot), None
        return self._maps(torch.eye(n_labels, dtype=onehot.dtype, device=onehot.device)), onehot

    def _maps(self, onehot: torch.Tensor) -> torch.Tensor:
        coarse = self.embed(onehot).view(-1, *self.shape)
        return F.relu(self.conv(F.interpolate(coarse, size=self.out_side, mode="nearest")))


def conv_with_labels(
    conv: nn.Conv2d, h: torch.Tensor, label_maps: tuple[torch.Tensor, torch.Tensor | None]
) -> torch.Tensor:
    """``conv(cat([h, each cell's label map]))`` with the label channels convolved once per label.

    A convolution is linear in its input channels, so it is the convolution of ``h`` by the
    first input channels' filters plus that of the label maps by the others; the latter is
    the same for all cells of a label and is computed on the :class:`LabelMap` maps as given.
    """
    maps, select = label_maps
    weight, c = conv.weight, h.shape[1]
    own = F.conv2d(h, weight[:, :c], conv.bias, padding=conv.padding)
    labels = F.conv2d(maps, weight[:, c:], padding=conv.padding)
    if select is not None:
        labels = (select @ labels.flatten(1)).view(-1, *labels.shape[1:])
    return own + labels


class UpBlock(nn.Module):
    """x2 upsampling by sub-pixel convolution (Conv 3x3 + PixelShuffle) + BatchNorm + ReLU.

    Each of the four sub-pixels gets its own filters, which suits images whose pixels
    are unrelated genes better than nearest-neighbour upsampling.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, 4 * c_out, 3, padding=1)
        self.norm = nn.BatchNorm2d(c_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(F.pixel_shuffle(self.conv(h), 2)))


class CellEncoder(nn.Module):
    """Masked real cell ``(value * mask, mask)`` -> a code of ``cfg.code_dim`` (inpainting mode)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c = max(cfg.base_channels // 4, 4)
        self.convs = nn.Sequential(
            nn.Conv2d(2, c, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, c, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        )
        self.linear = nn.Linear(c * cfg.base_side**2, cfg.code_dim)
        self.side = cfg.work_side

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = _pad_to(torch.stack([values * mask, mask], dim=1), self.side)
        return self.linear(self.convs(x).flatten(1))


class Generator(nn.Module):
    """Noise + one-hot label (+ a masked real cell) -> level and detection maps.

    Two paths, summed in logit space with a learned per-label, per-gene bias:

    * the paper's convolutional path: Linear + BatchNorm + ReLU -> reshape
      ``(cn1, N/4, N/4)`` -> Conv block -> a x2 upsampling block -> self-attention ->
      concatenation with the spatial label map -> two 3x3 convolutions, the last giving the
      four sub-pixels of each output position (the paper's second x2 upsampling, as a
      sub-pixel convolution without a block at full resolution after it);
    * a whole-cell path: an MLP of the same input to ``global_rank`` factors, then one
      linear layer to every gene's (level, detection) logit. Genes on the N x N grid have
      no spatial neighbours, so co-expression programmes that span the whole cell are
      much easier to express as gene loadings than through 3x3 convolutions.

    A third, linear path adds per-label *factor loadings* times the first ``factor_rank``
    latent coordinates to both logits (:mod:`scmaskgan.method.factors`); those coordinates
    reach no other path, and by default neither do the others (``learned_latent``): the
    learned paths then see the label and depth only, so that a candidate's shared variation is
    what the factors measured and training cannot add directions no real cell varies along.

    :meth:`init_label_bias` starts the bias at the training cells' label statistics,
    :meth:`init_factors` sets the loadings at what the label's cells share (kept fixed in
    training, like the level noise), and the other paths start near zero, so the network
    learns the variation around them. The per-entry level
    noise of a sampled cell is :meth:`level_spread`; :func:`observe` draws it.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c1 = cfg.base_channels
        c2 = max(c1 // 2, 4)
        s0, s = cfg.base_side, cfg.work_side
        n_in = cfg.seen_latent + cfg.n_labels + cfg.code_dim + int(cfg.depth_input)
        self.project = nn.Sequential(
            nn.Linear(n_in, c1 * s0 * s0),
            nn.BatchNorm1d(c1 * s0 * s0),
            nn.ReLU(),
        )
        self.conv0 = nn.Sequential(nn.Conv2d(c1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU())
        self.up = UpBlock(c1, c2)
        self.attention = SelfAttention(c2, cfg.attn_side)
        self.label_map = LabelMap(cfg.n_labels, cfg.label_channels, s0, s // 2)
        self.head = nn.Sequential(
            nn.Conv2d(c2 + cfg.label_channels, c2, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c2, 2 * 4, 3, padding=1),  # (level, detection) x the 4 sub-pixels
        )
        nn.init.normal_(self.head[-1].weight, std=1e-3)  # type: ignore[arg-type]  # start close to the label bias
        self.whole = nn.Sequential(
            nn.Linear(n_in, cfg.global_hidden), nn.LeakyReLU(0.2),
            nn.Linear(cfg.global_hidden, cfg.global_rank), nn.LeakyReLU(0.2),
            nn.Linear(cfg.global_rank, 2 * cfg.side * cfg.side),
        )
        loadings = self.whole[-1]
        assert isinstance(loadings, nn.Linear)
        nn.init.normal_(loadings.weight, std=1e-3)
        nn.init.zeros_(loadings.bias)
        self.label_bias = nn.Parameter(torch.zeros(cfg.n_labels, 2, s, s))
        # (level, detection) loadings of each label on the first factor_rank latent coordinates: a buffer,
        # not a parameter: measured from the data (init_factors) and kept, as the level noise is; trained,
        # the adversarial term wore down the hidden structure they carry (docs/method.md)
        self.factors: torch.Tensor | None
        self.register_buffer("factors", torch.zeros(cfg.n_labels, cfg.factor_rank, 2, s, s) if cfg.factor_rank else None)
        # the training cells' scores on those factors, which the first factor_rank latent coordinates are drawn
        # from (latent), and how many rows of each label's bank are filled for each of its factors (0: none)
        self.factor_scores: torch.Tensor | None
        self.factor_cells: torch.Tensor | None
        banked = cfg.factor_rank and cfg.score_bank
        self.register_buffer("factor_scores", torch.zeros(cfg.n_labels, cfg.score_bank, cfg.factor_rank) if banked else None)
        self.register_buffer("factor_cells", torch.zeros(cfg.n_labels, cfg.factor_rank, dtype=torch.long) if banked else None)
        self.log_spread: torch.Tensor
        # a buffer, not a parameter: the level noise is measured from the data (init_label_bias), not learned
        self.register_buffer("log_spread", torch.full((cfg.n_labels, s, s), -30.0))
        self.encoder = CellEncoder(cfg) if cfg.inpaint else None
        self.depth_moments: torch.Tensor
        self.register_buffer("depth_moments", torch.tensor([0.0, 1.0]))  # (mean, sd) of the training log depths

    def forward(
        self,
        z: torch.Tensor,
        onehot: torch.Tensor,
        cond: tuple[torch.Tensor, torch.Tensor] | None = None,
        depth: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate level (in [0, 1]) and detection logits, each ``(B, N, N)``.

        Parameters
        ----------
        z
            Noise ``(B, latent_dim)``.
        onehot
            One-hot labels ``(B, n_labels)``.
        cond
            ``(values, mask)`` of masked real cells ``(B, N, N)``; required exactly
            when the model was built with ``inpaint=True``.
        depth
            ``(B,)`` log depth of each cell to generate (:func:`~scmaskgan.method.depth.log_depth`);
            required exactly when the model was built with ``depth_input=True``.
        """
        # seeing the factor coordinates, training learned to cancel the measured structure the fixed loadings
        # carry; seeing the others, it added variation no real state has (docs/method.md): learned_latent
        parts = [z[:, z.shape[1] - self.cfg.seen_latent:], onehot]
        if self.encoder is not None:
            if cond is None:
                raise ValueError("an inpainting generator needs the masked cells (cond)")
            parts.append(self.encoder(*cond))
        elif cond is not None:
            raise ValueError("this generator is not conditioned on cells (inpaint=False)")
        if self.cfg.depth_input:
            parts.append(_depth_column(depth, self.depth_moments))
        s0, n = self.cfg.base_side, self.cfg.side
        inputs = torch.cat(parts, dim=1)
        h = self.project(inputs).view(z.shape[0], -1, s0, s0)
        h = self.attention(self.up(self.conv0(h)))
        bias = (onehot @ self.label_bias.flatten(1)).view(-1, *self.label_bias.shape[1:])
        first, rest = self.head[0], self.head[1:]
        assert isinstance(first, nn.Conv2d)
        out = (F.pixel_shuffle(rest(conv_with_labels(first, h, self.label_map(onehot))), 2) + bias)[:, :, :n, :n]
        out = out + self.whole(inputs).view(-1, 2, n, n)
        if self.factors is not None:  # z_r (x) onehot picks each cell's label's loadings (exact for one-hot rows)
            r = self.cfg.factor_rank
            coef = (onehot[:, :, None] * z[:, None, :r]).flatten(1)
            out = out + (coef @ self.factors[..., :n, :n].reshape(-1, 2 * n * n)).view(-1, 2, n, n)
        return torch.sigmoid(out[:, 0]), out[:, 1]

    def latent(self, z: torch.Tensor, labels: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """The latent codes to generate from: ``z`` (``(B, latent_dim)``, standard normal) with each
        factor coordinate of a cell's label replaced by that factor's score of one random training
        cell of the label (``uniform``, ``(B,)`` in [0, 1), picks the cell; ``labels`` ``(B,)``).

        The factor loadings were fitted to those scores (:mod:`scmaskgan.method.factors`): drawn
        from them, generated cells vary along the factors as the real cells do, sub-states and
        clusters included, not as a normal distribution of the same variance would. Coordinates
        of labels without factors, and every other coordinate, stay normal.
        """
        if self.factor_scores is None or self.factor_cells is None:
            return z
        r = self.cfg.factor_rank
        cells = self.factor_cells[labels]  # (B, r)
        row = (uniform.to(z.device) * cells.max(1).values).long().clamp(0, self.cfg.score_bank - 1)
        drawn = self.factor_scores[labels, row]
        return torch.cat([torch.where(cells > 0, drawn, z[:, :r]), z[:, r:]], dim=1)

    def level_spread(self, onehot: torch.Tensor) -> torch.Tensor:
        """``(B, N, N)`` SD of the per-entry level noise (logit scale) of each cell's label."""
        n = self.cfg.side
        spread = torch.exp(self.log_spread[:, :n, :n])
        return (onehot @ spread.flatten(1)).view(-1, n, n)

    @torch.no_grad()
    def init_label_bias(self, level: torch.Tensor, detection: torch.Tensor, spread: torch.Tensor | None = None) -> None:
        """Set the per-label bias so that, before training, every label's cells have its mean profile.

        Parameters
        ----------
        level
            ``(L, N, N)`` mean encoded value of each label and gene where observed, in (0, 1).
        detection
            ``(L, N, N)`` detection probability of each label and gene, in (0, 1).
        spread
            ``(L, N, N)`` positive SD of the level noise (logit scale), kept through training
            (``None``: none, about ``exp(-30)``).
        """
        n = self.cfg.side
        self.label_bias.zero_()
        self.label_bias[:, 0, :n, :n] = torch.logit(level)
        self.label_bias[:, 1, :n, :n] = torch.logit(detection)
        if spread is not None:
            self.log_spread[:, :n, :n] = torch.log(spread)

    @torch.no_grad()
    def init_factors(
        self, level: torch.Tensor, detection: torch.Tensor, scores: torch.Tensor | None = None,
        cells: torch.Tensor | None = None,
    ) -> None:
        """Set the factor loadings to ``level`` and ``detection`` (``(L, r, N, N)``, ``r <= factor_rank``;
        :func:`~scmaskgan.method.factors.label_factors`), after :meth:`init_label_bias`; training keeps them.
        ``scores`` ``(L, rows, r)`` and ``cells`` ``(L,)`` (filled rows per label) fill the score bank
        :meth:`latent` draws from (ignored without one).

        The level noise gives up the variance the level loadings explain: its SD becomes
        ``sqrt(spread^2 - sum of squared loadings)``, at least half the spread, so that each
        gene's detected values keep about their measured spread.
        """
        if self.factors is None:
            raise ValueError("this generator has no factor loadings (factor_rank=0)")
        n, r = self.cfg.side, level.shape[1]
        self.factors.zero_()
        self.factors[:, :r, 0, :n, :n] = level[..., :n, :n]
        self.factors[:, :r, 1, :n, :n] = detection[..., :n, :n]
        if self.factor_scores is not None and self.factor_cells is not None and scores is not None and cells is not None:
            rows = min(scores.shape[1], self.cfg.score_bank)
            self.factor_scores.zero_()
            self.factor_scores[:, :rows, :r] = scores[:, :rows, :r]
            used = level.flatten(2).abs().amax(2) + detection.flatten(2).abs().amax(2) > 0  # (L, r)
            self.factor_cells.zero_()
            self.factor_cells[:, :r] = torch.where(used, cells.clamp_max(rows)[:, None], 0)
        spread = torch.exp(self.log_spread[:, :n, :n])
        explained = (level[..., :n, :n] ** 2).sum(1)
        self.log_spread[:, :n, :n] = 0.5 * torch.log((spread**2 - explained).clamp_min((0.5 * spread) ** 2))


def _depth_column(depth: torch.Tensor | None, centre_sd: torch.Tensor) -> torch.Tensor:
    if depth is None:
        raise ValueError("this model is conditioned on the cells' depth (depth_input=True): pass depth")
    return standardise(depth.to(centre_sd.device), centre_sd)


def observe(level: torch.Tensor, spread: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """Detected values of sampled cells: ``sigmoid(logit(level) + spread * normal)`` (all ``(B, N, N)``),
    differentiable in ``level``; ``level`` itself where ``spread`` is 0."""
    return torch.sigmoid(torch.logit(level.clamp(_LEVEL_EPS, 1.0 - _LEVEL_EPS)) + spread * normal)


#: Gauss-Hermite nodes (probabilists') for the expected values of the noisy level.
_HERMITE_NODES = 12
_LEVEL_EPS = 1e-6


def expected_rate(level: torch.Tensor, prob: torch.Tensor, spread: torch.Tensor, scale: float) -> torch.Tensor:
    """A sampled cell's expected normalised expression ``E[detected * expm1(value * scale)]``.

    ``prob * E[expm1(scale * observe(level, spread, eps))]`` over the level noise, by
    Gauss-Hermite quadrature (all ``(B, N, N)``; ``scale`` is the encoding's). This is the
    expected count per ``target_sum`` molecules, the quantity the denoise prior averages;
    ``expm1(scale * level * prob)``, its old stand-in, lies below it by an amount that varies
    with the detection probability, which moves with each cell's depth.
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(_HERMITE_NODES)
    logit = torch.logit(level.clamp(_LEVEL_EPS, 1.0 - _LEVEL_EPS))
    total = torch.zeros_like(level)
    for node, weight in zip(nodes.tolist(), (weights / weights.sum()).tolist(), strict=True):
        total += weight * torch.expm1(scale * torch.sigmoid(logit + spread * node))
    return prob * total


class SpectralLinear(nn.Linear):
    """A spectrally normalised linear layer: ``x W^T / sigma(W) + b``.

    The same layer as ``spectral_norm(nn.Linear(...))`` (Miyato et al. 2018; one power
    iteration per forward pass in training mode, the estimate of the largest singular value
    ``sigma`` kept in the buffers ``u`` and ``v``), but the division by ``sigma`` is applied
    to the ``(B, out)`` output instead of the ``(out, in)`` weight. The result and its
    gradients are the same, without the passes over the weight that the normalised weight
    costs on every call and in backward: for the discriminator's projection of all genes
    (``N^2 x 256`` weights, 8.7 million at 33,514 genes) this was a third of a training step.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.u: torch.Tensor
        self.v: torch.Tensor
        self.register_buffer("u", F.normalize(torch.randn(out_features), dim=0, eps=_SN_EPS))
        self.register_buffer("v", F.normalize(torch.randn(in_features), dim=0, eps=_SN_EPS))
        for _ in range(15):  # as torch's spectral_norm: start from a converged estimate
            self._power_iteration()

    @torch.no_grad()
    def _power_iteration(self) -> None:
        with _full_precision(self.weight):  # u and v stay float32 under autocast
            self.u = F.normalize(torch.mv(self.weight, self.v), dim=0, eps=_SN_EPS)
            self.v = F.normalize(torch.mv(self.weight.t(), self.u), dim=0, eps=_SN_EPS)

    def sigma(self) -> torch.Tensor:
        """The current estimate of the weight's largest singular value (differentiable in the weight)."""
        with _full_precision(self.weight):
            return torch.dot(self.u, torch.mv(self.weight, self.v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._power_iteration()
        out = F.linear(x, self.weight) / self.sigma()
        return out if self.bias is None else out + self.bias


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            spectral_norm(nn.Conv2d(channels, channels, 3, padding=1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(channels, channels, 3, padding=1)),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(h + self.body(h), 0.2)


class Discriminator(nn.Module):
    """Image + observed mask + label -> one logit per cell.

    Two paths, as in the paper (a linear pre-layer and a fully connected head beside the
    convolutions):

    * convolutional: space-to-depth (each 4 x 4 pixels as 32 channels: values and mask) +
      Conv 3x3 (the paper's Conv + max-pool, one position per 4 x 4 pixels, without a
      convolution at full resolution) + residual block -> Conv 3x3 -> self-attention
      -> concatenation with the spatial label map -> Conv 3x3, averaged over the patches
      that hold genes;
    * whole cell: a linear projection of the whole gene vector and a second fully
      connected layer, which sees every gene at once (co-expression, library depth,
      how many genes are detected);

    then the two feature vectors -> a fully connected logit plus a projection term
    ``<embed(label), features>`` (Miyato & Koyama 2018). Every cell is judged on its own
    (no batch statistics), so a cell gets the same logit in any batch. All weights are
    spectrally normalised; use with ``BCEWithLogits``.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c1, c2 = max(cfg.base_channels // 2, 4), max(cfg.base_channels // 4, 4)
        quarter = cfg.base_side  # work_side // 4
        self.stem = nn.Sequential(
            nn.PixelUnshuffle(4), spectral_norm(nn.Conv2d(32, c1, 3, padding=1)), nn.LeakyReLU(0.2), _Residual(c1),
            spectral_norm(nn.Conv2d(c1, c2, 3, padding=1)), nn.LeakyReLU(0.2),
        )
        self.attention = SelfAttention(c2, cfg.attn_side)
        self.label_map = LabelMap(cfg.n_labels, cfg.label_channels, cfg.base_side, quarter)
        self.conv_head = nn.Sequential(
            spectral_norm(nn.Conv2d(c2 + cfg.label_channels, c2, 3, padding=1)), nn.LeakyReLU(0.2),
        )
        hidden = cfg.global_hidden
        self.whole = nn.Sequential(
            SpectralLinear(cfg.side * cfg.side + int(cfg.depth_input), hidden), nn.LeakyReLU(0.2),
            SpectralLinear(hidden, hidden), nn.LeakyReLU(0.2),
        )
        n_features = hidden + c2
        self.out = SpectralLinear(n_features, 1)
        self.embed = SpectralLinear(cfg.n_labels, n_features, bias=False)
        self.patches: torch.Tensor
        self.centre: torch.Tensor
        self.spread: torch.Tensor
        self.register_buffer("patches", torch.ones(quarter, quarter), persistent=False)
        self.register_buffer("centre", torch.zeros(cfg.side * cfg.side))
        self.register_buffer("spread", torch.ones(cfg.side * cfg.side))
        self.depth_moments: torch.Tensor
        self.register_buffer("depth_moments", torch.tensor([0.0, 1.0]))

    def set_genes(self, n_genes: int, centre: torch.Tensor | None = None, spread: torch.Tensor | None = None) -> None:
        """Which pixels hold genes, and the training cells' per-gene mean and SD.

        The convolutional features are averaged only over patches that hold at least one
        of the ``n_genes`` genes; the whole-cell path sees every gene standardised by the
        training cells' ``centre`` and ``spread`` (``(N, N)`` each), so that lowly and highly
        expressed genes start on an equal footing.
        """
        genes = gene_mask(self.cfg.side, n_genes, self.patches.device)
        self.patches = F.max_pool2d(_pad_to(genes[None, None], self.cfg.work_side), 4)[0, 0]
        if centre is not None and spread is not None:
            flat = genes.flatten()
            self.centre = centre.flatten().to(self.centre) * flat
            self.spread = torch.where(flat > 0, spread.flatten().to(self.spread).clamp_min(1e-3), 1.0)

    def forward(
        self, values: torch.Tensor, mask: torch.Tensor, onehot: torch.Tensor, depth: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``(B,)`` for cells ``values`` with masks ``mask`` (both ``(B, N, N)``) and, for a
        model with ``depth_input``, log depths ``depth`` ``(B,)``.

        Callers zero the padding pixels of both inputs (see :func:`gene_mask`).
        """
        x = _pad_to(torch.stack([values, mask], dim=1), self.cfg.work_side)
        h = self.attention(self.stem(x))
        conv, act = self.conv_head
        assert isinstance(conv, nn.Conv2d)
        h = act(conv_with_labels(conv, h, self.label_map(onehot)))
        pooled = (h * self.patches).sum((2, 3)) / self.patches.sum()
        genes = (values.flatten(1) - self.centre) / self.spread
        if self.cfg.depth_input:
            genes = torch.cat([genes, _depth_column(depth, self.depth_moments).to(genes.dtype)], dim=1)
        whole = self.whole(genes)
        features = torch.cat([pooled, whole], dim=1)
        return self.out(features)[:, 0] + (self.embed(onehot) * features).sum(1)
