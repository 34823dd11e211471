"""Parameters of every pipeline step, with their defaults and help texts.

This module is the single source of truth for step parameters: the CLI builds its
options from these dataclasses, the embedded runner fills them from a params file,
the Nextflow schema is checked against them by a test, and every artefact records
the instance it was made with (``dataclasses.asdict``).

Each field carries ``metadata={"help": ...}``; ``choices`` restricts a string field.
"""

from __future__ import annotations

import dataclasses
import numbers
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from scmaskgan.errors import InputError


def _p(
    default: Any,
    help: str,
    choices: tuple[str, ...] | None = None,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A field with its help text, allowed ``choices`` and bounds (``ge``/``gt``/``le``/``lt``)."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = choices
    bounds = {op: bound for op, bound in {"ge": ge, "gt": gt, "le": le, "lt": lt}.items() if bound is not None}
    if bounds:
        meta["bounds"] = bounds
    return field(default=default, metadata=meta)


#: Comparison of each bound name, and how a message writes it.
_BOUND_CHECKS: dict[str, tuple[Callable[[Any, float], bool], str]] = {
    "ge": (operator.ge, ">="),
    "gt": (operator.gt, ">"),
    "le": (operator.le, "<="),
    "lt": (operator.lt, "<"),
}


def _check_field(name: str, value: Any, metadata: Mapping[str, Any]) -> None:
    """Raise a one-line :class:`InputError` when ``value`` is outside a field's choices or bounds.

    ``None`` passes the bounds (it means "unset" for the optional fields).
    """
    choices = metadata.get("choices")
    if choices is not None and value not in choices:
        raise InputError(f"parameter {name}={value!r} is not one of {', '.join(choices)}")
    bounds = metadata.get("bounds", {})
    if value is None or not bounds:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"parameter {name}={value!r} must be a number")
    for op, bound in bounds.items():
        compare, symbol = _BOUND_CHECKS[op]
        if not compare(value, bound):
            raise InputError(f"parameter {name}={value!r} must be {symbol} {bound:g}")


class _Validated:
    """Mixin: validates ``choices`` and ranges (the fields' ``bounds``) after construction."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            _check_field(f.name, getattr(self, f.name), f.metadata)


@dataclass
class QCParams(_Validated):
    """Reading the counts and the scanpy quality control (QC step)."""

    min_genes: int = _p(200, "Keep cells with at least this many detected genes.", ge=0)
    min_cells: int = _p(3, "Keep genes detected in at least this many cells.", ge=0)
    max_mito_pct: float = _p(
        5.0, "Drop cells whose mitochondrial count percentage is this or more.", ge=0, le=100,
    )
    mito_prefix: str | None = _p(
        None, "Prefix of mitochondrial gene names; auto-detects 'MT-' or 'mt-' when unset."
    )
    max_genes: int | None = _p(
        None, "Drop cells with more detected genes than this (doublets); off when unset.", ge=1,
    )
    max_counts: int | None = _p(None, "Drop cells with more total counts than this; off when unset.", ge=1)
    orientation: str = _p(
        "auto",
        "Layout of CSV/TSV input: 'genes-rows' (GEO style, first column gene ids), "
        "'cells-rows', or 'auto' (genes in rows when the row names look like genes or "
        "there are more rows than columns).",
        ("auto", "genes-rows", "cells-rows"),
    )
    input_scale: str = _p(
        "counts",
        "Scale of the input values: 'counts' (non-negative integers) or 'lognorm' "
        "(log1p of library-normalised values; the output is returned on that scale).",
        ("counts", "lognorm"),
    )
    label_key: str | None = _p(
        None,
        "Cell-type labels: an obs column of the input, or a CSV file with columns "
        "'cell,label'. Unset: labels come from automatic Leiden clustering in PREPARE.",
    )
    min_cells_after: int = _p(10, "Fail when fewer cells than this remain after QC.", ge=1)


@dataclass
class PrepareParams(_Validated):
    """Encoding cells as N x N images with masks (PREPARE step)."""

    target_sum: float = _p(1e4, "Library size every cell is normalised to before log1p.", gt=0)
    leiden_resolution: float = _p(
        0.8, "Leiden resolution for automatic labels when no label_key is given.", gt=0,
    )
    n_pcs: int = _p(30, "Principal components used for automatic labelling.", ge=1)
    min_label_cells: int = _p(
        5, "Labels with fewer cells are merged into the label with the nearest centroid.", ge=1,
    )
    chunk_cells: int = _p(1024, "Cells read, encoded and written per chunk (bounds memory).", ge=1)
    seed: int = _p(0, "Random seed.", ge=0)


@dataclass
class TrainParams(_Validated):
    """Training the conditional masked GAN (TRAIN step)."""

    epochs: int = _p(
        30, "Maximum number of epochs, each the same number of adversarial steps whatever the sample size "
        "(early stopping may end training sooner; at 30 the held-out candidates still improve slowly, "
        "docs/method.md); 0 keeps the initialised generator (each label's profile; an ablation).", ge=0,
    )
    batch_size: int = _p(
        64,
        "Mini-batch size. For images larger than 64 x 64 (over 4,096 genes) it shrinks by "
        "(64/N)^2, at least 8, so that a batch holds the same number of pixels (memory and time).", ge=1,
    )
    cells_per_epoch: int | None = _p(
        2048,
        "Training cells drawn per epoch (a new random subset every epoch; passes over all cells are "
        "repeated when the sample has fewer; one pass when unset), so that an epoch is the same number "
        "of adversarial steps and validation and early stopping come at the same pace for any sample size. "
        "Shrinks like batch_size for images larger than 64 x 64.", ge=1,
    )
    lr_g: float = _p(1e-3, "Adam learning rate of the generator (paper: 1e-3).", gt=0)
    lr_d: float = _p(
        1e-3,
        "Adam learning rate of the discriminator (paper: 1e-4, with which the spectrally normalised "
        "discriminator stayed at chance; see docs/method.md).", gt=0,
    )
    beta1: float = _p(
        0.0,
        "Adam beta1 (0, as in StyleGAN2 with its R1 penalty: on Zeisel recall 0.80 of the real level at 30 epochs "
        "against 0.75 with 0.5, three seeds; docs/method.md).", ge=0, lt=1,
    )
    beta2: float = _p(0.99, "Adam beta2 (0.99, as in StyleGAN2).", ge=0, lt=1)
    ema_decay: float = _p(
        0.99,
        "The generator that is validated, early-stopped and saved is an exponential moving average of the "
        "trained one's weights, moved by 1 - ema_decay at every step (0.99: about the last 100 steps, 3 epochs; "
        "0: the trained generator itself). GAN training circles rather than settles; on Zeisel's mouse brain "
        "the held-out energy gap of the average fell smoothly 0.036 -> 0.010 where the generator's own jumped "
        "between 0.004 and 0.054 from epoch to epoch (docs/method.md).", ge=0, lt=1,
    )
    lambda_rec: float = _p(10.0, "Weight of the masked reconstruction loss.", ge=0)
    rec_loss: str = _p(
        "moments",
        "Reconstruction term: 'moments' (masked per-label mean and detection rate), "
        "'inpaint' (generator conditioned on a masked real cell) or 'none'.",
        ("moments", "inpaint", "none"),
    )
    inpaint_fraction: float = _p(
        0.2, "With rec_loss='inpaint': fraction of a cell's observed genes hidden from the generator.",
        gt=0, lt=1,
    )
    base_channels: int = _p(
        16, "Channels of the generator's first convolution block (paper: 32; 16 is as good and 1.6x faster on CPU).",
        ge=1,
    )
    latent_dim: int | None = _p(None, "Noise dimension; the image side N when unset (as in the paper).", ge=1)
    factor_rank: int = _p(
        16,
        "Most factors per label of the generator's data-initialised factor loadings: its first latent "
        "coordinates drive each label's significant within-label principal components (above those of its "
        "cells with every gene permuted on its own, so independent genes get none), kept fixed while the "
        "other paths train, and are drawn from the training cells' own scores on them (docs/method.md); 0 disables. "
        "At most latent_dim.", ge=0,
    )
    learned_latent: str = _p(
        "none",
        "Latent coordinates the generator's convolutional and whole-cell paths see when it has factor "
        "loadings: 'none' (the label and depth only: a candidate's shared variation is the measured factors, "
        "and training learns each label's profile and its dependence on depth) or 'free' (also the coordinates "
        "beyond the factors', so that training may add variation the factors miss; on samples of 300-1,500 "
        "cells it added variation no real state has, docs/method.md). The factor coordinates reach the "
        "loadings only, in both.", ("none", "free"),
    )
    patience: int = _p(
        6, "Early stopping: epochs without improvement of the smoothed held-out candidate quality.", ge=1,
    )
    min_epochs: int = _p(10, "Never stop before this many epochs.", ge=0)
    val_fraction: float = _p(0.1, "Fraction of cells held out for the validation signal.", ge=0, lt=1)
    grad_clip: float = _p(1.0, "Gradient norm clipping (0 disables).", ge=0)
    r1_gamma: float = _p(
        0.1,
        "Weight of the discriminator's R1 penalty (gamma/2 x squared gradient norm on real cells; 0 disables), "
        "which keeps it from memorising small samples.", ge=0,
    )
    r1_interval: int = _p(
        4,
        "Apply the R1 penalty on every this many discriminator steps, weighted by as much (lazy "
        "regularisation as in StyleGAN2): 4 makes a step about 17-20% cheaper than 1, with the same held-out "
        "discriminator accuracy and candidate quality now that the discriminator's augmentation limits its "
        "memorising (without it, 4 had left the discriminator weaker on 300 PBMCs).", ge=1,
    )
    augment_target: float = _p(
        0.6,
        "Adaptive discriminator augmentation (Karras et al. 2020): the discriminator sees real and generated "
        "cells with a fraction p of their observed genes hidden (extra dropouts), p raised while the mean sign "
        "of its output on real training cells is above this target (it is memorising them) and lowered below "
        "it; 0 disables.", ge=0, lt=1,
    )
    augment_cells: int = _p(
        20000, "Adaptive augmentation: training cells over which p can move from 0 to 1 (its speed).", ge=1,
    )
    checkpoint_every: int = _p(10, "Write a checkpoint every this many epochs.", ge=1)
    resume: bool = _p(False, "Resume from the last checkpoint in the output folder.")
    device: str = _p("auto", "'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    amp: bool = _p(True, "Mixed precision on CUDA (ignored elsewhere).")
    threads: int | None = _p(None, "CPU threads for torch; all available when unset.", ge=1)
    seed: int = _p(0, "Random seed.", ge=0)


@dataclass
class GenerateParams(_Validated):
    """Sampling candidate cells per label (GENERATE step)."""

    candidates_per_cell: float = _p(2.0, "Candidates generated per real cell of a label.", gt=0)
    min_candidates: int = _p(200, "At least this many candidates per label.", ge=1)
    max_candidates: int = _p(4000, "At most this many candidates per label.", ge=1)
    batch_size: int = _p(
        256, "Candidates generated per forward pass (shrinks by (64/N)^2 for images larger than 64 x 64).",
        ge=1,
    )
    dropouts: str = _p(
        "sample",
        "'sample': candidates have dropouts like real cells (noisy level x Bernoulli detection draw); "
        "'expected': their expected normalised expression (no zeros).",
        ("sample", "expected"),
    )
    recentre: bool = _p(
        False,
        "Also scale the sampled candidates (zeros mode's fills and every neighbour search) gene by gene so "
        "that each label's mean matches its real cells'; their expected values (denoise mode's estimates) "
        "always are. Measured: worse Poisson loss and error against the truth in impute mode 'zeros' (docs/method.md).",
    )
    device: str = _p("auto", "Device, as for TRAIN.")
    seed: int = _p(0, "Random seed.", ge=0)


@dataclass
class FilterParams(_Validated):
    """Dropping anomalous candidates with IsolationForest (FILTER step)."""

    reference: str = _p(
        "cells",
        "What a candidate must not be more anomalous than: 'cells' (an IsolationForest per label fitted on half "
        "of the label's real cells; tau is the highest score among the other half, so a generator that drew "
        "cells exactly like the real ones would lose almost none) or 'candidates' (the paper: fitted on the "
        "label's candidates, tau the Tukey fence Q3 + 1.5 IQR of their scores, which drops the tails of "
        "any candidate set, a faithful one included; docs/method.md).", ("cells", "candidates"),
    )
    tau: float | None = _p(
        None,
        "Anomaly-score threshold: candidates with s(x) > tau are dropped. Unset: set by reference.",
    )
    n_estimators: int = _p(
        100, "Trees per IsolationForest (100: Liu et al. 2008's recommendation and scikit-learn's default).", ge=1
    )
    max_features: float = _p(1.0, "Fraction of genes each tree draws from.", gt=0, le=1)
    seed: int = _p(0, "Random seed.", ge=0)


#: Imputation modes (``ImputeParams.mode``; ``scmaskgan.method.imputation`` documents each).
IMPUTE_MODES: tuple[str, ...] = ("zeros", "denoise", "posterior")


@dataclass
class ImputeParams(_Validated):
    """Filling dropouts from the nearest retained candidates (IMPUTE step)."""

    mode: str = _p(
        "zeros",
        "'zeros' (the paper: only zero entries are filled, observed counts are kept), "
        "'denoise' (every value becomes a Gamma-Poisson posterior mean between the cell's counts and its "
        "neighbours' mean expression, the shrinkage tuned with k and theta on held-out molecules: the "
        "lowest log-scale MCV MSE in the benchmarks) or 'posterior' (the same posterior mean with a prior "
        "unbiased for the counts and the shrinkage estimated per gene: the lowest Poisson loss and error "
        "against the true expression, a higher log-scale MCV MSE; docs/method.md). Every tuning trial is "
        "scored by its held-out MSE and Poisson loss, each relative to the seen counts', plus a penalty for "
        "within-label signal lost.",
        IMPUTE_MODES,
    )
    k: int | None = _p(None, "Nearest candidates per cell; tuned with Optuna when unset.", ge=1)
    k_max: int = _p(50, "Upper bound of the k search.", ge=1)
    theta_sigma: float | None = _p(
        None,
        "Distance threshold theta = mu + theta_sigma * sigma (mean and SD of the label's "
        "cell-candidate distances); candidates beyond it are not used. Tuned when unset.",
    )
    shrinkage: float | None = _p(
        None,
        "Denoise mode: shape alpha of the Gamma prior that the cell's neighbours give each gene "
        "(posterior mean (x + alpha) m / (m + alpha) for a count x and neighbour mean m). Small values "
        "trust the cell's own counts, large ones its neighbours. Unset: tuned (denoise) or estimated for "
        "every gene from how far its counts scatter around their neighbours' mean beyond counting noise "
        "(posterior; empirical Bayes).", gt=0,
    )
    neighbour_space: str = _p(
        "pca",
        "Where nearest candidates are searched: 'pca' (the first n_pcs principal components of the "
        "sample's encoded cells; sampling noise of single genes averages out) or 'genes' (all genes).",
        ("pca", "genes"),
    )
    n_pcs: int = _p(30, "Principal components of the neighbour search (neighbour_space='pca').", ge=1)
    n_trials: int = _p(25, "Optuna trials for tuning k, theta_sigma and (denoise) shrinkage.", ge=1)
    holdout_fraction: float = _p(
        0.1,
        "Validation for tuning: fraction of the molecules held out (binomial split of every "
        "count, as in molecular cross-validation); for log-normalised input, fraction of "
        "the observed entries hidden.", gt=0, lt=1,
    )
    tune_cells: int = _p(
        1000,
        "At most this many cells (a seeded random subsample) are used for tuning; fewer for wide "
        "samples (at most 4 M cells x genes, at least 100 cells).", ge=1,
    )
    seed: int = _p(0, "Random seed.", ge=0)


@dataclass
class IntegrateParams(_Validated):
    """Cross-sample integration of the imputed samples (INTEGRATE step)."""

    method: str = _p(
        "harmony", "Batch correction: harmony, bbknn, scanorama, combat or none.",
        ("harmony", "bbknn", "scanorama", "combat", "none"),
    )
    gene_join: str = _p(
        "inner", "'inner' keeps genes present in every sample; 'outer' fills missing genes with 0.",
        ("inner", "outer"),
    )
    n_hvg: int = _p(2000, "Highly variable genes (batch-aware).", ge=1)
    n_pcs: int = _p(30, "Principal components.", ge=1)
    n_neighbors: int = _p(15, "Neighbours of the kNN graph.", ge=1)
    leiden_resolution: float = _p(0.8, "Leiden resolution of the integrated clusters.", gt=0)
    markers: str | None = _p(None, "Comma-separated marker genes to plot and tabulate across samples.")
    batch_key: str = _p(
        "sample",
        "Groups corrected for: 'sample' (every sample its own batch), 'batch' (the "
        "samplesheet's batch column) or another samplesheet column.",
    )
    n_markers: int = _p(25, "Marker genes per cluster written to markers.csv.", ge=1)
    n_top_markers: int = _p(
        6, "Without --markers: the top marker of each cluster is tabulated and plotted, at most this many genes.",
        ge=1,
    )
    seed: int = _p(0, "Random seed.", ge=0)


StepParams = TypeVar("StepParams")

#: Step name -> its parameter class, in pipeline order.
STEP_PARAMS: dict[str, type] = {
    "qc": QCParams,
    "prepare": PrepareParams,
    "train": TrainParams,
    "generate": GenerateParams,
    "filter": FilterParams,
    "impute": ImputeParams,
    "integrate": IntegrateParams,
}


#: Pipeline-wide (flat) parameter names that differ from the field name. Nextflow params,
#: the runner's params file and ``nextflow_schema.json`` use these flat names; a field
#: not listed here is its own flat name. ``seed`` and ``device`` are shared by all steps.
FLAT_NAME_OVERRIDES: dict[tuple[str, str], str] = {
    ("prepare", "leiden_resolution"): "label_leiden_resolution",
    ("prepare", "n_pcs"): "label_n_pcs",
    ("generate", "batch_size"): "generate_batch_size",
    ("filter", "reference"): "filter_reference",
    ("impute", "mode"): "impute_mode",
    ("impute", "k"): "impute_k",
    ("impute", "n_trials"): "impute_n_trials",
    ("integrate", "method"): "integration_method",
    ("integrate", "n_pcs"): "integrate_n_pcs",
    ("integrate", "leiden_resolution"): "integrate_leiden_resolution",
    ("integrate", "n_neighbors"): "integrate_n_neighbors",
}


def flat_name(step: str, field_name: str) -> str:
    """The pipeline-wide parameter name of a step's field (see :data:`FLAT_NAME_OVERRIDES`)."""
    return FLAT_NAME_OVERRIDES.get((step, field_name), field_name)


def step_params_from_flat(step: str, flat: dict[str, Any]) -> Any:
    """Build one step's parameters from pipeline-wide flat params (unknown keys ignored).

    Parameters
    ----------
    step
        A key of :data:`STEP_PARAMS`.
    flat
        Flat params, as in a Nextflow ``-params-file`` or ``scmaskgan run --params-file``.
    """
    cls = STEP_PARAMS[step]
    values = {}
    for f in dataclasses.fields(cls):
        name = flat_name(step, f.name)
        if name in flat and flat[name] is not None:
            values[f.name] = flat[name]
    return cls(**values)


#: Steps that ``scmaskgan.impute`` and ``scmaskgan impute`` run on one AnnData (no QC, no INTEGRATE).
IMPUTE_CHAIN: tuple[str, ...] = ("prepare", "train", "generate", "filter", "impute")


def flat_fields(steps: Iterable[str] = tuple(STEP_PARAMS)) -> dict[str, tuple[str, dataclasses.Field[Any]]]:
    """Flat name -> (step, field) of the steps' fields, in pipeline order.

    A name several steps share (``seed``, ``device``) appears once, with its first step.
    """
    fields: dict[str, tuple[str, dataclasses.Field[Any]]] = {}
    for step in steps:
        for f in dataclasses.fields(STEP_PARAMS[step]):
            fields.setdefault(flat_name(step, f.name), (step, f))
    return fields


def all_flat_names() -> set[str]:
    """Every flat parameter name the steps understand."""
    return set(flat_fields())


def unread_params(flat: dict[str, Any]) -> list[str]:
    """The keys of flat params that no step reads, each followed by the nearest step parameter when one
    is close (``'epoch (did you mean epochs?)'``), sorted.

    A typo in a params file would otherwise leave the default in force without a word; keys that only
    Nextflow reads (``outdir``, ``max_cpus``, ...) are listed too, for callers that run the steps
    without it.
    """
    import difflib

    known = sorted(all_flat_names())
    out = []
    for key in sorted(set(flat) - set(known)):
        near = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        out.append(f"{key} (did you mean {near[0]}?)" if near else key)
    return out
