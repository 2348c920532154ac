"""The block-level residual graph: node names, order and edges."""

from __future__ import annotations

import numpy as np
import pytest

from circuitry.attribution.graph import build_graph


def test_node_names_and_order_are_stable():
    graph = build_graph(2)
    assert graph.forward_nodes == ("input", "a0", "m0", "a1", "m1")
    assert graph.backward_nodes == (
        "a0.q",
        "a0.k",
        "a0.v",
        "m0",
        "a1.q",
        "a1.k",
        "a1.v",
        "m1",
        "logits",
    )
    assert build_graph(2).forward_nodes == graph.forward_nodes


def test_each_reader_sees_the_nodes_computed_before_it():
    graph = build_graph(2)
    reads = {v: [u for u, w in graph.edges() if w == v] for v in graph.backward_nodes}
    assert reads["a0.q"] == reads["a0.k"] == reads["a0.v"] == ["input"]
    assert reads["m0"] == ["input", "a0"]
    assert reads["a1.v"] == ["input", "a0", "m0"]
    assert reads["m1"] == ["input", "a0", "m0", "a1"]
    assert reads["logits"] == list(graph.forward_nodes)


@pytest.mark.parametrize("n_layers", [1, 2, 3, 32])
def test_edge_counts(n_layers):
    graph = build_graph(n_layers)
    mask = graph.edge_mask
    assert mask.shape == (2 * n_layers + 1, 4 * n_layers + 1)
    assert mask.dtype == np.bool_
    # q, k, v of layer l read 2l+1 nodes, m{l} reads 2l+2, logits reads all 2L+1.
    per_layer = sum(3 * (2 * layer + 1) + 2 * layer + 2 for layer in range(n_layers))
    assert mask.sum() == graph.n_edges == per_layer + 2 * n_layers + 1
    assert len(graph.edges()) == graph.n_edges


def test_as_arrays_needs_no_pickle(tmp_path):
    graph = build_graph(3)
    path = tmp_path / "graph.npz"
    np.savez(path, **graph.as_arrays())
    with np.load(path, allow_pickle=False) as saved:
        assert tuple(saved["forward_nodes"]) == graph.forward_nodes
        assert tuple(saved["backward_nodes"]) == graph.backward_nodes
        np.testing.assert_array_equal(saved["edge_mask"], graph.edge_mask)


def test_lookups_and_unknown_names():
    graph = build_graph(2)
    assert graph.forward_index("m1") == 4
    assert graph.backward_index("logits") == 8
    with pytest.raises(KeyError, match="no backward node named 'a2.q'"):
        graph.backward_index("a2.q")


def test_only_block_granularity_exists():
    with pytest.raises(ValueError, match="granularity 'head' is not implemented"):
        build_graph(2, granularity="head")
