"""The report's figures: one function per figure, each writing one PNG.

Figures are built on `matplotlib.figure.Figure` objects, which render with the Agg
canvas without going through pyplot: no global backend switch (importing this module
in a notebook leaves its backend alone), no figure registry to leak, safe in a
headless job. Seaborn provides the styling (in a context manager, so the caller's
rcParams stay as they were).

Which data each figure shows, and why:

- `plot_edge_change`: per-edge relative change of the mean |w| (the paper's Figure 2),
  one figure per pair x dataset with one panel per alpha on a shared colour scale, so
  one sees whether the pattern holds across answer windows;
- `plot_diversity`: cross-sample diversity of base and tuned per dataset over alpha
  (Figure 3a), one figure per pair;
- `plot_node_entropy`: per-node out-edge entropy of base and tuned (Figure 3b), panels
  datasets x alphas, one figure per pair;
- `plot_metrics_vs_alpha`: each headline metric against alpha, base and tuned (mean with
  a 95% t-interval over samples), panels datasets x metrics, one figure per pair;
- `plot_log_abs_w`: the distribution of log10 |w| over real edges of both roles, panels
  datasets x alphas, one figure per pair;
- `plot_confidence`: per sample, the change of log activation intensity against the
  change of the window's cross-entropy at the headline alpha, one panel per dataset, so
  one sees how much of an intensity change goes with the model growing surer;
- `plot_training_curves`: per-step training logs of a model the workflow trained;
- `plot_training_log`: moving averages of what each RL run's trainer logged (reward,
  reward std, KL, entropy, completion length) (the paper's Figure 4);
- `plot_metric_dynamics`: accuracy, each tracked metric's change against the initial
  model (with its 95% CI) and the change in window loss over training steps, on the
  initial model's answers (weights alone) and on each checkpoint's own, with the number
  of problems each rests on; the interval of fastest accuracy gain shaded and each
  metric's largest change inside it marked (Figure 5).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import stats

from circuitry.io import atomic_path
from circuitry.metrics import METRICS, ROLES, load_edge_scores
from circuitry.paths import PAIR_FIGURE_NAMES, edge_change_figure_name
from circuitry.report import HEADLINE_METRICS, format_alpha, format_percent
from circuitry.results import PairResults
from circuitry.stats import WINDOW_LOSS

ROLE_COLORS = {"base": "#4C72B0", "tuned": "#DD8452"}
DPI = 110
WIDTH_IN = 11.0
MAX_TICK_LABELS = 30
CLIP_PERCENTILE = 98
HIST_BINS = 60
CI_LEVEL = 0.95
DODGE = 0.06
TRAINING_CURVES = (
    "loss",
    "reward",
    "rewards/accuracies",
    "rewards/margins",
    "mean_token_accuracy",
    "kl",
    "completions/mean_length",
    "entropy",
)
MAX_TRAINING_PANELS = 4


@contextlib.contextmanager
def report_style() -> Iterator[None]:
    """Seaborn's whitegrid style at a size legible at report width, for this block only."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        yield


def save_png(fig: Figure, path: str | os.PathLike) -> None:
    """Write `fig` as a PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


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


# ---------------------------------------------------------------- Figure 2: edge change


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


# ---------------------------------------------------------------- Figure 3a: diversity


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


# ---------------------------------------------------------------- Figure 3b: node entropy


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


# ---------------------------------------------------------------- Figure 4: metrics vs alpha


def mean_with_ci(values: pd.DataFrame, level: float = CI_LEVEL) -> pd.DataFrame:
    """Mean and t-interval half-width of `value` per dataset, alpha, metric and role.

    Undefined (NaN) values are left out; a group of one value gets no interval.
    """
    grouped = values.dropna(subset=["value"]).groupby(["dataset", "alpha", "metric", "role"])
    summary = grouped["value"].agg(["mean", "sem", "count"]).reset_index()
    with np.errstate(invalid="ignore"):
        quantile = stats.t.ppf(0.5 + level / 2, summary["count"] - 1)
    return summary.assign(half_width=quantile * summary["sem"])


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


# ---------------------------------------------------------------- confidence scatter


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
            rho = stats.spearmanr(panel["window_ce_change"], panel["log_intensity_change"])[0]
            ax.set_title(f"{dataset}: Spearman {rho:.2f}", fontsize=10)
            ax.set_xlabel("Δ window cross-entropy (nats)")
        axes[0, 0].set_ylabel("Δ log intensity")
        fig.suptitle(title)
        save_png(fig, path)


# ---------------------------------------------------------------- Figure 5: log10 |w|


def log_abs(values: np.ndarray) -> tuple[np.ndarray, int]:
    """log10 |w| of the non-zero values, and how many zeros were left out."""
    magnitude = np.abs(np.asarray(values, dtype=np.float64)).ravel()
    nonzero = magnitude[magnitude > 0]
    return np.log10(nonzero), int(magnitude.size - nonzero.size)


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


# ---------------------------------------------------------------- training curves


def training_columns(log: pd.DataFrame) -> list[str]:
    """The curves to draw: the first `MAX_TRAINING_PANELS` of `TRAINING_CURVES` the log has."""
    present = [c for c in TRAINING_CURVES if c in log.columns and log[c].notna().any()]
    return present[:MAX_TRAINING_PANELS]


def plot_training_curves(log: pd.DataFrame, path: str | os.PathLike, *, title: str) -> None:
    """Per-step training curves (loss, reward, accuracy, ...) of one model's trainer log.

    Columns vary by trainer; the ones of `TRAINING_CURVES` present are drawn against
    `step`; `reward_std` becomes a band around `reward`.
    """
    columns = training_columns(log)
    if not columns:
        raise ValueError(f"training log has none of the columns {TRAINING_CURVES}")
    with report_style():
        fig, axes = grid(1, len(columns), 2.8)
        for ax, column in zip(axes.flat, columns, strict=True):
            data = log[log[column].notna()]
            ax.plot(data["step"], data[column], color=ROLE_COLORS["tuned"], lw=1.3)
            if column == "reward" and "reward_std" in data:
                ax.fill_between(
                    data["step"],
                    data["reward"] - data["reward_std"],
                    data["reward"] + data["reward_std"],
                    color=ROLE_COLORS["tuned"],
                    alpha=0.2,
                    lw=0,
                )
            ax.set_title(column, fontsize=9)
            ax.set_xlabel("step")
        fig.suptitle(title)
        save_png(fig, path)


# ---------------------------------------------------------------- one pair's figures


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


def make_training_figure(
    log_path: str | os.PathLike, path: str | os.PathLike, *, model: str, train: Mapping
) -> None:
    """The training-curve figure of a model the workflow trained (`train`: its config block)."""
    log = pd.read_csv(log_path)
    plot_training_curves(log, path, title=f"{model}: {train['method'].upper()} training")


# ---------------------------------------------------------------- Figures 4 and 5: dynamics


def run_colors(runs: Sequence[str]) -> dict[str, str]:
    """One colour per run, in the order given."""
    palette = sns.color_palette("rocket", n_colors=max(2, len(runs)))
    return {run: palette[i] for i, run in enumerate(runs)}


def shade_fastest_gain(ax, highlights: pd.DataFrame, colors: Mapping[str, str]) -> None:
    """Each run's interval of fastest accuracy gain, shaded in its colour."""
    for run, span in highlights.groupby("run", sort=False):
        start, end = span.iloc[0][["interval_start", "interval_end"]]
        ax.axvspan(start, end, color=colors[run], alpha=0.08)


def plot_training_log(
    logs: Mapping[str, pd.DataFrame], highlights: pd.DataFrame, path: str | os.PathLike
) -> None:
    """The series each run's trainer logged (reward, reward std, KL, entropy, completion
    length: those present), as trailing moving averages, one colour per run; shaded: the
    run's interval of fastest accuracy gain."""
    from circuitry.dynamics import REWARD_WINDOW, SERIES, moving_average

    series = [s for s in SERIES.values() if any(s in log.columns for log in logs.values())]
    colors = run_colors(list(dict.fromkeys([*highlights["run"], *logs])))
    with report_style():
        fig, axes = grid(1, max(1, len(series)), 3.0)
        for ax, column in zip(axes[0], series, strict=False):
            for run, log in logs.items():
                if column in log.columns:
                    present = log.dropna(subset=[column])
                    ax.plot(
                        present["step"],
                        moving_average(present[column], REWARD_WINDOW),
                        color=colors[run],
                        label=run,
                    )
            shade_fastest_gain(ax, highlights, colors)
            ax.set(
                xlabel="training step",
                ylabel=f"{column.replace('_', ' ')} (moving average, {REWARD_WINDOW} steps)",
            )
        if series:
            axes[0][0].legend(frameon=False)
        else:
            axes[0][0].text(0.5, 0.5, "no run logged its training", ha="center", va="center")
            axes[0][0].set_axis_off()
        fig.suptitle("What the trainers logged (shaded: fastest accuracy gain)")
        save_png(fig, path)


def plot_metric_dynamics(
    summary: pd.DataFrame, highlights: pd.DataFrame, path: str | os.PathLike
) -> None:
    """Accuracy, each tracked metric's change and the window-loss change against steps,
    under the paper's loss: one colour per run, solid on the initial model's answers,
    dashed on the checkpoint's own; bands: 95% CIs.

    Shaded: each run's interval of fastest accuracy gain; marked: where inside it each
    metric is furthest from the initial model.
    """
    from circuitry.dynamics import TRACKED_METRICS, paper_loss
    from circuitry.runs import TEXTS

    summary = paper_loss(summary)
    colors = run_colors(list(summary["run"].unique()))
    styles = dict(zip(TEXTS, ("-", "--"), strict=True))
    panels = [
        ("accuracy", None, "accuracy on the eval set"),
        *(
            (f"{m}_change_pct", f"{m}_ci_pct", f"{METRICS[m].quantity}: change vs initial (%)")
            for m in TRACKED_METRICS
        ),
        (f"{WINDOW_LOSS}_change", f"{WINDOW_LOSS}_ci", "window loss: change vs initial (nats)"),
        ("n_samples", None, "problems analysed"),
    ]
    with report_style():
        fig, axes = grid(2, 3, 2.8)
        for ax, (column, band, label) in zip(axes.flat, panels, strict=True):
            for (run, text), frame in summary.groupby(["run", "text"], sort=False):
                if column == "accuracy" and text != "initial":
                    continue  # one accuracy per checkpoint
                color = colors[run]
                ax.plot(
                    frame["step"],
                    frame[column],
                    marker="o",
                    linestyle=styles[text],
                    color=color,
                    label=f"{run}, {TEXTS[text]}",
                )
                if band:
                    ax.fill_between(
                        frame["step"],
                        frame[f"{band}_low"],
                        frame[f"{band}_high"],
                        color=color,
                        alpha=0.12,
                        linewidth=0,
                    )
                mark = highlights[
                    (highlights["run"] == run)
                    & (highlights["text"] == text)
                    & (highlights["metric"] == column.removesuffix("_change_pct"))
                ]
                ax.plot(
                    mark["extremum_step"],
                    mark["extremum_change_pct"],
                    marker="*",
                    markersize=14,
                    color=color,
                    linestyle="none",
                )
            shade_fastest_gain(ax, highlights, colors)
            ax.set(xlabel="training step", ylabel=label)
        axes[0][1].legend(frameon=False, fontsize=7)
        fig.suptitle(
            "Accuracy and circuit change along RL training, paper's loss "
            "(shaded: fastest accuracy gain; star: largest change inside it)"
        )
        save_png(fig, path)
