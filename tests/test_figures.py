"""Figures: each function writes a legible PNG from the contract's data, no global side effects."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_report import pair_results_of, synthetic_config, write_results_tree

from circuitry.attribution.graph import build_graph
from circuitry.figures import edges, metrics, pair, style, training
from circuitry.paths import Layout

MIN_WIDTH_PX = 900


def assert_png(path, min_width: int = MIN_WIDTH_PX) -> None:
    """A PNG of report width that is not blank."""
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[1] >= min_width, f"{path}: {pixels.shape[1]} px wide"
    assert pixels[..., :3].std() > 0.05, f"{path}: nearly uniform image"


@pytest.fixture(scope="module")
def pair_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures")
    config = synthetic_config(datasets=1, alphas=(0.1, 0.5), pairs=("toy-grpo",))
    write_results_tree(root, config)
    return pair_results_of(root, config, "toy-grpo"), Layout(root), config


def test_every_figure_of_a_pair_is_written(pair_results):
    results, layout, config = pair_results
    paths = layout.pair_figures("toy-grpo", config["datasets"])
    rc_before, backend_before = dict(matplotlib.rcParams), matplotlib.get_backend()
    pair.make_pair_figures(results, paths)
    assert set(paths) == {
        "metrics_vs_alpha",
        "diversity",
        "node_entropy",
        "log_abs_w",
        "confidence",
        "edge_change/toy-gsm8k",
    }
    for path in paths.values():
        assert_png(path)
    assert dict(matplotlib.rcParams) == rc_before  # styling stayed inside the figures
    assert matplotlib.get_backend() == backend_before


def test_confidence_frame_pairs_log_intensity_and_window_loss_changes():
    rows = [
        ("d", 0.5, 7, role, metric, value)
        for role, metric, value in (
            ("base", "intensity", 2.0),
            ("tuned", "intensity", 1.0),
            ("base", "window_ce", 0.30),
            ("tuned", "window_ce", 0.10),
        )
    ]
    rows.append(("d", 0.1, 7, "base", "intensity", 5.0))  # another alpha: left out
    per_sample = pd.DataFrame(rows, columns=["dataset", "alpha", "idx", "role", "metric", "value"])
    frame = metrics.confidence_frame(per_sample, 0.5)
    assert frame.to_dict("records") == [
        {
            "dataset": "d",
            "idx": 7,
            "log_intensity_change": pytest.approx(np.log(0.5)),
            "window_ce_change": pytest.approx(-0.2),
        }
    ]


def test_wrong_figure_names_fail_before_drawing(pair_results, tmp_path):
    results, _, _ = pair_results
    with pytest.raises(ValueError, match="expected"):
        pair.make_pair_figures(results, {"diversity": tmp_path / "d.png"})
    assert not list(tmp_path.iterdir())


def test_edge_change_heatmap_of_a_large_graph_is_legible(tmp_path):
    graph = build_graph(28)  # a 7B model's depth: 57 x 113 nodes
    rng = np.random.default_rng(0)
    change = np.where(graph.edge_mask, rng.standard_t(2, graph.edge_mask.shape), np.nan)
    path = tmp_path / "edge.png"
    edges.plot_edge_change(
        {"α = 0.1": change, "α = 0.5": change / 2, "α = 0.3": change * 3},
        graph.forward_nodes,
        graph.backward_nodes,
        path,
        title="large graph",
    )
    assert_png(path)


def test_edge_change_matrix_reads_nulls_as_non_edges():
    matrix = edges.edge_change_matrix({"edge_relative_change": [[0.5, None], [-1.0, 2.0]]})
    np.testing.assert_array_equal(np.isnan(matrix), [[False, True], [False, False]])
    assert matrix[1, 1] == 2.0


def test_colour_limits_are_symmetric_robust_and_never_zero():
    values = np.concatenate([np.linspace(-1, 1, 99), [1000.0]])
    assert edges.symmetric_limit([values], percentile=98) < 2
    assert edges.symmetric_limit([np.full(3, np.nan)]) == 1.0
    assert edges.symmetric_limit([np.zeros(4)]) == 1.0


def test_tick_labels_are_thinned_to_at_most_thirty():
    assert style.tick_step(17) == 1
    assert style.tick_step(121) == 5
    assert math.ceil(121 / style.tick_step(121)) <= style.MAX_TICK_LABELS


def test_log_abs_leaves_out_and_counts_zeros():
    logs, zeros = edges.log_abs(np.array([[0.0, 10.0], [-0.01, 0.0]]))
    np.testing.assert_allclose(np.sort(logs), [-2.0, 1.0])
    assert zeros == 2


def test_mean_with_ci_is_a_t_interval():
    values = pd.DataFrame(
        {
            "dataset": "d",
            "alpha": 0.1,
            "metric": "intensity",
            "role": ["base"] * 4 + ["tuned"],
            "value": [1.0, 2.0, 3.0, np.nan, 5.0],
        }
    )
    summary = metrics.mean_with_ci(values).set_index("role")
    assert summary.loc["base", "mean"] == pytest.approx(2.0)
    assert summary.loc["base", "half_width"] == pytest.approx(
        stats.t.ppf(0.975, 2) * 1 / math.sqrt(3)
    )
    assert np.isnan(summary.loc["tuned", "half_width"])  # one value: no interval


def test_training_curves_draw_the_columns_the_trainer_logged(tmp_path):
    log = pd.DataFrame(
        {
            "step": [1, 2, 3, 3],
            "loss": [1.0, 0.5, 0.2, np.nan],
            "reward": [0.1, 0.4, 0.6, np.nan],
            "reward_std": [0.1, 0.1, 0.1, np.nan],
            "train_runtime": [np.nan, np.nan, np.nan, 12.0],
        }
    )
    assert training.training_columns(log) == ["loss", "reward"]
    training.plot_training_curves(log, tmp_path / "t.png", title="grpo")
    assert_png(tmp_path / "t.png")
    with pytest.raises(ValueError, match="none of the columns"):
        training.plot_training_curves(log[["step", "train_runtime"]], tmp_path / "u.png", title="x")
