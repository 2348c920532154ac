"""Every figure of one pair, from its metrics and EAP scores, and their captions."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from circuitry.analysis.results import PairResults
from circuitry.attribution.scorefile import load_edge_scores
from circuitry.display import format_alpha
from circuitry.figures.edges import (
    EDGE_CHANGE_CAPTION,
    LOG_ABS_W_CAPTION,
    edge_change_matrix,
    plot_edge_change,
    plot_log_abs_w,
)
from circuitry.figures.metrics import (
    CONFIDENCE_CAPTION,
    DIVERSITY_CAPTION,
    METRICS_VS_ALPHA_CAPTION,
    NODE_ENTROPY_CAPTION,
    confidence_frame,
    plot_confidence,
    plot_diversity,
    plot_metrics_vs_alpha,
    plot_node_entropy,
)
from circuitry.paths import PAIR_FIGURE_NAMES, edge_change_figure_name


def diversity_frame(results: PairResults) -> pd.DataFrame:
    """`dataset, alpha, role, metric, value` of every pooled metric, from the metrics JSONs."""
    return pd.DataFrame(
        [
            {"dataset": d, "alpha": a, "role": role, "metric": metric, "value": value}
            for (d, a), summary in results.summaries.items()
            for metric, by_role in summary["pooled"].items()
            for role, value in by_role.items()
        ]
    ).astype({"value": float})


def first_summary(results: PairResults) -> Mapping:
    return next(iter(results.summaries.values()))


def real_edge_scores(path: str | os.PathLike) -> np.ndarray:
    """`[n_samples, n_edges]` scores of one role's EAP npz (checked on reading)."""
    return load_edge_scores(path).edge_values


def make_pair_figures(results: PairResults, paths: Mapping[str, str | os.PathLike]) -> None:
    """Every figure of one pair, written to `paths` (name -> PNG, `Layout.pair_figures`)."""
    expected = {*PAIR_FIGURE_NAMES, *(edge_change_figure_name(d) for d in results.datasets)}
    if set(paths) != expected:
        raise ValueError(f"figure paths for {sorted(paths)}, expected {sorted(expected)}")
    label = results.label
    summary = first_summary(results)
    pooled = diversity_frame(results)
    plot_metrics_vs_alpha(
        results.per_sample,
        pooled,
        paths["metrics_vs_alpha"],
        title=f"{label}: headline metrics against α",
    )
    plot_diversity(
        pooled[pooled["metric"] == "diversity"],
        paths["diversity"],
        title=f"{label}: cross-sample diversity",
    )
    plot_node_entropy(
        {key: s["node_entropy_mean"] for key, s in results.summaries.items()},
        summary["forward_nodes"],
        paths["node_entropy"],
        title=f"{label}: per-node out-edge entropy",
    )
    plot_log_abs_w(
        {
            key: {role: real_edge_scores(path) for role, path in by_role.items()}
            for key, by_role in results.eap_paths.items()
        },
        paths["log_abs_w"],
        title=f"{label}: distribution of log10 |w| over real edges",
    )
    headline_alpha = max(results.alphas)
    plot_confidence(
        confidence_frame(results.per_sample, headline_alpha),
        results.datasets,
        paths["confidence"],
        title=f"{label}: intensity change against confidence change at "
        f"{format_alpha(headline_alpha)}",
    )
    for dataset in results.datasets:
        plot_edge_change(
            {
                format_alpha(alpha): edge_change_matrix(results.summaries[dataset, alpha])
                for alpha in results.alphas
            },
            summary["forward_nodes"],
            summary["backward_nodes"],
            paths[edge_change_figure_name(dataset)],
            title=f"{label} on {dataset}: per-edge relative change of mean |w|, tuned vs base",
        )


def pair_figure_captions(label: str, datasets: Sequence[str]) -> dict[str, str]:
    """Each figure of one pair (`label`: its name and method) -> its caption."""
    captions = {
        "metrics_vs_alpha": METRICS_VS_ALPHA_CAPTION,
        "diversity": DIVERSITY_CAPTION,
        "node_entropy": NODE_ENTROPY_CAPTION,
        "log_abs_w": LOG_ABS_W_CAPTION,
        "confidence": CONFIDENCE_CAPTION,
    }
    edge_change = {
        edge_change_figure_name(dataset): EDGE_CHANGE_CAPTION.format(pair=label, dataset=dataset)
        for dataset in datasets
    }
    return {name: text.format(pair=label) for name, text in captions.items()} | edge_change
