"""The training-dynamics section: each run's checkpoints against its initial model (the
paper's Figures 4 and 5)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import pandas as pd

from circuitry.analysis.dynamics import TRACKED_METRICS, paper_loss
from circuitry.analysis.metrics import METRICS
from circuitry.analysis.stats import WINDOW_LOSS
from circuitry.display import (
    format_number,
    format_percent,
    format_percent_plain,
    format_signed,
)
from circuitry.figures.dynamics import METRIC_DYNAMICS_CAPTION, TRAINING_LOG_CAPTION
from circuitry.models.runs import TEXTS, source_of
from circuitry.report.blocks import Cell, Row, Section, Table, Text, figure


def dynamics_table(summary: pd.DataFrame) -> Table:
    """Under the paper's loss: accuracy, each tracked metric's change and the window-loss
    change at every checkpoint, on both texts, one group per run."""

    columns = [
        "step",
        "text",
        "accuracy",
        *(METRICS[m].quantity for m in TRACKED_METRICS),
        "window loss (nats)",
        "n",
    ]
    rows = [
        Row(
            [
                Cell(str(int(row["step"]))),
                Cell(TEXTS[row["text"]]),
                Cell(format_percent_plain(100 * row["accuracy"])),
                *(Cell(format_percent(row[f"{m}_change_pct"])) for m in TRACKED_METRICS),
                Cell(format_signed(row[f"{WINDOW_LOSS}_change"])),
                Cell(format_number(row["n_samples"])),
            ],
            group=f"run {row['run']}",
        )
        for _, row in paper_loss(summary).iterrows()
    ]
    return Table(
        columns,
        rows,
        caption="Accuracy on the eval set and each change against the initial model",
        notes=[
            "Step 0 is the initial model. Every checkpoint is scored on one fixed problem "
            "set (the initial model's correct answers within its length bounds) with one "
            "answer window: on the initial model's answers (the same tokens, so only the "
            "weights differ) and on its own answers where it answered correctly too. "
            "Changes are paired over those problems: intensity as the geometric mean of "
            "per-sample ratios, the other metrics as the change of the mean, the window "
            "loss as the change of its mean cross-entropy. n: problems compared.",
        ],
    )


def dynamics_highlights_text(highlights: pd.DataFrame) -> list[str]:
    """One sentence per run and text: the fastest-gain interval and the extrema."""

    sentences = []
    for (run, text), frame in highlights.groupby(["run", "text"], sort=False):
        start, end = frame.iloc[0][["interval_start", "interval_end"]]
        extrema = "; ".join(
            f"{METRICS[row['metric']].quantity} {format_percent(row['extremum_change_pct'])} "
            f"at step {int(row['extremum_step'])}"
            for _, row in frame.iterrows()
        )
        sentences.append(
            f"Run {run}, on {TEXTS[text]}: accuracy rose fastest between "
            f"steps {int(start)} and {int(end)}; inside that interval each metric is "
            f"furthest from the initial model at: {extrema}."
        )
    return sentences


def describe_run(run: Mapping) -> str:
    """Where a run's checkpoints came from, in words."""

    source = source_of(run)
    if source == "train":
        train = run["train"]
        where = (
            f"GRPO run by the workflow from {run['init']} on {', '.join(train['data'])} at "
            f"temperature {train['temperature']:g} ({train['num_generations']} generations "
            f"per prompt, {train['steps']} steps, a checkpoint every "
            f"{train['checkpoint_every']}), its checkpoints read back from trl's output "
            "directory"
        )
    elif source == "trl":
        where = f"the trl checkpoints in {run['trl']}, from {run['init']}"
    elif source == "dirs":
        where = f"the model directories {run['dirs']['glob']}, from {run['init']}"
    else:
        where = f"revisions of {run['revisions']['hub_id']}, from {run['init']}"
    every = run["every"]
    return f"{run['name']}: {where}" + (f", every {every}th checkpoint" if every > 1 else "")


def dynamics_section(
    config: Mapping,
    summary: pd.DataFrame,
    highlights: pd.DataFrame,
    training_figure: str | os.PathLike,
    metrics_figure: str | os.PathLike,
) -> Section:
    """The training-dynamics section (the paper's Figures 4 and 5)."""
    dynamics = config["dynamics"]
    intro = (
        f"Runs: {'; '.join(describe_run(run) for run in dynamics['runs'])}. Each checkpoint "
        f"answered {dynamics['eval_dataset']}; its circuits were scored (EAP, "
        f"α = {dynamics['alpha']}) on one fixed problem set, its initial model's correct "
        "answers within that model's length bounds, both on the initial model's answers (the "
        "same tokens, so the curve shows the weights alone) and on its own correct answers, "
        "and compared with the initial model on the same problems. The window loss beside "
        "each change says how much surer of the text the checkpoint became."
    )
    return Section(
        "dynamics",
        "Training dynamics",
        [
            Text([intro, *dynamics_highlights_text(highlights)]),
            figure(training_figure, TRAINING_LOG_CAPTION),
            figure(metrics_figure, METRIC_DYNAMICS_CAPTION),
            dynamics_table(summary),
        ],
    )
