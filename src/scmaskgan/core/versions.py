"""Versions of scmaskgan and the libraries whose behaviour shapes its results."""

from __future__ import annotations

import platform
from importlib import metadata

_TRACKED = (
    "scmaskgan", "numpy", "scipy", "pandas", "anndata", "scanpy", "h5py",
    "scikit-learn", "optuna", "torch", "harmonypy",
)


def _own_version() -> str:
    try:
        return metadata.version("scmaskgan")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


#: This package's version.
VERSION = _own_version()


def package_versions() -> dict[str, str]:
    """Python and tracked package versions, for ``uns['scmaskgan']`` and ``pipeline_info/``."""
    found = {"python": platform.python_version()}
    for name in _TRACKED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
