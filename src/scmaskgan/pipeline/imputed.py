"""The imputed AnnData: where the values go and the record in ``uns['scmaskgan']``.

Shared by the IMPUTE step (``{id}.imputed.h5ad``) and the Python API, so both write the
same layout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from scmaskgan.core.config import ImputeParams
from scmaskgan.core.matrix import IMPUTED_LOGNORM
from scmaskgan.core.versions import package_versions
from scmaskgan.io.counts import LABEL_COLUMN
from scmaskgan.method.encode import Encoding
from scmaskgan.method.imputation import ImputeSummary

#: The anndata encoding of a dense array (what ``AnnData.write_h5ad`` gives a float32 layer).
_DENSE_ARRAY = {"encoding-type": "array", "encoding-version": "0.2.0"}


def imputation_record(
    result: ImputeSummary,
    params: ImputeParams,
    *,
    encoding: Encoding,
    label_source: str,
    label_names: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary stored in ``uns['scmaskgan']`` and ``{id}.impute.json``.

    Parameters
    ----------
    result
        What the imputation chose and did (:class:`scmaskgan.method.imputation.ImputeSummary`).
    params
        The IMPUTE parameters used.
    encoding
        The sample's encoding.
    label_source
        Where the labels came from (``obs:<column>``, ``csv:<file>``, ``leiden``).
    label_names
        Names of the label codes (in ``neighbours_per_label``; the codes when unset).
    extra
        More entries (e.g. the other steps' parameters).
    """
    present = np.flatnonzero(np.isfinite(result.neighbours_per_label))
    return {
        "mode": params.mode,
        "k": int(result.k),
        "theta_sigma": float(result.theta_sigma),
        "validation": result.validation,
        "shrinkage": float(result.shrinkage),
        # the denoise alpha of the genes (estimated per gene unless given): 5th, 50th, 95th percentile
        "shrinkage_percentiles": [
            float(v) for v in (np.percentile(result.shrinkage_per_gene, [5, 50, 95]) if result.shrinkage_per_gene.size
                               else [np.nan] * 3)
        ],
        "raw_signal": float(result.raw_signal),
        # two lists, not a dict: h5ad turns a '/' in a key (label 'CD4+/CD25 T Reg') into nested groups
        "neighbours_per_label": {
            "label": [label_names[code] if label_names else str(code) for code in present],
            "mean_neighbours": [round(float(result.neighbours_per_label[code]), 2) for code in present],
        },
        "tuning": {key: [float(t[key]) for t in result.tuning] for key in (result.tuning[0] if result.tuning else {})},
        "fraction_zeros_filled": float(result.fraction_zeros_filled),
        "n_observed_changed": int(result.n_observed_changed),
        "label_source": label_source,
        "seed": int(params.seed),
        "params": dataclasses.asdict(params),
        "encoding": encoding.to_dict(),
        "versions": package_versions(),
        **(extra or {}),
    }


def annotate(
    adata: ad.AnnData,
    values: np.ndarray,
    lognorm: np.ndarray,
    labels: Any,
    record: dict[str, Any],
    *,
    layer: str | None = None,
) -> None:
    """Write an imputation into ``adata`` in place (the ``{id}.imputed.h5ad`` layout).

    Without ``layer``: ``layers['counts']`` gets the original ``X`` and ``X`` the imputed
    values (float32, input scale). With ``layer`` (the input was ``layers[layer]``): ``X``
    and that layer are kept and the imputed values go to ``layers['imputed']``. Always:
    ``layers['imputed_lognorm']`` the imputed values log-normalised by each cell's observed
    library size (:data:`~scmaskgan.core.matrix.IMPUTED_LOGNORM`), ``obs['scmaskgan_label']`` the labels and ``uns['scmaskgan']`` the record.
    """
    if layer is None:
        adata.layers["counts"] = adata.X
        adata.X = np.asarray(values, dtype=np.float32)
    else:
        adata.layers["imputed"] = np.asarray(values, dtype=np.float32)
    adata.layers[IMPUTED_LOGNORM] = np.asarray(lognorm, dtype=np.float32)
    adata.obs[LABEL_COLUMN] = pd.Categorical(labels)
    adata.uns["scmaskgan"] = record


# ---------------------------------------------------------------- writing block by block


def write_imputed(
    adata: ad.AnnData,
    blocks: Iterable[tuple[slice, np.ndarray, np.ndarray]],
    rows: np.ndarray,
    cols: np.ndarray,
    labels: Any,
    path: str | Path,
    *,
    record: Callable[[], dict[str, Any]],
    layer: str | None = None,
) -> Path:
    """Write the ``{id}.imputed.h5ad`` of ``adata`` to ``path``, the imputed matrices block by block.

    The file is the one ``annotate`` and ``AnnData.write_h5ad`` give, but the imputed
    values and ``layers['imputed_lognorm']`` are written into their datasets a row block
    at a time, so neither is ever whole in memory; ``adata`` itself is not changed.

    Parameters
    ----------
    adata
        The input, as :func:`annotate` takes it.
    blocks
        ``(block rows, values, lognorm)`` of the imputed cells and genes
        (:meth:`scmaskgan.method.imputation.Imputation.blocks`).
    rows, cols
        The rows and columns of ``adata`` the blocks' rows and columns are (sorted); the
        other entries stay 0.
    labels
        Every cell's label name (``obs['scmaskgan_label']``).
    path
        The file to write (atomically).
    record
        Called once every block is written: ``uns['scmaskgan']``.
    layer
        As for :func:`annotate`.
    """
    import h5py
    from anndata.io import write_elem

    from scmaskgan.io.atomic import atomic_path

    layers = dict(adata.layers)
    if layer is None:
        layers["counts"] = adata.X
    skeleton = ad.AnnData(
        X=None if layer is None else adata.X, obs=adata.obs.copy(), var=adata.var, uns=adata.uns,
        obsm=adata.obsm, varm=adata.varm, obsp=adata.obsp, varp=adata.varp, layers=layers,
    )
    skeleton.obs[LABEL_COLUMN] = pd.Categorical(labels)
    full = (len(rows), len(cols)) != adata.shape
    with atomic_path(path) as tmp:
        skeleton.write_h5ad(tmp)
        with h5py.File(tmp, "r+") as f:
            datasets = [
                f.create_dataset(name, shape=adata.shape, dtype=np.float32)
                for name in ("X" if layer is None else "layers/imputed", f"layers/{IMPUTED_LOGNORM}")
            ]
            for dataset in datasets:
                dataset.attrs.update(_DENSE_ARRAY)
            for sl, *parts in blocks:
                for dataset, part in zip(datasets, parts, strict=True):
                    if full:  # all-zero cells or unused genes: this block's rows of the whole matrix
                        whole = np.zeros((len(part), adata.n_vars), dtype=np.float32)
                        whole[:, cols] = part
                        dataset[rows[sl]] = whole
                    else:
                        dataset[sl] = part
            write_elem(f["uns"], "scmaskgan", record())
    return Path(path)
