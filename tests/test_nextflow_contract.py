"""Contract test: every module's command line, rendered as Nextflow renders it, runs.

For each ``modules/local/<step>/main.nf`` the ``script:`` block is evaluated (Groovy, with
the Nextflow language server's runtime) with ``task.ext.args`` from ``conf/modules.config``,
the params of ``-profile test`` (``conf/test.config``) and real input files: the outputs
of the step functions on the test profile's data (``assets/test/``). The command runs in a
task-like folder with ``bin/`` on ``PATH``, and every file named in the module's ``emit:``
outputs must exist. This proves that modules, ``bin/``, the CLI and the steps agree.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scmaskgan import steps
from scmaskgan.config import step_params_from_flat

REPO = Path(__file__).resolve().parents[1]
NF = REPO / "tests" / "nextflow"
MODULES = ("qc", "prepare", "train", "generate", "filter", "impute", "integrate", "report")
SAMPLE_STEPS = MODULES[:6]
SAMPLES = {  # sample id -> (counts, label_key) as in assets/test/samplesheet.csv
    "pbmc_a": (REPO / "assets/test/pbmc_a.h5ad", "cell_type"),
    "pbmc_b": (REPO / "assets/test/pbmc_b.csv.gz", str(REPO / "assets/test/pbmc_b_labels.csv")),
}
SAMPLE = "pbmc_b"  # the sample the per-sample modules run on (its labels come from a file)

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="java (17+) is needed to render modules")


def module_parts(step: str) -> dict[str, Any]:
    """The ``script:`` block, the output file expressions and the inputs of a module."""
    text = (REPO / "modules" / "local" / step / "main.nf").read_text()
    process = re.search(r"^process (\w+) \{", text, re.M).group(1)
    inputs = text.split("\n    input:\n", 1)[1].split("\n    output:\n", 1)[0]
    outputs = text.split("\n    output:\n", 1)[1].split("\n    script:\n", 1)[0]
    script = text.split("\n    script:\n", 1)[1].split("\n    stub:\n", 1)[0]
    return {
        "process": process,
        "script": script,
        "inputs": re.findall(r"path\(?\s*(\w+)\)?(?:,\s*stageAs:\s*'([^']*)')?", inputs),
        "outputs": re.findall(r"path\(?\s*(\"[^\"]*\"|'[^']*')", outputs),
    }


def ext_args() -> dict[str, str]:
    """Process name -> the Groovy expression of its ``ext.args`` in conf/modules.config."""
    text = (REPO / "conf" / "modules.config").read_text()
    return dict(re.findall(r"withName: '(\w+)' \{\s*ext\.args = \{ (.*?) \}\n\s*\}", text, re.S))


def render(tasks: list[dict[str, Any]], tmp: Path) -> dict[str, Any]:
    """Evaluate the modules' ext.args, scripts and outputs in one JVM (RenderScripts.groovy)."""
    jar = subprocess.run(["bash", str(NF / "fetch_jar.sh")], capture_output=True, text=True, check=True)
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    defaults = {
        name: entry.get("default")
        for group in schema["$defs"].values() for name, entry in group["properties"].items()
    }
    request = {
        "defaults": defaults,
        "profile_config": str(REPO / "conf" / "test.config"),
        "project_dir": str(REPO),
        "ext_args": ext_args(),
        "tasks": tasks,
    }
    (tmp / "request.json").write_text(json.dumps(request))
    result = subprocess.run(
        ["java", "-XX:TieredStopAtLevel=1", "-cp", jar.stdout.strip(), "groovy.ui.GroovyMain",
         str(NF / "RenderScripts.groovy"), str(tmp / "request.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def run_steps(flat: dict[str, Any], outdir: Path) -> dict[str, str]:
    """Run the step functions on the test data, into the embedded runner's layout under ``outdir``.

    Returns step -> reason for every step that could not run, itself or an earlier one
    (e.g. "the TRAIN step is not implemented yet"): the modules concerned are skipped.
    """
    failed: dict[str, str] = {}

    def attempt(step: str, needs: tuple[str, ...], func: Any, *args: Any, **kwargs: Any) -> None:
        missing = [s for s in needs if s in failed]
        if missing:
            failed.setdefault(step, failed[missing[0]])
            return
        try:
            func(*args, **kwargs)
        except NotImplementedError as exc:
            failed[step] = f"the {step.upper()} step is not implemented yet ({exc})"

    par = {step: step_params_from_flat(step, flat) for step in (*SAMPLE_STEPS, "integrate")}
    for sid, (counts, label_key) in SAMPLES.items():
        o = {s: steps.output_paths(s, outdir / s, sid) for s in SAMPLE_STEPS}
        qc_params = dataclasses.replace(par["qc"], label_key=label_key)
        attempt("qc", (), steps.qc, counts, outdir / "qc", sid, qc_params)
        attempt("prepare", ("qc",), steps.prepare, o["qc"]["h5ad"], outdir / "prepare", sid, par["prepare"])
        attempt("train", ("prepare",), steps.train, o["prepare"]["images"], outdir / "train", sid, par["train"])
        attempt("generate", ("train",), steps.generate, o["train"]["model"], o["prepare"]["images"],
                outdir / "generate", sid, par["generate"])
        attempt("filter", ("generate",), steps.filter_candidates, o["generate"]["candidates"],
                outdir / "filter", sid, par["filter"])
        attempt("impute", ("filter",), steps.impute, o["qc"]["h5ad"], o["prepare"]["images"],
                o["filter"]["filtered"], outdir / "impute", sid, par["impute"])
    imputed = [steps.output_paths("impute", outdir / "impute", sid)["h5ad"] for sid in SAMPLES]
    attempt("integrate", ("impute",), steps.integrate, imputed, outdir / "integrate", par["integrate"],
            REPO / "assets/test/samplesheet.csv")
    attempt("report", ("integrate",), steps.report, outdir, outdir / "report")
    return failed


def staged_inputs(step: str, results: Path) -> dict[str, list[Path] | Path | None]:
    """Input name -> the real file(s) a module receives (None: the optional input is absent)."""
    def out(s: str, key: str, sid: str = SAMPLE) -> Path:
        return steps.output_paths(s, results / s, sid)[key]

    if step == "report":
        return {
            name: sorted(p for p in (results / folder).iterdir())
            for name, folder in (("qc", "qc"), ("train", "train"), ("filtered", "filter"),
                                 ("impute", "impute"), ("integrate", "integrate"))
        }
    return {
        "qc": {"counts": SAMPLES[SAMPLE][0], "labels": Path(SAMPLES[SAMPLE][1])},
        "prepare": {"qc_h5ad": out("qc", "h5ad")},
        "train": {"images": out("prepare", "images")},
        "generate": {"model": out("train", "model"), "images": out("prepare", "images")},
        "filter": {"candidates": out("generate", "candidates")},
        "impute": {"qc_h5ad": out("qc", "h5ad"), "images": out("prepare", "images"),
                   "filtered": out("filter", "filtered")},
        "integrate": {"imputed": [out("impute", "h5ad", sid) for sid in SAMPLES],
                      "samplesheet": REPO / "assets/test/samplesheet.csv"},
    }[step]


def stage(workdir: Path, step: str, results: Path) -> dict[str, Any]:
    """Symlink a module's inputs into its task folder as Nextflow does; the names to bind."""
    patterns = dict(module_parts(step)["inputs"])
    binding: dict[str, Any] = {}
    for name, value in staged_inputs(step, results).items():
        files = value if isinstance(value, list) else [value]
        folder = workdir / patterns.get(name, "").rstrip("*")
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for f in files:
            (folder / f.name).symlink_to(f)
            names.append(str((folder / f.name).relative_to(workdir)))
        binding[name] = names if isinstance(value, list) else names[0]
    return binding


def task_request(step: str, workdir: Path, inputs: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    parts = module_parts(step)
    return {"process": parts["process"], "script": parts["script"], "outputs": parts["outputs"],
            "inputs": inputs, "meta": meta, "workdir": str(workdir)}


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Step outputs on the test data, each runnable module staged and rendered (two JVM starts)."""
    tmp = tmp_path_factory.mktemp("contract")
    params = render([], tmp)["params"]
    results = tmp / "results"
    failed = run_steps(params, results)
    requests = []
    for step in MODULES:
        if step in failed:
            continue
        workdir = tmp / "work" / step
        workdir.mkdir(parents=True)
        requests.append(task_request(step, workdir, stage(workdir, step, results), {"id": SAMPLE, "label_key": None}))
    # QC of a sample whose labels are an obs column: no labels file ([]), the column name in meta
    obs_column = task_request("qc", tmp, {"counts": "pbmc_a.h5ad", "labels": []}, {"id": "pbmc_a", "label_key": "cell_type"})
    rendered = render([*requests, obs_column], tmp)["tasks"]
    tasks = {step: {**req, **out} for req, out in zip(requests, rendered, strict=False) for step in [req["process"].lower()]}
    return {"failed": failed, "tasks": tasks, "qc_obs_column": rendered[-1]}


def test_qc_passes_an_obs_column_or_a_labels_file(contract: dict[str, Any]) -> None:
    assert "--label-key 'cell_type'" in contract["qc_obs_column"]["command"]
    if "qc" in contract["tasks"]:
        assert "--label-key 'pbmc_b_labels.csv'" in contract["tasks"]["qc"]["command"]


@pytest.mark.parametrize("step", MODULES)
def test_module_command_runs_and_emits_its_outputs(contract: dict[str, Any], step: str) -> None:
    if step in contract["failed"]:
        pytest.skip(contract["failed"][step])
    task = contract["tasks"][step]
    workdir = Path(task["workdir"])
    path = os.pathsep.join([str(REPO / "bin"), str(REPO / ".venv" / "bin"), os.environ["PATH"]])
    env = {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", task["command"]], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{task['command']}\n{result.stderr[-3000:]}"
    for name in task["outputs"]:
        assert (workdir / name).exists(), f"{task['process']} did not write {name}: {sorted(os.listdir(workdir))}"
    versions = (workdir / "versions.yml").read_text()
    assert versions.startswith(f'"{task["process"]}":\n    scmaskgan: '), versions
    assert re.search(r"scmaskgan: \d+\.\d+", versions), versions


def declared_outputs(step: str) -> dict[str, str]:
    """Emit name -> the file name expression of a module's ``output:`` block (versions excluded)."""
    text = (REPO / "modules" / "local" / step / "main.nf").read_text()
    block = text.split("\n    output:\n", 1)[1].split("\n    script:\n", 1)[0]
    found = dict((m[1], m[0]) for m in re.findall(r"path\(?\s*\"([^\"]+)\"\)?, emit: (\w+)", block))
    assert found.pop("versions") == "versions.yml", step
    return found


@pytest.mark.parametrize("step", MODULES)
def test_module_outputs_are_the_step_outputs(step: str) -> None:
    """Emit names and file names are those of scmaskgan.steps, and meta.yml lists them."""
    if step in SAMPLE_STEPS:
        expected = {k: v.replace("{id}", "${meta.id}") for k, v in steps.SAMPLE_OUTPUTS[step].items()}
    else:
        expected = steps.INTEGRATE_OUTPUTS if step == "integrate" else steps.REPORT_OUTPUTS
    assert declared_outputs(step) == expected
    meta = yaml.safe_load((REPO / "modules" / "local" / step / "meta.yml").read_text())
    assert [next(iter(o)) for o in meta["output"]] == [*expected, "versions"]
    inputs = [name for name, _ in module_parts(step)["inputs"]]
    assert [next(iter(i)) for i in meta["input"] if next(iter(i)) != "meta"] == inputs
