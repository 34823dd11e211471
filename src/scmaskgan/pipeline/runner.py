"""The embedded executor: the pipeline's DAG without Nextflow (``scmaskgan run``).

It runs, for every samplesheet row, QC → PREPARE → TRAIN → GENERATE → FILTER →
IMPUTE, samples in parallel (``max_workers`` processes), then INTEGRATE over all
imputed samples and REPORT. It calls the same :mod:`scmaskgan.pipeline.steps` functions as
``bin/`` and the CLI, with the same flat params file as ``nextflow run
-params-file``, and publishes into the same layout as the Nextflow pipeline::

    outdir/<step>/<files>          qc, prepare, train, generate, filter, impute, integrate, report
    outdir/pipeline_info/          params.json, versions.json, trace.tsv, run.log, steps/

Resume: a step is skipped when its outputs exist and its record under
``pipeline_info/steps/`` matches the step's parameters and input files (size and
modification time). Outputs are written atomically by the steps, so a killed run
leaves only complete files and resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import resource
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scmaskgan.core.config import STEP_PARAMS, step_params_from_flat, unread_params
from scmaskgan.core.versions import package_versions
from scmaskgan.errors import InputError, ScMaskGANError, StepError
from scmaskgan.io.atomic import write_text_atomic
from scmaskgan.io.layout import SAMPLE_STEPS, input_files, output_paths
from scmaskgan.io.samplesheet import Sample, labels_file, read_samplesheet
from scmaskgan.pipeline import steps

log = logging.getLogger("scmaskgan.pipeline.runner")


@dataclass
class StepRecord:
    """What happened to one step of one sample (a row of ``trace.tsv``)."""

    sample: str
    step: str
    status: str  # "done", "cached" or "failed"
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    error: str = ""
    outputs: dict[str, str] = field(default_factory=dict)


def load_params_file(path: str | Path | None) -> dict[str, Any]:
    """Read a flat params file (JSON or YAML), as given to ``nextflow run -params-file``."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise InputError(f"params file {p} does not exist")
    text = p.read_text()
    try:
        if p.suffix in {".yml", ".yaml"}:
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's file
        raise InputError(f"params file {p}: cannot parse ({exc})") from exc
    if not isinstance(values, dict):
        raise InputError(f"params file {p}: expected a mapping of parameter names to values")
    return values


def _file_signature(path: Path) -> list[Any]:
    if path.is_dir():
        return [[str(p.relative_to(path)), *_file_signature(p)] for p in sorted(path.iterdir())]
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _record_key(step: str, inputs: dict[str, Any], params: Any) -> str:
    payload = {
        "step": step,
        "params": dataclasses.asdict(params) if dataclasses.is_dataclass(params) and not isinstance(params, type)
        else params,
        "inputs": {
            k: [str(p), _file_signature(Path(p))] if isinstance(p, Path) else p for k, p in inputs.items()
        },
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _label_key(sample: Sample, flat: dict[str, Any]) -> str | None:
    """The sample's label_key for QC: an obs column as given, a labels file as an absolute path."""
    key = sample.label_key or flat.get("label_key")
    path = labels_file(key, sample.path)
    return str(path) if path is not None else key


def _sample_step_call(
    step: str, sample: Sample, outdir: Path, flat: dict[str, Any]
) -> tuple[Callable[..., dict[str, Path]], dict[str, Path], Any]:
    """The step function, its file arguments (wired by :data:`scmaskgan.io.layout.STEP_INPUTS`) and its parameters."""
    params = step_params_from_flat(step, flat)
    files: dict[str, Path] = {}
    if step == "qc":  # the samplesheet's files; the labels file comes as label_key
        params = dataclasses.replace(params, label_key=_label_key(sample, flat))
        files["input_path"] = Path(sample.path)
    files.update(input_files(step, lambda up: outdir / up, sample.sample))
    return getattr(steps, steps.SAMPLE_STEP_FUNCTIONS[step]), files, params


def run_sample_step(
    step: str, sample: Sample, outdir: Path, flat: dict[str, Any], resume: bool, threads: int | None
) -> StepRecord:
    """Run (or skip, when resumable) one step of one sample; never raises for step failures."""
    func, inputs, params = _sample_step_call(step, sample, outdir, flat)
    if threads is not None and hasattr(params, "threads") and params.threads is None:
        params = dataclasses.replace(params, threads=threads)
    step_dir = outdir / step
    expected = output_paths(step, step_dir, sample.sample)
    record_path = outdir / "pipeline_info" / "steps" / f"{sample.sample}.{step}.json"
    key = _record_key(step, inputs, params)
    if resume and record_path.is_file() and all(p.exists() for p in expected.values()):
        try:
            if json.loads(record_path.read_text()).get("key") == key:
                return StepRecord(sample.sample, step, "cached", outputs={k: str(v) for k, v in expected.items()})
        except json.JSONDecodeError:
            pass
    start = time.perf_counter()
    try:
        outputs = func(**inputs, outdir=step_dir, sample_id=sample.sample, params=params)
    except ScMaskGANError as exc:
        return StepRecord(sample.sample, step, "failed", time.perf_counter() - start, _peak_rss_mb(), str(exc))
    record = StepRecord(
        sample.sample, step, "done", time.perf_counter() - start, _peak_rss_mb(),
        outputs={k: str(v) for k, v in outputs.items()},
    )
    write_text_atomic(record_path, json.dumps({"key": key, **dataclasses.asdict(record)}, indent=2))
    return record


def _worker_init(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


class _Progress:
    """A rich progress bar on a terminal, plain log lines otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("[bold]scmaskgan run"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("{task.description}"),
            )
            self._bar.start()
            self._task = self._bar.add_task("", total=total)

    def advance(self, record: StepRecord) -> None:
        line = f"{record.sample}:{record.step} {record.status} ({record.seconds:.1f} s)"
        log.info(line)
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=line)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _setup_logging(info_dir: Path) -> logging.Handler:
    info_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(info_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("scmaskgan")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def _write_trace(path: Path, records: list[StepRecord]) -> None:
    rows = ["sample\tstep\tstatus\tseconds\tprocess_peak_rss_mb\terror"]
    rows += [
        f"{r.sample}\t{r.step}\t{r.status}\t{r.seconds:.2f}\t{r.peak_rss_mb:.0f}\t{r.error}" for r in records
    ]
    write_text_atomic(path, "\n".join(rows) + "\n")


def _run_samples(
    samples: list[Sample], outdir: Path, flat: dict[str, Any], max_workers: int, resume: bool,
    progress: _Progress,
) -> list[StepRecord]:
    """Run every sample's chain; samples proceed in parallel, steps of a sample in order."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cpus // max_workers)
    records: list[StepRecord] = []
    if max_workers <= 1:
        for sample in samples:
            for step in SAMPLE_STEPS:
                record = run_sample_step(step, sample, outdir, flat, resume, None)
                records.append(record)
                progress.advance(record)
                if record.status == "failed":
                    break
        return records
    with ProcessPoolExecutor(max_workers, initializer=_worker_init, initargs=(threads,)) as pool:
        running: dict[Future, tuple[Sample, int]] = {}

        def submit(sample: Sample, index: int) -> None:
            future = pool.submit(run_sample_step, SAMPLE_STEPS[index], sample, outdir, flat, resume, threads)
            running[future] = (sample, index)

        for sample in samples:
            submit(sample, 0)
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                sample, index = running.pop(future)
                record = future.result()
                records.append(record)
                progress.advance(record)
                if record.status != "failed" and index + 1 < len(SAMPLE_STEPS):
                    submit(sample, index + 1)
    return records


def run_pipeline(
    samplesheet: str | Path,
    outdir: str | Path,
    params: dict[str, Any] | None = None,
    *,
    max_workers: int = 1,
    resume: bool = True,
    show_progress: bool = False,
) -> list[StepRecord]:
    """Run the whole pipeline for a samplesheet.

    Parameters
    ----------
    samplesheet
        CSV with columns ``sample,path[,label_key][,batch]`` (see :mod:`scmaskgan.io.samplesheet`).
    outdir
        Results folder (the same layout as the Nextflow pipeline's ``--outdir``).
    params
        Flat pipeline parameters (as in a ``-params-file``); defaults for the rest.
    max_workers
        Samples processed in parallel (each in its own process).
    resume
        Skip steps whose outputs and records are complete and up to date.
    show_progress
        Show a progress bar (on a terminal).

    Returns
    -------
    One :class:`StepRecord` per step executed or skipped.

    Raises
    ------
    StepError
        When a sample fails (after the other samples finished).
    """
    flat = dict(params or {})
    for step in STEP_PARAMS:  # fail on a bad value before any work is done
        step_params_from_flat(step, flat)
    outdir = Path(outdir)
    samples = read_samplesheet(samplesheet)
    info = outdir / "pipeline_info"
    handler = _setup_logging(info)
    unread = unread_params(flat)
    if unread:
        log.warning("params not read by any step (defaults apply): %s", ", ".join(unread))
    started = time.time()
    try:
        write_text_atomic(info / "params.json", json.dumps(
            {"input": str(samplesheet), "outdir": str(outdir), "max_workers": max_workers, **flat},
            indent=2, default=str))
        write_text_atomic(info / "versions.json", json.dumps(package_versions(), indent=2))
        progress = _Progress(len(samples) * len(SAMPLE_STEPS) + 2, show_progress)
        try:
            records = _run_samples(samples, outdir, flat, max_workers, resume, progress)
            if not any(r.status == "failed" for r in records):
                imputed = [output_paths("impute", outdir / "impute", s.sample)["h5ad"] for s in samples]
                records.append(_run_cross_sample_step("integrate", progress, lambda: steps.integrate(
                    imputed, outdir / "integrate", step_params_from_flat("integrate", flat), Path(samplesheet))))
            # the report reads the trace and summary, so they are written before it runs
            _write_run_info(info, samples, records, started)
            if not any(r.status == "failed" for r in records):
                records.append(_run_cross_sample_step(
                    "report", progress, lambda: steps.report(outdir, outdir / "report")))
                _write_run_info(info, samples, records, started)
        finally:
            progress.stop()
        failed = [r for r in records if r.status == "failed"]
        if failed:
            detail = "; ".join(f"{r.sample}:{r.step}: {r.error}" for r in failed)
            raise StepError(f"{len(failed)} step(s) failed ({detail}); see {info / 'trace.tsv'}")
        return records
    finally:
        logging.getLogger("scmaskgan").removeHandler(handler)
        handler.close()


def _write_run_info(info: Path, samples: list[Sample], records: list[StepRecord], started: float) -> None:
    _write_trace(info / "trace.tsv", records)
    write_text_atomic(info / "run_summary.json", json.dumps({
        "samples": [s.sample for s in samples],
        "wall_seconds": round(time.time() - started, 2),
        "steps": {status: sum(r.status == status for r in records) for status in ("done", "cached", "failed")},
    }, indent=2))


def _run_cross_sample_step(
    step: str, progress: _Progress, call: Callable[[], dict[str, Path]]
) -> StepRecord:
    """Run INTEGRATE or REPORT; a user-facing failure becomes a failed record."""
    start = time.perf_counter()
    try:
        outputs = call()
        record = StepRecord("all", step, "done", time.perf_counter() - start, _peak_rss_mb(),
                            outputs={k: str(v) for k, v in outputs.items()})
    except ScMaskGANError as exc:
        record = StepRecord("all", step, "failed", time.perf_counter() - start, _peak_rss_mb(), str(exc))
    progress.advance(record)
    return record
