"""Where the weights changed beside where the circuit changed, on known answers: the
intensity on each layer's edges, the layer join and its rank correlation, the pooled
figures of the weight diff, and the report section and figures built from them."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from circuitry.analysis.circuit_metrics import compute_circuit_metrics, layer_intensity
from circuitry.analysis.weight_join import layer_correlation, layer_join, study_join
from circuitry.analysis.weight_table import (
    COLUMNS,
    changed_matrices,
    layer_kind_norms,
    summarise,
)
from circuitry.analysis.weights import tensor_diff
from circuitry.attribution.graph import build_graph, node_layer
from circuitry.attribution.scorefile import EdgeScores
from circuitry.figures.weights import plot_layer_join, plot_update_norms
from circuitry.report.blocks import Details, Figure, Table, Text
from circuitry.report.weights import published_range, weights_section

PNG = b"\x89PNG"


@pytest.mark.parametrize(
    ("name", "layer"),
    [("input", None), ("a0", 0), ("m3", 3), ("a12.q", 12), ("a2.v", 2), ("logits", None)],
)
def test_a_node_belongs_to_the_layer_in_its_name(name, layer):
    assert node_layer(name) == layer


def test_layer_intensity_averages_the_edges_the_layers_nodes_write_or_read():
    """Every edge's mean |w| is its forward index + 10 * its backward index; each layer's
    intensity is the plain mean of that over the edges found by hand."""
    graph = build_graph(2)
    f, b = np.meshgrid(np.arange(graph.n_forward), np.arange(graph.n_backward), indexing="ij")
    mean = (f + 10.0 * b) * graph.edge_mask
    table = layer_intensity(
        {"base": mean, "tuned": 2 * mean},
        graph.edge_mask,
        graph.forward_nodes,
        graph.backward_nodes,
    )
    for layer in (0, 1):
        nodes = {f"a{layer}", f"m{layer}", f"a{layer}.q", f"a{layer}.k", f"a{layer}.v"}
        edges = [
            i + 10.0 * j
            for i, u in enumerate(graph.forward_nodes)
            for j, v in enumerate(graph.backward_nodes)
            if graph.edge_mask[i, j] and (u in nodes or v in nodes)
        ]
        row = table.set_index("layer").loc[layer]
        assert row["n_edges"] == len(edges)
        assert row["base"] == pytest.approx(np.mean(edges))
        assert row["tuned"] == pytest.approx(2 * np.mean(edges))
    assert list(table["layer"]) == [0, 1]


def scores(graph, values: np.ndarray) -> EdgeScores:
    n = len(values)
    return EdgeScores(
        idx=np.arange(n),
        scores=values.astype(np.float32),
        edge_mask=graph.edge_mask,
        forward_nodes=graph.forward_nodes,
        backward_nodes=graph.backward_nodes,
    )


def test_circuit_metrics_give_the_intensity_of_each_layer_of_their_scores():
    """Tuned doubles every score of layer 1's edges: layer 1 reads x2, layer 0 only where
    its edges are layer 1's too (a0 -> a1.q, ...)."""
    graph = build_graph(2)
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, graph.n_forward, graph.n_backward)) * graph.edge_mask
    layer1 = np.array([node_layer(u) == 1 for u in graph.forward_nodes])[:, None] | np.array(
        [node_layer(v) == 1 for v in graph.backward_nodes]
    )
    tuned = np.where(layer1, 2 * base, base)
    table = compute_circuit_metrics(scores(graph, base), scores(graph, tuned)).layer_intensity()
    ratio = table.set_index("layer").eval("tuned / base")
    assert ratio[1] == pytest.approx(2, rel=1e-6)
    assert 1 < ratio[0] < 2


def weight_summary(norms: dict[int, float | None], unchanged: float = 0.5) -> dict:
    layers = {
        str(layer): {"rel_update_norm": norm, "unchanged_exact": 0.0, "unchanged_tol": unchanged}
        for layer, norm in norms.items()
    }
    return {"layers": layers}


def intensities(ratios: dict[int, list[float]], loss: str = "ce") -> pd.DataFrame:
    """One row per layer and (dataset, alpha) condition: base 2, tuned 2 * ratio."""
    return pd.DataFrame(
        [
            {"layer": layer, "dataset": "d", "alpha": i, "loss": loss, "base": 2.0, "tuned": 2 * r}
            for layer, by_condition in ratios.items()
            for i, r in enumerate(by_condition)
        ]
    )


def test_the_join_takes_the_geometric_mean_change_over_conditions():
    layers = pd.concat(
        [
            intensities({0: [4.0, 1.0], 1: [0.5, 0.5]}),
            intensities({0: [1.0, 1.0], 1: [2.0, 8.0]}, loss="target_unit"),
            intensities({0: [9.0, 9.0], 1: [9.0, 9.0]}, loss="ce_unit"),
        ]
    )
    join = layer_join(weight_summary({0: 0.1, 1: 0.2}), layers).set_index(["layer", "loss"])
    change = join["intensity_change_pct"]
    assert change[0, "ce"] == pytest.approx(100.0)  # sqrt(4 * 1) - 1
    assert change[1, "ce"] == pytest.approx(-50.0)
    assert change[0, "target_unit"] == pytest.approx(0.0)
    assert change[1, "target_unit"] == pytest.approx(300.0)  # sqrt(2 * 8) - 1
    assert "ce_unit" not in set(join.index.get_level_values("loss"))  # not a join reading
    assert join.loc[(1, "ce"), "rel_update_norm"] == 0.2


def test_intensity_changes_where_the_weights_change_reads_rho_1_and_an_identity_pair_none():
    """Four layers, the intensity change growing with the update norm, in either
    direction (the correlation is with its size), then a pair where nothing changed."""
    norms = {0: 0.01, 1: 0.04, 2: 0.02, 3: 0.08}
    ratios = {0: [1.01], 1: [0.8], 2: [1.1], 3: [2.0]}
    changed = layer_join(weight_summary(norms), intensities(ratios)).assign(pair="rl")
    identity = layer_join(
        weight_summary(dict.fromkeys(norms, 0.0), unchanged=1.0),
        intensities(dict.fromkeys(norms, [1.0])),
    ).assign(pair="identity")
    rho = layer_correlation(pd.concat([changed, identity])).set_index("pair")
    assert rho.loc["rl", "spearman"] == pytest.approx(1.0)
    assert rho.loc["rl", "n_layers"] == 4
    assert math.isnan(rho.loc["identity", "spearman"])
    assert (identity["intensity_change_pct"] == 0).all()


def test_a_base_of_zero_intensity_is_no_change_when_tuned_is_zero_too_else_undefined():
    layers = pd.DataFrame({"layer": [0, 1], "loss": "ce", "base": [0.0, 0.0], "tuned": [0.0, 1.0]})
    join = layer_join(weight_summary({0: 0.1, 1: 0.1}), layers).set_index("layer")
    assert join.loc[0, "intensity_change_pct"] == 0
    assert math.isnan(join.loc[1, "intensity_change_pct"])


def test_the_study_join_reads_back_a_json_summary_with_a_null_norm():
    summaries = {"a": json.loads(json.dumps(weight_summary({0: None, 1: 0.3})))}
    join = study_join(summaries, {"a": intensities({0: [1.0], 1: [2.0]})})
    assert list(join.columns[:2]) == ["pair", "layer"]
    assert math.isnan(join.loc[join["layer"] == 0, "rel_update_norm"].item())


def diffed(rows: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> pd.DataFrame:
    """The table `diff_models` would give for these (base, tuned) tensors."""
    return pd.DataFrame(
        [tensor_diff(name, *pair) for name, pair in rows.items()], columns=list(COLUMNS)
    )


def test_a_tensor_of_zeros_that_moved_is_null_in_the_json_summary_not_infinity():
    """A zero-initialised bias that tuning moved: ||dW|| / ||W|| is undefined."""
    zero = torch.zeros(4)
    table = diffed({"model.layers.0.self_attn.q_proj.bias": (zero, zero + 1)})
    assert table["rel_update_norm"].item() == math.inf
    summary = summarise(table)
    assert summary["model"]["rel_update_norm"] is None
    assert "Infinity" not in json.dumps(summary)


def test_changed_matrices_give_the_medians_of_the_matrices_the_update_touched():
    """Rank-1 updates of an 8 x 4 and a 6 x 6 matrix, one untouched matrix and a vector."""
    torch.manual_seed(0)
    w1, w2, w3 = torch.randn(8, 4), torch.randn(6, 6), torch.randn(5, 5)
    table = diffed(
        {
            "model.layers.0.mlp.up_proj.weight": (
                w1,
                w1 + torch.outer(torch.randn(8), torch.randn(4)),
            ),
            "model.layers.0.mlp.down_proj.weight": (
                w2,
                w2 + torch.outer(torch.randn(6), torch.randn(6)),
            ),
            "model.layers.1.mlp.up_proj.weight": (w3, w3),
            "model.norm.weight": (torch.ones(4), torch.ones(4) * 1.5),
        }
    )
    matrices = changed_matrices(table)
    assert matrices["n"] == 2
    assert matrices["median_stable_rank"] == pytest.approx(1.0, rel=1e-4)
    assert matrices["median_rank99_share"] == pytest.approx((1 / 4 + 1 / 6) / 2)
    assert summarise(table)["dtypes"] == ["float32"]


def test_layer_kind_norms_pool_each_kind_within_each_layer():
    """||dW|| / ||W|| of q in layer 0 pools its two tensors: sqrt((1 + 4) / (4 + 4))."""
    ones = torch.ones(4)
    table = diffed(
        {
            "model.layers.0.self_attn.q_proj.weight": (ones, ones * 1.5),  # ||W|| 2, ||dW|| 1
            "model.layers.0.self_attn.q_proj.bias": (ones, ones * 2),  # ||W|| 2, ||dW|| 2
            "model.layers.1.mlp.down_proj.weight": (ones, ones),
            "model.embed_tokens.weight": (ones, ones * 3),
        }
    )
    norms = layer_kind_norms(table)
    assert list(norms.index) == ["q", "down"] and list(norms.columns) == [0, 1]
    assert norms.loc["q", 0] == pytest.approx(math.sqrt(5 / 8))
    assert norms.loc["down", 1] == 0 and math.isnan(norms.loc["q", 1])


@pytest.mark.parametrize(
    ("method", "expected"),
    [("GRPO", "70–95% (RL)"), ("DPO", "70–95% (RL)"), ("SFT", "6–15% (SFT)"), ("none", "–")],
)
def test_each_method_is_set_beside_its_published_range(method, expected):
    assert published_range(method) == expected


def section_inputs(tmp_path):
    """Two pairs' summaries and join, and both figures drawn from them."""
    whole = {"numel": 10, "unchanged_exact": 0.0, "unchanged_tol": 0.05, "rel_update_norm": 0.01}
    matrices = {"n": 3, "median_stable_rank": 2.0, "median_rank99_share": 0.5,
                "median_principal_angle_deg": 0.3}  # fmt: skip
    summaries = {
        "toy-grpo": {"dtypes": ["float32"], "model": whole, "matrices": matrices, "notes": []},
        "toy-identity": {
            "dtypes": ["float32"],
            "model": whole | {"unchanged_exact": 1.0, "unchanged_tol": 1.0, "rel_update_norm": 0},
            "matrices": {"n": 0} | dict.fromkeys(list(matrices)[1:]),
            "notes": ["lm_head.weight: only in base"],
        },
    }
    norms = {0: 0.01, 1: 0.04, 2: 0.02}
    layers = pd.concat(
        [intensities({0: [1.01], 1: [0.8], 2: [1.1]}, loss) for loss in ("ce", "target_unit")]
    )
    join = study_join(
        {
            "toy-grpo": weight_summary(norms),
            "toy-identity": weight_summary(dict.fromkeys(norms, 0.0), unchanged=1.0),
        },
        {"toy-grpo": layers, "toy-identity": layers.assign(tuned=layers["base"])},
    )
    figures = {"update_norm": tmp_path / "norm.png", "layer_join": tmp_path / "join.png"}
    heat = pd.DataFrame({0: [0.01, 0.0], 1: [0.02, np.nan]}, index=["q", "down"])
    plot_update_norms({"toy-grpo": heat, "toy-identity": heat * 0}, figures["update_norm"])
    plot_layer_join(join, layer_correlation(join), figures["layer_join"])
    return summaries, join, {"toy-grpo": "GRPO", "toy-identity": "none"}, figures


def test_the_section_shows_each_pair_beside_its_range_and_says_what_correlates(tmp_path):
    summaries, join, pairs, figures = section_inputs(tmp_path)
    assert all(path.read_bytes().startswith(PNG) for path in figures.values())
    section = weights_section(summaries, join, pairs, figures)
    assert section.id == "weights" and section.title == "Where the weights changed"
    texts, tables = ([b for b in section.blocks if isinstance(b, kind)] for kind in (Text, Table))
    whole = {row.cells[0].text: [c.text for c in row.cells] for row in tables[0].rows}
    assert whole["toy-grpo (GRPO)"][2:5] == ["0%", "5.00%", "70–95% (RL)"]
    assert whole["toy-identity (none)"][2:5] == ["100%", "100%", "–"]
    assert "toy-identity: lm_head.weight: only in base" in tables[0].notes
    prose = " ".join(str(p) for block in texts for p in block.paragraphs)
    assert "float32" in prose and "gap after its 8th singular value" in prose
    assert "toy-grpo (GRPO): Spearman ρ across 3 layers" in prose
    assert "1.0 under ce (p = 0)" in prose and "1.0 under target_unit" in prose
    assert "toy-identity (none): no rank correlation across its 3 layers" in prose
    assert sum(isinstance(b, Figure) for b in section.blocks) == 2
    (details,) = [b for b in section.blocks if isinstance(b, Details)]
    layer_rows = details.blocks[0].rows
    assert len(layer_rows) == 6 and layer_rows[0].group == "toy-grpo (GRPO)"
    assert [c.text for c in layer_rows[1].cells] == ["1", "0.0400", "50.0%", "-20.0%", "-20.0%"]


def test_a_model_without_numbered_blocks_gets_a_section_that_says_so(tmp_path):
    """Tensor names with no block index: no layer to join, figures that say why."""
    ones = torch.ones(4)
    table = diffed({"encoder.weight": (ones, ones * 2), "decoder.weight": (ones, ones)})
    summary = summarise(table) | {"notes": []}
    assert summary["layers"] == {} and layer_kind_norms(table).empty
    join = study_join({"p": summary}, {"p": intensities({0: [1.0]})})
    assert join.empty
    figures = {"update_norm": tmp_path / "norm.png", "layer_join": tmp_path / "join.png"}
    plot_update_norms({"p": layer_kind_norms(table)}, figures["update_norm"])
    plot_layer_join(join, layer_correlation(join), figures["layer_join"])
    assert all(path.read_bytes().startswith(PNG) for path in figures.values())
    section = weights_section({"p": summary}, join, {"p": "GRPO"}, figures)
    prose = " ".join(str(p) for b in section.blocks if isinstance(b, Text) for p in b.paragraphs)
    assert "p (GRPO): no rank correlation across its 0 layers" in prose
