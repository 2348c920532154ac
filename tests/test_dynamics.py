"""Training dynamics: checkpoints as models and pairs, and the summary along steps."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

from circuitry import dynamics
from circuitry.config import ConfigError, check_config, dynamics_pairs, enabled_pairs
from circuitry.figures import plot_metric_dynamics, plot_reward_dynamics
from circuitry.report import dynamics_section
from conftest import ROOT

TOY = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())


def toy_config() -> dict:
    return copy.deepcopy(TOY)


def test_checkpoints_become_models_and_pairs_with_the_initial_model():
    config = toy_config()
    config["dynamics"].update(temperatures=[0.6, 1.0], checkpoint_every=10)
    found = dynamics.add_checkpoints(config)
    steps = list(range(10, 61, 10))
    assert [c.name for c in found] == [f"dyn-t0.6-step{s}" for s in steps] + [
        f"dyn-t1.0-step{s}" for s in steps
    ]
    model = config["models"]["dyn-t1.0-step30"]
    assert model["path"] == "resources/models/dyn-t1.0-step30"
    assert model["template"] == "toy" and model["gpu"] is False
    pair = config["pairs"]["dyn-t1.0-step30"]
    assert (pair["base"], pair["tuned"], pair["method"]) == ("toy-sft", "dyn-t1.0-step30", "GRPO")
    toy = dynamics.add_checkpoints(toy_config())  # the toy: one temperature, every 20 steps
    assert [c.name for c in toy] == ["dyn-t1.0-step20", "dyn-t1.0-step40", "dyn-t1.0-step60"]
    assert enabled_pairs(config) == enabled_pairs(TOY)  # checkpoints are not study pairs
    assert dynamics_pairs(config) == [c.name for c in found]


def test_dynamics_can_be_switched_off():
    config = toy_config()
    config["dynamics"]["enabled"] = False
    assert dynamics.add_checkpoints(config) == []
    assert not any(name.startswith("dyn-") for name in config["models"])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"alpha": 0.2}, "dynamics.alpha: 0.2 is not one of eap.alphas"),
        ({"steps": 65}, "dynamics.steps: not a multiple of checkpoint_every"),
        ({"eval_dataset": "gsm8k"}, "dynamics.eval_dataset: 'gsm8k' is not in datasets"),
        ({"init": "nope"}, "dynamics.init: unknown model 'nope'"),
        ({"data": ["toy-math"]}, "dynamics.data: 'toy-math' is not an entry of training_data"),
    ],
)
def test_inconsistent_dynamics_are_named(change, message):
    config = toy_config()
    config["dynamics"].update(change)
    with pytest.raises(ConfigError, match=message):
        check_config(config)


def test_moving_average_is_trailing():
    assert dynamics.moving_average([2, 4, 6, 8], window=2).tolist() == [2, 3, 5, 7]
    assert dynamics.moving_average([1, 2, 3], window=8).tolist() == [1, 1.5, 2]


def test_fastest_gain_is_per_step_between_consecutive_checkpoints():
    # gains: 0.1 over 10 steps, 0.3 over 10, 0.4 over 20 (0.02 per step)
    assert dynamics.fastest_gain_interval([0, 10, 20, 40], [0.5, 0.6, 0.9, 1.3]) == (10, 20)
    with pytest.raises(ValueError, match="at least two checkpoints"):
        dynamics.fastest_gain_interval([0], [0.5])


def per_sample(base: dict, tuned: dict, n: int = 4) -> pd.DataFrame:
    """A metrics CSV whose every sample has the given values per role and metric."""
    rows = [
        {"loss": "ce", "text": "own", "idx": i, "role": role, "metric": metric, "value": value}
        for role, values in (("base", base), ("tuned", tuned))
        for metric, value in values.items()
        for i in range(n)
    ]
    return pd.DataFrame(rows)


def small_dynamics_config() -> dict:
    config = toy_config()
    config["dynamics"].update(temperatures=[1.0], steps=20, checkpoint_every=10)
    return config


def test_summary_and_highlights_by_hand():
    config = small_dynamics_config()
    base = {"intensity": 2.0, "kurtosis": 10.0, "entropy": 4.0}
    metrics = {
        "dyn-t1.0-step10": per_sample(base, {"intensity": 2.5, "kurtosis": 8.0, "entropy": 4.0}),
        "dyn-t1.0-step20": per_sample(base, {"intensity": 1.0, "kurtosis": 9.0, "entropy": 4.2}),
    }
    accuracy = {"toy-sft": 0.5, "dyn-t1.0-step10": 0.55, "dyn-t1.0-step20": 0.7}
    summary = dynamics.summary_table(config, accuracy, metrics)
    assert summary["step"].tolist() == [0, 10, 20]
    assert summary["accuracy"].tolist() == [0.5, 0.55, 0.7]
    assert summary["intensity_change_pct"].tolist() == pytest.approx([0, 25, -50])
    assert summary["kurtosis_change_pct"].tolist() == pytest.approx([0, -20, -10])
    assert summary["entropy_change_pct"].tolist() == pytest.approx([0, 0, 5])
    highlights = dynamics.highlights(summary).set_index("metric")
    assert set(highlights["interval_start"]) == {10} and set(highlights["interval_end"]) == {20}
    assert highlights.loc["intensity", "extremum_step"] == 20  # |-50| > |25|
    assert highlights.loc["kurtosis", "extremum_step"] == 10  # |-20| > |-10|
    assert highlights.loc["entropy", "extremum_change_pct"] == pytest.approx(5)


def test_reward_log_needs_grpo_columns(tmp_path):
    path = tmp_path / "log.csv"
    pd.DataFrame({"step": [1], "loss": [0.3]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="no \\['reward', 'reward_std'\\] columns"):
        dynamics.reward_log(path)


def test_dynamics_figures_and_section(tmp_path):
    config = small_dynamics_config()
    base = {"intensity": 2.0, "kurtosis": 10.0, "entropy": 4.0}
    metrics = {
        c.name: per_sample(base, {"intensity": 2.2, "kurtosis": 9.0, "entropy": 4.1})
        for c in dynamics.checkpoints(config)
    }
    accuracy = {"toy-sft": 0.5, "dyn-t1.0-step10": 0.6, "dyn-t1.0-step20": 0.62}
    summary = dynamics.summary_table(config, accuracy, metrics)
    highlights = dynamics.highlights(summary)
    steps = np.arange(1, 21)
    logs = {1.0: pd.DataFrame({"step": steps, "reward": steps / 20, "reward_std": 0.3})}
    plot_reward_dynamics(logs, tmp_path / "reward.png", window=8)
    plot_metric_dynamics(summary, highlights, tmp_path / "metrics.png")
    for name in ("reward.png", "metrics.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    section = dynamics_section(
        config, summary, highlights, tmp_path / "reward.png", tmp_path / "metrics.png"
    )
    text, *_figures, table = section.blocks
    assert "accuracy rose fastest between steps 0 and 10" in " ".join(text.paragraphs)
    assert [row.cells[0].text for row in table.rows] == ["0", "10", "20"]
