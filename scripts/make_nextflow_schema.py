#!/usr/bin/env python3
"""Generate the Nextflow parameter layer from ``scmaskgan.core.config`` (the single source).

Writes three things so that they can never drift from the step dataclasses:

* ``nextflow_schema.json``: every flat step parameter (type, default, help text) plus
  the pipeline's own parameters (input/output, containers, resources, executors);
* the step-parameter block of ``nextflow.config`` (between ``// BEGIN GENERATED`` and
  ``// END GENERATED``): one default per flat name;
* the ``ext.args`` block of ``conf/modules.config`` (same markers): for every process,
  the command-line options built from its step's flat params.

Usage: ``python scripts/make_nextflow_schema.py [--check]``. ``--check`` rewrites
nothing and exits 1 when a file is out of date (``tests/test_schema_sync.py`` runs it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any

from scmaskgan.core.config import STEP_PARAMS, flat_name

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "nextflow_schema.json"
NEXTFLOW_CONFIG = ROOT / "nextflow.config"
MODULES_CONFIG = ROOT / "conf" / "modules.config"
BEGIN, END = "// BEGIN GENERATED", "// END GENERATED"

#: Process name of each step (modules/local/<name lower case>).
PROCESS = {
    "qc": "QC", "prepare": "PREPARE", "train": "TRAIN", "generate": "GENERATE",
    "filter": "FILTER", "impute": "IMPUTE", "integrate": "INTEGRATE",
}

#: Step fields a module passes itself instead of through ``ext.args``: the QC label
#: source is per sample (samplesheet ``label_key``, falling back to ``params.label_key``);
#: TRAIN passes ``--threads ${task.cpus}`` and ``params.threads`` overrides it when set.
MODULE_ARGS = {("qc", "label_key")}

#: Flat names shared by several steps get one entry in this group.
SHARED = ("seed", "device")

_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def _p(type_: str, default: Any, description: str, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": type_, "description": description}
    if default is not None:
        entry["default"] = default
    entry.update(extra)
    return entry


#: The pipeline's own parameters (not step options), by schema group.
PIPELINE_GROUPS: dict[str, dict[str, Any]] = {
    "input_output_options": {
        "title": "Input/output options",
        "fa_icon": "fas fa-terminal",
        "description": "Where the samplesheet is and where the results go.",
        "required": ["input", "outdir"],
        "properties": {
            "input": _p(
                "string", None,
                "Samplesheet (CSV or TSV): sample,path[,label_key][,batch] plus optional metadata columns.",
                # no "schema" key: validateParameters() would check the rows of the sheet as given,
                # resolving relative paths against the launch folder; main.nf checks its resolved
                # copy against assets/schema_input.json with samplesheetToList instead
                format="file-path", exists=True, mimetype="text/csv", pattern=r"^\S+\.(csv|tsv)$",
                fa_icon="fas fa-file-csv",
                help_text="One row per sample; the columns are described by assets/schema_input.json and "
                          "docs/usage.md. Relative paths are relative to the samplesheet's folder.",
            ),
            "outdir": _p("string", None, "Results folder (absolute path on cloud storage).",
                         format="directory-path", fa_icon="fas fa-folder-open"),
            "publish_dir_mode": _p(
                "string", "copy", "How results are published from the work folder.",
                enum=["symlink", "rellink", "link", "copy", "copyNoFollow", "move"], fa_icon="fas fa-copy",
            ),
        },
    },
    "container_options": {
        "title": "Container options",
        "fa_icon": "fab fa-docker",
        "description": "Images used by -profile docker, singularity, apptainer (see containers/).",
        "properties": {
            "container_image": _p("string", "ghcr.io/scmaskgan/scmaskgan",
                                  "Image repository (registry/name) built from containers/Dockerfile."),
            "container_tag": _p("string", "0.1.0", "Tag of the CPU image (VARIANT=cpu)."),
            "container_tag_gpu": _p("string", "0.1.0-cuda",
                                    "Tag of the CUDA image (VARIANT=cuda) used by -profile gpu."),
        },
    },
    "resource_options": {
        "title": "Maximum resources",
        "fa_icon": "fas fa-microchip",
        "description": "Upper bounds for any single task (retries scale up to these).",
        "properties": {
            "max_cpus": _p("integer", 16, "Most CPUs a task may request.", minimum=1),
            "max_memory": _p("string", "128.GB", "Most memory a task may request.",
                             pattern=r"^\d+(\.\d+)?\.?\s*(K|M|G|T)?B$"),
            "max_time": _p("string", "240.h", "Longest wall time a task may request.",
                           pattern=r"^(\d+\.?\s*(s|m|h|d|day)\s*)+$"),
        },
    },
    "executor_options": {
        "title": "Executor options",
        "fa_icon": "fas fa-server",
        "description": "Settings of -profile slurm, gpu, awsbatch and google.",
        "properties": {
            "slurm_queue": _p("string", None, "SLURM partition of the CPU tasks (-profile slurm)."),
            "slurm_gpu_queue": _p("string", None,
                                  "SLURM partition of the GPU tasks (-profile slurm,gpu); default: slurm_queue."),
            "slurm_cluster_options": _p("string", "", "Extra sbatch options for every task (e.g. --account=...)."),
            "slurm_gpu_options": _p("string", "--gres=gpu:1",
                                    "sbatch options added to the GPU tasks (TRAIN, GENERATE) with -profile slurm,gpu."),
            "gpu_docker_options": _p("string", "--gpus all",
                                     "docker run options of GPU tasks (-profile docker,gpu)."),
            "gpu_singularity_options": _p("string", "--nv",
                                          "singularity/apptainer exec options of GPU tasks (-profile gpu)."),
            "awsbatch_queue": _p("string", None, "AWS Batch job queue of the CPU tasks (-profile awsbatch)."),
            "awsbatch_gpu_queue": _p("string", None,
                                     "AWS Batch job queue of the GPU tasks (-profile awsbatch,gpu); default: awsbatch_queue."),
            "aws_region": _p("string", "eu-west-1", "AWS region (-profile awsbatch)."),
            "aws_cli_path": _p("string", "/home/ec2-user/miniconda/bin/aws",
                               "Path of the AWS CLI in the AMI of the Batch compute environment (-profile awsbatch)."),
            "google_project": _p("string", None, "Google Cloud project (-profile google)."),
            "google_location": _p("string", "europe-west2", "Google Batch location (-profile google)."),
            "google_gpu_type": _p("string", "nvidia-tesla-t4",
                                  "Accelerator type of the GPU tasks on Google Batch (-profile google,gpu)."),
        },
    },
    "generic_options": {
        "title": "Generic options",
        "fa_icon": "fas fa-file-import",
        "description": "Less common options of the pipeline itself.",
        "properties": {
            "validate_params": _p("boolean", True, "Validate the parameters against this schema before running.",
                                  hidden=True),
        },
    },
}


def _field_type(cls: type, f: dataclasses.Field) -> str:
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return _TYPES[args[0]]


def _nullable(cls: type, f: dataclasses.Field) -> bool:
    return type(None) in typing.get_args(typing.get_type_hints(cls)[f.name])


def step_properties() -> dict[str, dict[str, Any]]:
    """Schema groups of the step parameters: one per step plus the shared ``seed``/``device``.

    Returns
    -------
    Group name → ``{"title", "description", "properties"}``; every flat name appears once.
    """
    groups: dict[str, dict[str, Any]] = {}
    shared: dict[str, Any] = {}
    for step, cls in STEP_PARAMS.items():
        props: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = flat_name(step, f.name)
            entry = _p(_field_type(cls, f), f.default, f.metadata["help"])
            if "choices" in f.metadata:
                entry["enum"] = list(f.metadata["choices"])
            target = shared if name in SHARED else props
            target.setdefault(name, entry)
        groups[f"{step}_options"] = {
            "title": f"{step.upper()} step options",
            "fa_icon": "fas fa-sliders-h",
            "description": (cls.__doc__ or "").strip(),
            "properties": props,
        }
    groups["shared_step_options"] = {
        "title": "Options shared by the steps",
        "fa_icon": "fas fa-random",
        "description": "The random seed and the compute device, used by every step that takes them.",
        "properties": {name: shared[name] for name in SHARED},
    }
    return groups


def build_schema() -> dict[str, Any]:
    """The complete ``nextflow_schema.json`` (JSON Schema draft 2020-12, nf-schema 2 layout)."""
    defs = {**PIPELINE_GROUPS, **step_properties()}
    for group in defs.values():
        group.setdefault("type", "object")
    ordered = {name: {k: g[k] for k in ("title", "type", "fa_icon", "description", "required", "properties")
                      if k in g} for name, g in defs.items()}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://raw.githubusercontent.com/scmaskgan/scmaskgan/main/nextflow_schema.json",
        "title": "scmaskgan pipeline parameters",
        "description": "scMASKGAN: GAN imputation of scRNA-seq dropouts, per sample, then cross-sample integration.",
        "type": "object",
        "$defs": ordered,
        "allOf": [{"$ref": f"#/$defs/{name}"} for name in ordered],
    }


def _groovy(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(value)


def render_params_block() -> str:
    """The step-parameter defaults of ``nextflow.config`` (inside its ``params {}`` block)."""
    lines = []
    for group in step_properties().values():
        lines.append(f"    // {group['title']}")
        for name, entry in group["properties"].items():
            lines.append(f"    {name} = {_groovy(entry.get('default'))}")
    return "\n".join(lines)


def _arg_expr(step: str, f: dataclasses.Field, kind: str, nullable: bool) -> str:
    """One Groovy list element producing ``--option value`` ('' when a nullable param is unset)."""
    name = flat_name(step, f.name)
    option = "--" + f.name.replace("_", "-")
    if kind == "boolean":
        return f"params.{name} ? '{option}' : '--no-{option[2:]}'"
    value = f"'${{params.{name}}}'" if kind == "string" else f"${{params.{name}}}"
    if nullable:
        return f'params.{name} != null ? "{option} {value}" : \'\''
    return f'"{option} {value}"'


def render_ext_args() -> str:
    """``withName`` blocks of ``conf/modules.config`` giving each process its ``ext.args``."""
    blocks = []
    for step, cls in STEP_PARAMS.items():
        items = [
            _arg_expr(step, f, _field_type(cls, f), _nullable(cls, f))
            for f in dataclasses.fields(cls) if (step, f.name) not in MODULE_ARGS
        ]
        body = "".join(f"            {item},\n" for item in items)
        blocks.append(
            f"    withName: '{PROCESS[step]}' {{\n"
            f"        ext.args = {{ [\n{body}        ].findAll().join(' ') }}\n"
            f"    }}"
        )
    return "\n\n".join(blocks)


def replace_block(text: str, block: str, path: Path) -> str:
    """Replace the lines between the BEGIN/END GENERATED markers of ``text`` with ``block``."""
    try:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
    except ValueError:
        sys.exit(f"{path}: missing '{BEGIN}' / '{END}' markers")
    head_line = rest.split("\n", 1)[0]  # keep the marker line's own comment
    indent = head.rsplit("\n", 1)[-1]
    return f"{head}{BEGIN}{head_line}\n{block}\n{indent}{END}{tail}"


def expected_files() -> dict[Path, str]:
    """Every generated file's expected full content."""
    return {
        SCHEMA: json.dumps(build_schema(), indent=4) + "\n",
        NEXTFLOW_CONFIG: replace_block(NEXTFLOW_CONFIG.read_text(), render_params_block(), NEXTFLOW_CONFIG),
        MODULES_CONFIG: replace_block(MODULES_CONFIG.read_text(), render_ext_args(), MODULES_CONFIG),
    }


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` verify) the generated files; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a generated file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, content in expected_files().items():
        if path.is_file() and path.read_text() == content:
            continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            path.write_text(content)
    if args.check and stale:
        print(f"out of date (run scripts/make_nextflow_schema.py): {', '.join(map(str, stale))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
