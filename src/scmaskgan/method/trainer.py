"""One adversarial step of TRAIN: generator, discriminator, optimisers and the masked losses
(:class:`GanTrainer`).

Losses never see padding pixels: real cells are multiplied by their observed mask and
the gene mask, generated cells by the gene mask, and the discriminator's patch logits
are averaged only over patches that contain genes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scmaskgan.core.config import TrainParams
from scmaskgan.errors import StepError
from scmaskgan.method.device import adam, amp_enabled, autocast, grad_scaler
from scmaskgan.method.encode import Encoding
from scmaskgan.method.factors import FACTOR_CELLS, LabelFactors
from scmaskgan.method.losses import (
    bce,
    inpaint_loss,
    inpaint_split,
    moment_loss,
    r1_penalty,
    sample_cells,
    thin,
)
from scmaskgan.method.model import Discriminator, Generator, ModelConfig, gene_mask, observe
from scmaskgan.method.train_data import CellTensors, LabelStats
from scmaskgan.method.weight_average import WeightAverage

#: Discriminator steps between two updates of the augmentation strength (ADA's interval).
AUGMENT_INTERVAL = 4
#: Highest augmentation strength: at least this share of a cell's observed genes stays visible.
MAX_AUGMENT = 0.8


def model_config(params: TrainParams, encoding: Encoding, n_labels: int) -> ModelConfig:
    """The network shapes for a sample and the training parameters."""
    latent = params.latent_dim or encoding.side
    return ModelConfig(
        side=encoding.side,
        n_labels=n_labels,
        latent_dim=latent,
        base_channels=params.base_channels,
        inpaint=params.rec_loss == "inpaint",
        depth_input=encoding.input_scale == "counts",  # log-normalised input has no library sizes
        factor_rank=min(params.factor_rank, latent),
        score_bank=FACTOR_CELLS if params.factor_rank else 0,
        learned_latent=params.learned_latent,
    )


@dataclass
class BatchLosses:
    """One batch's discriminator and reconstruction losses, and the generated cells for the adversarial term."""

    loss_d: torch.Tensor
    rec: torch.Tensor
    fake: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class GanTrainer:
    """Generator, discriminator, optimisers and the masked losses of one training step.

    Parameters
    ----------
    cfg
        Network shapes.
    params
        Training parameters (learning rates, betas, lambda, reconstruction choice, clipping).
    n_genes
        Genes of the sample (pixels beyond are padding).
    stats
        Per-label statistics of the training cells: the generator's initial per-label
        bias and the targets of ``rec_loss='moments'``.
    device
        Where to compute.
    factors
        The labels' factor loadings (:func:`~scmaskgan.method.factors.label_factors`), for a
        generator with ``factor_rank`` > 0.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        params: TrainParams,
        n_genes: int,
        stats: LabelStats,
        device: torch.device,
        factors: LabelFactors | None = None,
    ) -> None:
        self.cfg, self.params, self.device = cfg, params, device
        self.generator = Generator(cfg)
        self.generator.init_label_bias(*stats.initial_profiles())
        if factors is not None:
            self.generator.init_factors(factors.level, factors.detection, factors.scores, factors.counts)
        self.discriminator = Discriminator(cfg)
        self.discriminator.set_genes(n_genes, *stats.gene_moments())
        for net in (self.generator, self.discriminator):
            net.depth_moments.copy_(stats.depth_moments)
            net.to(device)
        betas = (params.beta1, params.beta2)
        self.opt_g = adam(self.generator.parameters(), params.lr_g, betas, device)
        self.opt_d = adam(self.discriminator.parameters(), params.lr_d, betas, device)
        # made after .to(device): it holds the generator's tensors themselves
        self.average = WeightAverage(self.generator, params.ema_decay) if params.ema_decay > 0 else None
        self.amp = amp_enabled(device, params.amp)
        self.scaler_g, self.scaler_d = grad_scaler(device, self.amp), grad_scaler(device, self.amp)
        self.genes = gene_mask(cfg.side, n_genes, device)
        self.stats = stats.to(device)
        self.d_steps = 0
        self.augment_p = 0.0
        self._signs = [0.0, 0]  # sum of sign(D(real training cell)) and cells since the last update of p

    @property
    def candidate_generator(self) -> Generator:
        """The generator whose candidates are validated and saved: the average of the trained one's
        weights (``ema_decay`` > 0), or the trained one itself."""
        return self.generator if self.average is None else self.average.module

    def state_dict(self) -> dict[str, Any]:
        """Networks, their weight average, optimisers and loss scalers (plain types and tensors)."""
        return {
            "generator": self.generator.state_dict(),
            "generator_average": None if self.average is None else self.average.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "d_steps": self.d_steps,
            "augment_p": self.augment_p,
            "signs": list(self._signs),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.generator.load_state_dict(state["generator"])
        if self.average is not None:  # a checkpoint of a version without the average starts it at its generator
            average = state.get("generator_average")
            self.average.load_state_dict(state["generator"] if average is None else average)
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if state["scaler_g"]:
            self.scaler_g.load_state_dict(state["scaler_g"])
            self.scaler_d.load_state_dict(state["scaler_d"])
        self.d_steps = int(state.get("d_steps", 0))
        self.augment_p = float(state.get("augment_p", 0.0))
        self._signs = list(state.get("signs", [0.0, 0]))

    def _noise(self, cells: CellTensors, gen: torch.Generator) -> dict[str, torch.Tensor]:
        b, side = len(cells), self.cfg.side
        draws = {
            "z": torch.randn(b, self.cfg.latent_dim, generator=gen),
            "detect": torch.rand(b, side, side, generator=gen),
            "level": torch.randn(b, side, side, generator=gen),
        }
        if self.generator.factor_scores is not None:
            draws["pick"] = torch.rand(b, generator=gen)
        if self.cfg.inpaint:
            draws["hide"] = torch.rand(b, side, side, generator=gen)
        if self.params.augment_target > 0:
            draws["thin_real"] = torch.rand(b, side, side, generator=gen)
            draws["thin_fake"] = torch.rand(b, side, side, generator=gen)
        return {k: v.to(self.device) for k, v in draws.items()}

    def losses(self, cells: CellTensors, gen: torch.Generator, r1: bool = True) -> BatchLosses:
        """Discriminator loss and the generator's adversarial and reconstruction losses of one batch.

        ``cells`` is on the training device; padding and dropout pixels of its values
        are ignored. Random draws come from ``gen`` (CPU), so a seed fixes the result.
        With ``r1`` (and ``r1_gamma > 0``) the discriminator loss includes the R1 penalty,
        weighted by ``r1_gamma`` x ``r1_interval`` (the lazy penalty of :meth:`step`);
        without it, real and generated cells go through the discriminator in one batch
        (it judges every cell on its own, so the logits are the same).
        """
        real = CellTensors(cells.values * cells.masks * self.genes, cells.masks * self.genes, cells.labels, cells.depth)
        onehot = F.one_hot(real.labels, self.cfg.n_labels).float()
        noise = self._noise(real, gen)
        cond, kept, held = None, None, None
        if self.cfg.inpaint:
            kept, held = inpaint_split(real.masks, self.params.inpaint_fraction, noise["hide"])
            cond = (real.values * kept, kept)
        r1 = r1 and self.params.r1_gamma > 0
        with autocast(self.device, self.amp):
            z = self.generator.latent(noise["z"], real.labels, noise["pick"]) if "pick" in noise else noise["z"]
            level, logits = self.generator(z, onehot, cond, real.depth)
            level, logits = level.float(), logits.float()
            noisy = observe(level, self.generator.level_spread(onehot).float(), noise["level"])
            fake_values, fake_mask = sample_cells(noisy, logits, noise["detect"])
            fake_values, fake_mask = fake_values * self.genes, fake_mask * self.genes
            real_values = real.values.detach().requires_grad_(r1)
            seen_values, seen_masks = real_values, real.masks
            if self.augment_p > 0:
                seen_values, seen_masks = thin(real_values, real.masks, self.augment_p, noise["thin_real"])
                fake_values, fake_mask = thin(fake_values, fake_mask, self.augment_p, noise["thin_fake"])
            if r1:
                d_real = self.discriminator(seen_values, seen_masks, onehot, real.depth).float()
                d_fake = self.discriminator(fake_values.detach(), fake_mask.detach(), onehot, real.depth).float()
            else:
                both = self.discriminator(
                    torch.cat([seen_values, fake_values.detach()]), torch.cat([seen_masks, fake_mask.detach()]),
                    torch.cat([onehot, onehot]), torch.cat([real.depth, real.depth]),
                ).float()
                d_real, d_fake = both.split(len(real))
            loss_d = bce(d_real, 1.0) + bce(d_fake, 0.0)
        self._signs[0] += float(torch.sign(d_real.detach()).sum())
        self._signs[1] += len(d_real)
        if r1:
            gamma = self.params.r1_gamma * self.params.r1_interval
            loss_d = loss_d + gamma * r1_penalty(d_real, real_values, real.masks)
        fake = (fake_values, fake_mask, onehot, real.depth)
        return BatchLosses(loss_d, self._rec(level, noisy, logits, real, kept, held), fake)

    def _rec(
        self,
        level: torch.Tensor,
        noisy: torch.Tensor,
        logits: torch.Tensor,
        real: CellTensors,
        kept: torch.Tensor | None,
        held: torch.Tensor | None,
    ) -> torch.Tensor:
        """Reconstruction loss: the moments of the sampled cells' detected values (``noisy``: with
        the level noise drawn), or the in-painting error of the expected level."""
        if self.params.rec_loss == "moments":
            return moment_loss(noisy, logits, real.labels, self.stats, self.genes)
        if self.params.rec_loss == "inpaint":
            assert kept is not None and held is not None
            return inpaint_loss(level, logits, real, kept, held, self.genes)
        return level.new_zeros(())

    def generator_adversarial(self, fake: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Non-saturating generator loss: generated cells should be judged real."""
        with autocast(self.device, self.amp):
            return bce(self.discriminator(*fake).float(), 1.0)

    def step(self, cells: CellTensors, gen: torch.Generator) -> dict[str, float]:
        """One discriminator update then one generator update; returns the losses.

        The R1 penalty comes on every ``r1_interval``-th discriminator step (lazy
        regularisation, Karras et al. 2020: the same penalty on average, its double backward
        pass on a fraction of the steps). The
        discriminator's weights are frozen during the generator's update: their gradients
        would be thrown away (the next discriminator update starts from zero gradients).
        Both updates see real and generated cells thinned at the augmentation strength
        ``augment_p`` (:func:`~scmaskgan.method.losses.thin`), which every
        :data:`AUGMENT_INTERVAL` steps moves toward the level where the discriminator's mean
        sign on real training cells is ``augment_target`` (returned as ``d_sign_real``).
        """
        self.generator.train()
        self.discriminator.train()
        out = self.losses(cells, gen, r1=self.d_steps % self.params.r1_interval == 0)
        self.d_steps += 1
        self._update(out.loss_d, self.opt_d, self.scaler_d, self.discriminator)
        self.discriminator.requires_grad_(False)
        try:
            adv = self.generator_adversarial(out.fake)
            loss_g = adv + self.params.lambda_rec * out.rec
            self._update(loss_g, self.opt_g, self.scaler_g, self.generator)
            if self.average is not None:
                self.average.update()
        finally:
            self.discriminator.requires_grad_(True)
        losses = {"loss_d": float(out.loss_d.detach()), "loss_g_adv": float(adv.detach()), "loss_rec": float(out.rec.detach())}
        if self.d_steps % AUGMENT_INTERVAL == 0:
            losses["d_sign_real"] = self._adapt_augmentation()
        return losses

    def _adapt_augmentation(self) -> float:
        """Move the augmentation strength ``p`` toward the level where the discriminator's mean sign on
        the real training cells it saw since the last call is ``augment_target`` (ADA's overfitting
        heuristic r_t); returns that mean sign. ``p`` moves by the cells seen / ``augment_cells``."""
        total, n = self._signs
        self._signs = [0.0, 0]
        r_t = total / max(n, 1)
        if self.params.augment_target > 0:
            step = math.copysign(n / self.params.augment_cells, r_t - self.params.augment_target)
            self.augment_p = min(max(self.augment_p + step, 0.0), MAX_AUGMENT)
        return r_t

    def _update(self, loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: Any, net: nn.Module) -> None:
        if not torch.isfinite(loss):
            raise StepError(f"training diverged (loss {float(loss)}); try a smaller --lr-g/--lr-d")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.params.grad_clip > 0:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(net.parameters(), self.params.grad_clip)
        scaler.step(opt)
        scaler.update()
