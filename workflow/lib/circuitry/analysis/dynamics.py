"""Training dynamics: accuracy and circuit metrics along RL runs (the paper's Figs. 4, 5).

The config's `dynamics.runs` are RL runs, each from an initial model, whose checkpoints
come from the workflow's own GRPO training, a trl output directory, a glob of model
directories or hub revisions (`circuitry.models.runs`). Every checkpoint becomes a model, so the
workflow's own generation rule gives its accuracy on the eval dataset. Its circuits are
measured against its run's initial model on one fixed problem set per initial model:

- the problem set (`problem_set`): the problems the initial model answers correctly,
  filtered by its answer lengths and sampled with the study's `filter` settings (the
  pairing of the initial model with itself), with one reference length `T` and so one
  `cut_len` for every checkpoint of every run from that model;
- every checkpoint is scored on the initial model's answers (`initial` text: the same
  tokens, so only the weights differ) and, where it answered a problem correctly too
  within the set's length bounds, on its own answer (`own` text);
- each checkpoint's change is tested per text and loss against the initial model's
  scores on the same problems (`circuitry.analysis.paired_tests.paired_sample_test`),
  beside the change in window cross-entropy: how much surer of the text the checkpoint is.

Re-filtering problems per checkpoint would mix sample turnover into the curves; the
fixed set keeps the samples and lets the `initial` curve show weights alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

from circuitry.analysis.paired_tests import paired_sample_test, row_rng
from circuitry.analysis.sample_metrics import histogram_upper, per_sample_metrics
from circuitry.analysis.stats import LOG_SCALE_METRICS, WINDOW_LOSS
from circuitry.attribution.scorefile import EdgeScores
from circuitry.generation.pairing import FilterSettings, index_by_idx, pair_samples, role_fields
from circuitry.models.runs import TEXTS, TRAINER_STATE, TRL_CHECKPOINT
from circuitry.paths import PAPER_CONDITION

TRACKED_METRICS = ("intensity", "kurtosis", "entropy")  # the paper's Figure 5 panels
CHANGES = (*TRACKED_METRICS, WINDOW_LOSS)
# The logged series the figures show: trl's name in `log_history` -> column name.
SERIES = {
    "reward": "reward",
    "reward_std": "reward_std",
    "kl": "kl",
    "entropy": "entropy",
    "completions/mean_length": "completion_length",
}
CHANGE_FIELDS = ("change", "ci_low", "ci_high", "change_pct", "ci_pct_low", "ci_pct_high", "p")
REWARD_WINDOW = 8


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


def problem_set(
    rows: Sequence[dict], settings: FilterSettings, *, init: str, dataset: str
) -> tuple[list[dict], dict]:
    """The fixed problems of the dynamics and their summary: the initial model paired with
    itself, so the study's filters keep its correct answers within its length bounds, and
    `T` is the mean length of its correct answers."""
    return pair_samples(rows, rows, settings, pair=f"{init} (dynamics)", dataset=dataset)


def own_answer_rows(
    problems: Sequence[dict], generations: Sequence[dict], summary: Mapping
) -> list[dict]:
    """The problem rows a checkpoint answered correctly, its prompt the same length and its
    answer within the set's length bounds (`summary`: the problem set's); its answer is
    the row's `tuned` side, the initial model's stays `base`."""
    answers = index_by_idx(generations, "checkpoint")
    low, high = (Fraction(bound) for bound in summary["length_bounds_fraction"])
    length = FilterSettings.from_config(summary["settings"]).answer_length
    kept = []
    for problem in problems:
        answer = answers.get(problem["idx"])
        if answer is None:
            raise ValueError(f"the checkpoint's generations lack problem {problem['idx']}")
        fields = role_fields(answer, length)
        if (
            answer["correct"]
            and fields["prompt_len"] == problem["base"]["prompt_len"]
            and low <= fields["answer_len"] <= high
        ):
            kept.append({**problem, "tuned": fields})
    return kept


def tracked_values(path: str | os.PathLike) -> pd.DataFrame:
    """Per-sample tracked metrics and window loss of one score file, indexed by idx (no
    rows where the file has no sample: a checkpoint with no correct answer in the set)."""
    with np.load(path, allow_pickle=False) as npz:
        if npz["idx"].size == 0:
            return pd.DataFrame(columns=list(CHANGES), index=pd.Index([], name="idx"))
    edges = EdgeScores.from_npz(path)
    values = per_sample_metrics(edges, histogram_upper(np.abs(edges.edge_values)))
    columns = {m: values[m] for m in TRACKED_METRICS} | {
        WINDOW_LOSS: edges.diagnostics[WINDOW_LOSS]
    }
    return pd.DataFrame(columns, index=pd.Index(edges.idx, name="idx"))


def change_against(
    initial: pd.DataFrame, values: pd.DataFrame, *, stats: Mapping, key: Sequence
) -> dict:
    """Each change of `values` against the initial model's on the same problems: n, and per
    metric the change, its percent and their CIs, and the Wilcoxon p."""
    base = initial.loc[values.index]
    row = {"n_samples": len(values)}
    for metric in CHANGES:
        result = paired_sample_test(
            base[metric].to_numpy(dtype=float),
            values[metric].to_numpy(dtype=float),
            rng=row_rng(stats["seed"], *key, metric),
            n_resamples=stats["n_resamples"],
            log_scale=metric in LOG_SCALE_METRICS,
        )
        row |= {f"{metric}_{field}": result[field] for field in CHANGE_FIELDS}
    return row


def summary_table(
    run_steps: Sequence[Mapping],
    losses: Sequence[str],
    stats: Mapping,
    accuracy: Mapping[str, float],
    values: Mapping[tuple, pd.DataFrame],
) -> pd.DataFrame:
    """One row per run, step, text and loss (step 0: the initial model against itself, no
    change).

    `run_steps` is `circuitry.models.runs.run_steps`; `accuracy` maps model names (initial models
    and checkpoints) to eval accuracy, `values` `(model, text, loss)` to `tracked_values`;
    an initial model's are under its `initial` text. Resampling is seeded by the initial
    model, step, text and loss, so a run read twice (e.g. as `train` and as `trl`) gives the
    same rows.
    """
    rows = []
    for run in run_steps:
        init = run["init"]
        for step, model in run["steps"]:
            for text in TEXTS:
                for loss in losses:
                    initial = values[init, "initial", loss]
                    scored = initial if model == init else values[model, text, loss]
                    key = (init, step, text, loss)
                    change = change_against(initial, scored, stats=stats, key=key)
                    rows.append(
                        {
                            "run": run["name"],
                            "step": step,
                            "text": text,
                            "loss": loss,
                            "accuracy": accuracy[model],
                        }
                        | change
                    )
    return pd.DataFrame(rows)


def paper_loss(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary rows under the paper's loss: what the curves and the report show."""
    return summary[summary["loss"] == PAPER_CONDITION["loss"]]


def extremum_within(frame: pd.DataFrame, metric: str, interval: tuple[int, int]) -> pd.Series:
    """The checkpoint inside `interval` (ends included) where `metric` is furthest from the
    initial model: its largest absolute change, whichever the direction."""
    inside = frame[frame["step"].between(*interval)]
    return frame.loc[inside[f"{metric}_change_pct"].abs().idxmax()]


def highlights(summary: pd.DataFrame) -> pd.DataFrame:
    """Per run and text, under the paper's loss: the fastest-gain interval and each
    tracked metric's extremum in it."""
    rows = []
    for (run, text), frame in paper_loss(summary).groupby(["run", "text"], sort=False):
        interval = fastest_gain_interval(frame["step"], frame["accuracy"])
        for metric in TRACKED_METRICS:
            point = extremum_within(frame, metric, interval)
            rows.append(
                {
                    "run": run,
                    "text": text,
                    "interval_start": interval[0],
                    "interval_end": interval[1],
                    "metric": metric,
                    "extremum_step": int(point["step"]),
                    "extremum_change_pct": point[f"{metric}_change_pct"],
                }
            )
    return pd.DataFrame(rows)


def trainer_state_of(path: str | os.PathLike) -> Path:
    """The trainer_state.json a log source names: the file, a checkpoint folder's, or the
    last checkpoint's of a trl output directory."""
    path = Path(path)
    if not path.is_dir():
        return path
    if (path / TRAINER_STATE).is_file():
        return path / TRAINER_STATE
    folders = [p for p in path.glob("checkpoint-*") if TRL_CHECKPOINT.fullmatch(p.name)]
    if not folders:
        raise ValueError(f"{path}: no {TRAINER_STATE} and no checkpoint-<step> folders")
    last = max(folders, key=lambda p: int(TRL_CHECKPOINT.fullmatch(p.name).group(1)))
    return last / TRAINER_STATE


def training_log(path: str | os.PathLike) -> pd.DataFrame:
    """The run's logged series (`SERIES` present) by step, one row per logging step, from
    a trainer_state.json (or the folder holding it) or a CSV with a step column."""
    path = trainer_state_of(path)
    if path.suffix == ".csv":
        frame = pd.read_csv(path)
    else:
        history = json.loads(path.read_text(encoding="utf-8")).get("log_history")
        if not isinstance(history, list):
            raise ValueError(f"{path}: no log_history (not a trainer_state.json?)")
        frame = pd.DataFrame(history)
    if "step" not in frame.columns:
        raise ValueError(f"{path}: no step column")
    present = [name for name in SERIES if name in frame.columns]
    frame = frame.dropna(how="all", subset=present) if present else frame.iloc[:0]
    return frame[["step", *present]].rename(columns=SERIES).reset_index(drop=True)
