"""The imputed AnnData: where the values go and the record in ``uns['scmaskgan']``.

Shared by the IMPUTE step (``{id}.imputed.h5ad``) and the Python API, so both write the
same layout.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from scmaskgan.core.config import ImputeParams
from scmaskgan.core.versions import package_versions
from scmaskgan.io.counts import LABEL_COLUMN
from scmaskgan.method.encode import Encoding
from scmaskgan.method.imputation import ImputeResult


def imputation_record(
    result: ImputeResult,
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
        What :func:`scmaskgan.method.imputation.impute_matrix` returned.
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
    ``layers['imputed_lognorm']`` the log-normalised imputed values,
    ``obs['scmaskgan_label']`` the labels and ``uns['scmaskgan']`` the record.
    """
    if layer is None:
        adata.layers["counts"] = adata.X
        adata.X = np.asarray(values, dtype=np.float32)
    else:
        adata.layers["imputed"] = np.asarray(values, dtype=np.float32)
    adata.layers["imputed_lognorm"] = np.asarray(lognorm, dtype=np.float32)
    adata.obs[LABEL_COLUMN] = pd.Categorical(labels)
    adata.uns["scmaskgan"] = record


# ---------------------------------------------------------------- parameters
