"""What each process gets from the config files under each profile, as Nextflow resolves it.

The ``process`` settings are collected from nextflow.config (includes and profiles
expanded) and applied in the order of Nextflow's ``ProcessConfig.applyConfig``
(``tests/nfharness.py``); the winning value texts are then evaluated with Groovy
(``tests/nextflow/EvalSettings.groovy``) for a task of that process.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from nfharness import NF, REPO, config_settings, jar, process_settings

from scmaskgan import cli
from scmaskgan.errors import EXIT_OUT_OF_MEMORY
from scmaskgan.method import train

SCHEMA = json.loads((REPO / "nextflow_schema.json").read_text())
DEFAULTS = {n: e.get("default") for g in SCHEMA["$defs"].values() for n, e in g["properties"].items()}
MODULES = sorted((REPO / "modules" / "local").glob("*/main.nf"))
EVALUATED = ("accelerator", "container", "containerOptions", "queue", "clusterOptions", "errorStrategy")

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="java (17+) evaluates the settings")


def module_labels() -> dict[str, list[str]]:
    """Process name -> its labels, from modules/local/*/main.nf."""
    found = {}
    for module in MODULES:
        text = module.read_text()
        found[re.search(r"^process (\w+)", text, re.M)[1]] = re.findall(r"^\s+label '(\w+)'", text, re.M)
    return found


def resolve(cases: list[tuple[str, list[str], dict[str, Any]]], tmp_path: Path, exit_status: int | None = None) -> list[dict]:
    """Evaluated settings of (process, profiles, params) cases, one JVM for all."""
    labels = module_labels()
    request = []
    for process, profiles, params in cases:
        settings = process_settings(process, labels[process], profiles, qualified=f"SCMASKGAN:{process}")
        request.append({
            "settings": {k: v for k, v in settings.items() if k in EVALUATED},
            "params": {**DEFAULTS, **params}, "task": {"attempt": 1, "exitStatus": exit_status, "process": process},
            "workflow": {"containerEngine": "docker" if "docker" in profiles else "singularity"},
        })
    (tmp_path / "request.json").write_text(json.dumps(request))
    result = subprocess.run(
        ["java", "-XX:TieredStopAtLevel=1", "-cp", jar(), "groovy.ui.GroovyMain", str(NF / "EvalSettings.groovy"),
         str(tmp_path / "request.json")], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_one_selector_sets_the_container() -> None:
    """No second ``container`` setting whose effect would depend on selector order."""
    containers = [s for s in config_settings(REPO / "nextflow.config") if s[1] == "container"]
    assert len(containers) == 1, containers
    assert containers[0][0] == ("process", "withName:.*"), containers


@needs_java
def test_gpu_profile_runs_gpu_processes_in_the_cuda_image(tmp_path: Path) -> None:
    cpu = f"{DEFAULTS['container_image']}:{DEFAULTS['container_tag']}"
    gpu = f"{DEFAULTS['container_image']}:{DEFAULTS['container_tag_gpu']}"
    gpu_processes = {p for p, labels in module_labels().items() if "process_gpu" in labels}
    assert gpu_processes == {"TRAIN", "GENERATE"}
    processes = sorted(module_labels())
    cases = [(p, profiles, {}) for profiles in (["docker", "gpu"], ["docker"], ["singularity", "gpu"]) for p in processes]
    for (process, profiles, _), got in zip(cases, resolve(cases, tmp_path), strict=True):
        on_gpu = process in gpu_processes and "gpu" in profiles
        assert got["container"] == (gpu if on_gpu else cpu), (process, profiles, got)
        assert bool(got.get("accelerator")) is on_gpu, (process, profiles, got)
        if on_gpu:
            assert got["containerOptions"] == ("--gpus all" if "docker" in profiles else "--nv")


@needs_java
def test_gpu_and_cpu_tasks_get_their_own_queues_and_options(tmp_path: Path) -> None:
    params = {"slurm_queue": "cpu", "slurm_gpu_queue": "gpu", "slurm_cluster_options": "--account=lab",
              "awsbatch_queue": "cpu-q", "awsbatch_gpu_queue": "gpu-q", "google_gpu_type": "nvidia-l4"}
    cases = [(p, ["slurm", "gpu"], params) for p in ("QC", "TRAIN", "INTEGRATE", "GENERATE")]
    cases += [(p, ["awsbatch", "docker", "gpu"], params) for p in ("QC", "TRAIN")]
    cases += [("TRAIN", ["google", "docker", "gpu"], params), ("TRAIN", ["slurm"], params)]
    got = resolve(cases, tmp_path)
    slurm = {p: g for (p, profiles, _), g in zip(cases[:4], got[:4], strict=True)}
    assert {p: g["queue"] for p, g in slurm.items()} == {"QC": "cpu", "TRAIN": "gpu", "INTEGRATE": "cpu", "GENERATE": "gpu"}
    assert slurm["QC"]["clusterOptions"] == "--account=lab"
    assert slurm["TRAIN"]["clusterOptions"] == "--account=lab --gres=gpu:1"
    assert [g["queue"] for g in got[4:6]] == ["cpu-q", "gpu-q"]
    assert got[6]["accelerator"] == {"request": 1, "type": "nvidia-l4"}
    assert got[7]["queue"] == "cpu" and got[7]["clusterOptions"] == "--account=lab"  # no gpu profile: a CPU task


def test_aws_cli_path_is_a_parameter() -> None:
    aws = {k: v for scope, k, v in config_settings(REPO / "nextflow.config") if scope == ("profiles", "awsbatch", "aws", "batch")}
    assert aws["cliPath"] == "params.aws_cli_path"
    assert DEFAULTS["aws_cli_path"].endswith("/bin/aws")


@needs_java
def test_cuda_out_of_memory_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class OutOfMemoryError(RuntimeError):  # torch.OutOfMemoryError's name, without CUDA
        pass

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train, "fit", fail)  # steps.train imports it when called
    images = tmp_path / "s.images.h5"
    images.write_bytes(b"")
    assert cli.main(["train", str(images), "--outdir", str(tmp_path)]) == EXIT_OUT_OF_MEMORY
    retried = resolve([("TRAIN", ["docker", "gpu"], {})], tmp_path, exit_status=EXIT_OUT_OF_MEMORY)
    assert retried[0]["errorStrategy"] == "retry"
    assert resolve([("TRAIN", ["docker"], {})], tmp_path, exit_status=1)[0]["errorStrategy"] == "finish"


def test_makefile_builds_the_images_the_config_names() -> None:
    make = subprocess.run(["make", "-n", "-C", str(REPO), "image", "image-cpu"], capture_output=True, text=True, check=True)
    tags = re.findall(r"docker build .* -t (\S+) \.", make.stdout)
    image = DEFAULTS["container_image"]
    assert tags == [f"{image}:{DEFAULTS['container_tag_gpu']}", f"{image}:{DEFAULTS['container_tag']}"]


def test_image_holds_the_integration_methods_the_schema_offers() -> None:
    offered = set(SCHEMA["$defs"]["integrate_options"]["properties"]["integration_method"]["enum"]) - {"harmony", "combat", "none"}
    extras = re.search(r"^integration = \[(.*)\]$", (REPO / "pyproject.toml").read_text(), re.M)[1]
    assert offered <= {re.match(r'"([\w-]+)', e.strip())[1] for e in extras.split(",")}
    pins = (REPO / "containers" / "constraints.txt").read_text()
    assert all(re.search(rf"^{name}==", pins, re.M) for name in offered), offered
    for recipe in ("Dockerfile", "scmaskgan.def"):
        assert 'pip install -c containers/constraints.txt ".[integration]"' in (REPO / "containers" / recipe).read_text()


def test_input_parameter_accepts_csv_and_tsv() -> None:
    pattern = SCHEMA["$defs"]["input_output_options"]["properties"]["input"]["pattern"]
    assert re.search(pattern, "samples.csv") and re.search(pattern, "data/samples.tsv")
    assert not re.search(pattern, "samples.xlsx")


def test_module_conda_environments_are_relocatable() -> None:
    version = re.search(r"version = '([^']+)'", (REPO / "nextflow.config").read_text())[1]
    for module in MODULES:
        env = yaml.safe_load((module.parent / "environment.yml").read_text())
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        assert not any(".." in line or line.startswith(("/", ".")) for line in pip), (module, pip)
        assert any(f"@v{version}" in line for line in pip), (module, pip)


def test_versions_yml_lists_the_main_libraries(tmp_path: Path) -> None:
    """The versions block of every module, run as bash, gives YAML with the main libraries."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "scmaskgan"  # prints what `scmaskgan versions` prints
    fake.write_text("#!/bin/sh\nprintf 'python: 3.11\\nscmaskgan: 0.1.0\\nnumpy: 2\\nanndata: 0.12\\n"
                    "scanpy: 1.11\\nscikit-learn: 1.9\\ntorch: 2.13\\n'\n")
    fake.chmod(0o755)
    for module in MODULES:
        text = module.read_text()
        process = re.search(r"^process (\w+)", text, re.M)[1]
        block = re.search(r"(?ms)^    cat <<-END_VERSIONS.*?^    END_VERSIONS$", text)[0]
        shell = block.replace("${task.process}", process).replace("\\$", "$").replace("\\\\", "\\")
        shell = "\n".join(line[4:] for line in shell.splitlines())
        subprocess.run(["bash", "-euo", "pipefail", "-c", shell], cwd=tmp_path, check=True,
                       env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
        versions = yaml.safe_load((tmp_path / "versions.yml").read_text())
        assert versions == {process: {"scmaskgan": "0.1.0", "anndata": 0.12, "scanpy": 1.11,
                                      "scikit-learn": 1.9, "torch": 2.13}}, module
