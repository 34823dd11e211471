"""Exceptions that the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations

#: Exit status of a command that ran out of GPU memory (EX_TEMPFAIL): the pipeline retries it.
EXIT_OUT_OF_MEMORY = 75


class ScMaskGANError(Exception):
    """Base class of every error the user can act on (no traceback is shown)."""

    exit_code = 1


class InputError(ScMaskGANError, ValueError):
    """Bad input data, file, samplesheet row or parameter. The message names the culprit."""

    exit_code = 2


class StepError(ScMaskGANError, RuntimeError):
    """A pipeline step could not produce its outputs (e.g. a sample with too few cells)."""

    exit_code = 3


class PassedOnError(ScMaskGANError):
    """An error already reported as one line by another process (``scmaskgan impute``'s fitting
    process, :mod:`scmaskgan.fit_process`), passed on with that line and its exit status."""

    def __init__(self, line: str, exit_code: int) -> None:
        super().__init__(line)
        self.exit_code = exit_code


def error_line(exc: BaseException) -> tuple[str, int]:
    """The one line the CLI prints for ``exc`` (after ``scmaskgan: ``) and the exit status.

    Errors the user can act on give their message; torch's out-of-memory error gives
    :data:`EXIT_OUT_OF_MEMORY`, on which the pipeline retries; anything else (a bug, or an
    error not anticipated) is an internal error, still one line.
    """
    if isinstance(exc, PassedOnError):
        return str(exc), exc.exit_code
    if isinstance(exc, ScMaskGANError):
        return f"error: {exc}", exc.exit_code
    if type(exc).__name__ == "OutOfMemoryError":  # torch's, without importing torch here
        return (f"error: out of GPU memory ({exc}); retry on a larger GPU or with a smaller --batch-size",
                EXIT_OUT_OF_MEMORY)
    return f"internal error: {type(exc).__name__}: {exc} (set SCMASKGAN_DEBUG=1 for the traceback)", 1
