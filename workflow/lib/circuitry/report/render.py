"""Rendering: the sections filled into the jinja2 template (autoescape on: completions
and questions are untrusted text), written as one self-contained `report.html`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import jinja2

from circuitry.analysis.results import Study
from circuitry.io import write_text
from circuitry.provenance import Provenance
from circuitry.report.blocks import Section
from circuitry.report.sections import build_sections

# workflow/report/report.html.j2 of this checkout (workflow/lib/circuitry/report/render.py)
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[3] / "report" / "report.html.j2"


def render_report(
    sections: Sequence[Section],
    *,
    title: str = "circuitry: how post-training changes LLM circuitry",
    meta: Sequence[str] = (),
    template: str | os.PathLike = DEFAULT_TEMPLATE,
) -> str:
    """The report as one HTML string (autoescaped; figures already embedded)."""
    template = Path(template)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template.parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(template.name).render(title=title, meta=meta, sections=sections)


def report_meta(study: Study, provenance: Provenance) -> list[str]:
    return [
        f"{len(study.pairs)} pairs × {len(study.datasets)} datasets × {len(study.alphas)} α",
        f"config {provenance.config_hash}",
        f"run {provenance.run_date}",
    ]


def write_report(
    path: str | os.PathLike,
    study: Study,
    provenance: Provenance,
    *,
    headline_alpha: float | None = None,
    extra_sections: Sequence[Section] = (),
    template: str | os.PathLike = DEFAULT_TEMPLATE,
) -> None:
    """Build, render and atomically write `report.html`."""
    sections = build_sections(
        study, provenance, headline_alpha=headline_alpha, extra_sections=extra_sections
    )
    html = render_report(sections, meta=report_meta(study, provenance), template=template)
    write_text(path, html)
