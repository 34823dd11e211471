"""The embedded runner's DAG logic: order, resume, invalidation, failures (with stand-in steps).

The real steps are exercised end to end in ``test_pipeline_e2e.py``; here every step is
replaced by a function that writes its declared outputs, so the runner's own behaviour
is tested in milliseconds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scmaskgan.errors import StepError
from scmaskgan.io.layout import STEP_INPUTS
from scmaskgan.pipeline import runner, steps


@pytest.fixture
def fake_steps(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []

    def make(step: str):
        def fake(*, outdir: Path, sample_id: str, params, **inputs):
            for p in inputs.values():
                assert Path(p).exists(), f"{step} got a missing input {p}"
            if sample_id == "bad" and step == "train":
                raise StepError("bad sample cannot be trained")
            calls.append((sample_id, step))
            out = steps.output_paths(step, outdir, sample_id)
            for path in out.values():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"{step} {sample_id} {params}")
            return out
        return fake

    for step, name in [("qc", "qc"), ("prepare", "prepare"), ("train", "train"),
                       ("generate", "generate"), ("filter", "filter_candidates"), ("impute", "impute")]:
        monkeypatch.setattr(steps, name, make(step))

    def integrate(imputed, outdir, params, samplesheet):
        assert all(Path(p).exists() for p in imputed)
        calls.append(("all", "integrate"))
        Path(outdir).mkdir(parents=True, exist_ok=True)
        (Path(outdir) / "integrated.h5ad").write_text("x")
        return {"h5ad": Path(outdir) / "integrated.h5ad"}

    def report(results_dir, outdir):
        calls.append(("all", "report"))
        Path(outdir).mkdir(parents=True, exist_ok=True)
        (Path(outdir) / "report.html").write_text("<html></html>")
        return {"html": Path(outdir) / "report.html"}

    monkeypatch.setattr(steps, "integrate", integrate)
    monkeypatch.setattr(steps, "report", report)
    return calls


def _samplesheet(tmp_path: Path, ids: list[str]) -> Path:
    rows = ["sample,path,label_key,batch"]
    for sid in ids:
        data = tmp_path / f"{sid}.csv"
        data.write_text("gene,c1\nG1,1\n")
        rows.append(f"{sid},{data.name},,b_{sid}")
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text("\n".join(rows) + "\n")
    return sheet


def test_runs_every_step_in_order_then_integrates(tmp_path, fake_steps):
    sheet = _samplesheet(tmp_path, ["s1", "s2"])
    records = runner.run_pipeline(sheet, tmp_path / "out", {"epochs": 3})
    assert [c for c in fake_steps if c[0] == "s1"] == [("s1", s) for s in runner.SAMPLE_STEPS]
    assert fake_steps[-2:] == [("all", "integrate"), ("all", "report")]
    assert {r.status for r in records} == {"done"}
    info = tmp_path / "out" / "pipeline_info"
    assert json.loads((info / "params.json").read_text())["epochs"] == 3
    trace = (info / "trace.tsv").read_text().splitlines()
    assert len(trace) == 1 + 2 * len(runner.SAMPLE_STEPS) + 2
    assert (tmp_path / "out" / "impute" / "s2.imputed.h5ad").exists()


def test_rerun_reuses_finished_steps(tmp_path, fake_steps):
    sheet = _samplesheet(tmp_path, ["s1"])
    runner.run_pipeline(sheet, tmp_path / "out")
    fake_steps.clear()
    records = runner.run_pipeline(sheet, tmp_path / "out")
    assert [r.status for r in records if r.sample == "s1"] == ["cached"] * len(runner.SAMPLE_STEPS)
    assert ("s1", "qc") not in fake_steps


def test_deleted_output_reruns_that_step_and_everything_after_it(tmp_path, fake_steps):
    sheet = _samplesheet(tmp_path, ["s1"])
    runner.run_pipeline(sheet, tmp_path / "out")
    (tmp_path / "out" / "train" / "s1.model.pt").unlink()
    fake_steps.clear()
    runner.run_pipeline(sheet, tmp_path / "out")
    assert [s for _, s in fake_steps if _ == "s1"] == ["train", "generate", "filter", "impute"]


def test_changed_parameter_reruns_the_step(tmp_path, fake_steps):
    sheet = _samplesheet(tmp_path, ["s1"])
    runner.run_pipeline(sheet, tmp_path / "out", {"impute_k": 5})
    fake_steps.clear()
    runner.run_pipeline(sheet, tmp_path / "out", {"impute_k": 7})
    assert [s for _, s in fake_steps if _ == "s1"] == ["impute"]


def test_no_resume_reruns_everything(tmp_path, fake_steps):
    sheet = _samplesheet(tmp_path, ["s1"])
    runner.run_pipeline(sheet, tmp_path / "out")
    fake_steps.clear()
    runner.run_pipeline(sheet, tmp_path / "out", resume=False)
    assert len([c for c in fake_steps if c[0] == "s1"]) == len(runner.SAMPLE_STEPS)


def test_failed_sample_stops_its_chain_but_not_the_others(tmp_path, fake_steps):
    sheet = _samplesheet(tmp_path, ["good", "bad"])
    with pytest.raises(StepError, match="bad:train: bad sample cannot be trained"):
        runner.run_pipeline(sheet, tmp_path / "out")
    assert (tmp_path / "out" / "impute" / "good.imputed.h5ad").exists()
    assert not (tmp_path / "out" / "generate" / "bad.candidates.h5").exists()
    assert ("all", "integrate") not in fake_steps
    trace = (tmp_path / "out" / "pipeline_info" / "trace.tsv").read_text()
    assert "bad\ttrain\tfailed" in trace


def test_params_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text("{not json")
    with pytest.raises(Exception, match=r"params file .*p.json: cannot parse"):
        runner.load_params_file(bad)
    with pytest.raises(Exception, match="does not exist"):
        runner.load_params_file(tmp_path / "missing.yml")


def test_unknown_step_parameter_value_is_rejected(tmp_path, fake_steps):
    sheet = _samplesheet(tmp_path, ["s1"])
    with pytest.raises(Exception, match="impute_mode|mode='sometimes'"):
        runner.run_pipeline(sheet, tmp_path / "out", {"impute_mode": "sometimes"})


def test_parallel_samples_produce_the_same_outputs(tmp_path, fake_steps):
    sheet = _samplesheet(tmp_path, ["s1", "s2", "s3"])
    records = runner.run_pipeline(sheet, tmp_path / "out", max_workers=2)
    per_sample = [r for r in records if r.sample != "all"]
    assert len(per_sample) == 3 * len(runner.SAMPLE_STEPS) and {r.status for r in per_sample} == {"done"}
    for sid in ("s1", "s2", "s3"):
        assert (tmp_path / "out" / "impute" / f"{sid}.imputed.h5ad").exists()
    assert ("all", "integrate") in fake_steps


def test_the_workflow_wires_the_dag_the_runner_runs() -> None:
    """workflows/scmaskgan.nf feeds every process the upstream outputs of scmaskgan.io.layout.STEP_INPUTS."""
    text = (Path(__file__).resolve().parents[1] / "workflows" / "scmaskgan.nf").read_text()
    channels = dict(re.findall(r"^\s*(ch_\w+) = (.+)$", text, re.M))
    for step, inputs in STEP_INPUTS.items():
        start = text.index(f"\n    {step.upper()}(") + len(step) + 6
        end, depth = start, 1
        while depth:
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            end += 1
        call = re.sub(r"\bch_\w+\b", lambda m: channels.get(m.group(0), m.group(0)), text[start:end])
        wired = [(up.lower(), output) for up, output in re.findall(r"\b([A-Z]+)\.out\.(\w+)", call)]
        assert wired == [source for entry in inputs for source in entry.sources], step
