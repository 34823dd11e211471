"""The Nextflow strict-syntax lint passes on the pipeline and catches broken copies of it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = REPO / "tests" / "nextflow" / "lint.sh"
PIPELINE = ("main.nf", "nextflow.config", "nf-test.config", "workflows", "modules", "conf", "assets", "tests/nextflow")

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="java (17+) is needed to run the lint")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(LINT), str(root)], capture_output=True, text=True, timeout=300)


def _copy_pipeline(dest: Path) -> Path:
    for name in PIPELINE:
        src = REPO / name
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    return dest


def test_lint_passes_on_the_pipeline() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    linted = [
        REPO / "main.nf", REPO / "nextflow.config", REPO / "nf-test.config",
        *REPO.glob("workflows/*.nf"), *REPO.glob("modules/local/*/main.nf"), *REPO.glob("conf/*.config"),
        *REPO.glob("tests/nextflow/*.nf.test"),
    ]
    assert summary.startswith(f"nf-lint: {len(linted)} files, 0 error(s)"), summary


# (file, text to replace, replacement, message the lint must print), in two copies: type
# checking only runs on files that compile, so its breakages have a copy of their own.
SYNTAX_AND_NAMES = [
    # a statement outside any process/workflow: not allowed in strict syntax
    ("modules/local/train/main.nf", "process TRAIN {", 'println "hello"\nprocess TRAIN {',
     "Statements cannot be mixed with script declarations"),
    # an undefined variable in the command line
    ("modules/local/filter/main.nf", "--sample-id '${meta.id}'", "--sample-id '${sample_name}'",
     "`sample_name` is not defined"),
    # a syntax error: unbalanced braces
    ("modules/local/qc/main.nf", "    tuple val(meta), path(counts), path(labels)\n",
     "    tuple val(meta), path(counts), path(labels)\n    }\n", "Unexpected input"),
    # the workflow calls a process that is not included
    ("workflows/scmaskgan.nf", "    PREPARE(QC.out.h5ad)", "    PREPARATION(QC.out.h5ad)", "`PREPARATION` is not defined"),
    # an include of a module folder that does not exist
    ("workflows/scmaskgan.nf", "'../modules/local/report'", "'../modules/local/reports'", "Invalid include source"),
    # a variable declaration in a config file
    ("conf/base.config", "process {", "def big = 2\nprocess {", "Variable declarations cannot be mixed"),
    # an nf-test file that is not valid Groovy (an unclosed block)
    ("tests/nextflow/qc.nf.test", '    process "QC"\n', '    process "QC"\n    when {\n', "Unexpected input"),
]
TYPES = [
    # an output the process does not emit
    ("workflows/scmaskgan.nf", "    FILTER(GENERATE.out.candidates.join(", "    FILTER(GENERATE.out.candidate.join(",
     "Unrecognized output `candidate` for process `GENERATE`"),
    # a process called with the wrong number of channels
    ("workflows/scmaskgan.nf", "    TRAIN(PREPARE.out.images)", "    TRAIN(PREPARE.out.images, QC.out.h5ad)",
     "Process `TRAIN` expects 1 argument(s) but received 2"),
    # a task property that does not exist
    ("modules/local/train/main.nf", "--threads ${task.cpus}", "--threads ${task.cpu}", "Unrecognized property `cpu`"),
]


@pytest.mark.parametrize("breakages", [SYNTAX_AND_NAMES, TYPES], ids=["syntax-and-names", "types"])
def test_lint_fails_on_a_broken_copy(tmp_path: Path, breakages: list[tuple[str, str, str, str]]) -> None:
    """Every breakage is made in one copy (one JVM start); each must be reported at its file."""
    root = _copy_pipeline(tmp_path)
    for path, old, new, _ in breakages:
        target = root / path
        text = target.read_text()
        assert old in text, f"{path} no longer contains {old!r}: update this test"
        target.write_text(text.replace(old, new, 1))
    result = _lint(root)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if ": error: " in line]
    for path, _, _, message in breakages:
        assert any(line.startswith(f"{path}:") and message in line for line in errors), (path, message, result.stdout)
