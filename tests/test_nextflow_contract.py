"""Contract test: every module's command line, rendered as Nextflow renders it, runs.

Each ``modules/local/<step>/main.nf`` ``script:`` block is evaluated (Groovy, with the
Nextflow language server's runtime) with ``task.ext.args`` from ``conf/modules.config``
and the params of ``-profile test`` (``conf/test.config``). The modules then run in the
order of ``workflows/scmaskgan.nf`` on a real sample of the test profile
(``assets/test/``), each in a task-like folder where its inputs are staged as symlinks
to the files the upstream modules wrote, with ``bin/`` on ``PATH``; every file named in
its ``emit:`` outputs must exist. So modules, ``bin/``, the CLI and the step functions
agree on names, arguments and files. A module whose step is not implemented yet is
skipped with that reason, and so are the modules downstream of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from scmaskgan.io.layout import INTEGRATE_OUTPUTS, REPORT_OUTPUTS, SAMPLE_OUTPUTS, SAMPLE_STEPS, STEP_INPUTS

REPO = Path(__file__).resolve().parents[1]
NF = REPO / "tests" / "nextflow"
TEST_DATA = REPO / "assets" / "test"
MODULES = tuple(STEP_INPUTS)
SAMPLE = "pbmc_b"  # GEO-style CSV counts, labels from a CSV file staged as a path input

#: The files the user gives (inputs without an upstream step in scmaskgan.io.layout.STEP_INPUTS).
USER_FILES = {
    ("qc", "counts"): TEST_DATA / "pbmc_b.csv.gz",
    ("qc", "labels"): TEST_DATA / "pbmc_b_labels.csv",
    ("integrate", "samplesheet"): TEST_DATA / "samplesheet.csv",
}
#: Module input -> where it comes from: an upstream (module, emit) list, or a test file; the DAG
#: of scmaskgan.io.layout, which workflows/scmaskgan.nf must wire the same way.
WIRING: dict[str, dict[str, list[tuple[str, str]] | Path]] = {
    step: {i.module: list(i.sources) if i.sources else USER_FILES[step, i.module] for i in inputs}
    for step, inputs in STEP_INPUTS.items()
}

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="java (17+) is needed to render modules")


def module_parts(step: str) -> dict[str, Any]:
    """The process name, ``script:`` block, inputs (name, stageAs) and output expressions of a module."""
    text = (REPO / "modules" / "local" / step / "main.nf").read_text()
    inputs = text.split("\n    input:\n", 1)[1].split("\n    output:\n", 1)[0]
    outputs = text.split("\n    output:\n", 1)[1].split("\n    script:\n", 1)[0]
    return {
        "process": re.search(r"^process (\w+) \{", text, re.M).group(1),
        "script": text.split("\n    script:\n", 1)[1].split("\n    stub:\n", 1)[0],
        "inputs": re.findall(r"path\(?\s*(\w+)\)?(?:,\s*stageAs:\s*'([^']*)')?", inputs),
        "outputs": re.findall(r"path\(?\s*(\"[^\"]*\"|'[^']*')", outputs),
    }


def declared_outputs(step: str) -> dict[str, str]:
    """Emit name -> the file name expression of a module's ``output:`` block (versions excluded)."""
    text = (REPO / "modules" / "local" / step / "main.nf").read_text()
    block = text.split("\n    output:\n", 1)[1].split("\n    script:\n", 1)[0]
    found = {m[1]: m[0] for m in re.findall(r"path\(?\s*\"([^\"]+)\"\)?, emit: (\w+)", block)}
    assert found.pop("versions") == "versions.yml", step
    return found


def ext_args() -> dict[str, str]:
    """Process name -> the Groovy expression of its ``ext.args`` in conf/modules.config."""
    text = (REPO / "conf" / "modules.config").read_text()
    return dict(re.findall(r"withName: '(\w+)' \{\s*ext\.args = \{ (.*?) \}\n\s*\}", text, re.S))


def render(tasks: list[dict[str, Any]], tmp: Path) -> list[dict[str, Any]]:
    """Evaluate the modules' ext.args, scripts and outputs in one JVM (RenderScripts.groovy)."""
    jar = subprocess.run(["bash", str(NF / "fetch_jar.sh")], capture_output=True, text=True, check=True)
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    defaults = {n: e.get("default") for g in schema["$defs"].values() for n, e in g["properties"].items()}
    request = {"defaults": defaults, "profile_config": str(REPO / "conf" / "test.config"),
               "project_dir": str(REPO), "work_dir": str(tmp / "nf-work"), "ext_args": ext_args(), "tasks": tasks}
    (tmp / "request.json").write_text(json.dumps(request))
    result = subprocess.run(
        ["java", "-XX:TieredStopAtLevel=1", "-cp", jar.stdout.strip(), "groovy.ui.GroovyMain",
         str(NF / "RenderScripts.groovy"), str(tmp / "request.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["tasks"]


def stage(step: str, work: Path) -> dict[str, Any]:
    """Symlink a module's inputs into its task folder (upstream files may not exist yet).

    Returns the input bindings: the staged name, or the list of names of a multi-file input.
    """
    stage_as = dict(module_parts(step)["inputs"])
    binding: dict[str, Any] = {}
    for name, source in WIRING[step].items():
        if isinstance(source, Path):
            files = [source]
        else:
            files = [work / up / declared_outputs(up)[emit].replace("${meta.id}", SAMPLE) for up, emit in source]
        folder = work / step / stage_as.get(name, "").rstrip("*")
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for f in files:
            (folder / f.name).symlink_to(f)
            names.append(str((folder / f.name).relative_to(work / step)))
        # a per-sample input is one file; a cross-sample one is the collected list
        binding[name] = names if isinstance(source, list) and step not in SAMPLE_STEPS else names[0]
    return binding


def run_task(task: dict[str, Any], workdir: Path, first_on_path: list[str] = ()) -> subprocess.CompletedProcess:
    # bin/ first, then this interpreter's folder (its python3 has scmaskgan installed)
    path = os.pathsep.join([*first_on_path, str(REPO / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", task["command"]], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Stage, render (one JVM) and run every module in DAG order on the test sample."""
    work = tmp_path_factory.mktemp("contract")
    requests = []
    for step in MODULES:
        parts = module_parts(step)
        requests.append({"process": parts["process"], "script": parts["script"], "outputs": parts["outputs"],
                         "inputs": stage(step, work), "meta": {"id": SAMPLE, "label_key": None}})
    # QC of a sample whose labels are an obs column: no labels file ([]), the column in meta
    requests.append({**requests[0], "inputs": {"counts": "pbmc_a.h5ad", "labels": []},
                     "meta": {"id": "pbmc_a", "label_key": "cell_type"}})
    *rendered, qc_obs_column = render(requests, work)
    runs: dict[str, Any] = {}
    for step, task in zip(MODULES, rendered, strict=True):
        upstream = {up for src in WIRING[step].values() if not isinstance(src, Path) for up, _ in src}
        blocked = [up for up in MODULES if up in upstream and (runs[up]["skip"] or runs[up]["result"].returncode)]
        if blocked:
            runs[step] = {"task": task, "skip": runs[blocked[0]]["skip"] or f"the {blocked[0].upper()} module failed"}
            continue
        result = run_task(task, work / step)
        missing = re.search(r"NotImplementedError: (.*?)(?: \(set SCMASKGAN_DEBUG|$)", result.stderr, re.M)
        skip = f"the {step.upper()} step is not implemented yet ({missing.group(1)})" if missing else None
        runs[step] = {"task": task, "result": result, "skip": skip, "workdir": work / step}
    return {"runs": runs, "qc_obs_column": qc_obs_column}


def test_qc_passes_an_obs_column_or_a_labels_file(chain: dict[str, Any]) -> None:
    assert "--label-key 'cell_type'" in chain["qc_obs_column"]["command"]
    assert "--label-key 'pbmc_b_labels.csv'" in chain["runs"]["qc"]["task"]["command"]


def test_train_uses_the_task_cpus(chain: dict[str, Any]) -> None:
    assert "--threads 1 " in chain["runs"]["train"]["task"]["command"]


@pytest.mark.slow  # two short trainings
def test_a_retried_train_continues_from_its_checkpoint(chain: dict[str, Any], tmp_path: Path) -> None:
    """Attempt 1 is killed after training (its `cp` fails); attempt 2, in a new task folder,
    resumes from the checkpoint in the work folder: the same log, seconds included."""
    run = chain["runs"]["train"]
    if run["skip"]:
        pytest.skip(run["skip"])
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "cp").write_text("#!/bin/sh\nexit 137\n")
    (fake / "cp").chmod(0o755)
    store = run["workdir"].parent / "nf-work" / "scmaskgan-checkpoints" / SAMPLE
    attempts = [tmp_path / "attempt1", tmp_path / "attempt2"]
    for folder in attempts:
        folder.mkdir()
        images = run["workdir"] / f"{SAMPLE}.images.h5"
        (folder / images.name).symlink_to(images.resolve())
    first = run_task(run["task"], attempts[0], first_on_path=[str(fake)])
    assert first.returncode != 0
    logs = list(store.glob(f"*/{SAMPLE}.train_log.csv"))
    assert len(logs) == 1 and list(logs[0].parent.glob("*.train_checkpoint.pt")), sorted(store.rglob("*"))
    log = logs[0].read_text()
    second = run_task(run["task"], attempts[1])
    assert second.returncode == 0, second.stderr[-3000:]
    assert (attempts[1] / f"{SAMPLE}.train_log.csv").read_text() == log
    assert not logs[0].parent.exists()  # removed once the outputs are in the task folder


@pytest.mark.slow  # eight real processes in a chain (~1 min on 2 cores, mostly imports and numba)
@pytest.mark.parametrize("step", MODULES)
def test_module_command_runs_and_emits_its_outputs(chain: dict[str, Any], step: str) -> None:
    run = chain["runs"][step]
    if run["skip"]:
        pytest.skip(run["skip"])
    task, result, workdir = run["task"], run["result"], run["workdir"]
    assert result.returncode == 0, f"{task['command']}\n{result.stderr[-3000:]}"
    for name in task["outputs"]:
        assert (workdir / name).exists(), f"{task['process']} did not write {name}: {sorted(os.listdir(workdir))}"
    versions = (workdir / "versions.yml").read_text()
    assert versions.startswith(f'"{task["process"]}":\n    scmaskgan: '), versions
    assert re.search(r"scmaskgan: \d+\.\d+", versions), versions


@pytest.mark.parametrize("step", MODULES)
def test_module_outputs_are_the_step_outputs(step: str) -> None:
    """Emit names and file names are those of scmaskgan.pipeline.steps, and meta.yml lists them."""
    if step in SAMPLE_STEPS:
        expected = {k: v.replace("{id}", "${meta.id}") for k, v in SAMPLE_OUTPUTS[step].items()}
    else:
        expected = INTEGRATE_OUTPUTS if step == "integrate" else REPORT_OUTPUTS
    assert declared_outputs(step) == expected
    meta = yaml.safe_load((REPO / "modules" / "local" / step / "meta.yml").read_text())
    assert [next(iter(o)) for o in meta["output"]] == [*expected, "versions"]
    inputs = [name for name, _ in module_parts(step)["inputs"]]
    assert [next(iter(i)) for i in meta["input"] if next(iter(i)) != "meta"] == inputs
    assert list(WIRING[step]) == inputs
