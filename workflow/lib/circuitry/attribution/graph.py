"""The residual computation graph of a decoder-only transformer, as scored by EAP.

At block granularity (the paper's) the forward nodes are the terms that are added into
the residual stream, in the order they are computed:

    input, a0, m0, a1, m1, ..., a{L-1}, m{L-1}

(`input` is the residual entering the first layer, i.e. the embedding; `a{l}` the
attention block's output projection; `m{l}` the MLP's output). The backward nodes are
the places that read the residual stream:

    a0.q, a0.k, a0.v, m0, ..., a{L-1}.q, a{L-1}.k, a{L-1}.v, m{L-1}, logits

An edge u -> v exists iff u is computed before v reads the stream, so every backward
node reads a prefix of the forward nodes: a{l}.q/k/v read `input .. m{l-1}`, m{l} reads
`input .. a{l}` and `logits` reads everything. Names and order are stable: they are the
axes of every saved score matrix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

GRANULARITIES = ("block",)
QKV = ("q", "k", "v")
NODE_LAYER = re.compile(r"[am](\d+)(?:\.[qkv])?")


@dataclass(frozen=True, eq=False)
class Graph:
    """Node names of both axes, and for each backward node how many forward nodes it reads.

    `n_inputs[j]` is the length of the prefix of `forward_nodes` that backward node j reads;
    the edge mask follows from it.
    """

    forward_nodes: tuple[str, ...]
    backward_nodes: tuple[str, ...]
    n_inputs: tuple[int, ...]
    granularity: str = "block"

    @property
    def n_forward(self) -> int:
        return len(self.forward_nodes)

    @property
    def n_backward(self) -> int:
        return len(self.backward_nodes)

    @property
    def edge_mask(self) -> np.ndarray:
        """Boolean [n_forward, n_backward]: True where the edge u -> v exists."""
        rows = np.arange(self.n_forward)[:, None]
        return rows < np.asarray(self.n_inputs)[None, :]

    @property
    def n_edges(self) -> int:
        return int(sum(self.n_inputs))

    def forward_index(self, name: str) -> int:
        return _index(self.forward_nodes, name, "forward")

    def backward_index(self, name: str) -> int:
        return _index(self.backward_nodes, name, "backward")

    def edges(self) -> list[tuple[str, str]]:
        """All (source, target) name pairs, target-major in the order of the axes."""
        return [
            (self.forward_nodes[i], target)
            for target, n in zip(self.backward_nodes, self.n_inputs, strict=True)
            for i in range(n)
        ]

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The graph as plain numpy arrays (unicode, bool) for an `.npz` without pickles."""
        return {
            "forward_nodes": np.array(self.forward_nodes, dtype=str),
            "backward_nodes": np.array(self.backward_nodes, dtype=str),
            "edge_mask": self.edge_mask,
        }


def _index(names: tuple[str, ...], name: str, axis: str) -> int:
    try:
        return names.index(name)
    except ValueError:
        raise KeyError(f"no {axis} node named {name!r}") from None


def build_graph(n_layers: int, granularity: str = "block") -> Graph:
    """The graph of a model with `n_layers` decoder layers.

    Only block granularity exists; the argument keeps the file format open for head-level
    nodes (`a{l}.h{i}`), which would keep the prefix structure.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(
            f"graph granularity {granularity!r} is not implemented; choose one of {GRANULARITIES}"
        )
    if n_layers < 1:
        raise ValueError(f"a model needs at least one layer, got n_layers={n_layers}")
    forward = ["input"]
    backward: list[str] = []
    n_inputs: list[int] = []
    for layer in range(n_layers):
        for part in QKV:
            backward.append(f"a{layer}.{part}")
            n_inputs.append(len(forward))
        forward.append(f"a{layer}")
        backward.append(f"m{layer}")
        n_inputs.append(len(forward))
        forward.append(f"m{layer}")
    backward.append("logits")
    n_inputs.append(len(forward))
    return Graph(tuple(forward), tuple(backward), tuple(n_inputs), granularity)


def node_layer(name: str) -> int | None:
    """The layer a node belongs to (`a3`, `a3.q`, `m3` -> 3); None for `input` and `logits`."""
    found = NODE_LAYER.fullmatch(name)
    return int(found.group(1)) if found else None


def attention_index(layer: int) -> int:
    """Forward-axis index of a{layer}."""
    return 1 + 2 * layer


def mlp_index(layer: int) -> int:
    """Forward-axis index of m{layer}."""
    return 2 + 2 * layer


def qkv_columns(layer: int) -> tuple[int, int, int]:
    """Backward-axis indices of a{layer}.q, a{layer}.k, a{layer}.v."""
    return (4 * layer, 4 * layer + 1, 4 * layer + 2)


def mlp_column(layer: int) -> int:
    """Backward-axis index of m{layer}."""
    return 4 * layer + 3
