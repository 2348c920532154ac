"""Per-edge figures of one pair: the relative change of each edge's mean |w| (the paper's
Figure 2) and the distribution of log10 |w| over the real edges."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from circuitry.analysis.metrics import ROLES
from circuitry.display import format_alpha
from circuitry.figures.style import (
    ROLE_COLORS,
    WIDTH_IN,
    grid,
    report_style,
    role_legend,
    save_png,
    tick_step,
)

CLIP_PERCENTILE = 98
HIST_BINS = 60


def edge_change_matrix(summary: Mapping) -> np.ndarray:
    """The metrics JSON's `edge_relative_change` as floats, NaN on non-edges (null)."""
    return np.array(
        [[np.nan if v is None else v for v in row] for row in summary["edge_relative_change"]],
        dtype=np.float64,
    )


def symmetric_limit(matrices: Sequence[np.ndarray], percentile: float = CLIP_PERCENTILE) -> float:
    """A robust colour limit: the `percentile` of |value| over all finite values (1 if none)."""
    values = np.concatenate([np.abs(m[np.isfinite(m)]) for m in matrices])
    limit = float(np.percentile(values, percentile)) if values.size else 0.0
    return limit if limit > 0 else 1.0


EDGE_CHANGE_CAPTION = (
    "{pair} on {dataset}: relative change (tuned − base) / base of each edge's mean |w|, "
    "rows forward nodes (writers), columns backward nodes (readers); blank: no edge. "
    "Colours are clipped at the 98th percentile of |change| (paper, Figure 2)."
)


def plot_edge_change(
    panels: Mapping[str, np.ndarray],
    forward_nodes: Sequence[str],
    backward_nodes: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str,
    n_cols: int = 2,
) -> None:
    """Heatmaps of per-edge relative change (percent), forward x backward nodes, one per panel.

    `panels`: label -> `[n_forward, n_backward]` relative change (fraction, NaN on
    non-edges, which stay blank). Diverging colours centred at 0, symmetric limits at the
    `CLIP_PERCENTILE` of |change| over all panels (extreme edges with a tiny base would
    wash everything else out); the colour bar marks the clipping.
    """
    percent = {label: 100 * matrix for label, matrix in panels.items()}
    limit = symmetric_limit(list(percent.values()))
    n_cols = min(n_cols, len(percent))
    n_rows = math.ceil(len(percent) / n_cols)
    aspect = len(forward_nodes) / len(backward_nodes)
    panel_height = max(2.6, WIDTH_IN / n_cols * aspect + 1.2)
    with report_style():
        fig, axes = grid(n_rows, n_cols, panel_height)
        for ax, (label, matrix) in zip(axes.flat, percent.items(), strict=False):
            mesh = ax.pcolormesh(
                np.ma.masked_invalid(matrix), cmap="RdBu_r", vmin=-limit, vmax=limit
            )
            ax.invert_yaxis()
            thin_ticks(ax, backward_nodes, forward_nodes)
            ax.set_title(label)
            ax.set_xlabel("backward node (reads the residual)")
            ax.set_ylabel("forward node (writes)")
        for ax in axes.flat[len(percent) :]:
            ax.set_visible(False)
        fig.colorbar(
            mesh, ax=axes, extend="both", shrink=0.8, label="relative change of mean |w| (%)"
        )
        fig.suptitle(title)
        save_png(fig, path)


def thin_ticks(ax, x_names: Sequence[str], y_names: Sequence[str]) -> None:
    """Node names at cell centres on both axes, every k-th only so that labels never overlap."""
    for axis, names, rotation in ((ax.xaxis, x_names, 90), (ax.yaxis, y_names, 0)):
        step = tick_step(len(names))
        positions = np.arange(0, len(names), step) + 0.5
        axis.set_ticks(positions, [names[i] for i in range(0, len(names), step)])
        for label in axis.get_ticklabels():
            label.set_rotation(rotation)
            label.set_fontsize(7)
    ax.grid(False)


def log_abs(values: np.ndarray) -> tuple[np.ndarray, int]:
    """log10 |w| of the non-zero values, and how many zeros were left out."""
    magnitude = np.abs(np.asarray(values, dtype=np.float64)).ravel()
    nonzero = magnitude[magnitude > 0]
    return np.log10(nonzero), int(magnitude.size - nonzero.size)


LOG_ABS_W_CAPTION = (
    "{pair}: distribution of log10 |w| over the real edges of all analysed problems, base "
    "and tuned; dashed lines: medians."
)


def plot_log_abs_w(
    panels: Mapping[tuple[str, float], Mapping[str, np.ndarray]],
    path: str | os.PathLike,
    *,
    title: str,
) -> None:
    """Density of log10 |w| over the real edges of all samples, base vs tuned, shared bins.

    `panels`: (dataset, alpha) -> {role: edge scores (any shape, real edges only)}; rows
    datasets, columns alphas. Zero scores have no logarithm; a panel says how many it left out.
    """
    logs = {key: {role: log_abs(w) for role, w in ws.items()} for key, ws in panels.items()}
    finite = [lw for by_role in logs.values() for lw, _ in by_role.values() if lw.size]
    low = min(float(lw.min()) for lw in finite) if finite else -1.0
    high = max(float(lw.max()) for lw in finite) if finite else 0.0
    bins = np.linspace(low, high if high > low else low + 1, HIST_BINS + 1)
    datasets = list(dict.fromkeys(d for d, _ in panels))
    alphas = sorted({a for _, a in panels})
    with report_style():
        fig, axes = grid(len(datasets), len(alphas), 2.4, sharex=True)
        for (row, dataset), (col, alpha) in itertools.product(
            enumerate(datasets), enumerate(alphas)
        ):
            ax = axes[row, col]
            zeros = 0
            for role in ROLES:
                values, n_zero = logs[dataset, alpha][role]
                zeros += n_zero
                if values.size:
                    density, _ = np.histogram(values, bins=bins, density=True)
                    ax.stairs(density, bins, color=ROLE_COLORS[role], linewidth=1.4, label=role)
                    ax.axvline(np.median(values), color=ROLE_COLORS[role], linestyle="--", lw=1)
            if zeros:
                ax.text(
                    0.02,
                    0.95,
                    f"{zeros} zero scores left out",
                    transform=ax.transAxes,
                    fontsize=7,
                    va="top",
                )
            ax.set_title(f"{dataset}, {format_alpha(alpha)}", fontsize=9)
            ax.set_xlabel("log10 |w|" if row == len(datasets) - 1 else "")
            ax.set_ylabel("density" if col == 0 else "")
        role_legend(fig)
        fig.suptitle(title)
        save_png(fig, path)
