"""The training curves of a model the workflow trained."""

from __future__ import annotations

import os
from collections.abc import Mapping

import pandas as pd

from circuitry.figures.style import ROLE_COLORS, grid, report_style, save_png

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


def make_training_figure(
    log_path: str | os.PathLike, path: str | os.PathLike, *, model: str, train: Mapping
) -> None:
    """The training-curve figure of a model the workflow trained (`train`: its config block)."""
    log = pd.read_csv(log_path)
    plot_training_curves(log, path, title=f"{model}: {train['method'].upper()} training")
