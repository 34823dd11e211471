"""nextflow_schema.json, nextflow.config, conf/ and docs/parameters.md agree with config.py."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from scmaskgan.core.config import STEP_PARAMS, all_flat_names, flat_name

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "nextflow_schema.json").read_text())
PROPERTIES = {name: entry for g in SCHEMA["$defs"].values() for name, entry in g["properties"].items()}
JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _groovy_literal(text: str) -> Any:
    """Value of a Groovy literal as written in a params block (null, booleans, numbers, strings)."""
    text = text.strip()
    if text in {"null", "true", "false"}:
        return {"null": None, "true": True, "false": False}[text]
    if text[0] in "'\"":
        return text[1:-1]
    return float(text) if re.search(r"[.eE]", text) else int(text)


def config_params(path: Path) -> dict[str, Any]:
    """``name = value`` lines of the ``params {}`` block of a config file."""
    block = path.read_text().split("params {", 1)[1].split("\n}", 1)[0]
    return {m[0]: _groovy_literal(m[1]) for m in re.findall(r"^\s+(\w+) = (.+)$", block, re.M)}


def test_generated_files_are_up_to_date() -> None:
    assert _script("make_nextflow_schema").main(["--check"]) == 0, "run scripts/make_nextflow_schema.py"


def test_every_step_parameter_is_documented_with_its_default_type_and_help() -> None:
    assert all_flat_names() <= set(PROPERTIES)
    for step, cls in STEP_PARAMS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            entry = PROPERTIES[flat_name(step, f.name)]
            base = [a for a in typing.get_args(hints[f.name]) if a is not type(None)] or [hints[f.name]]
            assert entry["type"] == JSON_TYPES[base[0]], f.name
            assert entry.get("default") == f.default, f.name
            if f.name not in {"seed", "device"}:  # shared: the first step's help text
                assert entry["description"] == f.metadata["help"], f.name
            assert entry.get("enum", []) == list(f.metadata.get("choices", [])), f.name


def test_schema_is_a_valid_nf_schema_2_parameter_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert [ref["$ref"] for ref in SCHEMA["allOf"]] == [f"#/$defs/{name}" for name in SCHEMA["$defs"]]
    for group in SCHEMA["$defs"].values():
        assert group["type"] == "object" and group["title"]
        assert set(group.get("required", [])) <= set(group["properties"])
        for name, entry in group["properties"].items():
            assert entry["type"] in {"string", "integer", "number", "boolean"}, name
            assert entry["description"], name
            if "default" in entry:
                jsonschema.validate(entry["default"], {k: v for k, v in entry.items() if k not in {"exists", "schema"}})


def test_schema_rejects_a_bad_value_and_accepts_the_defaults() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(SCHEMA)
    defaults = {name: e["default"] for name, e in PROPERTIES.items() if "default" in e}
    assert not list(validator.iter_errors({**defaults, "input": "s.csv", "outdir": "results"}))
    assert list(validator.iter_errors({**defaults, "input": "s.csv", "outdir": "r", "integration_method": "mnn"}))
    assert list(validator.iter_errors({**defaults, "input": "s.csv", "outdir": "r", "epochs": "many"}))
    assert list(validator.iter_errors({**defaults, "outdir": "r"}))  # input is required


def test_nextflow_config_declares_every_parameter_with_the_schema_default() -> None:
    declared = config_params(REPO / "nextflow.config")
    assert set(declared) == set(PROPERTIES)
    for name, entry in PROPERTIES.items():
        assert declared[name] == entry.get("default"), name


def test_test_profile_sets_only_known_parameters() -> None:
    assert set(config_params(REPO / "conf" / "test.config")) <= set(PROPERTIES)


def test_module_containers_name_the_default_image() -> None:
    image = f"{PROPERTIES['container_image']['default']}:{PROPERTIES['container_tag']['default']}"
    modules = sorted((REPO / "modules" / "local").glob("*/main.nf"))
    assert len(modules) == 8
    for module in modules:
        assert f"container '{image}'" in module.read_text(), module
        assert (module.parent / "environment.yml").is_file(), module


def test_every_process_gets_ext_args_for_its_step() -> None:
    text = (REPO / "conf" / "modules.config").read_text()
    for step, cls in STEP_PARAMS.items():
        block = text.split(f"withName: '{step.upper()}' {{", 1)[1].split("\n    }", 1)[0]
        for f in dataclasses.fields(cls):
            if (step, f.name) != ("qc", "label_key"):  # per sample, from the samplesheet
                assert f"params.{flat_name(step, f.name)}" in block, (step, f.name)


def test_parameter_docs_are_generated_from_the_schema() -> None:
    docs = _script("schema_to_docs")
    assert docs.main(["--check"]) == 0, "run scripts/schema_to_docs.py"
    text = (REPO / "docs" / "parameters.md").read_text()
    for name in PROPERTIES:
        assert f"`--{name}`" in text, name
