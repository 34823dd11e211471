"""The REPORT step's building blocks: the run's files found by name (:class:`RunFiles`),
HTML pieces (escaped values, tables, cards, embedded PNGs, a guard that turns a failing
piece into a note) and readers of the small files the steps leave.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from scmaskgan.io.layout import SAMPLE_OUTPUTS

log = logging.getLogger("scmaskgan.pipeline.report")
_IGNORED_DIRS = {"work", "pipeline_info", "__pycache__"}


# ------------------------------------------------------------------ finding files
def output_suffix(step: str, key: str) -> str:
    """The file name of a step's output without the sample id (``{id}.qc.json`` -> ``.qc.json``)."""
    return SAMPLE_OUTPUTS[step][key].replace("{id}", "")


class RunFiles:
    """The files under a results folder, found by name.

    Parameters
    ----------
    root
        The results folder (``--outdir`` of the run).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._files = sorted(
            p for p in self.root.rglob("*")
            if p.is_file() and not p.name.startswith(".")
            and not any(part.startswith(".") or part in _IGNORED_DIRS for part in p.relative_to(self.root).parts[:-1])
        )

    def ending(self, suffix: str) -> list[Path]:
        """Files (outside ``pipeline_info/``) whose name ends with ``suffix``."""
        return [p for p in self._files if p.name.endswith(suffix) and len(p.name) > len(suffix)]

    def per_sample(self, suffix: str) -> dict[str, Path]:
        """Sample id -> file for names ``{id}{suffix}`` (the first found, in path order)."""
        found: dict[str, Path] = {}
        for path in self.ending(suffix):
            found.setdefault(path.name[: -len(suffix)], path)
        return found

    def named(self, name: str) -> Path | None:
        """The first file called ``name`` (outside ``pipeline_info/``), or None."""
        return next((p for p in self._files if p.name == name), None)

    def in_folder(self, folder: str, pattern: str = "*.png") -> list[Path]:
        """Files matching ``pattern`` directly in any folder called ``folder``."""
        return sorted(p for p in self._files if p.parent.name == folder and p.match(pattern))

    def info(self, name: str) -> Path | None:
        """``pipeline_info/<name>`` (Nextflow and the runner both write that folder)."""
        hits = sorted(self.root.glob(f"**/pipeline_info/{name}"))
        return hits[0] if hits else None


# ------------------------------------------------------------------ HTML pieces
def esc(value: Any) -> str:
    """``value`` as text escaped for HTML (quotes too)."""
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A value as report text: floats with 4 significant digits, None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        value = float(value)
        if math.isnan(value):
            return "NaN"
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def missing(text: str) -> str:
    """A highlighted 'not available' paragraph."""
    return f'<p class="missing">Not available: {esc(text)}</p>'


def note(text: str) -> str:
    """A muted explanatory paragraph (``text`` is escaped)."""
    return f'<p class="note">{esc(text)}</p>'


def table(rows: Sequence[dict[str, Any]] | pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """An HTML table of dict rows (or a DataFrame); numbers right-aligned and formatted by :func:`fmt`."""
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict(orient="records")
    if not rows:
        return note("(empty table)")
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            numeric = isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
            cells.append(f'<td class="num">{esc(fmt(v))}</td>' if numeric else f"<td>{esc(fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def cards(items: Iterable[tuple[str, Any]]) -> str:
    """Key numbers as a row of cards."""
    inner = "".join(
        f'<div class="card"><div class="value">{esc(fmt(v))}</div><div class="label">{esc(k)}</div></div>'
        for k, v in items
    )
    return f'<div class="cards">{inner}</div>'


def _img(data: bytes, caption: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def png_file(path: Path, caption: str | None = None) -> str:
    """An existing PNG embedded as a figure."""
    return _img(Path(path).read_bytes(), caption or Path(path).name)


def png_figure(fig: Figure, caption: str) -> str:
    """A matplotlib figure embedded as a PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return _img(buffer.getvalue(), caption)


def guarded(render: Callable[[], str], what: str) -> str:
    """``render()``, or a 'could not read' paragraph naming ``what`` when it raises.

    A report must survive a truncated or foreign file: the failure is shown where
    the content would have been, and logged.
    """
    try:
        return render()
    except Exception as exc:  # noqa: BLE001 - any failure becomes a visible note, never a crash
        log.warning("report: could not read %s: %s", what, exc)
        return f'<p class="missing">Could not read {esc(what)}: {esc(type(exc).__name__)}: {esc(exc)}</p>'


def read_table(path: Path, sep: str = ",") -> pd.DataFrame:
    """A CSV/TSV for display: empty text cells blank, columns without any value dropped."""
    df = pd.read_csv(path, sep=sep).dropna(axis=1, how="all")
    text = df.select_dtypes(exclude="number").columns
    df[text] = df[text].fillna("")
    return df


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object read from ``path``; ``ValueError`` when the file holds anything else."""
    value = json.loads(Path(path).read_text())
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def try_json(path: Path | None) -> dict[str, Any]:
    """A JSON object, or ``{}`` when the file is missing or unreadable (the owning section names it)."""
    if path is None:
        return {}
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {}


def flatten(record: dict[str, Any], skip: Iterable[str] = ()) -> dict[str, Any]:
    """Scalars of a JSON record, nested dicts one level deep as ``outer.inner``; lists skipped."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if key in skip:
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items() if not isinstance(v, dict | list)})
        elif not isinstance(value, list):
            flat[key] = value
    return flat

