"""The pipeline's spine: one function per step, files in, files out.

``bin/``, the CLI and the embedded runner call these functions and nothing else, so
a Nextflow run and ``scmaskgan run`` execute the same code. Every function writes its
outputs atomically under ``outdir`` with the names given by :func:`output_paths`, and
returns that mapping.
"""

from __future__ import annotations

from pathlib import Path

from scmaskgan.config import (
    FilterParams,
    GenerateParams,
    ImputeParams,
    IntegrateParams,
    PrepareParams,
    QCParams,
    TrainParams,
)

#: Output file name templates of every per-sample step (``{id}`` is the sample id).
SAMPLE_OUTPUTS: dict[str, dict[str, str]] = {
    "qc": {"h5ad": "{id}.qc.h5ad", "json": "{id}.qc.json", "png": "{id}.qc.png"},
    "prepare": {"images": "{id}.images.h5"},
    "train": {"model": "{id}.model.pt", "log": "{id}.train_log.csv", "png": "{id}.train_loss.png"},
    "generate": {"candidates": "{id}.candidates.h5"},
    "filter": {"filtered": "{id}.candidates.filtered.h5"},
    "impute": {"h5ad": "{id}.imputed.h5ad", "json": "{id}.impute.json"},
}

#: Output names of the cross-sample steps.
INTEGRATE_OUTPUTS: dict[str, str] = {
    "h5ad": "integrated.h5ad",
    "markers": "markers.csv",
    "metrics": "integration_metrics.csv",
    "genes": "marker_gene_changes.csv",
    "figures": "figures",
}
REPORT_OUTPUTS: dict[str, str] = {"html": "report.html"}


def output_paths(step: str, outdir: str | Path, sample_id: str) -> dict[str, Path]:
    """Paths a per-sample step writes, keyed by output name.

    Parameters
    ----------
    step
        One of ``qc, prepare, train, generate, filter, impute``.
    outdir
        The step's output folder.
    sample_id
        The sample id from the samplesheet.
    """
    return {k: Path(outdir) / v.format(id=sample_id) for k, v in SAMPLE_OUTPUTS[step].items()}


def qc(input_path: Path, outdir: Path, sample_id: str, params: QCParams | None = None) -> dict[str, Path]:
    """QC: read a counts file, attach labels, filter cells and genes with scanpy.

    Writes ``{id}.qc.h5ad`` (counts in X, QC metrics in obs/var, labels in
    ``obs['scmaskgan_label']`` when given), ``{id}.qc.json`` and ``{id}.qc.png``.
    """
    raise NotImplementedError("QC step: foundation work in progress")


def prepare(qc_h5ad: Path, outdir: Path, sample_id: str, params: PrepareParams | None = None) -> dict[str, Path]:
    """PREPARE: labels (given or Leiden) and the images/masks file ``{id}.images.h5``."""
    raise NotImplementedError("PREPARE step: foundation work in progress")


def train(images_h5: Path, outdir: Path, sample_id: str, params: TrainParams | None = None) -> dict[str, Path]:
    """TRAIN: fit the conditional masked GAN; writes the model, the log and the loss curve."""
    raise NotImplementedError("TRAIN step: method work in progress")


def generate(
    model_pt: Path, images_h5: Path, outdir: Path, sample_id: str, params: GenerateParams | None = None
) -> dict[str, Path]:
    """GENERATE: sample candidate cells for every label into ``{id}.candidates.h5``."""
    raise NotImplementedError("GENERATE step: method work in progress")


def filter_candidates(
    candidates_h5: Path, outdir: Path, sample_id: str, params: FilterParams | None = None
) -> dict[str, Path]:
    """FILTER: IsolationForest per label; keeps scores and the threshold tau."""
    raise NotImplementedError("FILTER step: method work in progress")


def impute(
    qc_h5ad: Path,
    images_h5: Path,
    filtered_h5: Path,
    outdir: Path,
    sample_id: str,
    params: ImputeParams | None = None,
) -> dict[str, Path]:
    """IMPUTE: fill dropouts from the nearest retained candidates; writes ``{id}.imputed.h5ad``."""
    raise NotImplementedError("IMPUTE step: method work in progress")


def integrate(
    imputed: list[Path],
    outdir: Path,
    params: IntegrateParams | None = None,
    samplesheet: Path | None = None,
) -> dict[str, Path]:
    """INTEGRATE: concatenate imputed samples, batch-correct, cluster, find markers."""
    raise NotImplementedError("INTEGRATE step: integration work in progress")


def report(results_dir: Path, outdir: Path) -> dict[str, Path]:
    """REPORT: one self-contained ``report.html`` from everything under ``results_dir``."""
    raise NotImplementedError("REPORT step: evaluation work in progress")
