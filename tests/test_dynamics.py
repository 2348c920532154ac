"""Training dynamics: checkpoints as models, one fixed problem set, and the summary along
steps."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from circuitry.analysis import dynamics
from circuitry.attribution.scorefile import DIAGNOSTICS, LOSSES, write_score_file
from circuitry.config_checks import (
    ConfigError,
    check_config,
)
from circuitry.figures.dynamics import plot_metric_dynamics, plot_training_log
from circuitry.models import runs
from circuitry.report.dynamics import dynamics_section
from conftest import ROOT, dry_run_jobs, filter_settings, load_config

TOY = load_config("toy")


def toy_config() -> dict:
    return copy.deepcopy(TOY)


def two_temperatures(config: dict) -> dict:
    """The toy's run and a second one at temperature 0.6, both every 10 steps."""
    (run,) = config["dynamics"]["runs"]
    run["train"]["checkpoint_every"] = 10
    cooler = copy.deepcopy(run)
    cooler["name"], cooler["train"]["temperature"] = "grpo-t0.6", 0.6
    config["dynamics"]["runs"] = [cooler, run]
    return config


def test_checkpoints_become_models_of_the_initial_models_lineage():
    config = two_temperatures(toy_config())
    written = copy.deepcopy(config)
    found = runs.all_followed(config)
    models = runs.all_models(config, found)
    steps = list(range(10, 31, 10))
    assert [c.name for c in found] == [f"dyn-grpo-t0.6-step{s}" for s in steps] + [
        f"dyn-grpo-t1-step{s}" for s in steps
    ]
    assert config == written  # the checkpoints' models are derived, not added
    assert models.items() >= config["models"].items()
    model = models["dyn-grpo-t1-step30"]
    assert model["path"] == "resources/dynamics/grpo-t1/checkpoint-30"
    assert model["checkpoint"] == {
        "run": "grpo-t1",
        "step": 30,
        "built": "resources/dynamics/grpo-t1",
    }
    assert model["template"] == "toy" and model["gpu"] is False
    toy = runs.all_followed(toy_config())  # the toy: one run, every 15 steps
    assert [c.name for c in toy] == [f"dyn-grpo-t1-step{s}" for s in (15, 30)]
    assert runs.scored_texts(config, "toy-sft") == ["initial"]
    assert runs.scored_texts(config, "dyn-grpo-t1-step30") == ["initial", "own"]
    assert runs.init_of(config, models, "dyn-grpo-t0.6-step10") == "toy-sft"
    assert runs.grpo_settings(config["dynamics"]["runs"][0]["train"])["temperature"] == 0.6


def test_dry_run_scores_each_checkpoint_on_its_initial_models_problem_set():
    jobs = dry_run_jobs("--configfile", str(ROOT / "config" / "toy.yaml"))
    by_rule = {}
    for job in jobs:
        by_rule.setdefault(job["rule"], []).append(job)
    (training,) = by_rule["train_dynamics"]
    assert training["output"] == ["resources/dynamics/grpo-t1"]
    (problems,) = by_rule["dynamics_problems"]
    assert problems["input"] == ["results/generations/toy-sft/toy-math.jsonl"]
    (initial,) = by_rule["eap_score_initial"]
    assert initial["wildcards"] == {"model": "toy-sft"}
    assert sorted(initial["output"]) == [
        f"results/dynamics/eap/toy-sft/initial/{loss}.npz" for loss in LOSSES
    ]
    checkpoints = {job["wildcards"]["model"]: job for job in by_rule["eap_score_checkpoint"]}
    assert sorted(checkpoints) == [c.name for c in runs.all_followed(TOY)]
    for name, job in checkpoints.items():
        assert "results/dynamics/problems/toy-sft.jsonl" in job["input"]
        assert "resources/dynamics/grpo-t1" in job["input"]
        assert f"results/generations/{name}/toy-math.jsonl" in job["input"]
        assert len(job["output"]) == 2 * len(LOSSES)  # initial and own text, every loss
    (summary,) = by_rule["dynamics"]
    assert "resources/dynamics/grpo-t1" in summary["input"]  # its trainer_state.json
    assert not any(job["wildcards"].get("pair", "").startswith("dyn-") for job in jobs)


def test_dynamics_can_be_switched_off():
    config = toy_config()
    config["dynamics"]["enabled"] = False
    assert runs.all_followed(config) == []
    assert runs.all_models(config, []) == config["models"]


def change_run(config: dict, change: dict) -> dict:
    (run,) = config["dynamics"]["runs"]
    for key, value in change.items():
        target, field = (run["train"], key[6:]) if key.startswith("train.") else (run, key)
        if value is None:
            del target[field]
        else:
            target[field] = value
    return config


@pytest.mark.parametrize(
    "change, message",
    [
        ({"train.steps": 65}, "dynamics.runs.grpo-t1.train.steps: not a multiple"),
        ({"init": "nope"}, "dynamics.runs.grpo-t1.init: unknown model 'nope'"),
        (
            {"train.data": ["toy-math"]},
            "dynamics.runs.grpo-t1.train.data: 'toy-math' is not an entry of training_data",
        ),
        ({"trl": "somewhere"}, "give exactly one source of checkpoints .*found train, trl"),
        ({"train": None}, "give exactly one source of checkpoints .*found none"),
        ({"log": "missing.json"}, "dynamics.runs.grpo-t1.log: missing.json does not exist"),
    ],
)
def test_inconsistent_runs_are_named(change, message):
    config = change_run(toy_config(), change)
    with pytest.raises(ConfigError, match=message):
        check_config(config)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"alpha": 0.2}, "dynamics.alpha: 0.2 is not one of eap.alphas"),
        ({"eval_dataset": "gsm8k"}, "dynamics.eval_dataset: 'gsm8k' is not in datasets"),
    ],
)
def test_inconsistent_dynamics_are_named(change, message):
    config = toy_config()
    config["dynamics"].update(change)
    with pytest.raises(ConfigError, match=message):
        check_config(config)


def test_two_runs_of_one_name_are_refused():
    config = two_temperatures(toy_config())
    config["dynamics"]["runs"][0]["name"] = "grpo-t1"
    with pytest.raises(ConfigError, match="dynamics.runs: two runs are named 'grpo-t1'"):
        check_config(config)


def test_moving_average_is_trailing():
    assert dynamics.moving_average([2, 4, 6, 8], window=2).tolist() == [2, 3, 5, 7]
    assert dynamics.moving_average([1, 2, 3], window=8).tolist() == [1, 1.5, 2]


def test_fastest_gain_is_per_step_between_consecutive_checkpoints():
    # gains: 0.1 over 10 steps, 0.3 over 10, 0.4 over 20 (0.02 per step)
    assert dynamics.fastest_gain_interval([0, 10, 20, 40], [0.5, 0.6, 0.9, 1.3]) == (10, 20)
    with pytest.raises(ValueError, match="at least two checkpoints"):
        dynamics.fastest_gain_interval([0], [0.5])


def generation_row(idx: int, length: int, correct: bool, prompt_len: int = 3) -> dict:
    return {
        "idx": idx,
        "prompt_token_ids": list(range(prompt_len)),
        "completion_token_ids": list(range(length)),
        "correct": correct,
    }


def test_problem_set_is_the_initial_models_correct_answers_within_its_lengths():
    # correct lengths 4, 10, 10, 16, 40: T = 16, bounds [8, 24]
    lengths = {0: (4, True), 1: (10, True), 2: (10, True), 3: (16, True), 4: (40, True)}
    rows = [generation_row(i, n, ok) for i, (n, ok) in lengths.items()]
    rows.append(generation_row(5, 12, False))
    problems, summary = dynamics.problem_set(
        rows, filter_settings(num_samples=100), init="toy-sft", dataset="toy-math"
    )
    assert [row["idx"] for row in problems] == [1, 2, 3]
    assert summary["reference_length_fraction"] == "16"
    assert summary["length_bounds_fraction"] == ["8", "24"]
    assert all(row["base"] == row["tuned"] for row in problems)  # the initial model's answer


def test_own_answers_are_the_correct_ones_within_the_sets_bounds():
    rows = [generation_row(i, 10, True) for i in range(4)]
    problems, summary = dynamics.problem_set(
        rows, filter_settings(), init="toy-sft", dataset="toy-math"
    )  # T = 10, bounds [5, 15]
    checkpoint = [
        generation_row(0, 12, True),
        generation_row(1, 12, False),  # wrong
        generation_row(2, 16, True),  # longer than 1.5 T
        generation_row(3, 5, True),  # on the lower bound: kept
    ]
    own = dynamics.own_answer_rows(problems, checkpoint, summary)
    assert [row["idx"] for row in own] == [0, 3]
    assert [row["tuned"]["answer_len"] for row in own] == [12, 5]
    assert [row["base"]["answer_len"] for row in own] == [10, 10]
    with pytest.raises(ValueError, match="lack problem 3"):
        dynamics.own_answer_rows(problems, checkpoint[:3], summary)


def tracked(intensity, kurtosis, entropy, window_ce, idx=None) -> pd.DataFrame:
    """`tracked_values`-like frame: one value per sample and metric."""
    columns = {
        "intensity": intensity,
        "kurtosis": kurtosis,
        "entropy": entropy,
        "window_ce": window_ce,
    }
    index = pd.Index(idx if idx is not None else range(len(intensity)), name="idx")
    return pd.DataFrame({k: np.asarray(v, dtype=float) for k, v in columns.items()}, index=index)


def small_dynamics_config() -> dict:
    config = toy_config()
    config["dynamics"]["runs"][0]["train"].update(steps=20, checkpoint_every=10)
    config["eap"]["losses"] = ["ce"]
    config["stats"] = {"seed": 0, "n_resamples": 199}
    return config


def summary_table(config: dict, accuracy: dict, values: dict):
    """The dynamics summary of `config`'s runs, as the rule hands it its settings."""
    steps = runs.run_steps(config, runs.all_followed(config))
    return dynamics.summary_table(steps, config["eap"]["losses"], config["stats"], accuracy, values)


def dynamics_values(step10_own_idx=range(8)) -> dict:
    """Initial model: intensity 2, kurtosis 10, entropy 4, window loss 1 on 8 problems.
    Step 10: intensity x1.25 on its initial text (x2 on its own, a subset), kurtosis 8,
    loss 0.5 lower; step 20: intensity x0.5, kurtosis 9, entropy 4.2."""
    n = 8
    own = list(step10_own_idx)
    return {
        ("toy-sft", "initial", "ce"): tracked([2.0] * n, [10.0] * n, [4.0] * n, [1.0] * n),
        ("dyn-grpo-t1-step10", "initial", "ce"): tracked(
            [2.5] * n, [8.0] * n, [4.0] * n, [0.5] * n
        ),
        ("dyn-grpo-t1-step10", "own", "ce"): tracked(
            [4.0] * len(own), [8.0] * len(own), [4.0] * len(own), [0.5] * len(own), idx=own
        ),
        ("dyn-grpo-t1-step20", "initial", "ce"): tracked(
            [1.0] * n, [9.0] * n, [4.2] * n, [1.0] * n
        ),
        ("dyn-grpo-t1-step20", "own", "ce"): tracked([1.0] * n, [9.0] * n, [4.2] * n, [1.0] * n),
    }


def test_summary_and_highlights_by_hand():
    config = small_dynamics_config()
    accuracy = {"toy-sft": 0.5, "dyn-grpo-t1-step10": 0.55, "dyn-grpo-t1-step20": 0.7}
    summary = summary_table(config, accuracy, dynamics_values([1, 3, 5]))
    initial = summary[summary["text"] == "initial"]
    own = summary[summary["text"] == "own"]
    assert initial["step"].tolist() == own["step"].tolist() == [0, 10, 20]
    assert initial["accuracy"].tolist() == [0.5, 0.55, 0.7]
    assert initial["intensity_change_pct"].tolist() == pytest.approx([0, 25, -50])
    assert own["intensity_change_pct"].tolist() == pytest.approx([0, 100, -50])
    assert own["n_samples"].tolist() == [8, 3, 8]  # the own text of step 10: 3 problems
    assert initial["kurtosis_change_pct"].tolist() == pytest.approx([0, -20, -10])
    assert initial["entropy_change_pct"].tolist() == pytest.approx([0, 0, 5])
    assert initial["window_ce_change"].tolist() == pytest.approx([0, -0.5, 0])
    assert (summary.loc[summary["step"] == 0, "intensity_p"] == 1).all()  # itself: a null
    highlights = dynamics.highlights(summary)
    assert set(highlights["interval_start"]) == {10} and set(highlights["interval_end"]) == {20}
    by_metric = highlights[highlights["text"] == "initial"].set_index("metric")
    assert by_metric.loc["intensity", "extremum_step"] == 20  # |-50| > |25|
    assert by_metric.loc["kurtosis", "extremum_step"] == 10  # |-20| > |-10|
    assert by_metric.loc["entropy", "extremum_change_pct"] == pytest.approx(5)
    own_marks = highlights[highlights["text"] == "own"].set_index("metric")
    assert own_marks.loc["intensity", "extremum_step"] == 10  # |+100| > |-50|


def test_a_checkpoint_without_correct_answers_in_the_set_has_no_change(tmp_path):
    graph = {
        "forward_nodes": np.array(["input", "a0"]),
        "backward_nodes": np.array(["a0.q", "logits"]),
        "edge_mask": np.array([[True, True], [False, True]]),
    }
    condition = {
        "alpha": 0.3,
        "cut_len": 3,
        "reference_length": 10.0,
        "role": "tuned",
        "model_type": "llama",
    }
    empty = {name: np.zeros(0) for name in DIAGNOSTICS}
    path = tmp_path / "own.npz"
    write_score_file(
        path,
        scores=np.zeros((0, 2, 2), dtype=np.float32),
        diagnostics=empty,
        idx=np.zeros(0, dtype=np.int64),
        graph=graph,
        condition=condition | {"loss": "ce", "text": "own", "text_role": "tuned"},
    )
    assert dynamics.tracked_values(path).empty
    rng = np.random.default_rng(0)
    scores = np.where(graph["edge_mask"], rng.normal(size=(6, 2, 2)), 0).astype(np.float32)
    full = tmp_path / "initial.npz"
    diagnostics = {name: rng.uniform(0.1, 1, 6) for name in DIAGNOSTICS}
    write_score_file(
        full,
        scores=scores,
        diagnostics=diagnostics,
        idx=np.arange(6),
        graph=graph,
        condition=condition | {"loss": "ce", "text": "initial", "text_role": "base"},
    )
    values = dynamics.tracked_values(full)
    assert values["intensity"].to_numpy() == pytest.approx(
        np.abs(scores[:, graph["edge_mask"]]).mean(1)
    )
    assert values["window_ce"].to_numpy() == pytest.approx(diagnostics["window_ce"])
    change = dynamics.change_against(
        values, dynamics.tracked_values(path), stats={"seed": 0, "n_resamples": 99}, key=("k",)
    )
    assert change["n_samples"] == 0 and np.isnan(change["intensity_change_pct"])


def test_dynamics_figures_and_section(tmp_path):
    config = small_dynamics_config()
    accuracy = {"toy-sft": 0.5, "dyn-grpo-t1-step10": 0.6, "dyn-grpo-t1-step20": 0.62}
    summary = summary_table(config, accuracy, dynamics_values())
    highlights = dynamics.highlights(summary)
    steps = np.arange(1, 21)
    logs = {
        "grpo-t1": pd.DataFrame(
            {"step": steps, "reward": steps / 20, "reward_std": 0.3, "kl": steps / 100}
        )
    }
    plot_training_log(logs, highlights, tmp_path / "training.png")
    plot_training_log({}, highlights, tmp_path / "unlogged.png")  # runs that logged nothing
    plot_metric_dynamics(summary, highlights, tmp_path / "metrics.png")
    for name in ("training.png", "unlogged.png", "metrics.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    section = dynamics_section(
        config, summary, highlights, tmp_path / "training.png", tmp_path / "metrics.png"
    )
    text, *_figures, table = section.blocks
    paragraphs = " ".join(text.paragraphs)
    assert "grpo-t1: GRPO run by the workflow from toy-sft" in paragraphs
    assert "read back from trl's output directory" in paragraphs
    assert "on the initial model's answers: accuracy rose fastest between steps 0 and 10" in (
        paragraphs
    )
    assert [row.cells[0].text for row in table.rows] == ["0", "0", "10", "10", "20", "20"]
    assert table.rows[2].cells[6].text == "-0.500"  # step 10's window-loss change
