"""The public Python API: ``scmaskgan.impute`` (scanpy style) and the ``ScMaskGAN`` estimator.

``ScMaskGAN.fit`` runs the pipeline's own steps on the data — PREPARE (encoding and
labels: given, or Leiden), TRAIN, GENERATE and FILTER — in a temporary folder, and
keeps what imputation needs (the retained candidates, the encoding, the labels) plus
the training record. ``transform`` is the IMPUTE step (:class:`scmaskgan.method.imputation.Imputation`), written
with :mod:`scmaskgan.pipeline.imputed` like ``steps.impute``, so an AnnData imputed here has the
layout of ``{id}.imputed.h5ad``.

Parameters of every step are the pipeline's flat parameters (the names of a
``--params-file``, e.g. ``epochs``, ``impute_k``, ``generate_batch_size``), passed as
keyword arguments. Each is an explicit parameter of the estimator (``get_params``,
``set_params`` and ``sklearn.base.clone`` see them), generated from
:mod:`scmaskgan.core.config` so that the two never disagree.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from scmaskgan.core.config import IMPUTE_CHAIN, all_flat_names, flat_fields, step_params_from_flat
from scmaskgan.errors import InputError
from scmaskgan.io.layout import input_files, output_paths
from scmaskgan.method.encode import Encoding
from scmaskgan.method.imputation import Imputation, ImputeSummary, uses_expected_values
from scmaskgan.method.neighbours import encode_rows
from scmaskgan.pipeline.imputed import annotate, imputation_record, write_imputed
from scmaskgan.pipeline.memory import release_memory

#: Steps ``fit`` runs, in order (QC is the user's business: the API is QC-free); ``transform`` is IMPUTE.
FIT_STEPS = IMPUTE_CHAIN[:-1]
#: File format of :meth:`ScMaskGAN.save`.
SAVE_FORMAT = 1
_SAMPLE = "sample"
#: Flat names that are explicit estimator arguments under another name.
_ALIASES = {"seed": "random_state", "impute_mode": "mode"}


#: The estimator's pipeline parameters and their defaults (each step's own).
PIPELINE_DEFAULTS: dict[str, Any] = {
    name: f.default for name, (_, f) in flat_fields(IMPUTE_CHAIN).items() if name not in _ALIASES
}


@dataclasses.dataclass(frozen=True)
class FitState:
    """What :meth:`ScMaskGAN.fit` carries between its phases: the input's names, the cells and genes
    it used, the steps' seconds and parameters (the steps' files are in the phases' folder, under
    :func:`~scmaskgan.io.layout.output_paths`). Plain JSON (:meth:`to_json`), so that a phase can run
    in another process."""

    genes: list[str]
    cells: list[str]
    used_genes: np.ndarray
    used_cells: np.ndarray
    label_source: str
    seconds: dict[str, float]
    flat: dict[str, Any]

    def to_json(self) -> str:
        """The state as JSON (boolean masks as lists)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields.update(used_genes=self.used_genes.tolist(), used_cells=self.used_cells.tolist())
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str) -> FitState:
        """The state :meth:`to_json` wrote."""
        fields = json.loads(text)
        fields.update(used_genes=np.asarray(fields["used_genes"], dtype=bool),
                      used_cells=np.asarray(fields["used_cells"], dtype=bool))
        return cls(**fields)


class NotFittedError(SklearnNotFittedError, InputError):
    """``transform`` or ``save`` before ``fit``: sklearn's error, and an :class:`InputError` as before."""


def _checked_matrix(adata: ad.AnnData, input_scale: str, layer: str | None) -> sp.csr_matrix:
    """The input values (``X`` or ``layers[layer]``) as float32 CSR, checked for the input scale."""
    from scmaskgan.io.counts import check_values

    if adata.n_obs < 2 or adata.n_vars < 2:
        raise InputError(f"need at least 2 cells and 2 genes, got {adata.n_obs} x {adata.n_vars}")
    if layer is not None and layer not in adata.layers:
        available = ", ".join(map(repr, adata.layers)) or "none"
        raise InputError(f"layer={layer!r} is not in adata.layers (available: {available})")
    values = adata.X if layer is None else adata.layers[layer]
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    x = sp.csr_matrix(values, dtype=np.float32)
    check_values(x, where, input_scale, list(map(str, adata.obs_names)), list(map(str, adata.var_names)))
    return x


# ---------------------------------------------------------------- the estimator
class ScMaskGAN(BaseEstimator):
    """scMASKGAN as a scikit-learn estimator on AnnData.

    Parameters
    ----------
    random_state
        Seed of every step (labels, GAN training, candidates, filter, tuning); ``seed=``
        is accepted as another name for it.
    label_key
        Cell-type labels: an obs column, or a CSV file ``cell,label``. Unset: Leiden
        clusters (PREPARE's recipe).
    mode
        ``'zeros'`` (the paper: only zeros are filled, observed values kept exactly),
        ``'denoise'`` (observed values are replaced by the neighbours' estimate too; lowest
        log-scale MCV MSE) or ``'posterior'`` (the same with a prior unbiased for the counts and
        a per-gene shrinkage estimated from the data; lowest Poisson loss and error against the
        true expression).
    input_scale
        ``'counts'`` (non-negative integers) or ``'lognorm'`` (log1p of library-
        normalised values); the output is on the same scale.
    layer
        Read the values from ``adata.layers[layer]`` (e.g. ``'counts'``) instead of ``X``.
    **params
        Flat pipeline parameters of PREPARE, TRAIN, GENERATE, FILTER and IMPUTE
        (``epochs=50``, ``impute_k=15``, ``device='cpu'``, ...; :data:`PIPELINE_DEFAULTS`
        lists them with their defaults). Each is an attribute of the same name and a
        parameter of ``get_params``/``set_params``. Values are checked at ``fit``.

    Attributes
    ----------
    genes_
        Gene names at fit (``transform`` needs the same genes in the same order).
    used_genes_
        Boolean mask of ``genes_`` with any non-zero value at fit (the others stay 0).
    cells_, labels_, label_names_, label_source_
        The fitted cells, their label indices, the label names and their source.
    encoding_
        The :class:`~scmaskgan.method.encode.Encoding` of the fitted data.
    candidates_, candidate_labels_
        The candidates FILTER kept (unit scale) and their label indices.
    expected_candidates_
        The same candidates' expected values (``denoise`` estimates use them; ``None`` in
        ``zeros`` mode and when GENERATE ran with ``dropouts='expected'``).
    train_record_
        TRAIN's record (epochs run, losses, seconds, device; plain types).
    step_seconds_
        Wall seconds of each fitting step (``prepare``, ``train``, ``generate``, ``filter``);
        recorded in the output's ``uns['scmaskgan']['fit_seconds']``.
    flat_params_
        The flat parameters every step was run with.
    """

    def __init__(
        self,
        random_state: int = 0,
        *,
        label_key: str | None = None,
        mode: str = "zeros",
        input_scale: str = "counts",
        layer: str | None = None,
        **params: Any,
    ) -> None:
        if "impute_mode" in params:
            raise InputError("give the imputation mode once: mode=... (not impute_mode)")
        seed = params.pop("seed", None)
        if seed is not None and seed != random_state and random_state != 0:
            raise InputError(f"seed={seed} contradicts random_state={random_state}; give one of them")
        unknown = sorted(set(params) - set(PIPELINE_DEFAULTS))
        if unknown:
            other_steps = all_flat_names() - set(PIPELINE_DEFAULTS) - set(_ALIASES)
            hint = " (a QC or INTEGRATE parameter: not used here)" if set(unknown) <= other_steps else ""
            raise InputError(
                f"unknown parameter(s) {', '.join(unknown)}{hint}; use the pipeline's flat names "
                "(see docs/parameters.md), e.g. epochs=50, impute_k=15"
            )
        self.random_state = random_state if seed is None else seed
        self.label_key = label_key
        self.mode = mode
        self.input_scale = input_scale
        self.layer = layer
        for name, default in PIPELINE_DEFAULTS.items():
            setattr(self, name, params.get(name, default))

    # -- helpers
    def _flat(self) -> dict[str, Any]:
        """The flat parameters of every step, checked (one-line InputError on a bad value)."""
        if self.input_scale not in ("counts", "lognorm"):
            raise InputError(f"input_scale={self.input_scale!r} is not one of counts, lognorm")
        flat = {name: getattr(self, name) for name in PIPELINE_DEFAULTS}
        flat.update(seed=int(self.random_state), impute_mode=self.mode)
        for step in IMPUTE_CHAIN:
            step_params_from_flat(step, flat)  # validates values early
        return flat

    def _check_fitted(self) -> None:
        if not hasattr(self, "candidates_"):
            raise NotFittedError("this ScMaskGAN is not fitted yet: call fit(adata) first or load(path)")

    # -- fit
    def fit(self, adata: ad.AnnData, *, release_input: bool = False) -> ScMaskGAN:
        """Encode ``adata``, find or take its labels, train the GAN, generate and filter candidates.

        All-zero cells and genes are left out of training (they carry no signal).

        Parameters
        ----------
        adata
            Cells x genes, counts in ``X`` (or ``layer``).
        release_input
            Replace the counts in ``adata`` (``X``, or ``layer``) by an empty matrix as soon as
            they are copied to the steps' working file, so that they are not held through
            training (48 MB at 10,000 x 2,000). ``adata`` keeps its names and annotations.

        Returns
        -------
        ``self``.
        """
        with tempfile.TemporaryDirectory(prefix="scmaskgan-") as tmp:
            folder = Path(tmp)
            state = self.fit_start(adata, folder, release_input=release_input)
            for step in FIT_STEPS:
                state = self.fit_step(step, folder, state)
            self.fit_finish(folder, state)
        return self

    def fit_start(self, adata: ad.AnnData, folder: Path, *, release_input: bool = False) -> FitState:
        """The first phase of :meth:`fit`: check ``adata`` and write the steps' input file into ``folder``.

        :meth:`fit` is ``fit_start``, :meth:`fit_step` for each of :data:`FIT_STEPS` and
        :meth:`fit_finish`; the phases exchange files in ``folder`` and a :class:`FitState`, so
        that each can run in a process of its own (``scmaskgan impute``, :mod:`scmaskgan.fit_process`).
        """
        from scmaskgan.io.counts import LABEL_COLUMN, attach_labels
        from scmaskgan.io.h5ad import write_h5ad

        flat = self._flat()
        x = _checked_matrix(adata, self.input_scale, self.layer)
        used_cells = np.asarray(x.getnnz(axis=1) > 0)
        used_genes = np.asarray(x.getnnz(axis=0) > 0)
        if used_cells.sum() < 2 or used_genes.sum() < 2:
            raise InputError("need at least 2 cells and 2 genes with non-zero values")
        work = ad.AnnData(
            X=x[used_cells][:, used_genes],
            obs=pd.DataFrame(index=adata.obs_names[used_cells].astype(str)),
            var=pd.DataFrame(index=adata.var_names[used_genes].astype(str)),
        )
        del x  # the steps read the file written below; the checked copy would stay through training
        if release_input:
            empty = sp.csr_matrix(adata.shape, dtype=np.float32)
            if self.layer is None:
                adata.X = empty
            else:
                adata.layers[self.layer] = empty
        label_source = "leiden"
        if self.label_key is not None:
            labelled = ad.AnnData(obs=adata.obs.copy())
            label_source = attach_labels(labelled, self.label_key)
            work.obs[LABEL_COLUMN] = labelled.obs[LABEL_COLUMN].to_numpy()[used_cells]
        work.uns["scmaskgan_qc"] = {"input_scale": self.input_scale, "label_source": label_source}
        write_h5ad(work, output_paths("qc", folder, _SAMPLE)["h5ad"])
        del work
        release_memory()
        return FitState(
            genes=[str(g) for g in adata.var_names], cells=[str(c) for c in adata.obs_names],
            used_genes=used_genes, used_cells=used_cells, label_source=label_source, seconds={}, flat=flat,
        )

    def fit_step(self, step: str, folder: Path, state: FitState) -> FitState:
        """One of :data:`FIT_STEPS` on ``folder``'s files (wired as the pipeline wires them), timed; the
        state with its seconds added."""
        from scmaskgan.pipeline import steps

        function = getattr(steps, steps.SAMPLE_STEP_FUNCTIONS[step])
        start = time.perf_counter()
        function(**input_files(step, lambda _: folder, _SAMPLE), outdir=folder, sample_id=_SAMPLE,
                 params=step_params_from_flat(step, state.flat))
        release_memory()
        return dataclasses.replace(state, seconds={**state.seconds, step: round(time.perf_counter() - start, 2)})

    def fit_finish(self, folder: Path, state: FitState) -> ScMaskGAN:
        """The last phase of :meth:`fit`: keep what imputation needs from ``folder``'s files; ``self``."""
        import torch

        from scmaskgan.method.generate import read_candidates
        from scmaskgan.method.images_h5 import ImageStore

        files = {step: output_paths(step, folder, _SAMPLE) for step in FIT_STEPS}
        with ImageStore(files["prepare"]["images"]) as store:
            labels = store.labels.copy()
            self.label_names_ = list(store.label_names)
            self.encoding_ = store.encoding
            self.label_source_ = str(store.attrs.get("label_source", state.label_source))
        expected = uses_expected_values(step_params_from_flat("impute", state.flat).mode)
        kept = read_candidates(files["filter"]["filtered"], expected=expected)
        model = torch.load(files["train"]["model"], map_location="cpu", weights_only=True)
        self.train_record_ = dict(model["train"])
        self.step_seconds_ = dict(state.seconds)
        self.genes_ = list(state.genes)
        self.used_genes_ = state.used_genes
        self.cells_ = list(state.cells)
        self.labels_ = np.full(len(state.cells), -1, dtype=np.int64)
        self.labels_[state.used_cells] = labels
        self.candidates_ = np.asarray(kept.values, dtype=np.float32)
        self.candidate_labels_ = np.asarray(kept.labels, dtype=np.int64)
        self.expected_candidates_ = None if kept.expected is None else np.asarray(kept.expected, dtype=np.float32)
        self.flat_params_ = dict(state.flat)
        release_memory()  # the last steps' garbage, before the caller imputes in this process
        return self

    # -- transform
    def _labels_for(self, adata: ad.AnnData, x: sp.csr_matrix) -> np.ndarray:
        """Label indices of ``adata``'s cells: the fitted ones, the label column, or the nearest label."""
        if [str(c) for c in adata.obs_names] == self.cells_:
            return self.labels_
        if self.label_key is not None and self.label_key in adata.obs:
            names = adata.obs[self.label_key].astype(str).to_numpy()
            index = {name: i for i, name in enumerate(self.label_names_)}
            unknown = sorted(set(names) - set(index))
            if unknown:
                raise InputError(
                    f"obs[{self.label_key!r}] has labels the model was not fitted on: {', '.join(unknown[:5])}"
                )
            return np.array([index[n] for n in names], dtype=np.int64)
        return self._nearest_label(x)

    def _nearest_label(self, x: sp.csr_matrix) -> np.ndarray:
        """The label whose candidates' centroid is nearest (unit scale), for cells seen only now."""
        unit, _ = encode_rows(x[:, self.used_genes_].toarray(), self.encoding_)
        n_labels = len(self.label_names_)
        centroids = np.stack([
            self.candidates_[self.candidate_labels_ == k].mean(0) if np.any(self.candidate_labels_ == k)
            else np.full(unit.shape[1], np.inf, dtype=np.float32)
            for k in range(n_labels)
        ])
        d2 = (unit**2).sum(1)[:, None] - 2 * unit @ np.nan_to_num(centroids, posinf=0).T + (
            np.nan_to_num(centroids, posinf=0) ** 2
        ).sum(1)[None, :]
        d2[:, ~np.isfinite(centroids).all(1)] = np.inf
        return d2.argmin(1).astype(np.int64)

    def _plan(self, adata: ad.AnnData) -> tuple[Imputation, np.ndarray, np.ndarray, np.ndarray]:
        """The :class:`~scmaskgan.method.imputation.Imputation` of ``adata``'s non-empty cells and fitted genes,
        those cells' rows and genes' columns, and every cell's label name."""
        self._check_fitted()
        genes = [str(g) for g in adata.var_names]
        if genes != self.genes_:
            if len(genes) != len(self.genes_):
                raise InputError(f"adata has {len(genes)} genes, the model was fitted on {len(self.genes_)}")
            first = next(i for i, (a, b) in enumerate(zip(genes, self.genes_, strict=True)) if a != b)
            raise InputError(
                f"gene {first} is {genes[first]!r}, the model was fitted with {self.genes_[first]!r} there; "
                "reorder adata's genes like the fitted data"
            )
        x = _checked_matrix(adata, self.input_scale, self.layer)
        labels = self._labels_for(adata, x)
        rows = np.flatnonzero(x.getnnz(axis=1) > 0)
        cols = np.flatnonzero(self.used_genes_)
        params = step_params_from_flat("impute", self.flat_params_)
        if rows.size < x.shape[0] or cols.size < x.shape[1]:  # copies only when some cells/genes are left out
            x = x[rows][:, cols]
        imputation = Imputation(
            x, labels[rows], self.candidates_, self.candidate_labels_, self.encoding_, params,
            self.expected_candidates_,
        )
        names = np.asarray(self.label_names_, dtype=object)
        cell_labels = names[np.clip(labels, 0, None)]
        cell_labels[labels < 0] = None  # all-zero cells have no label
        return imputation, rows, cols, cell_labels

    def _record(self, adata: ad.AnnData, summary: ImputeSummary, n_used_cells: int, n_used_genes: int) -> dict[str, Any]:
        """``uns['scmaskgan']`` of an imputation of ``adata``."""
        fit_params = {s: dataclasses.asdict(step_params_from_flat(s, self.flat_params_)) for s in FIT_STEPS}
        return imputation_record(
            summary, step_params_from_flat("impute", self.flat_params_), encoding=self.encoding_,
            label_source=self.label_source_, label_names=list(self.label_names_),
            extra={
                "fit_params": fit_params,
                "input_scale": self.input_scale,
                "layer": self.layer,
                "n_empty_cells": int(adata.n_obs - n_used_cells),
                "n_unused_genes": int(adata.n_vars - n_used_genes),
                "n_candidates": int(len(self.candidates_)),
                "fit_seconds": dict(self.step_seconds_),
            },
        )

    def transform(self, adata: ad.AnnData, *, copy: bool = True) -> ad.AnnData:
        """Impute ``adata`` (the fitted cells, or new cells with the same genes).

        Parameters
        ----------
        adata
            Cells x the fitted genes; the values are read from ``X`` (or ``layers[layer]``).
        copy
            Write into a copy (default) or, with ``copy=False``, into ``adata`` itself.

        Returns
        -------
        The imputed AnnData, in the ``{id}.imputed.h5ad`` layout: ``X`` imputed (float32,
        input scale), ``layers['counts']`` the input (sparse input stays sparse there),
        ``layers['imputed_lognorm']`` (normalised by each cell's observed library size: analyse
        this layer rather than ``normalize_total`` of ``X``, see
        :data:`~scmaskgan.core.matrix.IMPUTED_LOGNORM`), ``obs['scmaskgan_label']``, ``uns['scmaskgan']``;
        with ``layer`` set, ``X`` and that layer are kept and the imputed values are in
        ``layers['imputed']``. Shape, cell and gene names are the input's; all-zero cells
        and genes unseen at fit stay 0 (their label is missing for all-zero cells).
        """
        imputation, rows, cols, cell_labels = self._plan(adata)
        full = imputation.shape != adata.shape  # all-zero cells or genes unseen at fit: stay 0
        values = (np.zeros if full else np.empty)(adata.shape, dtype=np.float32)
        lognorm = (np.zeros if full else np.empty)(adata.shape, dtype=np.float32)
        for sl, block_values, block_lognorm in imputation.blocks():
            where = np.ix_(rows[sl], cols) if full else sl
            values[where], lognorm[where] = block_values, block_lognorm
        record = self._record(adata, imputation.summary(), rows.size, cols.size)
        out = adata.copy() if copy else adata
        annotate(out, values, lognorm, cell_labels, record, layer=self.layer)
        return out

    def write_transformed(self, adata: ad.AnnData, path: str | Path) -> Path:
        """Impute ``adata`` into the file ``path``: what ``transform(adata).write_h5ad(path)`` writes.

        The imputed values and their log-normalised layer go into the file block by block
        (:func:`scmaskgan.pipeline.imputed.write_imputed`), so they are never whole in memory;
        ``adata`` is left as it is. For large samples (``scmaskgan impute`` uses it).
        """
        imputation, rows, cols, cell_labels = self._plan(adata)
        return write_imputed(
            adata, imputation.blocks(), rows, cols, cell_labels, path, layer=self.layer,
            record=lambda: self._record(adata, imputation.summary(), rows.size, cols.size),
        )

    def fit_transform(self, adata: ad.AnnData) -> ad.AnnData:
        """``fit(adata)`` then ``transform(adata)``."""
        return self.fit(adata).transform(adata)

    # -- persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted estimator to one file (``torch.save`` of plain types and tensors).

        It holds what ``transform`` needs (candidates, encoding, labels, parameters) and
        the training record, not the GAN's weights (the TRAIN step's model file has them).
        Loadable with ``torch.load(path, weights_only=True)``: no pickled objects.
        """
        import torch

        from scmaskgan.io.atomic import atomic_path

        self._check_fitted()
        payload = {
            "format_version": SAVE_FORMAT,
            "kind": "scmaskgan-estimator",
            "init": self.get_params(),
            "flat_params": dict(self.flat_params_),
            "genes": self.genes_,
            "used_genes": torch.from_numpy(self.used_genes_.astype(np.bool_)),
            "cells": self.cells_,
            "labels": torch.from_numpy(self.labels_),
            "label_names": self.label_names_,
            "label_source": self.label_source_,
            "encoding": self.encoding_.to_dict(),
            "candidates": torch.from_numpy(self.candidates_),
            "candidate_labels": torch.from_numpy(self.candidate_labels_),
            **({} if self.expected_candidates_ is None else {"expected_candidates": torch.from_numpy(self.expected_candidates_)}),
            "train_record": self.train_record_,
            "step_seconds": self.step_seconds_,
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> ScMaskGAN:
        """Read an estimator written by :meth:`save` (``weights_only``: never unpickles objects)."""
        import torch

        path = Path(path)
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as exc:
            raise InputError(f"{path}: no such file") from exc
        except Exception as exc:  # noqa: BLE001 - truncated, corrupt or not a torch file
            raise InputError(f"{path}: not a readable scmaskgan estimator file ({type(exc).__name__})") from exc
        if not isinstance(payload, dict) or payload.get("kind") != "scmaskgan-estimator":
            raise InputError(f"{path}: not a scmaskgan estimator file (ScMaskGAN.save writes them)")
        if payload.get("format_version") != SAVE_FORMAT:
            raise InputError(f"{path}: estimator format {payload.get('format_version')}, this version reads {SAVE_FORMAT}")
        init = dict(payload["init"])
        nested = init.pop("params", {})  # earlier files nest the pipeline parameters
        model = cls(**init, **nested)
        model.flat_params_ = dict(payload["flat_params"])
        model.genes_ = list(payload["genes"])
        model.used_genes_ = payload["used_genes"].numpy().astype(bool)
        model.cells_ = list(payload["cells"])
        model.labels_ = payload["labels"].numpy().astype(np.int64)
        model.label_names_ = list(payload["label_names"])
        model.label_source_ = str(payload["label_source"])
        model.encoding_ = Encoding(**payload["encoding"])
        model.candidates_ = payload["candidates"].numpy().astype(np.float32)
        model.candidate_labels_ = payload["candidate_labels"].numpy().astype(np.int64)
        expected = payload.get("expected_candidates")
        model.expected_candidates_ = None if expected is None else expected.numpy().astype(np.float32)
        record = payload["train_record"] if "train_record" in payload else payload["model"]["train"]
        model.train_record_ = dict(record)
        model.step_seconds_ = dict(payload.get("step_seconds", {}))  # files saved before it was recorded have none
        return model


def _estimator_signature() -> inspect.Signature:
    """``__init__``'s signature with every pipeline parameter explicit (what sklearn's ``get_params`` reads)."""
    own = [p for p in inspect.signature(ScMaskGAN.__init__).parameters.values() if p.kind != p.VAR_KEYWORD]
    pipeline = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
                for name, default in PIPELINE_DEFAULTS.items()]
    return inspect.Signature(own + pipeline)


ScMaskGAN.__init__.__signature__ = _estimator_signature()  # type: ignore[attr-defined]


# ---------------------------------------------------------------- scanpy-style function
def impute(
    adata: ad.AnnData,
    *,
    label_key: str | None = None,
    mode: str = "zeros",
    random_state: int = 0,
    input_scale: str = "counts",
    layer: str | None = None,
    copy: bool = False,
    **params: Any,
) -> ad.AnnData | None:
    """Impute dropouts of one sample with scMASKGAN (fit and transform in one call).

    Parameters
    ----------
    adata
        Cells x genes; ``X`` (or ``layers[layer]``) holds counts (or log-normalised
        values with ``input_scale='lognorm'``), sparse or dense. No QC is done; all-zero
        cells and genes stay 0.
    label_key
        Cell-type labels: an obs column or a CSV file ``cell,label``; unset: Leiden clusters.
    mode
        ``'zeros'`` (default, the paper: observed values are kept exactly, zeros are
        filled with the neighbours' estimate given the zero), ``'denoise'``
        (observed values are replaced by the neighbours' estimate too) or ``'posterior'``
        (as ``'denoise'``, with an unbiased prior and a per-gene shrinkage; see ``docs/method.md``).
    random_state
        Seed of every step (``seed=`` in ``params`` is the same thing).
    input_scale
        ``'counts'`` or ``'lognorm'``; the output is on the input's scale.
    layer
        Read the values from ``adata.layers[layer]`` instead of ``X`` (scanpy keeps
        counts in ``layers['counts']``); ``X`` and that layer are then left as they are
        and the imputed values go to ``layers['imputed']``.
    copy
        Return a new AnnData instead of writing into ``adata``.
    **params
        Flat pipeline parameters (``epochs=50``, ``impute_k=15``, ``device='cpu'`` ...).

    Returns
    -------
    ``None`` (``adata`` updated in place) or, with ``copy=True``, the imputed AnnData:
    ``X`` imputed (float32; ``layers['imputed']`` with ``layer``), ``layers['counts']``
    the input (as given: sparse input stays sparse), ``layers['imputed_lognorm']`` (the
    imputed values log-normalised by the observed library size, the layer to analyse),
    ``obs['scmaskgan_label']``, ``uns['scmaskgan']`` (parameters, chosen k and theta
    multiplier, tuning curve, seed, versions, fraction of zeros filled, observed values
    changed).
    """
    model = ScMaskGAN(
        random_state, label_key=label_key, mode=mode, input_scale=input_scale, layer=layer, **params
    ).fit(adata)
    out = model.transform(adata, copy=copy)
    return out if copy else None


def impute_copy(adata: ad.AnnData, *, mode: str, label_key: str | None, seed: int, **params: Any) -> ad.AnnData:
    """``impute(adata, ..., random_state=seed, copy=True)``: the imputer molecular cross-validation scores."""
    out = impute(adata, mode=mode, label_key=label_key, random_state=seed, copy=True, **params)
    assert out is not None  # copy=True returns the copy
    return out
