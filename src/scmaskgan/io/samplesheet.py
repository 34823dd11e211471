"""The samplesheet: one row per sample, validated with the rules of ``assets/schema_input.json``.

Columns (header required, order free; ``.tsv`` files are tab-separated, others comma):

``sample`` (required)
    Unique id matching :data:`SAMPLE_PATTERN` (letters, digits, ``.``, ``_``, ``-``).
``path`` (required)
    An existing file whose name matches :data:`PATH_PATTERN` (``.h5ad``, ``.h5``, ``.csv``,
    ``.tsv``, ``.txt``, each optionally ``.gz``), or an existing folder (10x Cell Ranger
    output). A relative path is resolved against the samplesheet's folder.
``label_key`` (optional)
    An obs column of the sample, or a ``cell,label`` table (a name matching
    :data:`LABEL_FILE_PATTERN`, relative to the counts file's folder unless absolute);
    empty means automatic labels.
``batch`` (optional)
    Batch of the sample for integration; empty means the sample is its own batch.

Any other column is kept as metadata (e.g. ``risk``). Empty cells count as missing. Every
problem found is reported in one message naming its row (1 = first sample) and column.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from scmaskgan.errors import InputError

SAMPLE_PATTERN = r"^[A-Za-z0-9._-]+$"
PATH_PATTERN = r"^.*\.(h5ad|h5|csv|tsv|txt)(\.gz)?$"
#: A label_key matching this (whole) is a labels file, not an obs column. The single rule:
#: ``main.nf`` uses the same expression, and a test checks that it does.
LABEL_FILE_PATTERN = r".+\.(csv|tsv|txt)(\.gz)?$"
REQUIRED_COLUMNS = ("sample", "path")
OPTIONAL_COLUMNS = ("label_key", "batch")


@dataclass
class Sample:
    """One samplesheet row.

    Attributes
    ----------
    sample
        Sample id (used in every output name).
    path
        Absolute path of the counts file or 10x folder.
    label_key
        obs column or labels CSV, or None for automatic labels.
    batch
        Batch name, or None.
    meta
        Extra columns (name -> value, None when empty).
    """

    sample: str
    path: Path
    label_key: str | None = None
    batch: str | None = None
    meta: dict[str, str | None] = field(default_factory=dict)


def _path_problem(value: str, base: Path, check: bool = True) -> tuple[Path, str | None]:
    path = Path(value) if Path(value).is_absolute() else base / value
    if not check:
        return path, None
    if not path.exists():
        return path, f"{value!r} does not exist"
    if path.is_file() and not re.search(PATH_PATTERN, value):
        return path, f"{value!r} is not a .h5ad, .h5, .csv, .tsv or .txt file (optionally .gz) nor a 10x folder"
    return path.resolve(), None


def read_samplesheet(path: str | Path, *, check_paths: bool = True) -> list[Sample]:
    """Read and validate a samplesheet.

    Parameters
    ----------
    path
        CSV (or ``.tsv``) file with a header line.
    check_paths
        Check that every ``path`` exists and has an allowed extension. INTEGRATE turns it
        off: it needs only the metadata, and a cloud executor stages the samplesheet alone.

    Returns
    -------
    The samples in file order.

    Raises
    ------
    InputError
        Listing every problem as ``row N, column 'c': ...``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"samplesheet {path}: no such file")
    delimiter = "\t" if path.name.lower().endswith(".tsv") else ","
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            lines = list(csv.reader(handle, delimiter=delimiter))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"samplesheet {path}: cannot read ({exc})") from exc
    lines = [line for line in lines if any(cell.strip() for cell in line)]
    if not lines:
        raise InputError(f"samplesheet {path}: empty file")
    header = lines[0]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InputError(
            f"samplesheet {path}: missing column(s) {', '.join(missing)} (header: {','.join(header)})"
        )
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise InputError(f"samplesheet {path}: duplicate column(s) {', '.join(duplicated)}")
    if len(lines) == 1:
        raise InputError(f"samplesheet {path}: no samples after the header")
    base = path.resolve().parent
    problems: list[str] = []
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for row_no, line in enumerate(lines[1:], start=1):
        if len(line) != len(header):
            problems.append(f"row {row_no}: {len(line)} fields, the header has {len(header)}")
            continue
        row = {c: (v if v != "" else None) for c, v in zip(header, line, strict=True)}
        sid, value = row["sample"], row["path"]
        if sid is None:
            problems.append(f"row {row_no}, column 'sample': missing")
        elif not re.search(SAMPLE_PATTERN, sid):
            problems.append(f"row {row_no}, column 'sample': {sid!r} may only hold letters, digits, '.', '_', '-'")
        elif sid in seen:
            problems.append(f"row {row_no}, column 'sample': {sid!r} already used in row {seen[sid]}")
        else:
            seen[sid] = row_no
        if value is None:
            problems.append(f"row {row_no}, column 'path': missing")
            continue
        resolved, problem = _path_problem(value, base, check_paths)
        if problem:
            problems.append(f"row {row_no}, column 'path': {problem}")
        meta = {c: v for c, v in row.items() if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS}
        samples.append(Sample(str(sid), resolved, row.get("label_key"), row.get("batch"), meta))
    if problems:
        raise InputError(f"samplesheet {path}: " + "; ".join(problems))
    return samples


def labels_file(label_key: str | None, counts_path: str | Path | None) -> Path | None:
    """The labels file a ``label_key`` names (see :data:`LABEL_FILE_PATTERN`), or ``None`` for an obs column.

    A relative name is resolved against the counts file's folder. ``None`` as well when
    the file does not exist (the key is then tried as an obs column, and QC names both).
    """
    if not label_key or re.fullmatch(LABEL_FILE_PATTERN, label_key) is None:
        return None
    path = Path(label_key)
    if not path.is_absolute() and counts_path is not None:
        path = Path(counts_path).parent / path
    return path.resolve() if path.is_file() else None
