"""The generator's data-initialised factor loadings: none on independent genes, the hidden sub-states
of a label where there are some, and a generator whose first latent coordinates drive them."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import write_images

from scmaskgan.errors import InputError
from scmaskgan.method.factors import MIN_FACTOR_CELLS, label_factors, significant_scores
from scmaskgan.method.images_h5 import ImageStore
from scmaskgan.method.model import Generator, ModelConfig
from scmaskgan.method.train_data import TrainingCells


def _encoded(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    library = counts.sum(1)
    x = np.log1p(counts / library[:, None] * 1e4)
    return (x / x.max()).astype(np.float32), np.log(library).astype(np.float32)


def _null_counts(seed: int) -> np.ndarray:
    """One cell type, 400 cells x 120 independent NB genes, library sizes varying (as tests/test_false_signal.py)."""
    rng = np.random.default_rng(seed)
    mean = rng.lognormal(0.5, 1.0, size=120) * rng.lognormal(0.0, 0.2, size=(400, 1))
    return rng.negative_binomial(4, 4 / (4 + mean)).astype(np.float64)


def _two_states(seed: int = 0, n: int = 400, genes: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """One label whose cells are in two hidden states: 20 genes 4x higher in the first, 20 others in the
    second (so the states hardly differ in depth, which the factors leave to the depth input)."""
    rng = np.random.default_rng(seed)
    state = rng.integers(0, 2, n)
    mean = np.tile(rng.lognormal(0.5, 1.0, size=genes), (n, 1)) * rng.lognormal(0.0, 0.2, size=(n, 1))
    mean[:, :20] *= np.where(state[:, None] == 1, 4.0, 1.0)
    mean[:, 20:40] *= np.where(state[:, None] == 0, 4.0, 1.0)
    return rng.negative_binomial(4, 4 / (4 + mean)).astype(np.float64), state


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_independent_genes_get_no_factor_once_depth_is_regressed_out(seed):
    x, depth = _encoded(_null_counts(seed))
    assert significant_scores(x, 16, depth).shape[1] == 0


def test_hidden_states_are_the_first_factor():
    counts, state = _two_states()
    x, depth = _encoded(counts)
    scores = significant_scores(x, 16, depth)
    assert 1 <= scores.shape[1] <= 3
    assert abs(np.corrcoef(scores[:, 0], state)[0, 1]) > 0.9
    assert np.allclose(scores.var(0, ddof=1), 1.0, atol=1e-3)


def test_label_factors_load_the_state_genes(tmp_path):
    counts, _ = _two_states()
    null = _null_counts(3)[:, :120]
    adata = ad.AnnData(
        X=sp.csr_matrix(np.vstack([counts, null]).astype(np.float32)),
        obs={"cell_type": ["states"] * len(counts) + ["null"] * len(null)},
    )
    adata.obs_names = [f"c{i}" for i in range(adata.n_obs)]
    adata.var_names = [f"g{j}" for j in range(adata.n_vars)]
    with ImageStore(write_images(tmp_path / "s.images.h5", adata)) as store:
        states = list(store.label_names).index("states")
        factors = label_factors(TrainingCells(store, np.arange(store.n_cells)), 2, 16, seed=0)
        assert factors.ranks[1 - states] == 0 and factors.ranks[states] >= 1
        assert float(factors.level[1 - states].abs().max()) == 0.0
        level = factors.level[states, 0].flatten()[:120].abs()
        detection = factors.detection[states, 0].flatten()[:120].abs()
        assert float(level[:40].mean()) > 3 * float(level[40:].mean())
        assert float(detection[:40].mean()) > 3 * float(detection[40:].mean())
        # the bank keeps every cell's scores: two states, so the first factor's scores are two clumps
        # near +-1, where a normal distribution puts 38 % of its draws within 0.5 of 0
        assert int(factors.counts[states]) == len(counts) and int(factors.counts[1 - states]) == 0
        first = factors.scores[states, :len(counts), 0]
        assert float((first.abs() < 0.5).float().mean()) < 0.2  # 0.125 here


def test_latent_draws_the_factor_coordinates_from_the_training_cells_scores():
    cfg = ModelConfig(side=4, n_labels=2, latent_dim=4, factor_rank=2, score_bank=5)
    generator = Generator(cfg)
    level = torch.zeros(2, 2, 4, 4)
    level[1, 0] = 0.3  # label 1 has one factor, label 0 none
    scores = torch.zeros(2, 5, 2)
    scores[1, :3, 0] = torch.tensor([-1.0, 1.0, 2.0])  # three cells of label 1
    generator.init_factors(level, torch.zeros_like(level), scores, torch.tensor([0, 3]))
    z = torch.randn(300, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1] * 150)
    drawn = generator.latent(z, labels, torch.rand(300, generator=torch.Generator().manual_seed(1)))
    ones = labels == 1
    assert set(drawn[ones, 0].tolist()) == {-1.0, 1.0, 2.0}  # every real cell drawn, no other value
    assert torch.equal(drawn[ones, 1:], z[ones, 1:])  # the label's second factor is empty: normal
    assert torch.equal(drawn[~ones], z[~ones])  # a label without factors keeps the normal code
    plain = Generator(ModelConfig(side=4, n_labels=2, latent_dim=4, factor_rank=2))  # no bank (old files)
    assert plain.factor_scores is None and torch.equal(plain.latent(z, labels, torch.rand(300)), z)


def test_a_label_of_few_cells_gets_no_factor(tmp_path):
    counts, _ = _two_states()
    few = MIN_FACTOR_CELLS - 1
    adata = ad.AnnData(
        X=sp.csr_matrix(counts.astype(np.float32)),
        obs={"cell_type": ["few"] * few + ["many"] * (len(counts) - few)},
    )
    adata.obs_names = [f"c{i}" for i in range(adata.n_obs)]
    adata.var_names = [f"g{j}" for j in range(adata.n_vars)]
    with ImageStore(write_images(tmp_path / "s.images.h5", adata)) as store:
        factors = label_factors(TrainingCells(store, np.arange(store.n_cells)), 2, 16, seed=0)
        ranks = dict(zip(store.label_names, factors.ranks, strict=True))
    assert ranks["few"] == 0 and ranks["many"] >= 1


def test_first_latent_coordinates_drive_the_loadings_and_the_level_noise_gives_way():
    cfg = ModelConfig(side=4, n_labels=2, latent_dim=3, factor_rank=2)
    generator = Generator(cfg).eval()
    generator.init_label_bias(torch.full((2, 4, 4), 0.4), torch.full((2, 4, 4), 0.5), torch.full((2, 4, 4), 0.5))
    level = torch.zeros(2, 2, 4, 4)
    level[1, 0] = 0.3  # label 1, factor 0: every gene's level logit
    level[1, 1, 0, 0] = 1.0  # factor 1 explains more than the spread at one gene: the floor
    detection = torch.zeros(2, 2, 4, 4)
    detection[1, 1] = -2.0
    generator.init_factors(level, detection)
    without = Generator(cfg).eval()
    without.load_state_dict(generator.state_dict())
    with torch.no_grad():
        without.factors.zero_()
    onehot = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    z = torch.tensor([[1.0, 0.5, 7.0], [1.0, 0.5, 7.0]])  # the last coordinate is not a factor's
    (lv, logit), (lv0, logit0) = generator(z, onehot), without(z, onehot)
    assert torch.allclose(torch.logit(lv[0]) - torch.logit(lv0[0]), 0.3 + 0.5 * level[1, 1], atol=1e-4)
    assert torch.allclose(logit[0] - logit0[0], torch.full((4, 4), -1.0), atol=1e-5)
    assert torch.allclose(lv[1], lv0[1]) and torch.allclose(logit[1], logit0[1])  # label 0 has no factors
    spread = generator.level_spread(onehot)
    assert torch.isclose(spread[0, 0, 1], torch.tensor((0.25 - 0.09) ** 0.5))
    assert torch.isclose(spread[0, 0, 0], torch.tensor(0.25))  # floored at half the spread
    assert torch.allclose(spread[1], torch.full((4, 4), 0.5))
    # measured from the data and kept through training, as the level noise is: the optimiser never sees them
    assert all(p is not generator.factors for p in generator.parameters())
    # the latent code reaches the output through the loadings only (learned_latent='none'), so that the
    # learned paths can neither cancel the factors nor add variation of their own: without loadings it
    # changes nothing, the other coordinate included
    other = torch.tensor([[-2.0, 3.0, -4.0], [-2.0, 3.0, -4.0]])
    assert all(torch.equal(a, b) for a, b in zip(without(z, onehot), without(other, onehot), strict=True))
    # with 'free' the learned paths see the coordinates beyond the factors' (and still not the factors')
    free = Generator(ModelConfig(side=4, n_labels=2, latent_dim=3, factor_rank=2, learned_latent="free")).eval()
    with torch.no_grad():
        free.factors.zero_()
    last = torch.tensor([0.0, 0.0, 1.0])
    assert all(torch.equal(a, b) for a, b in zip(free(z, onehot), free(z + torch.tensor([2.0, -1.0, 0.0]), onehot),
                                                  strict=True))
    assert not torch.equal(free(z, onehot)[0], free(z + last, onehot)[0])


def test_factor_rank_is_bounded_and_hidden_latent_coordinates_cost_no_weights():
    with pytest.raises(InputError, match="factor_rank"):
        ModelConfig(side=4, n_labels=2, latent_dim=3, factor_rank=4)
    with pytest.raises(InputError, match="learned_latent"):
        ModelConfig(side=4, n_labels=2, latent_dim=3, learned_latent="some")
    # the learned paths' input layers take the coordinates they see, the label and the depth only
    seen = {value: ModelConfig(side=4, n_labels=2, latent_dim=5, factor_rank=2, depth_input=True,
                               learned_latent=value) for value in ("none", "free", "all")}
    assert [cfg.seen_latent for cfg in seen.values()] == [0, 3, 5]
    for cfg in seen.values():
        generator = Generator(cfg)
        assert generator.project[0].in_features == generator.whole[0].in_features == cfg.seen_latent + 2 + 1
    generator = Generator(ModelConfig(side=4, n_labels=2, latent_dim=3))  # no factors: every coordinate
    assert generator.factors is None and not any("factors" in k for k in generator.state_dict())
    assert generator.project[0].in_features == 3 + 2
    with pytest.raises(ValueError, match="no factor loadings"):
        generator.init_factors(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4))
