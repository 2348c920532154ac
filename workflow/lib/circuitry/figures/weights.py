"""Where the weights changed: the relative update norm per layer and module kind, and each
layer's update beside the change of activation intensity on its edges."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D

from circuitry.display import format_number
from circuitry.figures.style import grid, report_style, save_png

UPDATE_NORM_CAPTION = (
    "Relative update norm ||ΔW|| / ||W|| of each module kind (rows) in each layer "
    "(columns), pooled over the kind's tensors in the layer; one panel per pair, one "
    "logarithmic colour scale for all. Blank: no tensor of that kind, or no change."
)
LAYER_JOIN_CAPTION = (
    "Per layer: the relative update norm of its weights (grey bars, right axis) beside the "
    "change of activation intensity on the edges its nodes write or read (lines, left "
    "axis: geometric mean over datasets and α of tuned / base mean |w|, minus 1), under the "
    "paper's loss and the calibrated reading. The title gives each reading's Spearman "
    "correlation across layers between the update norm and |log(tuned / base)|."
)
READING_COLORS = {"ce": "#C44E52", "target_unit": "#55A868"}
PANELS_PER_ROW = 3


def panel_grid(n_panels: int, height: float):
    """A grid of at most `PANELS_PER_ROW` columns and its first `n_panels` axes, the unused
    ones hidden."""
    n_cols = min(PANELS_PER_ROW, n_panels)
    fig, axes = grid(math.ceil(n_panels / n_cols), n_cols, height)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n_panels])


def no_panel(path: str | os.PathLike, message: str) -> None:
    """A figure that says why it has nothing to show."""
    with report_style():
        fig, (ax,) = panel_grid(1, 1.5)
        ax.text(0.5, 0.5, message, ha="center", va="center")
        ax.set_axis_off()
        save_png(fig, path)


def plot_update_norms(norms: Mapping[str, pd.DataFrame], path: str | os.PathLike) -> None:
    """One heatmap per pair of `circuitry.analysis.weights.layer_kind_norms` (kind x layer)."""
    norms = {pair: frame for pair, frame in norms.items() if not frame.empty}
    if not norms:
        return no_panel(path, "no tensor lies in a numbered block: nothing to show per layer")
    positive = np.concatenate([frame.to_numpy().ravel() for frame in norms.values()])
    positive = positive[positive > 0]
    scale = LogNorm(positive.min(), positive.max()) if positive.size else None
    with report_style():
        fig, axes = panel_grid(len(norms), 2.6)
        mesh = None
        for ax, (pair, frame) in zip(axes, norms.items(), strict=False):
            values = frame.to_numpy(dtype=float)
            shown = np.ma.masked_where(~(values > 0), values)
            mesh = ax.pcolormesh(shown, cmap="viridis", norm=scale)
            ax.invert_yaxis()
            ax.set_xticks(np.arange(frame.shape[1]) + 0.5, [str(c) for c in frame.columns])
            ax.set_yticks(np.arange(frame.shape[0]) + 0.5, list(frame.index))
            ax.set_xlabel("layer")
            ax.set_title(pair if shown.count() else f"{pair} (no change)")
            ax.grid(False)
        if scale is not None:
            fig.colorbar(mesh, ax=axes, shrink=0.8, label="||ΔW|| / ||W||")
        save_png(fig, path)


def plot_layer_join(
    join: pd.DataFrame, correlations: pd.DataFrame, path: str | os.PathLike
) -> None:
    """`circuitry.analysis.weight_join.study_join`'s table: one panel per pair, layers
    on x, intensity change per reading (lines) and the update norm (bars, twin axis)."""
    rho = correlations.set_index(["pair", "loss"])["spearman"]
    pairs = list(dict.fromkeys(join["pair"]))
    if not pairs:
        return no_panel(path, "no layer could be joined: no tensor lies in a numbered block")
    with report_style():
        fig, axes = panel_grid(len(pairs), 2.8)
        for ax, pair in zip(axes, pairs, strict=False):
            rows = join[join["pair"] == pair]
            norms = rows.drop_duplicates("layer")
            bars = ax.twinx()
            bars.bar(norms["layer"], norms["rel_update_norm"], color="0.85", zorder=0)
            bars.set_ylabel("||ΔW|| / ||W||")
            bars.grid(False)
            ax.set_zorder(bars.get_zorder() + 1)
            ax.patch.set_visible(False)
            titles = []
            for loss, reading in rows.groupby("loss", sort=False):
                color = READING_COLORS.get(loss, "0.3")
                ax.plot(reading["layer"], reading["intensity_change_pct"], "o-", color=color)
                titles.append(f"{loss} ρ {format_number(rho[pair, loss], 2)}")
            ax.axhline(0, color="0.6", linewidth=0.8)
            ax.set_xticks(norms["layer"])
            ax.set_xlabel("layer")
            ax.set_ylabel("intensity change (%)")
            ax.set_title(f"{pair}: {', '.join(titles)}", fontsize=9)
        handles = [
            Line2D([], [], color=READING_COLORS.get(loss, "0.3"), marker="o", label=loss)
            for loss in dict.fromkeys(join["loss"])
        ]
        fig.legend(handles=handles, loc="outside upper right", ncols=len(handles), frameon=False)
        save_png(fig, path)
