"""The ``scmaskgan`` command line (typer).

Step commands are built from the parameter dataclasses in :mod:`scmaskgan.core.config`,
so every step parameter is a ``--option`` with the same name, default and help text
everywhere (CLI, runner params file, Nextflow ``ext.args``). Errors the user can act
on print one line ``scmaskgan: error: ...`` and exit non-zero; set
``SCMASKGAN_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from scmaskgan.core.config import IMPUTE_CHAIN, STEP_PARAMS, flat_fields
from scmaskgan.errors import InputError, error_line
from scmaskgan.pipeline import steps

app = typer.Typer(
    name="scmaskgan",
    help="scMASKGAN: GAN imputation of scRNA-seq dropouts (pipeline steps, runner, API).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_KW = inspect.Parameter.KEYWORD_ONLY


def _field_option(name: str, step: str, f: dataclasses.Field[Any]) -> inspect.Parameter:
    """The typer option ``--name`` of a step parameter's field: its type, default, help and choices."""
    help_text = f.metadata.get("help", "")
    if "choices" in f.metadata:
        help_text += f" [{'|'.join(f.metadata['choices'])}]"
    kind = typing.get_type_hints(STEP_PARAMS[step])[f.name]
    annotation = Annotated[kind, typer.Option(help=help_text, show_default=True)]  # type: ignore[valid-type]
    return inspect.Parameter(name, _KW, default=f.default, annotation=annotation)


def _param_options(step: str) -> list[inspect.Parameter]:
    """typer options for every field of a step's parameters, named by the field."""
    return [_field_option(f.name, step, f) for f in dataclasses.fields(STEP_PARAMS[step])]


def _argument(name: str, help_text: str, kind: Any = Path) -> inspect.Parameter:
    return inspect.Parameter(name, _KW, annotation=Annotated[kind, typer.Argument(help=help_text)])


def _option(name: str, default: Any, help_text: str, kind: Any) -> inspect.Parameter:
    annotation = Annotated[kind, typer.Option(help=help_text)]
    return inspect.Parameter(name, _KW, default=default, annotation=annotation)


OUTDIR = _option("outdir", Path("."), "Output folder.", Path)
SAMPLE_ID = _option("sample_id", None, "Sample id used in output names (default: the input's name).", str | None)


def sample_id_from_path(path: Path) -> str:
    """Sample id from a file or folder name, without data suffixes (.qc.h5ad, .csv.gz, ...)."""
    name = Path(path).name
    for suffix in (".gz", ".h5ad", ".h5", ".pt", ".csv", ".tsv", ".txt", ".mtx", ".qc", ".images", ".imputed",
                   ".model", ".filtered", ".candidates"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name or "sample"


def register_step(
    name: str,
    func: Callable[..., dict[str, Path]],
    arguments: list[inspect.Parameter],
    params_step: str | None,
    help_text: str,
    extra: list[inspect.Parameter] | None = None,
) -> None:
    """Add a command that builds ``params_step``'s parameters from its options and calls ``func``.

    ``func`` receives the arguments and extra options by name, plus ``params=`` when a
    parameter class is given; the outputs it returns are printed one per line.
    """
    params_cls = STEP_PARAMS[params_step] if params_step else None
    field_names = [f.name for f in dataclasses.fields(params_cls)] if params_cls else []
    signature = arguments + list(extra or []) + (_param_options(params_step) if params_step else [])

    def command(**kwargs: Any) -> None:
        values = {k: kwargs.pop(k) for k in field_names}
        if "sample_id" in kwargs and kwargs["sample_id"] is None:
            kwargs["sample_id"] = sample_id_from_path(kwargs[arguments[0].name])
        if params_cls is not None:
            kwargs["params"] = params_cls(**values)
        outputs = func(**kwargs)
        for key, path in (outputs or {}).items():
            typer.echo(f"{key}\t{path}")

    command.__signature__ = inspect.Signature(signature)  # type: ignore[attr-defined]
    command.__doc__ = help_text
    command.__name__ = name.replace("-", "_")
    app.command(name)(command)


# ---------------------------------------------------------------- per-sample steps
register_step(
    "qc", steps.qc,
    [_argument("input_path", "Counts: .h5ad, 10x folder, 10x .h5, or CSV/TSV(.gz).")],
    "qc", "QC: read counts, attach labels, filter cells and genes.",
    [OUTDIR, SAMPLE_ID],
)
register_step(
    "prepare", steps.prepare,
    [_argument("qc_h5ad", "The QC step's {id}.qc.h5ad.")],
    "prepare", "PREPARE: labels and the N x N images with masks ({id}.images.h5).",
    [OUTDIR, SAMPLE_ID],
)
register_step(
    "train", steps.train,
    [_argument("images_h5", "The PREPARE step's {id}.images.h5.")],
    "train", "TRAIN: fit the conditional masked GAN.",
    [OUTDIR, SAMPLE_ID],
)
register_step(
    "generate", steps.generate,
    [_argument("model_pt", "The TRAIN step's {id}.model.pt."),
     _argument("images_h5", "The PREPARE step's {id}.images.h5.")],
    "generate", "GENERATE: candidate cells per label.",
    [OUTDIR, SAMPLE_ID],
)
register_step(
    "filter", steps.filter_candidates,
    [_argument("candidates_h5", "The GENERATE step's {id}.candidates.h5."),
     _argument("images_h5", "The PREPARE step's {id}.images.h5 (the real cells candidates are judged against).")],
    "filter", "FILTER: drop candidates more anomalous than the real cells (IsolationForest).",
    [OUTDIR, SAMPLE_ID],
)
register_step(
    "impute-step", steps.impute,
    [_argument("qc_h5ad", "The QC step's {id}.qc.h5ad."),
     _argument("images_h5", "The PREPARE step's {id}.images.h5."),
     _argument("filtered_h5", "The FILTER step's {id}.candidates.filtered.h5.")],
    "impute", "IMPUTE: fill dropouts from the nearest retained candidates.",
    [OUTDIR, SAMPLE_ID],
)

# ---------------------------------------------------------------- one file, every step
#: QC fields ``scmaskgan impute`` also takes (reading the input and its labels).
IMPUTE_READ_FIELDS = ("label_key", "orientation", "input_scale")
#: Step fields meaningless in a one-shot run in a temporary folder.
IMPUTE_SKIPPED = ("resume",)


def _flat_options(steps: tuple[str, ...]) -> list[inspect.Parameter]:
    """typer options named by the pipeline's flat names of the steps' fields (shared names once)."""
    return [_field_option(name, step, f) for name, (step, f) in flat_fields(steps).items() if name not in IMPUTE_SKIPPED]


def impute_command(**kwargs: Any) -> None:
    """Impute one counts file: PREPARE, TRAIN, GENERATE, FILTER and IMPUTE (no QC) into one .h5ad."""
    import tempfile

    from scmaskgan.fit_process import fit_in_child_processes

    input_path, output = kwargs.pop("input_path"), kwargs.pop("output")
    read = {name: kwargs.pop(name) for name in IMPUTE_READ_FIELDS}
    estimator = {"random_state": kwargs.pop("seed"), "label_key": read["label_key"], "mode": kwargs.pop("impute_mode"),
                 "input_scale": read["input_scale"], **kwargs}
    with tempfile.TemporaryDirectory(prefix="scmaskgan-fit-") as tmp:
        # scmaskgan.impute in two halves: fitted in processes of their own (scmaskgan.fit_process),
        # while this one waits holding nothing (torch, scanpy and the data are imported and read after)
        saved = fit_in_child_processes(Path(input_path), read, estimator, Path(tmp) / "fitted.pt")
        from scmaskgan.api import ScMaskGAN
        from scmaskgan.io.counts import read_counts
        from scmaskgan.pipeline.memory import return_large_blocks_to_the_system

        model = ScMaskGAN.load(saved)
    adata = read_counts(input_path, orientation=read["orientation"], input_scale=read["input_scale"])
    return_large_blocks_to_the_system()  # for IMPUTE only: training would pay page faults (scmaskgan.pipeline.memory)
    # the imputed matrices go into the file block by block, never whole in memory
    typer.echo(f"h5ad\t{model.write_transformed(adata, output)}")


impute_command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        _argument("input_path", "Counts: .h5ad, 10x folder, 10x .h5, or CSV/TSV(.gz)."),
        inspect.Parameter("output", _KW, annotation=Annotated[
            Path, typer.Option("--output", "-o", help="The imputed .h5ad to write ({id}.imputed.h5ad layout).")
        ]),
    ]
    + [p for p in _param_options("qc") if p.name in IMPUTE_READ_FIELDS]
    + _flat_options(IMPUTE_CHAIN)
)
app.command("impute")(impute_command)

# ---------------------------------------------------------------- cross-sample steps
register_step(
    "integrate", steps.integrate,
    [_argument("imputed", "The IMPUTE step's {id}.imputed.h5ad files.", list[Path])],
    "integrate", "INTEGRATE: batch-correct, cluster and find markers across samples.",
    [OUTDIR, _option("samplesheet", None, "Samplesheet (adds batch and metadata columns).", Path | None)],
)
register_step(
    "report", steps.report,
    [_argument("results_dir", "A pipeline results folder.")],
    None, "REPORT: one self-contained report.html.",
    [OUTDIR],
)


@app.command("run")
def run_command(
    input: Annotated[Path, typer.Option("--input", "-i", help="Samplesheet CSV (sample,path[,label_key][,batch]).")],
    outdir: Annotated[Path, typer.Option("--outdir", "-o", help="Results folder.")] = Path("results"),
    params_file: Annotated[
        Path | None, typer.Option(help="Flat params (JSON/YAML), the same file as nextflow -params-file.")
    ] = None,
    max_workers: Annotated[int, typer.Option(help="Samples processed in parallel.")] = 1,
    resume: Annotated[bool, typer.Option(help="Skip steps whose outputs are complete and up to date.")] = True,
) -> None:
    """Run the whole pipeline (all samples, integration, report) without Nextflow."""
    from scmaskgan.core.config import unread_params
    from scmaskgan.pipeline.runner import load_params_file, run_pipeline

    params = load_params_file(params_file)
    unread = unread_params(params)
    if unread:
        typer.echo(f"warning: {params_file}: not read by any step (defaults apply): {', '.join(unread)}", err=True)
    records = run_pipeline(
        input, outdir, params, max_workers=max_workers, resume=resume, show_progress=sys.stderr.isatty(),
    )
    cached = sum(r.status == "cached" for r in records)
    typer.echo(f"{len(records)} steps ({cached} reused from a previous run); results in {outdir}")
    typer.echo(f"report\t{outdir / 'report' / 'report.html'}")


@app.command("versions")
def versions_command() -> None:
    """Print the versions of scmaskgan and its main dependencies (YAML, as nf-core's versions.yml)."""
    from scmaskgan.core.versions import package_versions

    for name, version in package_versions().items():
        typer.echo(f"{name}: {version}")


@app.command("demo-data")
def demo_data_command(
    outdir: Annotated[Path, typer.Argument(help="Folder for the demo samples and samplesheet.csv.")],
    n_samples: Annotated[int, typer.Option(help="Samples to split the 700 real PBMCs into.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the stratified split.")] = 0,
) -> None:
    """Write a real multi-sample demo (scanpy's pbmc68k_reduced as counts) and its samplesheet."""
    from scmaskgan.io.demo_data import write_demo

    for key, path in write_demo(outdir, n_samples=n_samples, seed=seed).items():
        typer.echo(f"{key}\t{path}")


def _load_mapping(path: Path | None) -> dict[str, Any]:
    """A JSON/YAML mapping file (as ``--params-file``), or ``{}`` without one."""
    if path is None:
        return {}
    from scmaskgan.pipeline.runner import load_params_file

    return load_params_file(path)


@app.command("evaluate")
def evaluate_command(
    original: Annotated[Path, typer.Argument(help="Original counts (any format QC reads); with --mcv, the counts to cross-validate.")],
    imputed: Annotated[
        Path | None, typer.Argument(help="Imputed .h5ad (the IMPUTE step's {id}.imputed.h5ad); not with --mcv.")
    ] = None,
    mcv: Annotated[bool, typer.Option("--mcv", help="Molecular cross-validation of ORIGINAL: split, impute (each of --modes), score.")] = False,
    outdir: Annotated[Path, typer.Option("--outdir", "-o", help="Output folder.")] = Path("."),
    sample_id: Annotated[str | None, typer.Option(help="Name used in output files (default: from the input's name).")] = None,
    label_key: Annotated[
        str | None, typer.Option(help="obs column with known labels (default: scmaskgan_label when present). Cluster "
                                      "scores are accuracy only if the method computed its own labels; else marked circular.")
    ] = None,
    genes: Annotated[str | None, typer.Option(help="Comma-separated genes of the gene-gene correlation (default: 30 most variable).")] = None,
    input_scale: Annotated[str, typer.Option(help="Scale of both inputs: counts or lognorm.")] = "counts",
    resolution: Annotated[float, typer.Option(help="Leiden resolution of the clusters scored against the labels.")] = 1.0,
    modes: Annotated[str, typer.Option(help="--mcv: comma-separated imputation modes to score (zeros, denoise, posterior).")] = "zeros,denoise",
    p_train: Annotated[float, typer.Option(help="--mcv: binomial probability of a molecule going to the train part.")] = 0.9,
    params_file: Annotated[
        Path | None, typer.Option(help="--mcv: keyword arguments of scmaskgan.impute (JSON/YAML).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Metrics of an imputation (the paper's), or molecular cross-validation with --mcv."""
    from scmaskgan import api
    from scmaskgan.analysis import evaluate

    name = sample_id or sample_id_from_path(imputed if imputed is not None else original)
    if mcv:
        if imputed is not None:
            raise InputError("--mcv takes one counts file; it imputes the train part itself")
        outputs = evaluate.mcv_file(
            original, outdir, name, modes=[m.strip() for m in modes.split(",") if m.strip()],
            label_key=label_key, p_train=p_train, seed=seed, imputer=api.impute_copy,
            impute_kwargs=_load_mapping(params_file),
        )
    else:
        if imputed is None:
            raise InputError("evaluate needs ORIGINAL and IMPUTED (or --mcv INPUT)")
        outputs = evaluate.evaluate_files(
            original, imputed, outdir, name, label_key=label_key, input_scale=input_scale,
            genes=[g.strip() for g in genes.split(",")] if genes else None, resolution=resolution, seed=seed,
        )
    for key, path in outputs.items():
        typer.echo(f"{key}\t{path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scmaskgan`` console script; returns the exit code."""
    # Standalone mode lets typer report usage errors (exit 2) and --help (exit 0) itself,
    # whichever click it bundles; everything else raised by a command reaches us here.
    try:
        app(args=argv, prog_name="scmaskgan", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except Exception as exc:  # errors the user can act on, and bugs: one line either way
        if os.environ.get("SCMASKGAN_DEBUG"):
            raise
        line, code = error_line(exc)
        typer.echo(f"scmaskgan: {line}", err=True)
        return code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
