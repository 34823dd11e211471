"""The pipeline's DAG and file names: one table each, read by the steps, the runner, the
integration, the report and the Nextflow contract test (which checks
``modules/local/*/main.nf`` and ``workflows/scmaskgan.nf`` against them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: Output file name templates of every per-sample step (``{id}`` is the sample id), in DAG order.
SAMPLE_OUTPUTS: dict[str, dict[str, str]] = {
    "qc": {"h5ad": "{id}.qc.h5ad", "json": "{id}.qc.json", "png": "{id}.qc.png"},
    "prepare": {"images": "{id}.images.h5"},
    "train": {"model": "{id}.model.pt", "log": "{id}.train_log.csv", "png": "{id}.train_loss.png",
              "quality": "{id}.train_quality.csv"},
    "generate": {"candidates": "{id}.candidates.h5"},
    "filter": {"filtered": "{id}.candidates.filtered.h5", "json": "{id}.filter.json"},
    "impute": {"h5ad": "{id}.imputed.h5ad", "json": "{id}.impute.json", "evaluation": "{id}.evaluation"},
}
#: The per-sample steps, in the order they run.
SAMPLE_STEPS: tuple[str, ...] = tuple(SAMPLE_OUTPUTS)

#: Output names of the cross-sample steps.
INTEGRATE_OUTPUTS: dict[str, str] = {
    "h5ad": "integrated.h5ad",
    "markers": "markers.csv",
    "metrics": "integration_metrics.csv",
    "genes": "marker_gene_changes.csv",
    "figures": "figures",
    "summary": "integration_summary.json",
}
#: Cells of a sample the IMPUTE step evaluates (its ``{id}.evaluation/`` folder).
EVALUATE_MAX_CELLS = 5000
REPORT_OUTPUTS: dict[str, str] = {"html": "report.html"}


@dataclass(frozen=True)
class StepInput:
    """One input of a step.

    Attributes
    ----------
    module
        Its name in the step's Nextflow module (``modules/local/<step>/main.nf``).
    argument
        The :mod:`scmaskgan.pipeline.steps` function's argument that takes it; ``None`` when the
        function reads it otherwise (QC's labels file comes as ``label_key``, REPORT reads
        the results folder).
    sources
        The upstream ``(step, output)`` pairs it is made of; empty for a file the user gives.
    """

    module: str
    argument: str | None
    sources: tuple[tuple[str, str], ...] = ()


def _from(step: str, *outputs: str) -> tuple[tuple[str, str], ...]:
    return tuple((step, output) for output in outputs)


#: The DAG: every step's inputs, in the order of its module's ``input:`` block.
STEP_INPUTS: dict[str, tuple[StepInput, ...]] = {
    "qc": (StepInput("counts", "input_path"), StepInput("labels", None)),
    "prepare": (StepInput("qc_h5ad", "qc_h5ad", _from("qc", "h5ad")),),
    "train": (StepInput("images", "images_h5", _from("prepare", "images")),),
    "generate": (
        StepInput("model", "model_pt", _from("train", "model")),
        StepInput("images", "images_h5", _from("prepare", "images")),
    ),
    "filter": (
        StepInput("candidates", "candidates_h5", _from("generate", "candidates")),
        StepInput("images", "images_h5", _from("prepare", "images")),
    ),
    "impute": (
        StepInput("qc_h5ad", "qc_h5ad", _from("qc", "h5ad")),
        StepInput("images", "images_h5", _from("prepare", "images")),
        StepInput("filtered", "filtered_h5", _from("filter", "filtered")),
    ),
    "integrate": (
        StepInput("imputed", "imputed", _from("impute", "h5ad")),
        StepInput("samplesheet", "samplesheet"),
    ),
    "report": (  # the small files only: JSON, CSV, PNG and summaries
        StepInput("qc", None, _from("qc", "json", "png")),
        StepInput("train", None, _from("train", "log", "png", "quality")),
        StepInput("filtered", None, _from("filter", "json")),
        StepInput("impute", None, _from("impute", "json", "evaluation")),
        StepInput("integrate", None, _from("integrate", *(o for o in INTEGRATE_OUTPUTS if o != "h5ad"))),
    ),
}


def output_paths(step: str, outdir: str | Path, sample_id: str) -> dict[str, Path]:
    """Paths a per-sample step writes, keyed by output name.

    Parameters
    ----------
    step
        One of :data:`SAMPLE_STEPS`.
    outdir
        The step's output folder.
    sample_id
        The sample id from the samplesheet.
    """
    return {k: Path(outdir) / v.format(id=sample_id) for k, v in SAMPLE_OUTPUTS[step].items()}


def input_files(step: str, folder_of: Callable[[str], Path], sample_id: str) -> dict[str, Path]:
    """The upstream files a per-sample step's function takes (argument -> path, by :data:`STEP_INPUTS`),
    each upstream step's outputs in ``folder_of(upstream step)``."""
    files: dict[str, Path] = {}
    for entry in STEP_INPUTS[step]:
        for up, output in entry.sources:
            assert entry.argument is not None, (step, entry)
            files[entry.argument] = output_paths(up, folder_of(up), sample_id)[output]
    return files
