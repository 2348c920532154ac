"""Training dynamics: accuracy and circuit metrics along GRPO runs (the paper's Figs. 4, 5).

The config's `dynamics` block describes GRPO runs from an initial model, one per sampling
temperature, each saving a checkpoint every `checkpoint_every` steps. Every checkpoint
becomes a model, and (initial model -> checkpoint) a pair analysed on the eval dataset,
so the workflow's own generation, pairing, EAP and metrics stages give each checkpoint's
accuracy and circuit change; no second pipeline. This module names those models and
pairs, and turns their results into a table along training steps.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from circuitry.config import TRAINED_MODEL_DIR
from circuitry.metrics import paper_condition
from circuitry.stats import percent_change

CHECKPOINT = "dyn-t{temperature}-step{step}"
TRACKED_METRICS = ("intensity", "kurtosis", "entropy")  # the paper's Figure 5 panels
REWARD_WINDOW = 8


@dataclass(frozen=True)
class Checkpoint:
    temperature: float
    step: int

    @property
    def name(self) -> str:
        return CHECKPOINT.format(temperature=self.temperature, step=self.step)


def enabled(config: Mapping) -> bool:
    """Whether the run includes the dynamics: configured, enabled, and no `only_pairs`
    narrowing the run to some of the study's pairs."""
    block = config.get("dynamics")
    return bool(block) and block.get("enabled", True) and not config.get("only_pairs")


def temperatures(config: Mapping) -> list[float]:
    """The runs' sampling temperatures, in config order."""
    return list(dict.fromkeys(float(t) for t in config["dynamics"]["temperatures"]))


def checkpoint_steps(dynamics: Mapping) -> list[int]:
    every = dynamics["checkpoint_every"]
    return list(range(every, dynamics["steps"] + 1, every))


def checkpoints(config: Mapping) -> list[Checkpoint]:
    """Every checkpoint of every temperature's run, in temperature then step order."""
    if not enabled(config):
        return []
    steps = checkpoint_steps(config["dynamics"])
    return [Checkpoint(t, step) for t in temperatures(config) for step in steps]


def checkpoint_dirs(config: Mapping, temperature) -> dict[int, str]:
    """`{step: model directory}` of one temperature's run."""
    return {
        c.step: TRAINED_MODEL_DIR.format(model=c.name)
        for c in checkpoints(config)
        if c.temperature == float(temperature)
    }


def add_checkpoints(config: dict) -> list[Checkpoint]:
    """Add a model and a pair (initial model -> checkpoint) per checkpoint to `config`.

    The models inherit the initial model's template, generation length and resources;
    the pairs are marked `dynamics`: they stay out of the study's table and figures, and
    the workflow analyses them on the eval dataset only. Returns the checkpoints.
    """
    found = checkpoints(config)
    dynamics = config.get("dynamics") or {}
    init = config["models"][dynamics["init"]] if found else {}
    inherited = {
        k: init[k]
        for k in (
            "template",
            "max_new_tokens",
            "dtype",
            "gpu",
            "size_b",
            "trust_remote_code",
            "batch_size",
        )
        if k in init
    }
    for checkpoint in found:
        config["models"][checkpoint.name] = {
            **inherited,
            "path": TRAINED_MODEL_DIR.format(model=checkpoint.name),
            "checkpoint": {"temperature": checkpoint.temperature, "step": checkpoint.step},
        }
        config["pairs"][checkpoint.name] = {
            "base": dynamics["init"],
            "tuned": checkpoint.name,
            "method": "GRPO",
            "dynamics": True,
        }
    return found


def grpo_settings(dynamics: Mapping, temperature: float) -> dict:
    """The `train_grpo` settings of one temperature's run."""
    keys = (
        "seed",
        "steps",
        "prompts_per_step",
        "num_generations",
        "max_completion_length",
        "learning_rate",
        "beta",
    )
    return {**{k: dynamics[k] for k in keys}, "temperature": float(temperature)}


def moving_average(values: Sequence[float], window: int = REWARD_WINDOW) -> np.ndarray:
    """Trailing mean over the last `window` values (fewer at the start)."""
    values = np.asarray(values, dtype=float)
    sums = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - window)
    return (sums[ends] - sums[starts]) / (ends - starts)


def fastest_gain_interval(steps: Sequence[int], accuracy: Sequence[float]) -> tuple[int, int]:
    """The pair of consecutive checkpoints between which accuracy rose fastest per step."""
    steps, accuracy = np.asarray(steps), np.asarray(accuracy, dtype=float)
    if len(steps) < 2:
        raise ValueError("the fastest accuracy gain needs at least two checkpoints")
    rates = np.diff(accuracy) / np.diff(steps)
    i = int(np.argmax(rates))
    return int(steps[i]), int(steps[i + 1])


def extremum_within(frame: pd.DataFrame, metric: str, interval: tuple[int, int]) -> pd.Series:
    """The checkpoint inside `interval` (ends included) where `metric` is furthest from the
    initial model: its largest absolute change, whichever the direction."""
    inside = frame[frame["step"].between(*interval)]
    return frame.loc[inside[f"{metric}_change_pct"].abs().idxmax()]


def checkpoint_row(checkpoint: Checkpoint, accuracy: float, per_sample: pd.DataFrame) -> dict:
    """Accuracy and the percent change of each tracked metric's mean vs the initial model."""
    row = {
        "temperature": checkpoint.temperature,
        "step": checkpoint.step,
        "accuracy": accuracy,
        "n_samples": per_sample["idx"].nunique(),
    }
    means = paper_condition(per_sample).groupby(["metric", "role"])["value"].mean()
    for metric in TRACKED_METRICS:
        row[f"{metric}_change_pct"] = percent_change(means[metric, "base"], means[metric, "tuned"])
    return row


def summary_table(
    config: Mapping, accuracy: Mapping[str, float], per_sample: Mapping[str, pd.DataFrame]
) -> pd.DataFrame:
    """One row per temperature and step (step 0: the initial model, no change).

    `accuracy` maps model names (the initial model and checkpoints) to eval accuracy,
    `per_sample` checkpoint names to their metrics CSV.
    """
    init = config["dynamics"]["init"]
    rows = []
    for temperature in temperatures(config):
        start = {
            "temperature": temperature,
            "step": 0,
            "accuracy": accuracy[init],
            "n_samples": np.nan,
        }
        rows.append(start | {f"{m}_change_pct": 0.0 for m in TRACKED_METRICS})
    for checkpoint in checkpoints(config):
        rows.append(
            checkpoint_row(checkpoint, accuracy[checkpoint.name], per_sample[checkpoint.name])
        )
    return pd.DataFrame(rows).sort_values(["temperature", "step"], ignore_index=True)


def highlights(summary: pd.DataFrame) -> pd.DataFrame:
    """Per temperature: the fastest-gain interval and each tracked metric's extremum in it."""
    rows = []
    for temperature, frame in summary.groupby("temperature"):
        interval = fastest_gain_interval(frame["step"], frame["accuracy"])
        for metric in TRACKED_METRICS:
            point = extremum_within(frame, metric, interval)
            rows.append(
                {
                    "temperature": temperature,
                    "interval_start": interval[0],
                    "interval_end": interval[1],
                    "metric": metric,
                    "extremum_step": int(point["step"]),
                    "extremum_change_pct": point[f"{metric}_change_pct"],
                }
            )
    return pd.DataFrame(rows)


def reward_log(path: str | os.PathLike) -> pd.DataFrame:
    """Step, reward and reward std of a GRPO run's training log."""
    log = pd.read_csv(Path(path))
    missing = {"reward", "reward_std"} - set(log.columns)
    if missing:
        raise ValueError(f"{path}: no {sorted(missing)} columns (not a GRPO training log?)")
    return log.dropna(subset=["reward"])[["step", "reward", "reward_std"]]
