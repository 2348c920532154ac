"""Metric figures of one pair: the headline metrics and cross-sample diversity against
alpha, per-node entropy (the paper's Figure 3), and the confidence scatter."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from circuitry.analysis.metrics import HEADLINE_METRICS, METRICS, ROLES
from circuitry.analysis.paired_tests import loss_correlation
from circuitry.analysis.stats import WINDOW_LOSS
from circuitry.display import format_alpha, format_percent
from circuitry.figures.style import (
    ROLE_COLORS,
    grid,
    report_style,
    role_legend,
    save_png,
    tick_step,
)

CI_LEVEL = 0.95
DODGE = 0.06


DIVERSITY_CAPTION = (
    "{pair}: cross-sample diversity (mean pairwise cosine distance of |w| between problems) "
    "of base and tuned model, per dataset and α; labels give the change (paper, Figure 3a)."
)


def plot_diversity(values: pd.DataFrame, path: str | os.PathLike, *, title: str) -> None:
    """Cross-sample diversity of both roles over alpha, one panel per dataset.

    `values`: columns `dataset, alpha, role, value` (one pooled value per role). Each
    tuned point is labelled with its change relative to base.
    """
    datasets = list(dict.fromkeys(values["dataset"]))
    alphas = sorted(values["alpha"].unique())
    with report_style():
        fig, axes = grid(1, len(datasets), 3.4, sharey=True)
        for ax, dataset in zip(axes.flat, datasets, strict=True):
            wide = values[values["dataset"] == dataset].pivot(
                index="alpha", columns="role", values="value"
            )
            wide = wide.reindex(alphas)
            positions = np.arange(len(alphas))
            for role in ROLES:
                ax.plot(positions, wide[role], marker="o", color=ROLE_COLORS[role], label=role)
            for x, (base, tuned) in enumerate(zip(wide["base"], wide["tuned"], strict=True)):
                if np.isfinite(base) and np.isfinite(tuned) and base != 0:
                    ax.annotate(
                        format_percent(100 * (tuned - base) / abs(base)),
                        (x, tuned),
                        textcoords="offset points",
                        xytext=(0, 7),
                        ha="center",
                        fontsize=8,
                        color=ROLE_COLORS["tuned"],
                    )
            ax.set_xticks(positions, [str(a) for a in alphas])
            ax.set_xlim(-0.5, len(alphas) - 0.5)
            ax.margins(y=0.15)
            ax.set_xlabel("α (answer fraction)")
            ax.set_title(dataset)
        axes[0, 0].set_ylabel("diversity (mean pairwise cosine distance)")
        role_legend(fig)
        fig.suptitle(title)
        save_png(fig, path)


NODE_ENTROPY_CAPTION = (
    "{pair}: entropy of each forward node's normalised outgoing |w|, mean over problems "
    "(paper, Figure 3b)."
)


def plot_node_entropy(
    panels: Mapping[tuple[str, float], Mapping[str, Sequence[float | None]]],
    forward_nodes: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str,
) -> None:
    """Per forward node, the mean entropy of its normalised outgoing |w|, base vs tuned.

    `panels`: (dataset, alpha) -> {role: one value per forward node (None: undefined)};
    rows are datasets, columns alphas.
    """
    datasets = list(dict.fromkeys(d for d, _ in panels))
    alphas = sorted({a for _, a in panels})
    positions = np.arange(len(forward_nodes))
    step = tick_step(len(forward_nodes), max_labels=16)
    with report_style():
        fig, axes = grid(len(datasets), len(alphas), 2.5, sharex=True, sharey="row")
        for (row, dataset), (col, alpha) in itertools.product(
            enumerate(datasets), enumerate(alphas)
        ):
            ax = axes[row, col]
            for role in ROLES:
                values = np.array(
                    [np.nan if v is None else v for v in panels[dataset, alpha][role]], dtype=float
                )
                ax.plot(positions, values, marker=".", color=ROLE_COLORS[role], label=role)
            ax.set_xticks(positions[::step], list(forward_nodes)[::step], rotation=90, fontsize=7)
            ax.set_title(f"{dataset}, {format_alpha(alpha)}", fontsize=9)
            if col == 0:
                ax.set_ylabel("out-edge entropy (nats)")
        for ax in axes[-1]:
            ax.set_xlabel("forward node")
        role_legend(fig)
        fig.suptitle(title)
        save_png(fig, path)


def mean_with_ci(values: pd.DataFrame, level: float = CI_LEVEL) -> pd.DataFrame:
    """Mean and t-interval half-width of `value` per dataset, alpha, metric and role.

    Undefined (NaN) values are left out; a group of one value gets no interval.
    """
    grouped = values.dropna(subset=["value"]).groupby(["dataset", "alpha", "metric", "role"])
    summary = grouped["value"].agg(["mean", "sem", "count"]).reset_index()
    with np.errstate(invalid="ignore"):
        quantile = stats.t.ppf(0.5 + level / 2, summary["count"] - 1)
    return summary.assign(half_width=quantile * summary["sem"])


METRICS_VS_ALPHA_CAPTION = (
    "{pair}: headline metrics against α, base and tuned. Per-sample metrics: mean over the "
    "analysed problems with a 95% t-interval; diversity is one value per model."
)


def plot_metrics_vs_alpha(
    per_sample: pd.DataFrame,
    pooled: pd.DataFrame,
    path: str | os.PathLike,
    *,
    title: str,
    metrics: Sequence[str] = HEADLINE_METRICS,
) -> None:
    """Each metric against alpha for base and tuned; rows datasets, columns metrics (quantities).

    `per_sample`: `dataset, alpha, idx, role, metric, value`, drawn as the mean over
    samples with a 95% t-interval; `pooled`: `dataset, alpha, role, metric, value`, one
    point per role (no interval).
    """
    summary = pd.concat(
        [mean_with_ci(per_sample), pooled.assign(mean=pooled["value"], half_width=np.nan)]
    )
    datasets = list(dict.fromkeys(per_sample["dataset"]))
    alphas = sorted(per_sample["alpha"].unique())
    positions = np.arange(len(alphas))
    with report_style():
        fig, axes = grid(len(datasets), len(metrics), 2.6, sharex=True)
        for (row, dataset), (col, metric) in itertools.product(
            enumerate(datasets), enumerate(metrics)
        ):
            ax = axes[row, col]
            panel = summary[(summary["dataset"] == dataset) & (summary["metric"] == metric)]
            for offset, role in zip((-DODGE, DODGE), ROLES, strict=True):
                by_alpha = panel[panel["role"] == role].set_index("alpha").reindex(alphas)
                ax.errorbar(
                    positions + offset,
                    by_alpha["mean"],
                    yerr=by_alpha["half_width"],
                    color=ROLE_COLORS[role],
                    marker="o",
                    markersize=5,
                    capsize=3,
                    lw=1.5,
                )
            ax.set_xticks(positions, [str(a) for a in alphas])
            ax.set_xlim(-0.5, len(alphas) - 0.5)
            if row == 0:
                ax.set_title(METRICS[metric].quantity, fontsize=10)
            if col == 0:
                ax.set_ylabel(dataset, fontsize=10)
            ax.set_xlabel("α" if row == len(datasets) - 1 else "")
        role_legend(fig)
        fig.suptitle(title)
        save_png(fig, path)


def confidence_frame(per_sample: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Per dataset and sample at `alpha`: Δ log intensity and Δ window cross-entropy
    (tuned − base), from the paper-condition per-sample table."""
    rows = per_sample[
        (per_sample["alpha"] == alpha) & per_sample["metric"].isin(["intensity", WINDOW_LOSS])
    ]
    wide = rows.pivot_table(index=["dataset", "idx", "metric"], columns="role", values="value")
    with np.errstate(divide="ignore", invalid="ignore"):
        change = pd.Series(
            np.where(
                wide.index.get_level_values("metric") == "intensity",
                np.log(wide["tuned"] / wide["base"]),
                wide["tuned"] - wide["base"],
            ),
            index=wide.index,
        )
    return (
        change.unstack("metric")
        .reset_index()
        .rename(columns={"intensity": "log_intensity_change", WINDOW_LOSS: "window_ce_change"})
    )


CONFIDENCE_CAPTION = (
    "{pair}: per problem, the change of log activation intensity (tuned / base, paper's "
    "loss, own answers) against the change of the window's mean cross-entropy, at the "
    "largest α (named in the title). Points along a rising line: the intensity change goes "
    "with the model growing surer (left) or less sure (right) of its answer."
)


def plot_confidence(
    frame: pd.DataFrame, datasets: Sequence[str], path: str | os.PathLike, *, title: str
) -> None:
    """Scatter of Δ log intensity against Δ window loss, one panel per dataset, with
    the Spearman correlation across samples in each panel's title."""
    with report_style():
        fig, axes = grid(1, len(datasets), 3.2)
        for ax, dataset in zip(axes[0], datasets, strict=True):
            panel = frame[frame["dataset"] == dataset].replace([np.inf, -np.inf], np.nan).dropna()
            ax.scatter(
                panel["window_ce_change"],
                panel["log_intensity_change"],
                s=12,
                alpha=0.7,
                color=ROLE_COLORS["tuned"],
            )
            ax.axhline(0, color="grey", lw=0.8)
            ax.axvline(0, color="grey", lw=0.8)
            rho, _ = loss_correlation(
                panel["log_intensity_change"].to_numpy(), panel["window_ce_change"].to_numpy()
            )
            reading = "undefined (a constant change)" if np.isnan(rho) else f"{rho:.2f}"
            ax.set_title(f"{dataset}: Spearman {reading}", fontsize=10)
            ax.set_xlabel("Δ window cross-entropy (nats)")
        axes[0, 0].set_ylabel("Δ log intensity")
        fig.suptitle(title)
        save_png(fig, path)
