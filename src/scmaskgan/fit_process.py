"""``scmaskgan impute``'s fitting half (PREPARE to FILTER) in processes of their own.

In one process the imputation's peak sat on top of everything the fitting half left
behind: the libraries it loaded, TRAIN's retained heap, freed pages glibc keeps
(``docs/method.md``, "Profiled with memray"). At 10,000 cells x 2,000 genes one process
peaked at 1.10 GB, and one fitting process beside the waiting caller at 1.13 GB: the
fitting steps' garbage piles up in a process that runs them all, although no step alone
needs more than 0.69 GB. So the fit's phases (:meth:`scmaskgan.api.ScMaskGAN.fit_start`,
``fit_step``, ``fit_finish``) run in three processes, one after the other: reading the input
and PREPARE; TRAIN; GENERATE, FILTER and saving the fitted estimator
(:meth:`~scmaskgan.api.ScMaskGAN.save`). They hand over files and a
:class:`~scmaskgan.api.FitState` in a working folder. The calling process waits without
holding data, then loads the estimator and imputes. The Python API stays in one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from scmaskgan.errors import PassedOnError, error_line

#: The fit's phases, grouped into processes: TRAIN alone, the others beside the light steps.
PROCESS_PHASES: tuple[tuple[str, ...], ...] = (("start", "prepare"), ("train",), ("generate", "filter", "finish"))


def fit_in_child_processes(
    input_path: Path, read: dict[str, Any], estimator: dict[str, Any], model_path: Path
) -> Path:
    """Fit :class:`~scmaskgan.api.ScMaskGAN` on ``input_path`` in child processes and save it.

    Parameters
    ----------
    input_path
        The counts file (any format :func:`~scmaskgan.io.counts.read_counts` reads).
    read
        ``orientation`` and ``input_scale`` for reading it.
    estimator
        Keyword arguments of :class:`~scmaskgan.api.ScMaskGAN` (plain JSON types).
    model_path
        Where the fitted estimator is saved; the steps' files, the processes' job description
        and any error are written into a folder beside it.

    Returns
    -------
    ``model_path``.

    Raises
    ------
    PassedOnError
        With a child's one-line message and exit status when it failed.
    """
    folder = model_path.with_suffix(".steps")
    folder.mkdir(exist_ok=True)
    job, error = folder / "job.json", folder / "error.json"
    for phases in PROCESS_PHASES:
        job.write_text(json.dumps({
            "input_path": str(input_path), "read": read, "estimator": estimator, "model": str(model_path),
            "folder": str(folder), "error": str(error), "phases": list(phases),
        }))
        done = subprocess.run([sys.executable, "-m", "scmaskgan.fit_process", str(job)], check=False)
        if done.returncode == 0:
            continue
        if error.exists():
            failure = json.loads(error.read_text())
            raise PassedOnError(failure["message"], int(failure["exit_code"]))
        if done.returncode < 0:  # killed by a signal (SIGKILL from the kernel's OOM killer, a scheduler's limit):
            # the shell's 128 + N, so that an exit status 137 reads as it would for a one-process run
            raise PassedOnError(f"error: the fitting process was killed by signal {-done.returncode}",
                                128 - done.returncode)
        raise PassedOnError(f"error: the fitting process ended with status {done.returncode}", done.returncode)
    return model_path


def _run_phases(job: dict[str, Any]) -> None:
    """The job's phases of :meth:`~scmaskgan.api.ScMaskGAN.fit`, the state handed on in ``state.json``."""
    from scmaskgan.api import FitState, ScMaskGAN

    estimator, folder = ScMaskGAN(**job["estimator"]), Path(job["folder"])
    state_file = folder / "state.json"
    phases = list(job["phases"])
    if phases[0] == "start":
        from scmaskgan.io.counts import read_counts

        adata = read_counts(job["input_path"], orientation=job["read"]["orientation"],
                            input_scale=job["read"]["input_scale"])
        state = estimator.fit_start(adata, folder, release_input=True)
        del adata
        phases.pop(0)
    else:
        state = FitState.from_json(state_file.read_text())
    for phase in phases:
        if phase == "finish":
            estimator.fit_finish(folder, state).save(job["model"])
        else:
            state = estimator.fit_step(phase, folder, state)
    state_file.write_text(state.to_json())


def _main(job_path: str) -> int:
    """Run one job; on failure write its one-line message and exit status for the caller."""
    job = json.loads(Path(job_path).read_text())
    try:
        _run_phases(job)
    except Exception as exc:
        if os.environ.get("SCMASKGAN_DEBUG"):
            raise
        message, code = error_line(exc)
        Path(job["error"]).write_text(json.dumps({"message": message, "exit_code": code}))
        return code
    return 0


if __name__ == "__main__":  # pragma: no cover (run as a child process)
    sys.exit(_main(sys.argv[1]))
