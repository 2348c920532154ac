"""The training-dynamics figures: what each RL run's trainer logged (the paper's Figure
4) and the circuit change along training (Figure 5)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import pandas as pd
import seaborn as sns

from circuitry.analysis.dynamics import (
    REWARD_WINDOW,
    SERIES,
    TRACKED_METRICS,
    moving_average,
    paper_loss,
)
from circuitry.analysis.metrics import METRICS
from circuitry.analysis.stats import WINDOW_LOSS
from circuitry.figures.style import grid, report_style, save_png
from circuitry.models.runs import TEXTS


def run_colors(runs: Sequence[str]) -> dict[str, str]:
    """One colour per run, in the order given."""
    palette = sns.color_palette("rocket", n_colors=max(2, len(runs)))
    return {run: palette[i] for i, run in enumerate(runs)}


def shade_fastest_gain(ax, highlights: pd.DataFrame, colors: Mapping[str, str]) -> None:
    """Each run's interval of fastest accuracy gain, shaded in its colour."""
    for run, span in highlights.groupby("run", sort=False):
        start, end = span.iloc[0][["interval_start", "interval_end"]]
        ax.axvspan(start, end, color=colors[run], alpha=0.08)


TRAINING_LOG_CAPTION = (
    "What each run's trainer logged (reward, reward standard deviation, and KL, entropy and "
    "completion length where logged), moving averages over "
    f"{REWARD_WINDOW} steps (paper, Figure 4); "
    "shaded: the interval of fastest accuracy gain."
)


def plot_training_log(
    logs: Mapping[str, pd.DataFrame], highlights: pd.DataFrame, path: str | os.PathLike
) -> None:
    """The series each run's trainer logged (reward, reward std, KL, entropy, completion
    length: those present), as trailing moving averages, one colour per run; shaded: the
    run's interval of fastest accuracy gain."""

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


METRIC_DYNAMICS_CAPTION = (
    "Accuracy, the change of activation intensity, distribution kurtosis and information "
    "complexity (95% CI bands) and of the window loss against the initial model, and the "
    "problems each point rests on; solid: on the initial model's answers, dashed: on each "
    "checkpoint's own. Shaded: the interval of fastest accuracy gain, star: each metric's "
    "extremum inside it (paper, Figure 5)."
)


def plot_metric_dynamics(
    summary: pd.DataFrame, highlights: pd.DataFrame, path: str | os.PathLike
) -> None:
    """Accuracy, each tracked metric's change and the window-loss change against steps,
    under the paper's loss: one colour per run, solid on the initial model's answers,
    dashed on the checkpoint's own; bands: 95% CIs.

    Shaded: each run's interval of fastest accuracy gain; marked: where inside it each
    metric is furthest from the initial model.
    """

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
