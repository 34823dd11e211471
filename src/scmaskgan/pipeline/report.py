"""The REPORT step: one self-contained ``report.html`` from whatever a pipeline run left.

Only the steps' small files are read: JSON summaries, CSV logs and tables, PNG
figures (never the h5/h5ad data, so Nextflow's REPORT task stages a few megabytes).
Files are found by name anywhere under the results folder (the embedded runner's
``<step>/`` folders and Nextflow's published folders have the same names), so a
partial run still gives a report: a section whose inputs are missing says which
files it looked for, and a file that cannot be read is named with the reason;
neither stops the report. Figures are embedded as base64 PNG and the CSS is inline,
so the file opens offline and can be mailed around.

Sections (``<section id=...>``): ``summary``, ``qc``, ``training``, ``filtering``,
``tuning``, ``imputation``, ``evaluation``, ``integration``, ``parameters``.

The evaluation section shows the ``{id}.evaluation.json`` files the IMPUTE step writes
(``{id}.evaluation/``) or ``scmaskgan evaluate`` wrote.

The sections are in :mod:`scmaskgan.pipeline.report_sections`, their building blocks in
:mod:`scmaskgan.pipeline.report_parts`.
"""

from __future__ import annotations

import datetime as _dt
from functools import partial
from importlib import resources
from pathlib import Path
from string import Template

from scmaskgan.core.versions import VERSION
from scmaskgan.io.atomic import write_text_atomic
from scmaskgan.io.layout import REPORT_OUTPUTS
from scmaskgan.pipeline.report_parts import RunFiles, esc, guarded
from scmaskgan.pipeline.report_sections import BUILDERS, ReportContext, impute_summaries

#: Section ids and headings, in report order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Run summary"),
    ("qc", "Quality control"),
    ("training", "Training"),
    ("filtering", "Candidate filtering"),
    ("tuning", "Neighbourhood: chosen k and θ"),
    ("imputation", "Imputation statistics"),
    ("evaluation", "Evaluation"),
    ("integration", "Integration"),
    ("parameters", "Parameters and versions"),
)


# ------------------------------------------------------------------ the document
def build_report(results_dir: str | Path) -> str:
    """The report's HTML for a results folder (the pipeline's, or a folder of its small files)."""

    root = Path(results_dir)
    files = RunFiles(root)
    ctx = ReportContext(files=files, impute=impute_summaries(files), evaluations=files.per_sample(".evaluation.json"))
    nav, sections = [], []
    for sid, title in SECTIONS:
        body = guarded(partial(BUILDERS[sid], ctx), f"the {title.lower()} inputs")
        absent = body.startswith('<p class="missing">')
        mark = ' <span class="missing-mark">(missing)</span>' if absent else ""
        nav.append(f'    <li><a href="#{sid}">{esc(title)}</a>{mark}</li>')
        sections.append(f'<section id="{sid}">\n<h2>{esc(title)}</h2>\n{body}\n</section>')
    samples = ctx.samples
    template = Template(resources.files("scmaskgan.pipeline").joinpath("templates/report.html").read_text(encoding="utf-8"))
    return template.substitute(
        title="scMASKGAN run report",
        subtitle=f"{len(samples)} sample(s): {', '.join(samples) or 'none found'}",
        version=esc(VERSION),
        generated=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        results_dir=esc(root.resolve()),
        nav="\n".join(nav),
        sections="\n".join(sections),
    )


def write_report(results_dir: str | Path, outdir: str | Path) -> Path:
    """Write ``outdir/report.html`` atomically (see :func:`build_report`) and return its path."""
    from scmaskgan.errors import InputError

    if not Path(results_dir).is_dir():
        raise InputError(f"{results_dir}: results folder does not exist")
    html_text = build_report(results_dir)
    return write_text_atomic(Path(outdir) / REPORT_OUTPUTS["html"], html_text)
