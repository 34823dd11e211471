"""The pipeline's spine: one function per step, files in, files out.

``bin/``, the CLI and the embedded runner call these functions and nothing else, so
a Nextflow run and ``scmaskgan run`` execute the same code. Every function writes its
outputs atomically under ``outdir`` with the names given by
:func:`scmaskgan.io.layout.output_paths`, and returns that mapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scmaskgan.core.config import (
    FilterParams,
    GenerateParams,
    ImputeParams,
    IntegrateParams,
    PrepareParams,
    QCParams,
    TrainParams,
)
from scmaskgan.io.layout import EVALUATE_MAX_CELLS, SAMPLE_STEPS, output_paths

#: The name of every per-sample step's function in this module (looked up when called, so that a
#: test can replace the function).
SAMPLE_STEP_FUNCTIONS: dict[str, str] = {step: step for step in SAMPLE_STEPS} | {"filter": "filter_candidates"}


def qc(input_path: Path, outdir: Path, sample_id: str, params: QCParams | None = None) -> dict[str, Path]:
    """QC: read a counts file, attach labels, filter cells and genes with scanpy.

    Writes ``{id}.qc.h5ad`` (counts in X, QC metrics in obs/var, labels in
    ``obs['scmaskgan_label']`` when given), ``{id}.qc.json`` and ``{id}.qc.png``.
    """
    import dataclasses
    import json

    from scmaskgan.analysis.qc import plot_qc, run_qc
    from scmaskgan.core.versions import package_versions
    from scmaskgan.io.atomic import atomic_path, write_text_atomic
    from scmaskgan.io.counts import attach_labels, read_counts
    from scmaskgan.io.h5ad import write_h5ad

    params = params or QCParams()
    paths = output_paths("qc", outdir, sample_id)
    adata = read_counts(input_path, orientation=params.orientation, input_scale=params.input_scale)
    label_source = attach_labels(adata, params.label_key, source=input_path) if params.label_key else "none"
    filtered, summary = run_qc(adata, params)
    record = {
        "sample": sample_id, "input_path": str(input_path), "input_scale": params.input_scale,
        "label_source": label_source, "params": dataclasses.asdict(params),
    }
    with atomic_path(paths["png"]) as tmp:
        plot_qc(adata.obs, params, summary, tmp, title=sample_id)
    write_text_atomic(paths["json"], json.dumps({**record, **summary}, indent=2) + "\n")
    filtered.uns["scmaskgan_qc"] = {**record, "versions": package_versions()}
    write_h5ad(filtered, paths["h5ad"])
    return paths


def prepare(qc_h5ad: Path, outdir: Path, sample_id: str, params: PrepareParams | None = None) -> dict[str, Path]:
    """PREPARE: labels (given or Leiden) and the images/masks file ``{id}.images.h5``.

    The counts are read from the backed h5ad in chunks of ``params.chunk_cells`` cells:
    one pass finds the encoding's global scale, a second encodes and writes the images,
    so the sample is never dense in memory (it is loaded sparse only when labels must be
    computed or small labels merged). attrs record ``label_source`` and the label merges.
    """
    import dataclasses
    import json

    from scmaskgan.core.versions import package_versions
    from scmaskgan.io.atomic import atomic_path
    from scmaskgan.io.counts import LABEL_COLUMN
    from scmaskgan.io.h5ad import iter_row_chunks, load_sparse, open_backed
    from scmaskgan.method.encode import Encoding, image_side, max_lognorm
    from scmaskgan.method.images_h5 import ImageWriter
    from scmaskgan.method.labels import resolve_labels

    params = params or PrepareParams()
    paths = output_paths("prepare", outdir, sample_id)
    chunk = params.chunk_cells
    with open_backed(qc_h5ad) as adata:
        qc_info = dict(adata.uns.get("scmaskgan_qc", {}))
        scale_in = str(qc_info.get("input_scale", "counts"))
        given = adata.obs[LABEL_COLUMN].astype(str).to_numpy() if LABEL_COLUMN in adata.obs else None
        labels = resolve_labels(
            given, lambda: load_sparse(adata, chunk), source=str(qc_info.get("label_source", f"obs:{LABEL_COLUMN}")),
            resolution=params.leiden_resolution, n_pcs=params.n_pcs, min_cells=params.min_label_cells,
            seed=params.seed, target_sum=params.target_sum, input_scale=scale_in,
        )
        scale = max((max_lognorm(x, params.target_sum, scale_in) for x in iter_row_chunks(adata, chunk) if x.nnz),
                    default=1.0)
        enc = Encoding(adata.n_vars, image_side(adata.n_vars), float(params.target_sum), scale, scale_in)
        attrs = {
            "label_source": labels.source, "params_json": json.dumps(dataclasses.asdict(params)),
            "label_merges_json": json.dumps(labels.merges), "versions_json": json.dumps(package_versions()),
        }
        with atomic_path(paths["images"]) as tmp, ImageWriter(
            tmp, adata.n_obs, enc, adata.obs_names, adata.var_names, labels.names, attrs
        ) as writer:
            start = 0
            for x in iter_row_chunks(adata, chunk):
                writer.append(x, labels.codes[start:start + x.shape[0]])
                start += x.shape[0]
    return paths


def train(images_h5: Path, outdir: Path, sample_id: str, params: TrainParams | None = None) -> dict[str, Path]:
    """TRAIN: fit the conditional masked GAN; writes the model, the log and the loss curve.

    A checkpoint ``{id}.train_checkpoint.pt`` is kept beside the model for ``--resume``.
    """
    from scmaskgan.method.train import fit

    params = params or TrainParams()
    paths = output_paths("train", outdir, sample_id)
    fit(Path(images_h5), paths, sample_id, params)
    return paths


def generate(
    model_pt: Path, images_h5: Path, outdir: Path, sample_id: str, params: GenerateParams | None = None
) -> dict[str, Path]:
    """GENERATE: sample candidate cells for every label into ``{id}.candidates.h5``."""
    from scmaskgan.method.generate import generate_candidates

    params = params or GenerateParams()
    paths = output_paths("generate", outdir, sample_id)
    generate_candidates(Path(model_pt), Path(images_h5), paths["candidates"], params)
    return paths


def filter_candidates(
    candidates_h5: Path, images_h5: Path | None, outdir: Path, sample_id: str, params: FilterParams | None = None
) -> dict[str, Path]:
    """FILTER: IsolationForest per label; keeps scores and the threshold tau.

    ``images_h5`` (PREPARE's real cells) is the reference of ``params.reference='cells'`` (the default);
    ``None`` is accepted with ``reference='candidates'`` only.

    ``{id}.filter.json`` holds what the report shows without the candidates: the reference, label names,
    tau per label, and label, anomaly score and kept flag of every candidate.
    """
    import json

    import h5py

    from scmaskgan.io.atomic import write_text_atomic
    from scmaskgan.method.anomaly import filter_candidates as run_filter

    params = params or FilterParams()
    paths = output_paths("filter", outdir, sample_id)
    run_filter(Path(candidates_h5), paths["filtered"], params, None if images_h5 is None else Path(images_h5))
    with h5py.File(paths["filtered"], "r") as f:
        summary = {
            "sample": sample_id,
            "reference": params.reference,
            "label_names": [n.decode() if isinstance(n, bytes) else str(n) for n in f["label_names"][:]],
            "tau": [float(v) for v in f["tau"][:]],
            "labels": f["labels"][:].tolist(),
            "scores": [round(float(v), 6) for v in f["scores"][:]],
            "kept": f["kept"][:].astype(bool).tolist(),
        }
    write_text_atomic(paths["json"], json.dumps(summary) + "\n")
    return paths


def impute(
    qc_h5ad: Path,
    images_h5: Path,
    filtered_h5: Path,
    outdir: Path,
    sample_id: str,
    params: ImputeParams | None = None,
) -> dict[str, Path]:
    """IMPUTE: fill dropouts from the nearest retained candidates; writes ``{id}.imputed.h5ad``.

    Cells, genes, labels and encoding come from ``images.h5``; the values to impute
    from ``qc.h5ad`` (observed values are copied from it in ``zeros`` mode); the
    candidates FILTER kept from ``filtered_h5``. ``{id}.impute.json`` holds the same
    summary as ``uns['scmaskgan']`` and the shape; ``{id}.evaluation/`` the paper's metrics
    of the imputation against its input (:func:`evaluate_sample`).
    """
    import json

    import numpy as np

    from scmaskgan.errors import InputError
    from scmaskgan.io.atomic import write_text_atomic
    from scmaskgan.io.h5ad import read_h5ad, write_h5ad
    from scmaskgan.method.generate import read_candidates
    from scmaskgan.method.images_h5 import ImageStore
    from scmaskgan.method.imputation import impute_matrix, uses_expected_values
    from scmaskgan.pipeline.imputed import annotate, imputation_record
    from scmaskgan.pipeline.memory import return_large_blocks_to_the_system

    params = params or ImputeParams()
    paths = output_paths("impute", outdir, sample_id)
    adata = read_h5ad(qc_h5ad)
    with ImageStore(images_h5) as store:
        enc, labels, label_names = store.encoding, store.labels, list(store.label_names)
        cells, genes = list(store.cells), list(store.genes)
        label_source = str(store.attrs.get("label_source", "unknown"))
    kept = read_candidates(Path(filtered_h5), expected=uses_expected_values(params.mode))
    if [str(c) for c in adata.obs_names] != cells or [str(g) for g in adata.var_names] != genes:
        raise InputError(f"{qc_h5ad} and {images_h5} hold different cells or genes (not from one sample run)")
    kept.check_made_from(Path(filtered_h5), Path(images_h5), label_names, genes)
    return_large_blocks_to_the_system()  # a step process's own setting (see scmaskgan.pipeline.memory); never the API's
    result = impute_matrix(adata.X, labels, kept.values, kept.labels, enc, params, kept.expected)
    record = imputation_record(
        result, params, encoding=enc, label_source=label_source, label_names=label_names,
        extra={"sample": sample_id, "n_candidates": int(len(kept.values)),
               "n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars)},
    )
    annotate(adata, result.values, result.lognorm, np.asarray(label_names, dtype=object)[labels], record)
    evaluate_sample(adata, enc.input_scale, paths["evaluation"], sample_id)
    write_text_atomic(paths["json"], json.dumps(record, indent=2) + "\n")
    write_h5ad(adata, paths["h5ad"])
    return paths


def evaluate_sample(imputed: Any, input_scale: str, folder: Path, sample_id: str) -> Path:
    """The paper's metrics of an imputed AnnData against its ``layers['counts']``, in ``folder``.

    At most :data:`EVALUATE_MAX_CELLS` cells; writes ``{id}.evaluation.json``/``.csv`` and
    its figures (:func:`scmaskgan.analysis.evaluate.write_evaluation`). A failure does not fail the
    step: the json then holds ``error`` and the report shows it. Returns ``folder``.
    """
    import json
    import logging

    import anndata as ad

    from scmaskgan.analysis import evaluate
    from scmaskgan.io.atomic import write_text_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        original = ad.AnnData(X=imputed.layers["counts"], obs=imputed.obs, var=imputed.var)
        result = evaluate.evaluate_imputation(original, imputed, input_scale=input_scale, max_cells=EVALUATE_MAX_CELLS)
        evaluate.write_evaluation(result, folder, sample_id)
    except Exception as exc:  # noqa: BLE001 - the imputation stands; the report shows the failure
        logging.getLogger("scmaskgan.pipeline.steps").warning("evaluating %s failed: %s", sample_id, exc)
        write_text_atomic(folder / f"{sample_id}.evaluation.json",
                          json.dumps({"sample": sample_id, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
    return folder


def integrate(
    imputed: list[Path],
    outdir: Path,
    params: IntegrateParams | None = None,
    samplesheet: Path | None = None,
) -> dict[str, Path]:
    """INTEGRATE: concatenate imputed samples, batch-correct, cluster, find markers.

    Writes ``integrated.h5ad``, ``markers.csv``, ``integration_metrics.csv``,
    ``marker_gene_changes.csv`` and ``figures/`` (see :mod:`scmaskgan.analysis.integrate`); the
    samplesheet adds ``batch`` and metadata columns. One sample: the analysis runs
    without correction and the metrics file says integration was skipped.
    """
    from scmaskgan.analysis.integrate import integrate_files

    return integrate_files(imputed, outdir, params or IntegrateParams(), samplesheet)


def report(results_dir: Path, outdir: Path) -> dict[str, Path]:
    """REPORT: one self-contained ``report.html`` from the small files under ``results_dir``.

    Only JSON, CSV and PNG files are read (the steps' summaries, logs and figures), never
    the h5/h5ad data; sections whose inputs are missing say so (see :mod:`scmaskgan.pipeline.report`).
    """
    from scmaskgan.pipeline.report import write_report

    return {"html": write_report(results_dir, outdir)}
