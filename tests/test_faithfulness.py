"""Full edge ablations and the faithfulness analysis built on them.

The ablation is checked against a GPT-2 forward pass written out by hand (plain module
calls and tensor algebra, none of the project's hooks) in float64, where GPT-2's
LayerNorm keeps every digit; the analysis on inputs whose answers are known.
"""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_eap import make_samples, tiny_model

from circuitry.attribution.ablation import ablated_losses, integrated_changes, perturbed_loss
from circuitry.attribution.eap import model_graph
from circuitry.attribution.faithfulness import (
    Settings,
    analyse_sample,
    choose_samples,
    curve_area,
    edge_table,
    embedding_edges,
    largest_change,
    load_faithfulness,
    log_grid,
    parse_edges,
    stratified_edges,
    summarise,
    top_k_overlap,
)
from circuitry.attribution.samples import Sample
from circuitry.figures.faithfulness import plot_faithfulness
from circuitry.io import write_json
from circuitry.paths import EAP_FILE
from circuitry.report.faithfulness import faithfulness_section
from conftest import ROOT, dry_run_jobs, load_config, planned_jobs, run_snakemake

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def hand_loss(model, sample: Sample, removed: set[tuple[str, str]]) -> float:
    """The window's mean cross-entropy of a GPT-2 run by hand, each backward node v
    reading the sum of the forward nodes before it minus the removed sources' outputs."""
    t = model.transformer
    ids = torch.tensor([sample.tokens])
    outputs = {"input": t.wte(ids) + t.wpe(torch.arange(ids.shape[1]))[None]}

    def read(target: str) -> torch.Tensor:
        lost = [outputs[u] for u, v in sorted(removed) if v == target]
        return sum(outputs.values()) - sum(lost) if lost else sum(outputs.values())

    with torch.no_grad():
        for layer, block in enumerate(t.h):
            q, k, v = (
                qkv_slice(block, read(f"a{layer}.{part}"), i) for i, part in enumerate("qkv")
            )
            outputs[f"a{layer}"] = block.attn.c_proj(
                causal_attention(q, k, v, block.attn.num_heads)
            )
            outputs[f"m{layer}"] = block.mlp(block.ln_2(read(f"m{layer}")))
        logits = model.lm_head(t.ln_f(read("logits")))[0, list(sample.loss_positions)]
        targets = torch.tensor(sample.answer_token_ids[: sample.cut_len])
        return torch.nn.functional.cross_entropy(logits, targets).item()


def qkv_slice(block, residual: torch.Tensor, part: int) -> torch.Tensor:
    """Query, key or value (part 0, 1, 2) of GPT-2's fused projection of ln_1(residual)."""
    hidden = residual.shape[-1]
    columns = slice(part * hidden, (part + 1) * hidden)
    conv = block.attn.c_attn
    return block.ln_1(residual) @ conv.weight[:, columns] + conv.bias[columns]


def causal_attention(q, k, v, n_heads: int) -> torch.Tensor:
    batch, length, hidden = q.shape
    q, k, v = (x.view(batch, length, n_heads, -1).transpose(1, 2) for x in (q, k, v))
    weights = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    future = torch.ones(length, length, dtype=torch.bool).triu(1)
    weights = torch.softmax(weights.masked_fill(future, float("-inf")), dim=-1)
    return (weights @ v).transpose(1, 2).reshape(batch, length, hidden)


def edge_indices(model, names: list[tuple[str, str]]) -> list[tuple[int, int]]:
    graph = model_graph(model)
    return [(graph.forward_index(u), graph.backward_index(v)) for u, v in names]


@pytest.fixture(scope="module")
def gpt2():
    return tiny_model("gpt2", n_layers=3).eval()


def test_hand_written_forward_reproduces_the_model(gpt2):
    sample = make_samples(1, seed=3)[0]
    assert ablated_losses(gpt2, sample, [[]])[0] == pytest.approx(
        hand_loss(gpt2, sample, set()), abs=1e-12
    )


@pytest.mark.parametrize(
    "edge", [("input", "a0.k"), ("a0", "a1.q"), ("m0", "a2.v"), ("a1", "m1"), ("m2", "logits")]
)
def test_removing_one_edge_matches_the_hand_written_forward(gpt2, edge):
    sample = make_samples(1, seed=3)[0]
    (loss,) = ablated_losses(gpt2, sample, [edge_indices(gpt2, [edge])])
    clean = hand_loss(gpt2, sample, set())
    expected = hand_loss(gpt2, sample, {edge})
    assert abs(expected - clean) > 1e-4  # the edge matters: the check is not vacuous
    assert loss == pytest.approx(expected, abs=1e-10)


def test_several_edges_removed_together_match_the_hand_written_forward(gpt2):
    """Two sources into one node, and a removed source whose own input lost an edge: the
    removed outputs are those of the perturbed forward pass."""
    edges = [("input", "a1.q"), ("a0", "a1.q"), ("input", "a0.v"), ("a0", "logits")]
    sample = make_samples(1, seed=4)[0]
    (loss,) = ablated_losses(gpt2, sample, [edge_indices(gpt2, edges)])
    assert loss == pytest.approx(hand_loss(gpt2, sample, set(edges)), abs=1e-10)


@pytest.mark.parametrize("family", ["llama", "phi3", "gpt2"])
def test_batched_rows_equal_one_ablation_at_a_time(family):
    model = tiny_model(family, n_layers=2).eval()
    sample = make_samples(1, seed=5)[0]
    graph = model_graph(model)
    edges = graph.edges()
    rows = [[], *([e] for e in edges[::3]), edges[:7], edges[5:20]]
    rows = [edge_indices(model, row) for row in rows]
    batched = ablated_losses(model, sample, rows, batch_size=4)
    single = np.array([ablated_losses(model, sample, [row], batch_size=1)[0] for row in rows])
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-10)
    assert np.ptp(batched) > 1e-4


def test_ablating_a_non_edge_names_it(gpt2):
    graph = model_graph(gpt2)
    row = [(graph.forward_index("m1"), graph.backward_index("a1.q"))]
    with pytest.raises(ValueError, match="no edge m1 -> a1.q"):
        ablated_losses(gpt2, make_samples(1)[0], [row])


# --- the analysis, on known inputs ----------------------------------------------------------


def test_stratified_edges_take_the_top_and_draw_the_rest():
    scores = np.array([[0.5, -3.0, 0.0], [2.0, 0.1, -0.2]])
    mask = np.array([[True, True, True], [True, True, False]])
    ranked = np.argwhere(mask)[np.argsort(-np.abs(scores[mask]), kind="stable")]
    assert ranked.tolist() == [[0, 1], [1, 0], [0, 0], [1, 1], [0, 2]]
    chosen, strata = stratified_edges(ranked, 2, 2, np.random.default_rng(0))
    assert chosen[:2].tolist() == [[0, 1], [1, 0]]
    assert {tuple(e) for e in chosen[2:]} <= {(0, 0), (1, 1), (0, 2)}
    assert len({tuple(e) for e in chosen}) == 4
    assert strata == ["top", "top", "random", "random"]
    all_of_them, _ = stratified_edges(ranked, 2, 10, np.random.default_rng(0))
    assert len(all_of_them) == 5


def test_log_grid_ends_at_the_largest_k():
    assert log_grid(77, None).tolist() == [1, 2, 4, 8, 16, 32, 64, 77]
    assert log_grid(77, 16).tolist() == [1, 2, 4, 8, 16]
    assert log_grid(1, None).tolist() == [1]


def test_top_k_overlap_counts_shared_edges():
    scores = np.array([5.0, -4.0, 3.0, 0.1, 0.2])
    changes = np.array([4.0, 0.0, -6.0, 5.0, 0.1])
    # top 2 by |score|: 0, 1; by |change|: 2, 3
    assert top_k_overlap(scores, changes, 2) == 0.0
    # top 3: {0, 1, 2} and {2, 3, 0}
    assert top_k_overlap(scores, changes, 3) == pytest.approx(2 / 3)


def test_curve_area_is_the_mean_gap_over_log_k():
    grid = np.array([1, 2, 4])
    # gap 0 at k=1, 2 at k=2 and k=4: trapezoids (1 + 2) * ln 2 over the range 2 ln 2
    assert curve_area(grid, [1.0, 3.0, 3.0], [1.0, 1.0, 1.0]) == pytest.approx(1.5)
    assert curve_area(np.array([1]), [2.0], [0.5]) == 1.5


def fake_ablate(exact: np.ndarray, clean: float = 1.0):
    """Losses of a model where removing edges adds up their `exact` changes."""

    def ablate(position, rows):
        return np.array([clean + sum(exact[e] for e in row) for row in rows])

    return ablate


def test_analysis_recovers_known_changes():
    mask = np.ones((3, 4), dtype=bool)
    scores = np.arange(12, dtype=float).reshape(3, 4) - 5.5
    exact = 2 * scores  # a perfectly faithful estimate (rank and sign)
    settings = Settings(top_edges=3, random_edges=0, random_draws=2, curve_max=None, seed=0)
    listed = [(1, 1), (0, 0)]  # (0, 0) is already a top edge
    result = analyse_sample(0, scores, mask, settings, listed, fake_ablate(exact))
    table = result.edges
    assert list(zip(table.source, table.target, strict=True)) == [(0, 0), (2, 3), (0, 1), (1, 1)]
    assert list(table.stratum) == ["top", "top", "top", "listed"]
    assert (table.change == 2 * table.score).all()
    grid = log_grid(12, None)
    assert grid.tolist() == [1, 2, 4, 8, 12]
    by_magnitude = [-5.5, 5.5, -4.5, 4.5, -3.5, 3.5, -2.5, 2.5, -1.5, 1.5, -0.5, 0.5]
    np.testing.assert_allclose(result.top_curve, [2 * sum(by_magnitude[:k]) for k in grid])
    assert result.random_curves.shape == (2, 5)
    np.testing.assert_allclose(result.random_curves[:, -1], 0.0, atol=1e-12)  # all edges

    summary = summarise({0: result, 1: result}, settings, n_edges=12)
    assert summary["spearman"] == pytest.approx(1.0)
    assert summary["pearson"] == pytest.approx(1.0)
    assert summary["pooled_spearman"] == pytest.approx(1.0)
    assert summary["top_k_overlap"] == 1.0
    assert summary["top_curve"] == pytest.approx(result.top_curve.tolist())
    assert summary["n_samples"] == 2


def test_unfaithful_scores_show_low_correlation_and_overlap():
    rng = np.random.default_rng(1)
    mask = np.ones((6, 8), dtype=bool)
    scores, exact = rng.normal(size=(2, 6, 8))
    settings = Settings(top_edges=10, random_edges=20, random_draws=3, curve_max=16, seed=0)
    results = {
        p: analyse_sample(p, scores, mask, settings, [], fake_ablate(exact)) for p in range(3)
    }
    summary = summarise(results, settings, n_edges=48)
    assert abs(summary["spearman"]) < 0.5
    assert summary["top_k_overlap"] < 0.6
    assert summary["grid"] == [1, 2, 4, 8, 16]


def test_ig_and_the_embedding_stratum_split_the_misses_into_nonlinear_and_structural():
    """Known numbers: IG reads every edge's true change except the embedding edges into
    layer 0, which jump (true change 50, IG 0); EAP reads half of every change. Without
    the embedding edges both rank perfectly; every one of IG's largest misses, and as many
    of EAP's as there are embedding edges, are embedding edges."""
    forward, backward = ["input", "a0", "m0"], ["a0.q", "a0.k", "a0.v", "m0", "logits"]
    graph_mask = np.array([[1, 1, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1]], dtype=bool)
    embedding = embedding_edges(forward, backward)
    assert embedding.tolist() == [[True] * 4 + [False], [False] * 5, [False] * 5]
    smooth = np.arange(15, dtype=float).reshape(3, 5) + 1
    exact = np.where(embedding, 50.0, smooth)
    scores = 0.5 * smooth

    def integrate(position, edges):
        return np.array([0.0 if embedding[e] else smooth[e] for e in edges])

    settings = Settings(top_edges=3, random_edges=10, random_draws=1, curve_max=None, seed=0)
    results = {
        p: analyse_sample(
            p, scores, graph_mask, settings, [], fake_ablate(exact), integrate, embedding
        )
        for p in range(2)
    }
    table = results[0].edges
    assert table.embedding.sum() == 4 and (table.ig == table.change).sum() == 4
    summary = summarise(results, settings, n_edges=int(graph_mask.sum()))
    assert summary["spearman_without_embedding"] == pytest.approx(1.0)
    assert summary["ig_spearman_without_embedding"] == pytest.approx(1.0)
    assert summary["ig_spearman"] < 1 and summary["spearman"] < 1
    assert summary["largest_misses"] == 10 and summary["embedding_edges_checked"] == 8
    assert summary["ig_largest_misses_embedding"] == 8  # IG misses only the jumps
    assert summary["largest_misses_embedding"] == 8  # 50 - 0.5 i beats every 0.5 i


def test_edge_names_are_parsed_and_unknown_ones_named():
    graph = model_graph(tiny_model("llama", n_layers=2))
    args = (graph.forward_nodes, graph.backward_nodes, graph.edge_mask)
    assert parse_edges(["a0->m1", "input -> logits"], *args) == [(1, 7), (0, 8)]
    with pytest.raises(ValueError, match="'a7->m1' is not an edge of the model's graph"):
        parse_edges(["a0->m1", "a7->m1"], *args)
    with pytest.raises(ValueError, match="'m1->a1.q' is not an edge"):
        parse_edges(["m1->a1.q"], *args)


def test_more_samples_than_analysed_uses_all_and_logs_it(caplog):
    with caplog.at_level(logging.INFO, logger="circuitry.attribution.faithfulness"):
        assert choose_samples(5, 20, seed=0).tolist() == [0, 1, 2, 3, 4]
    assert "20 samples asked for, 5 analysed: using all of them" in caplog.text
    chosen = choose_samples(100, 10, seed=0)
    assert len(set(chosen)) == 10 and list(chosen) == sorted(chosen)


def test_outputs_load_into_one_tidy_frame(tmp_path):
    mask = np.ones((3, 4), dtype=bool)
    scores = np.arange(12, dtype=float).reshape(3, 4) - 5.5
    settings = Settings(top_edges=3, random_edges=4, random_draws=2, curve_max=None, seed=0)
    result = analyse_sample(0, scores, mask, settings, [], fake_ablate(scores))
    table = edge_table({0: result}, np.array([17]), ["input", "a0", "m0"], list("qkvl"))
    assert table.columns.tolist() == [
        "sample", "edge", "score", "ig", "change", "stratum", "embedding",
    ]  # fmt: skip
    assert (table["sample"] == 17).all() and table.edge.iloc[0] == "input->q"
    paths = []
    for role in ("base", "tuned"):
        paths.append(tmp_path / f"{role}.json")
        condition = {"pair": "p", "dataset": "d", "alpha": 0.3, "role": role}
        write_json(paths[-1], {**condition, **summarise({0: result}, settings, 12)})
    frame = load_faithfulness(paths)
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) == 2 * len(log_grid(12, None))
    assert {"pair", "role", "k", "top", "random", "spearman", "area"} <= set(frame.columns)
    grid = log_grid(12, None).tolist()
    assert frame["k"].tolist() == grid + grid  # the curve's own k, not the overlap's
    assert frame["top"].tolist()[: len(grid)] == pytest.approx(result.top_curve)


# --- the workflow -----------------------------------------------------------------------


def test_toy_config_plans_one_faithfulness_job_per_pair_dataset_role_and_alpha():
    section = load_config("toy")["faithfulness"]
    expected = len(section["pairs"]) * len(section["datasets"]) * 2 * len(section["alphas"])
    assert expected > 0
    assert planned_jobs()["faithfulness"] == expected


def test_toy_config_plans_one_survival_job_per_pair_dataset_and_alpha_reading_both_roles():
    section = load_config("toy")["survival"]
    expected = len(section["pairs"]) * len(section["datasets"]) * len(section["alphas"])
    assert expected > 0 and planned_jobs()["survival"] == expected
    (job,) = [
        j
        for j in dry_run_jobs()
        if j["rule"] == "survival" and j["wildcards"]["pair"] == section["pairs"][0]
    ]
    where = {"pair": section["pairs"][0], "dataset": section["datasets"][0], "text": "own"}
    for role, loss in itertools.product(("base", "tuned"), section["losses"]):
        path = EAP_FILE.format(**where, alpha=section["alphas"][0], role=role, loss=loss)
        assert path in job["input"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("alphas", [0.7], "survival.alphas: 0.7 not among 0.03, 0.1, 0.3, 0.5"),
        ("losses", ["ce_unit"], None),
    ],
)
def test_survival_settings_outside_the_study_fail_naming_them(tmp_path, key, value, message):
    config = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    config["survival"][key] = value
    config["eap"]["losses"] = ["ce", "target_unit"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake("--dry-run", "--configfile", str(tmp_path / "config.yaml"))
    assert result.returncode != 0
    expected = message or "survival.losses: ce_unit not among eap.losses ce, target_unit"
    assert expected in result.stdout + result.stderr


def test_faithfulness_alphas_outside_eap_alphas_fail_naming_them(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    config["faithfulness"]["alphas"] = [0.7]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake("--dry-run", "--configfile", str(tmp_path / "config.yaml"))
    assert result.returncode != 0
    assert "faithfulness.alphas: 0.7 not among 0.03, 0.1, 0.3, 0.5" in result.stdout + result.stderr


# --- the report -------------------------------------------------------------------------


def test_the_section_flags_models_below_the_spearman_floor(tmp_path):
    """One faithful model (Spearman 0.9) and one not (0.3): only the second is flagged,
    the reading names it, and the curves are drawn."""
    grid = [1, 2, 4, 8]
    paths = []
    for role, spearman, area in (("base", 0.9, 0.5), ("tuned", 0.3, -0.1)):
        paths.append(tmp_path / f"{role}.json")
        summary = {
            "pair": "p",
            "dataset": "d",
            "alpha": 0.3,
            "role": role,
            "spearman": spearman,
            "pearson": spearman - 0.1,
            "top_k_overlap": 0.6,
            "area": area,
            "n_samples": 5,
            "grid": grid,
            "top_curve": [0.5, 1.0, 1.5, 2.0],
            "random_curve": [0.0, 0.1, 0.3, 0.9],
            "largest_change_edge": "input->a0.q",
            "largest_change": 8.5,
            "largest_change_score": 1e-6,
            "largest_change_rank": 34,
            "largest_change_of": 40,
            "ig_spearman": 0.8,
            "ig_pearson": 0.75,
            "spearman_without_embedding": spearman + 0.05,
            "ig_spearman_without_embedding": 0.95,
            "largest_misses_embedding": 6,
            "ig_largest_misses_embedding": 10,
            "largest_misses": 10,
            "embedding_edges_checked": 12,
        }
        write_json(paths[-1], summary)
    frame = load_faithfulness(paths)
    plot_faithfulness(frame, tmp_path / "curves.png")
    config = {"pairs": {"p": {"base": "sft", "tuned": "grpo"}}}
    section = faithfulness_section(config, frame, tmp_path / "curves.png")
    text, table, figure = section.blocks
    spearman = [row.cells[4] for row in table.rows]
    assert [cell.text for cell in spearman] == ["0.900", "0.300 ⚠"]
    assert [cell.css for cell in spearman] == ["", "warn"]
    assert [row.cells[2].text for row in table.rows] == ["sft (base)", "grpo (tuned)"]
    assert [c.text for c in table.rows[1].cells[6:10]] == [
        "0.800", "0.750", "0.350 / 0.950", "6 / 10 of 10",
    ]  # fmt: skip
    assert table.rows[0].cells[12].text == "input->a0.q: +8.50 (rank 34 of 40)"
    assert "1 of 2 checks have a Spearman correlation below 0.5 (p tuned)" in text.paragraphs[1]
    assert "In 1 of 2 checks" in text.paragraphs[2]
    assert figure.src.startswith("data:image/png;base64,")


def test_the_largest_change_is_found_with_the_rank_of_its_score():
    """Sample 7's middle edge moves the loss most although two edges score higher."""
    table = pd.DataFrame(
        {
            "sample": [7, 7, 7, 9],
            "edge": ["input->a0.q", "a0->m0", "m0->logits", "input->m0"],
            "score": [0.5, -0.01, -0.9, 0.2],
            "change": [0.4, -3.0, 1.0, 2.0],
            "stratum": ["top", "random", "top", "top"],
        }
    )
    assert largest_change(table) == {
        "largest_change_edge": "a0->m0",
        "largest_change": -3.0,
        "largest_change_score": -0.01,
        "largest_change_rank": 3,
        "largest_change_of": 3,
    }
    listed = pd.concat([table, table.iloc[[0]].assign(change=9.0, stratum="listed")])
    assert largest_change(listed)["largest_change_edge"] == "a0->m0"  # checked strata only


def quadratic_llama() -> torch.nn.Module:
    """A one-layer float64 Llama whose norms are identities and whose MLP gate is linear:
    the MLP is then a product of two linear maps of its input, and target_unit is linear
    in the logits, so the loss is exactly quadratic in e along any edge into m0."""
    model = tiny_model("llama", n_layers=1).eval()
    layer = model.model.layers[0]
    for owner, name in (
        (model.model, "norm"),
        (layer, "input_layernorm"),
        (layer, "post_attention_layernorm"),
    ):
        setattr(owner, name, torch.nn.Identity())
    layer.mlp.act_fn = torch.nn.Identity()
    return model


def test_per_edge_ig_is_the_true_change_where_the_loss_is_quadratic_in_e():
    """The midpoint rule integrates a linear derivative exactly: one point reads the true
    change of removing the edge, where EAP (the derivative at e = 0) does not."""
    model = quadratic_llama()
    sample = make_samples(1, seed=6)[0]
    edges = edge_indices(model, [("input", "m0"), ("a0", "m0")])
    clean, *removed = ablated_losses(model, sample, [[], *([e] for e in edges)], loss="target_unit")
    true = np.array(removed) - clean
    ig = integrated_changes(model, sample, edges, steps=1, loss="target_unit")
    np.testing.assert_allclose(ig, true, rtol=1e-9, atol=1e-12)
    first_order = [score_of(model, sample, edge, "target_unit") for edge in edges]
    assert np.abs(np.array(first_order) - true).max() > 1e-3  # not linear: EAP misses


def score_of(model, sample, edge, loss) -> float:
    """dL/de at e = 0 by autograd through a tensor e: EAP's score of the edge."""
    graph = model_graph(model)
    source, target = graph.forward_nodes[edge[0]], graph.backward_nodes[edge[1]]
    eps = torch.zeros((), dtype=torch.float64, requires_grad=True)
    (gradient,) = torch.autograd.grad(perturbed_loss(model, sample, target, eps, source, loss), eps)
    return gradient.item()


def test_per_edge_ig_converges_to_the_true_change_as_its_steps_grow(gpt2):
    """On a nonlinear model the midpoint rule's error falls like 1/m^2; one step reads the
    derivative at e = 1/2 exactly as autograd through a tensor e does."""
    sample = make_samples(1, seed=3)[0]
    names = [("input", "a1.q"), ("a0", "m0"), ("m1", "logits"), ("a1", "a2.v")]
    edges = edge_indices(gpt2, names)
    clean, *removed = ablated_losses(gpt2, sample, [[], *([e] for e in edges)])
    true = np.array(removed) - clean
    errors = [
        np.abs(integrated_changes(gpt2, sample, edges, steps=m, batch_size=7) - true).max()
        for m in (2, 8, 32)
    ]
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 1e-3 * np.abs(true).max()
    for (source, target), edge in zip(names, edges, strict=True):
        eps = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
        (slope,) = torch.autograd.grad(perturbed_loss(gpt2, sample, target, eps, source), eps)
        (one_point,) = integrated_changes(gpt2, sample, [edge], steps=1)
        assert one_point == pytest.approx(slope.item(), rel=1e-9)
