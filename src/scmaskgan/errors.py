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
