"""The depth covariate: drawn from the label's own cells, standardised by the training cells,
required by depth-conditioned networks, and absent from the candidates' expected values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import simulate_counts, write_images

from scmaskgan.core.config import TrainParams
from scmaskgan.core.matrix import lognormalise
from scmaskgan.method.depth import LabelDepths, log_depth, moments
from scmaskgan.method.generate import sample_views
from scmaskgan.method.images_h5 import ImageStore
from scmaskgan.method.model import Discriminator, Generator, ModelConfig
from scmaskgan.method.train_data import TrainingCells, label_stats
from scmaskgan.method.trainer import GanTrainer, model_config


def test_depths_are_drawn_from_the_labels_own_cells_and_referenced_at_its_median():
    depths = LabelDepths(np.array([0, 0, 0, 1, 1]), log_depth(np.array([100, 200, 400, 5000, 7000])))
    labels = torch.tensor([0] * 50 + [1] * 50)
    drawn = depths.draw(labels, torch.Generator().manual_seed(0)).numpy()
    assert set(np.round(np.exp(drawn[:50]))) == {100, 200, 400}  # all three, and nothing of label 1
    assert set(np.round(np.exp(drawn[50:]))) == {5000, 7000}
    absent = depths.draw(torch.tensor([2, 2]), torch.Generator().manual_seed(0)).numpy()
    assert np.allclose(np.exp(absent), 400)  # a label without cells (validation's reference can miss one): the median
    assert np.allclose(np.exp(depths.reference(torch.tensor([1, 0])).numpy()), [np.sqrt(5000 * 7000), 200])
    assert log_depth(np.array([0.0]))[0] == 0.0  # an empty cell counts as depth 1
    assert moments(np.array([3.0, 3.0])) == (3.0, 1.0)  # no spread: no covariate, no division by 0


def test_a_depth_conditioned_network_needs_the_depth_and_uses_it():
    cfg = ModelConfig(side=6, n_labels=2, latent_dim=4, base_channels=8, depth_input=True)
    gen, disc = Generator(cfg).eval(), Discriminator(cfg).eval()
    z, onehot = torch.randn(2, 4), torch.eye(2)
    with pytest.raises(ValueError, match="pass depth"):
        gen(z, onehot)
    with pytest.raises(ValueError, match="pass depth"):
        disc(torch.rand(2, 6, 6), torch.ones(2, 6, 6), onehot)
    shallow, _ = gen(z, onehot, depth=torch.full((2,), 6.0))
    deep, _ = gen(z, onehot, depth=torch.full((2,), 9.0))
    assert not torch.equal(shallow, deep)
    values = torch.rand(2, 6, 6)
    assert not torch.equal(disc(values, values > 0, onehot, torch.full((2,), 6.0)),
                           disc(values, values > 0, onehot, torch.full((2,), 9.0)))


def test_candidates_take_real_depths_and_their_expected_values_one_depth_per_label():
    torch.manual_seed(0)
    cfg = ModelConfig(side=5, n_labels=2, latent_dim=4, base_channels=8, depth_input=True)
    gen = Generator(cfg)
    with torch.no_grad():  # make the depth matter as a trained generator's would
        gen.whole[0].weight[:, -1].mul_(10.0)
        gen.whole[-1].weight.mul_(1e2)
    labels = np.repeat([0, 1], 20)

    def views(depths: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        known = LabelDepths(np.array([0, 0, 0, 1, 1, 1]), np.log(np.array(depths, dtype=np.float32)))
        out = sample_views(gen, labels, batch_size=16, seed=3, device=torch.device("cpu"), scale=8.0, depths=known)
        assert out.expected is not None and out.depth is not None
        return out.values, out.expected, out.depth

    narrow = views([900, 1000, 1100, 4000, 5000, 6000])
    wide = views([100, 1000, 9000, 400, 5000, 60000])  # other depths, the same medians
    assert set(np.round(np.exp(narrow[2][:20]))) <= {900, 1000, 1100}
    assert not np.array_equal(narrow[0], wide[0])  # the sampled cells follow their depths
    assert np.array_equal(narrow[1], wide[1])  # the expected values do not: each label's median depth


@pytest.mark.parametrize("input_scale", ["counts", "lognorm"])
def test_training_standardises_depth_by_the_training_cells_count_input_only(tmp_path: Path, input_scale: str):
    adata, _ = simulate_counts(n_cells=60, n_genes=30, n_types=2, seed=1)
    if input_scale == "lognorm":
        adata.X = lognormalise(adata.X)[0]
    images = write_images(tmp_path / "s.images.h5", adata, input_scale=input_scale)
    params = TrainParams(base_channels=8, device="cpu", threads=1)
    with ImageStore(images) as store:
        cells = TrainingCells(store, np.arange(store.n_cells))
        cfg = model_config(params, store.encoding, len(store.label_names))
        trainer = GanTrainer(cfg, params, store.encoding.n_genes, label_stats(cells, 2, cfg.side), torch.device("cpu"))
        library = store.library_size
    assert cfg.depth_input == (input_scale == "counts")
    if cfg.depth_input:
        expected = [np.log(library).mean(), np.log(library).std()]
        assert trainer.generator.depth_moments.tolist() == pytest.approx(expected, rel=1e-5)
        assert trainer.discriminator.depth_moments.tolist() == pytest.approx(expected, rel=1e-5)
