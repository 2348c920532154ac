"""The figures' common look: seaborn's style in a context manager, report width, role
colours, and atomic PNG writing at the report's own resolution.

Figures are built on `matplotlib.figure.Figure` objects, which render with the Agg
canvas without going through pyplot: no global backend switch (importing this package
in a notebook leaves its backend alone), no figure registry to leak, safe in a
headless job."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

from circuitry.analysis.metrics import ROLES
from circuitry.io import atomic_path

ROLE_COLORS = {"base": "#4C72B0", "tuned": "#DD8452"}
# The width of a figure in the report (report.html.j2: the 1,180 px column less 2 rem of
# padding each side and the image's 1 px border): a figure of report width is drawn with
# exactly as many pixels, so the browser never rescales it.
REPORT_WIDTH_PX = 1114
WIDTH_IN = 11.0
DPI = REPORT_WIDTH_PX / WIDTH_IN
PALETTE_COLORS = 256
MAX_TICK_LABELS = 30


@contextlib.contextmanager
def report_style() -> Iterator[None]:
    """Seaborn's whitegrid style at a size legible at report width, for this block only."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        yield


def save_png(fig: Figure, path: str | os.PathLike) -> None:
    """Write `fig` as a PNG atomically, drawn at `DPI` and stored with a palette of 256
    colours (median cut): a third of the bytes of full colour, which the report embeds,
    with no visible loss on plots of a few hundred colours."""
    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(DPI)
    canvas.draw()
    pixels = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba())
    palette = pixels.convert("RGB").quantize(PALETTE_COLORS, method=Image.Quantize.MEDIANCUT)
    with atomic_path(path) as tmp:
        palette.save(tmp, format="png")


def grid(n_rows: int, n_cols: int, panel_height: float, **kwargs):
    """A figure of report width with an `n_rows x n_cols` grid of axes (always 2-D)."""
    fig = Figure(figsize=(WIDTH_IN, panel_height * n_rows + 0.8), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False, **kwargs)
    return fig, axes


def tick_step(n_labels: int, max_labels: int = MAX_TICK_LABELS) -> int:
    """Show every k-th label so that at most `max_labels` are drawn."""
    return max(1, math.ceil(n_labels / max_labels))


def role_legend(fig: Figure) -> None:
    """One legend for the whole figure: base and tuned colours."""
    handles = [Line2D([], [], color=ROLE_COLORS[r], marker="o", label=r) for r in ROLES]
    fig.legend(handles=handles, loc="outside upper right", ncols=2, frameon=False)
