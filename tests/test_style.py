"""The code base passes the project's static checks (configured in pyproject.toml), so CI enforces them:
ruff, import-linter (layers, no cycles) and mypy. Each tool comes with the 'test' extra."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a console script of this interpreter's environment (skip the test when it is missing)."""
    exe = shutil.which(tool, path=str(Path(sys.executable).parent)) or shutil.which(tool)
    if exe is None:
        pytest.skip(f"{tool} is not installed (it comes with the 'test' extra)")
    # the package as this test session imports it (an installed copy or PYTHONPATH=src)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True, env=env)


def test_ruff_finds_nothing():
    result = _run("ruff", "check", "src", "tests", "bin", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_layers_are_kept_and_there_are_no_cycles():
    result = _run("lint-imports", "--no-cache")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr


@pytest.mark.slow  # ~30 s on 2 cores without a cache
def test_mypy_is_clean_on_the_package():
    result = _run("mypy", "--no-incremental")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr


def test_the_module_map_in_docs_names_every_module():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    table = doc.split("## Modules", 1)[1].split("\n## ", 1)[0]
    package = ROOT / "src" / "scmaskgan"
    modules = {".".join(p.relative_to(package).with_suffix("").parts) for p in package.rglob("*.py")}
    modules = {m for m in modules if not m.endswith("__init__")}
    named = set(re.findall(r"`([\w.]+)`", table))
    assert modules <= named, modules - named


def test_no_private_name_crosses_a_module_boundary():
    """``from scmaskgan.x import _name`` and ``module._name`` stay inside their module (src only)."""
    import ast

    package = ROOT / "src" / "scmaskgan"
    crossings = []
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        modules = set()  # names bound to scmaskgan modules in this file
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scmaskgan"):
                for alias in node.names:
                    if alias.name.startswith("_"):
                        crossings.append(f"{path.name}: from {node.module} import {alias.name}")
                    modules.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                modules.update(a.asname or a.name for a in node.names if a.name.startswith("scmaskgan"))
        crossings += [
            f"{path.name}: {node.value.id}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in modules and node.attr.startswith("_") and not node.attr.startswith("__")
        ]
    assert not crossings, crossings
