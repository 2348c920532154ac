"""Known-answer edits and the calibrated reading: a temperature change reads exactly zero,
a planted change is detected where it was planted, and the analysis says so."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import pytest
import torch
from test_eap import FAMILIES, make_samples, tiny_model

from circuitry.analysis.calibration import (
    CALIBRATED_LOSS,
    COLUMNS,
    calibration_table,
    describe_edit,
    known_answer_rows,
    node_ranking,
    reading_status,
)
from circuitry.analysis.metrics import HEADLINE_METRICS
from circuitry.attribution.architectures import architecture_for
from circuitry.attribution.eap import model_graph, score_windows
from circuitry.attribution.edits import apply_edit
from circuitry.attribution.hooks import EdgeScorer, install_hooks, scoring_mode
from circuitry.attribution.scorefile import LOSSES, EdgeScores
from circuitry.attribution.window_loss import make_batch, window_logits

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHARPER = {"kind": "temperature", "factor": 1.5}
SOFTER = {"kind": "temperature", "factor": 0.8}


class Float64RMSNorm(torch.nn.Module):
    """An RMSNorm written out in the input's dtype: the families' own compute in float32
    even in a float64 model, which would bound the exactness check at float32's."""

    def __init__(self, norm: torch.nn.Module):
        super().__init__()
        self.weight, self.eps = norm.weight, norm.variance_epsilon

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def exact_model(family: str, n_layers: int = 2) -> torch.nn.Module:
    """`tiny_model` in float64 throughout, its RMSNorms replaced by `Float64RMSNorm`."""
    model = tiny_model(family, n_layers=n_layers).eval()
    for name, module in list(model.named_modules()):
        if type(module).__name__.endswith("RMSNorm"):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, Float64RMSNorm(module))
    return model


def scored_under(model, samples, edit=None, losses=LOSSES) -> dict:
    handles = apply_edit(model, edit) if edit else []
    try:
        return score_windows(model, samples, losses, batch_size=3, dtype=np.float64)
    finally:
        for handle in handles:
            handle.remove()


def as_edge_scores(model, windows, alpha: float = 0.5) -> EdgeScores:
    graph = model_graph(model)
    return EdgeScores(
        scores=windows.scores,
        idx=np.arange(len(windows.scores)),
        edge_mask=graph.edge_mask,
        forward_nodes=graph.forward_nodes,
        backward_nodes=graph.backward_nodes,
        diagnostics=windows.diagnostics,
        condition={"alpha": alpha, "cut_len": 3, "reference_length": 6.0, "loss": windows.loss},
    )


# ---- the edits ----


@pytest.mark.parametrize("family", FAMILIES)
def test_a_temperature_edit_scales_every_logit_and_is_undone(family):
    model = tiny_model(family).eval()
    ids = torch.tensor([[3, 7, 11, 19, 23]])
    with torch.no_grad():
        clean = model(ids).logits
        handles = apply_edit(model, SHARPER)
        sharper = model(ids).logits
        for handle in handles:
            handle.remove()
        again = model(ids).logits
    torch.testing.assert_close(sharper, 1.5 * clean, rtol=1e-12, atol=1e-12)
    assert torch.equal(clean.argmax(-1), sharper.argmax(-1))
    assert torch.equal(again, clean)


@pytest.mark.parametrize("node", ["input", "a0", "m1"])
def test_a_planted_edit_scales_exactly_its_nodes_output(node):
    """What EAP buffers as the node's output O_u is f times the clean one; the nodes before
    it are untouched."""
    model = tiny_model("llama").eval()
    sample = make_samples(1, seed=4)
    clean = _node_outputs(model, sample)
    handles = apply_edit(model, {"kind": "planted", "node": node, "factor": 2.0})
    planted = _node_outputs(model, sample)
    for handle in handles:
        handle.remove()
    row = model_graph(model).forward_index(node)
    torch.testing.assert_close(planted[:, row], 2.0 * clean[:, row], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(planted[:, :row], clean[:, :row], rtol=0, atol=0)


def _node_outputs(model, samples) -> torch.Tensor:
    """The forward nodes' outputs `[1, n_forward, T, hidden]` as EAP's scorer buffers them."""
    scorer = EdgeScorer(model_graph(model))
    with scoring_mode(model), contextlib.ExitStack() as hooks:
        install_hooks(hooks, model, architecture_for(model), model_graph(model), scorer)
        window_logits(model, make_batch(samples, torch.device("cpu")))
    return scorer.buffer.clone()


def test_a_planted_node_the_model_lacks_is_named():
    with pytest.raises(ValueError, match="planted node 'm7' does not exist .* 2 layers"):
        apply_edit(tiny_model("llama"), {"kind": "planted", "node": "m7", "factor": 2.0})


def test_edits_are_described_for_tables():
    assert describe_edit(SHARPER) == "logits x 1.5"
    assert describe_edit({"kind": "planted", "node": "m1", "factor": 2}) == "m1 output x 2"


# ---- the calibrated reading ----


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("edit", [SHARPER, SOFTER], ids=["sharper", "softer"])
def test_the_calibrated_reading_is_exactly_invariant_to_a_logit_scale(family, edit):
    """Float64 throughout: every target_unit score is unchanged to 1e-10 of the largest,
    while ce and ce_unit move by more than 10% of it."""
    model = exact_model(family)
    samples = make_samples(6, seed=9)
    clean, edited = scored_under(model, samples), scored_under(model, samples, edit)
    for loss in LOSSES:
        scale = np.abs(clean[loss].scores).max()
        moved = np.abs(edited[loss].scores - clean[loss].scores).max() / scale
        if loss == CALIBRATED_LOSS:
            assert moved < 1e-10, (family, moved)
        else:
            assert moved > 0.1, (family, loss, moved)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_calibrated_reading_stays_under_a_percent_with_the_families_own_norms(family):
    """With the models' own float32 RMSNorm internals, every headline metric still reads
    far below the 1% bar (relative change under 1e-5)."""
    model = tiny_model(family).eval()
    samples = make_samples(6, seed=9)
    clean = scored_under(model, samples, losses=[CALIBRATED_LOSS])[CALIBRATED_LOSS]
    edited = scored_under(model, samples, SHARPER, [CALIBRATED_LOSS])[CALIBRATED_LOSS]
    rows = known_answer_rows(
        as_edge_scores(model, clean),
        as_edge_scores(model, edited),
        **_row_settings(SHARPER, CALIBRATED_LOSS),
    )
    assert {row["metric"] for row in rows} == set(HEADLINE_METRICS)
    for row in rows:
        assert abs(row["change_pct"]) < 1e-3, row
        assert row["passed"] is True


@pytest.mark.parametrize("family", FAMILIES)
def test_a_planted_change_is_detected_on_the_edges_leaving_its_node(family):
    """a1's output x 1.5 in a 3-layer model at a usual initial scale: intensity moves >= 2%
    at p < 0.01 under the calibrated reading, and a1's outgoing edge mass changes the most
    of any node's (not a requirement: on these models it holds)."""
    model = tiny_model(family, n_layers=3, init=0.02).eval()
    samples = make_samples(20, seed=5)
    planted = {"kind": "planted", "node": "a1", "factor": 1.5}
    losses = [CALIBRATED_LOSS]
    clean = scored_under(model, samples, losses=losses)[CALIBRATED_LOSS]
    edited = scored_under(model, samples, planted, losses)[CALIBRATED_LOSS]
    rows = known_answer_rows(
        as_edge_scores(model, clean),
        as_edge_scores(model, edited),
        **_row_settings(planted, CALIBRATED_LOSS),
    )
    (intensity,) = [row for row in rows if row["metric"] == "intensity"]
    assert abs(intensity["change_pct"]) >= 2 and intensity["p"] < 0.01, intensity
    assert intensity["top_node"] == "a1" and intensity["located"] is True
    assert intensity["passed"] is True


def _row_settings(edit, loss, agreement=1.0, base_agreement=1.0) -> dict:
    return {
        "model": "m",
        "pair": "p",
        "dataset": "d",
        "edit_name": "e",
        "edit": edit,
        "loss": loss,
        "agreement": agreement,
        "base_agreement": base_agreement,
        "seed": 0,
        "n_resamples": 199,
    }


# ---- the analysis, on known numbers ----


def synthetic_scores(scores: np.ndarray, loss: str = "ce") -> EdgeScores:
    """Scores of a 1-layer graph (input, a0, m0 -> a0.q/k/v, m0, logits)."""
    mask = np.array(
        [[1, 1, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1]],
        dtype=bool,
    )
    return EdgeScores(
        scores=scores * mask,
        idx=np.arange(len(scores)),
        edge_mask=mask,
        forward_nodes=("input", "a0", "m0"),
        backward_nodes=("a0.q", "a0.k", "a0.v", "m0", "logits"),
        condition={"alpha": 0.5, "cut_len": 2, "reference_length": 4.0, "loss": loss},
    )


def test_known_answers_on_known_numbers():
    rng = np.random.default_rng(0)
    base = synthetic_scores(rng.normal(size=(30, 3, 5)))
    same = known_answer_rows(base, base, **_row_settings(SHARPER, "ce"))
    assert all(row["change_pct"] == 0 and row["passed"] for row in same)
    # a0's outgoing edges doubled: intensity up by exactly their share of sum |w|
    doubled = base.scores.copy()
    doubled[:, 1] *= 2
    planted = {"kind": "planted", "node": "a0", "factor": 2}
    rows = known_answer_rows(base, synthetic_scores(doubled), **_row_settings(planted, "ce"))
    by_metric = {row["metric"]: row for row in rows}
    ratio = np.abs(doubled[:, base.edge_mask]).mean(1) / np.abs(base.edge_values).mean(1)
    expected = 100 * np.expm1(np.log(ratio).mean())
    assert by_metric["intensity"]["change_pct"] == pytest.approx(expected, rel=1e-12)
    assert by_metric["intensity"]["node_rank"] == 1 and by_metric["intensity"]["passed"]
    assert by_metric["entropy"]["passed"] is None and by_metric["entropy"]["known"] == ""


def test_a_temperature_edit_that_changed_the_answers_fails_its_check():
    base = synthetic_scores(np.random.default_rng(1).normal(size=(10, 3, 5)))
    rows = known_answer_rows(base, base, **_row_settings(SHARPER, "ce", 0.97, 1.0))
    assert not any(row["passed"] for row in rows)
    assert "changed the greedy answers" in rows[0]["note"]


def test_a_planted_change_that_lands_elsewhere_is_detected_but_not_located():
    rng = np.random.default_rng(2)
    base = synthetic_scores(rng.normal(size=(30, 3, 5)))
    changed = base.scores.copy()
    changed[:, 0] *= 1.5  # input's edges changed, but a0 was named
    planted = {"kind": "planted", "node": "a0", "factor": 1.5}
    rows = known_answer_rows(base, synthetic_scores(changed), **_row_settings(planted, "ce"))
    (intensity,) = [row for row in rows if row["metric"] == "intensity"]
    assert intensity["passed"] is True
    assert intensity["top_node"] == "input" and intensity["node_rank"] > 1
    assert intensity["located"] is False
    assert "a0 ranks 2 by the change of its edges (first: input)" in intensity["note"]


def test_a_planted_change_too_small_is_not_detected():
    rng = np.random.default_rng(3)
    base = synthetic_scores(rng.normal(size=(30, 3, 5)))
    changed = base.scores.copy()
    changed[:, 1] *= 1.01  # a0's edges up 1%: intensity up by well under 2%
    planted = {"kind": "planted", "node": "a0", "factor": 1.01}
    rows = known_answer_rows(base, synthetic_scores(changed), **_row_settings(planted, "ce"))
    (intensity,) = [row for row in rows if row["metric"] == "intensity"]
    assert 0 < intensity["change_pct"] < 2 and intensity["located"] is True
    assert intensity["passed"] is False


def test_node_ranking_orders_by_the_change_of_each_nodes_edge_mass():
    base = synthetic_scores(np.ones((2, 3, 5)))
    tuned = base.scores.copy()
    tuned[:, 0] *= 1.1  # input: +10%
    tuned[:, 1] *= 0.5  # a0: -50%
    tuned[:, 2] *= 1.2  # m0: +20%
    assert node_ranking(base, synthetic_scores(tuned)) == ["a0", "m0", "input"]


def test_a_reading_passes_only_when_every_known_answer_row_does():
    rows = [
        {"loss": "ce", "known": "0", "passed": False},
        {"loss": "ce", "known": "0", "passed": True},
        {"loss": CALIBRATED_LOSS, "known": "0", "passed": True},
        {"loss": CALIBRATED_LOSS, "known": "", "passed": None},
        {"loss": CALIBRATED_LOSS, "known": "detect", "passed": True},
    ]
    table = pd.DataFrame([{**dict.fromkeys(COLUMNS), **row} for row in rows])
    assert reading_status(table) == {"ce": False, CALIBRATED_LOSS: True}
    with pytest.raises(ValueError, match="no known-answer rows"):
        calibration_table([])
