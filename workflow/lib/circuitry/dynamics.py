"""Training dynamics: accuracy and circuit metrics along GRPO runs (the paper's Figs. 4, 5).

The config's `dynamics` block describes GRPO runs from an initial model, one per sampling
temperature, each saving a checkpoint every `checkpoint_every` steps. Every checkpoint
becomes a model, so the workflow's own generation rule gives its accuracy on the eval
dataset. Its circuits are measured against the initial model on one fixed problem set:

- the problem set (`problem_set`): the problems the initial model answers correctly,
  filtered by its answer lengths and sampled with the study's `filter` settings (the
  pairing of the initial model with itself), with one reference length `T` and so one
  `cut_len` for every checkpoint of every run (the runs share their initial model);
- every checkpoint is scored on the initial model's answers (`initial` text: the same
  tokens, so only the weights differ) and, where it answered a problem correctly too
  within the set's length bounds, on its own answer (`own` text);
- each checkpoint's change is tested per text and loss against the initial model's
  scores on the same problems (`circuitry.stats.paired_sample_test`), beside the change
  in window cross-entropy: how much surer of the text the checkpoint is.

Re-filtering problems per checkpoint would mix sample turnover into the curves; the
fixed set keeps the samples and lets the `initial` curve show weights alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

from circuitry.config import TRAINED_MODEL_DIR
from circuitry.metrics import EdgeScores, histogram_upper, per_sample_metrics
from circuitry.pairing import FilterSettings, index_by_idx, pair_samples, role_fields
from circuitry.scorefile import PAPER_CONDITION
from circuitry.stats import LOG_SCALE_METRICS, WINDOW_LOSS, paired_sample_test, row_rng

CHECKPOINT = "dyn-t{temperature}-step{step}"
TRACKED_METRICS = ("intensity", "kurtosis", "entropy")  # the paper's Figure 5 panels
CHANGES = (*TRACKED_METRICS, WINDOW_LOSS)
TEXTS = {
    "initial": "the initial model's answers",
    "own": "the checkpoint's own correct answers",
}
CHANGE_FIELDS = ("change", "ci_low", "ci_high", "change_pct", "ci_pct_low", "ci_pct_high", "p")
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
    """Add a model per checkpoint to `config` and return the checkpoints.

    The models inherit the initial model's template, generation length and resources, so
    the generation rule answers the eval dataset with each of them.
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
    return found


def scored_texts(config: Mapping, model: str) -> list[str]:
    """The texts a model of the dynamics is scored on: the initial model reads its own
    answers (`initial`), a checkpoint those and its own."""
    return ["initial"] if model == config["dynamics"]["init"] else list(TEXTS)


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
    config: Mapping, accuracy: Mapping[str, float], values: Mapping[tuple, pd.DataFrame]
) -> pd.DataFrame:
    """One row per temperature, step, text and loss (step 0: the initial model against
    itself, no change).

    `accuracy` maps model names (the initial model and checkpoints) to eval accuracy,
    `values` `(model, text, loss)` to `tracked_values`; the initial model's are under
    its `initial` text.
    """
    init = config["dynamics"]["init"]
    rows = []
    for temperature in temperatures(config):
        steps = [(0, init)] + [
            (c.step, c.name) for c in checkpoints(config) if c.temperature == temperature
        ]
        for step, model in steps:
            for text in TEXTS:
                for loss in config["eap"]["losses"]:
                    initial = values[init, "initial", loss]
                    scored = initial if model == init else values[model, text, loss]
                    key = (temperature, step, text, loss)
                    change = change_against(initial, scored, stats=config["stats"], key=key)
                    rows.append(
                        {
                            "temperature": temperature,
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
    """Per temperature and text, under the paper's loss: the fastest-gain interval and each
    tracked metric's extremum in it."""
    rows = []
    for (temperature, text), frame in paper_loss(summary).groupby(
        ["temperature", "text"], sort=False
    ):
        interval = fastest_gain_interval(frame["step"], frame["accuracy"])
        for metric in TRACKED_METRICS:
            point = extremum_within(frame, metric, interval)
            rows.append(
                {
                    "temperature": temperature,
                    "text": text,
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
