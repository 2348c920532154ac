"""The faithfulness figure: the loss change of removing EAP's top-k edges together against
removing k random edges, per pair, dataset and role."""

from __future__ import annotations

import os

import pandas as pd

from circuitry.display import format_alpha
from circuitry.figures.style import ROLE_COLORS, grid, report_style, role_legend, save_png

FAITHFULNESS_CAPTION = (
    "Loss change (nats, mean over the checked samples) when the k edges with the largest "
    "|EAP score| are removed together (solid) and when k random edges are (dashed), k on a "
    "log scale; one panel per pair and dataset, one colour per model. A faithful ranking "
    "rises above its random baseline from the first edges on."
)


def plot_faithfulness(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """`circuitry.attribution.faithfulness.load_faithfulness`'s frame: a panel per pair x dataset (x
    alpha where several are checked), the top-k and random-k curves of both roles."""

    panels = ["pair", "dataset", "alpha"]
    groups = list(frame.groupby(panels, sort=False))
    n_cols = min(3, len(groups))
    n_rows = -(-len(groups) // n_cols)
    several_alphas = frame["alpha"].nunique() > 1
    with report_style():
        fig, axes = grid(n_rows, n_cols, 2.8)
        for ax, ((pair, dataset, alpha), panel) in zip(axes.flat, groups, strict=False):
            for role, curves in panel.groupby("role", sort=False):
                color = ROLE_COLORS[role]
                ax.plot(curves["k"], curves["top"], color=color, marker="o", markersize=3)
                ax.plot(curves["k"], curves["random"], color=color, linestyle="--")
            ax.axhline(0, color="0.6", linewidth=0.8)
            ax.set_xscale("log")
            ax.set_xlabel("edges removed (k)")
            ax.set_ylabel("loss change (nats)")
            window = f", {format_alpha(alpha)}" if several_alphas else ""
            ax.set_title(f"{pair} · {dataset}{window}")
        for ax in axes.flat[len(groups) :]:
            ax.set_visible(False)
        role_legend(fig)
        save_png(fig, path)
