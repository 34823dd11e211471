"""Training must matter: a trained generator reproduces variation inside a label that the initialised one lacks.

The simulation's labels hide two sub-states each (``scmaskgan.analysis.simulate``). Without
its data-initialised factor loadings (``factor_rank=0``), the initialised generator produces
each label's mean profile with independent dropouts, so its candidates barely spread along
the axis between the two sub-states; a generator that learned the data spreads them as far
as real cells do. Skipping training, or making the adversarial game inert (a discriminator
that cannot learn, a generator whose whole-cell path is frozen), fails this test. With the
factor loadings (the default) the generator starts spread along that axis, from the data.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import write_images

from scmaskgan.analysis.simulate import simulate
from scmaskgan.core.config import GenerateParams, TrainParams
from scmaskgan.method.generate import read_candidates
from scmaskgan.method.images_h5 import ImageStore
from scmaskgan.method.train_data import read_cells
from scmaskgan.pipeline import steps

SMALL = {"base_channels": 8, "batch_size": 32, "cells_per_epoch": 512, "device": "cpu", "threads": 1,
         "val_fraction": 0.0, "seed": 0, "factor_rank": 0}


@pytest.fixture(scope="module")
def substates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """Images of 300 cells x 100 genes, two labels with two hidden sub-states each; real cells' vectors."""
    sim = simulate(n_cells=300, n_genes=100, n_labels=2, structure="substates", seed=0, mean_library=3000)
    adata = ad.AnnData(
        X=sp.csr_matrix(sim.counts.astype(np.float32)), obs={"cell_type": [f"t{k}" for k in sim.labels]}
    )
    adata.obs_names = [f"c{i}" for i in range(adata.n_obs)]
    adata.var_names = [f"g{j}" for j in range(adata.n_vars)]
    path = write_images(tmp_path_factory.mktemp("substates") / "s.images.h5", adata)
    with ImageStore(path) as store:
        cells = read_cells(store)
        vectors = cells.values.reshape(len(cells), -1)[:, : store.encoding.n_genes].numpy()
    return path, vectors, cells.labels.numpy(), sim.substate


def substate_spread(candidates: np.ndarray, candidate_labels: np.ndarray, real: np.ndarray,
                    labels: np.ndarray, substate: np.ndarray) -> np.ndarray:
    """Per label: SD of the candidates along the axis between the two sub-states' real means, over the real cells' SD."""
    ratios = []
    for label in np.unique(labels):
        cells, states = real[labels == label], substate[labels == label]
        axis = cells[states == 1].mean(0) - cells[states == 0].mean(0)
        axis /= np.linalg.norm(axis)
        ratios.append((candidates[candidate_labels == label] @ axis).std() / (cells @ axis).std())
    return np.array(ratios)


def candidates_after(images: Path, folder: Path, epochs: int, **extra: int) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir()
    params = TrainParams(epochs=epochs, min_epochs=epochs, **{**SMALL, **extra})
    model = steps.train(images, folder, "s", params)["model"]
    gen = GenerateParams(min_candidates=300, max_candidates=300, device="cpu")
    cand = read_candidates(steps.generate(model, images, folder, "s", gen)["candidates"])
    return cand.values, cand.labels


def test_trained_candidates_spread_over_the_hidden_substates_the_initial_ones_miss(substates, tmp_path: Path):
    images, real, labels, substate = substates
    initial = substate_spread(*candidates_after(images, tmp_path / "e0", 0), real, labels, substate)
    trained = substate_spread(*candidates_after(images, tmp_path / "e25", 25), real, labels, substate)
    assert np.all(initial < 0.5)  # the initialised generator: each label's profile, little spread
    assert np.all(trained > initial + 0.35), (initial, trained)
    assert np.all(trained < 2.0)  # not noise either


def test_factor_loadings_start_the_generator_spread_over_the_hidden_substates(substates, tmp_path: Path):
    images, real, labels, substate = substates
    initial = substate_spread(*candidates_after(images, tmp_path / "e0", 0, factor_rank=16), real, labels, substate)
    assert np.all((initial > 0.7) & (initial < 1.4)), initial  # as far as real cells, from the data alone
