"""Survival under exact ablation, on known answers: the edge sample both roles share, the
true loss changes laid out as score sets, the tests of both readings, the survival of a
headline cell computed by hand, and the check on real toy models (an identity pair reads
exactly 0; EAP's change on the sampled edges is the first-order one of the exact)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from circuitry.analysis.survival import (
    NO_CHANGE,
    NOT_SIGNIFICANT,
    OPPOSITE,
    SURVIVES,
    survival,
    survival_tests,
    with_survival,
)
from circuitry.attribution.edge_sample import change_table, draw_edges, exact_changes, on_sample
from circuitry.attribution.graph import build_graph
from circuitry.attribution.scorefile import EdgeScores
from circuitry.report.findings import survival_text


def scores(values: np.ndarray, graph, idx=None) -> EdgeScores:
    return EdgeScores(
        scores=np.where(graph.edge_mask, values, 0.0),
        idx=np.arange(len(values)) if idx is None else np.asarray(idx),
        edge_mask=graph.edge_mask,
        forward_nodes=graph.forward_nodes,
        backward_nodes=graph.backward_nodes,
    )


def recording_ablate(losses_of, asked: list):
    """An `Ablate` that records what it is asked and returns `losses_of(position, rows)`."""

    def ablate(position, rows):
        asked.append((position, [list(row) for row in rows]))
        return losses_of(position, rows)

    return ablate


def test_the_edge_sample_is_drawn_once_and_both_roles_remove_exactly_the_same_edges():
    graph = build_graph(3)
    rng = np.random.default_rng(0)
    base = scores(rng.normal(size=(8, graph.n_forward, graph.n_backward)), graph)
    tuned = scores(rng.normal(size=(8, graph.n_forward, graph.n_backward)), graph)
    edges = draw_edges(graph.edge_mask, 12, seed=5)
    assert len(edges) == 12 and len({tuple(e) for e in edges}) == 12
    assert graph.edge_mask[edges[:, 0], edges[:, 1]].all()
    np.testing.assert_array_equal(edges, draw_edges(graph.edge_mask, 12, seed=5))
    assert len(draw_edges(graph.edge_mask, 10_000, seed=5)) == graph.n_edges
    asked = {"base": [], "tuned": []}
    positions = [1, 4, 6]
    exact = {
        role: exact_changes(
            s, edges, positions, recording_ablate(lambda p, rows: np.zeros(len(rows)), asked[role])
        )
        for role, s in (("base", base), ("tuned", tuned))
    }
    assert asked["base"] == asked["tuned"]
    assert [p for p, _ in asked["base"]] == positions
    assert asked["base"][0][1][0] == []  # row 0: the clean model
    np.testing.assert_array_equal(exact["base"].edge_mask, exact["tuned"].edge_mask)
    np.testing.assert_array_equal(exact["base"].idx, [1, 4, 6])
    eap = on_sample(base, edges, positions)
    assert eap.edge_mask.sum() == 12
    np.testing.assert_array_equal(
        eap.edge_values, base.scores[positions][:, edges[:, 0], edges[:, 1]]
    )


def test_exact_changes_are_each_rows_loss_minus_the_clean_loss_in_its_edges_place():
    """A planted loss: removing edge (u, v) of problem p adds p + u + 10 v to a clean 3."""
    graph = build_graph(2)
    base = scores(np.zeros((3, graph.n_forward, graph.n_backward)), graph)
    edges = draw_edges(graph.edge_mask, 7, seed=1)

    def losses_of(position, rows):
        return np.array([3.0 + sum(position + u + 10 * v for u, v in row) for row in rows])

    exact = exact_changes(base, edges, [0, 2], recording_ablate(losses_of, []))
    for i, position in enumerate([0, 2]):
        for u, v in edges:
            assert exact.scores[i, u, v] == position + u + 10 * v
    assert exact.edge_mask.sum() == 7 and (exact.scores[:, ~exact.edge_mask] == 0).all()
    table = change_table(exact, on_sample(base, edges, [0, 2]))
    assert len(table) == 14 and set(table["sample"]) == {0, 2}
    row = table.iloc[0]
    u, v = edges[0]
    assert row["edge"] == f"{graph.forward_nodes[u]}->{graph.backward_nodes[v]}"
    assert row["change"] == u + 10 * v and row["score"] == 0


def test_both_readings_are_tested_on_the_headline_metrics_and_a_doubling_reads_doubled():
    """Tuned's exact changes are twice base's on every edge: intensity +100%, the
    distribution's shape unchanged; the EAP reading unchanged everywhere."""
    graph = build_graph(2)
    rng = np.random.default_rng(1)
    values = np.abs(rng.normal(size=(12, graph.n_forward, graph.n_backward))) + 0.1
    edges = draw_edges(graph.edge_mask, 15, seed=2)
    positions = list(range(12))
    same = on_sample(scores(values, graph), edges, positions)
    doubled = on_sample(scores(2 * values, graph), edges, positions)
    tests = survival_tests(
        {("exact", "ce"): (same, doubled), ("eap", "ce"): (same, same)},
        pair="p",
        dataset="d",
        alpha=0.3,
        seed=0,
        n_resamples=200,
    ).set_index(["reading", "metric"])
    assert set(tests.index.get_level_values("metric")) == {
        "intensity",
        "entropy",
        "kurtosis",
        "diversity",
    }
    assert tests.loc[("exact", "intensity"), "change_pct"] == pytest.approx(100.0)
    assert tests.loc[("exact", "intensity"), "p"] < 0.01
    for metric in ("entropy", "kurtosis", "diversity"):
        assert tests.loc[("exact", metric), "change"] == pytest.approx(0.0, abs=1e-9)
    assert (tests.loc["eap", "change"] == 0).all()


@pytest.mark.parametrize(
    ("full", "exact", "q", "expected"),
    [
        (0.2, 0.1, 0.01, SURVIVES),
        (0.2, 0.1, 0.2, NOT_SIGNIFICANT),
        (-0.2, -0.3, 0.001, SURVIVES),
        (0.2, -0.1, 0.001, OPPOSITE),
        (0.0, 0.0, 1.0, NO_CHANGE),
        (0.2, math.nan, math.nan, ""),
    ],
)
def test_survival_of_one_cell(full, exact, q, expected):
    assert survival(full, exact, q) == expected


def test_the_survival_columns_of_a_small_table_computed_by_hand():
    """Two cells of one pair under ce and target_unit. BH over the pair's exact rows:
    p = (0.01, 0.04, 0.30, 0.02) -> q = (0.04, 0.0533, 0.30, 0.04)."""
    verdicts = pd.DataFrame(
        {
            "pair": ["a", "a", "b"],
            "dataset": "d",
            "alpha": 0.3,
            "metric": ["intensity", "entropy", "intensity"],
            "ce_change": [0.5, -0.2, 0.1],
            "calibrated_change": [0.1, 0.3, 0.1],
        }
    )

    def test_row(metric, loss, reading, change, p):
        cell = {"pair": "a", "dataset": "d", "alpha": 0.3, "metric": metric, "loss": loss}
        cell |= {"comparison": "own"}
        return cell | {"reading": reading, "change": change, "change_pct": 100 * change, "p": p}

    tests = pd.DataFrame(
        [
            test_row("intensity", "ce", "exact", 0.4, 0.01),
            test_row("entropy", "ce", "exact", -0.1, 0.04),
            test_row("intensity", "target_unit", "exact", -0.05, 0.30),
            test_row("entropy", "target_unit", "exact", 0.2, 0.02),
            *(
                test_row(metric, loss, "eap", 0.9, 0.5)
                for metric in ("intensity", "entropy")
                for loss in ("ce", "target_unit")
            ),
        ]
    )
    out = with_survival(verdicts, tests).set_index(["pair", "metric"])
    assert out.loc[("a", "intensity"), "survival_ce"] == SURVIVES  # q 0.04
    assert out.loc[("a", "entropy"), "survival_ce"] == NOT_SIGNIFICANT  # q 0.0533
    assert out.loc[("a", "intensity"), "survival_calibrated"] == OPPOSITE
    assert out.loc[("a", "entropy"), "survival_calibrated"] == SURVIVES  # q 0.04
    assert out.loc[("a", "entropy"), "exact_ce_q"] == pytest.approx(0.16 / 3)
    assert out.loc[("a", "intensity"), "sample_ce_change_pct"] == 90
    assert out.loc[("b", "intensity"), "survival_ce"] == ""  # not checked
    cell = out.reset_index().iloc[0].to_dict()
    assert survival_text(cell) == (
        "exact ablation: opposite direction (calibrated -5.00%); survives (ce +40.0%*)"
    )
    assert survival_text(out.reset_index().iloc[2].to_dict()) == ""
