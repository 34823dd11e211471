"""``scmaskgan impute``'s fitting half (PREPARE to FILTER) in a process of its own.

In one process the imputation's peak sat on top of everything the fitting half left
behind: the libraries it loaded, TRAIN's retained heap, freed pages glibc keeps
(``docs/method.md``, "Profiled with memray"). At 10,000 cells x 2,000 genes the one process
peaked at 1.10 GB; a process that only loads the fitted model and writes the output peaks
at 0.84 GB. The fitting process reads the input itself and saves the fitted estimator
(:meth:`scmaskgan.api.ScMaskGAN.save`); the calling process waits without holding data,
then loads it and imputes. The Python API stays in one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from scmaskgan.errors import PassedOnError, error_line


def fit_in_own_process(
    input_path: Path, read: dict[str, Any], estimator: dict[str, Any], model_path: Path
) -> Path:
    """Fit :class:`~scmaskgan.api.ScMaskGAN` on ``input_path`` in a child process and save it.

    Parameters
    ----------
    input_path
        The counts file (any format :func:`~scmaskgan.io.counts.read_counts` reads).
    read
        ``orientation`` and ``input_scale`` for reading it.
    estimator
        Keyword arguments of :class:`~scmaskgan.api.ScMaskGAN` (plain JSON types).
    model_path
        Where the fitted estimator is saved; the process's job description and any error
        are written beside it.

    Returns
    -------
    ``model_path``.

    Raises
    ------
    PassedOnError
        With the child's one-line message and exit status when it failed.
    """
    job, error = model_path.with_suffix(".job.json"), model_path.with_suffix(".error.json")
    job.write_text(json.dumps({
        "input_path": str(input_path), "read": read, "estimator": estimator, "model": str(model_path),
        "error": str(error),
    }))
    done = subprocess.run([sys.executable, "-m", "scmaskgan.fit_process", str(job)], check=False)
    if done.returncode != 0:
        if error.exists():
            failure = json.loads(error.read_text())
            raise PassedOnError(failure["message"], int(failure["exit_code"]))
        if done.returncode < 0:  # killed by a signal (SIGKILL from the kernel's OOM killer, a scheduler's limit):
            # the shell's 128 + N, so that an exit status 137 reads as it would for a one-process run
            raise PassedOnError(f"error: the fitting process was killed by signal {-done.returncode}",
                                128 - done.returncode)
        raise PassedOnError(f"error: the fitting process ended with status {done.returncode}", done.returncode)
    return model_path


def _fit(job: dict[str, Any]) -> None:
    from scmaskgan.api import ScMaskGAN
    from scmaskgan.io.counts import read_counts

    adata = read_counts(job["input_path"], orientation=job["read"]["orientation"],
                        input_scale=job["read"]["input_scale"])
    ScMaskGAN(**job["estimator"]).fit(adata, release_input=True).save(job["model"])


def _main(job_path: str) -> int:
    """Run one job; on failure write its one-line message and exit status for the caller."""
    job = json.loads(Path(job_path).read_text())
    try:
        _fit(job)
    except Exception as exc:
        if os.environ.get("SCMASKGAN_DEBUG"):
            raise
        message, code = error_line(exc)
        Path(job["error"]).write_text(json.dumps({"message": message, "exit_code": code}))
        return code
    return 0


if __name__ == "__main__":  # pragma: no cover (run as a child process)
    sys.exit(_main(sys.argv[1]))
