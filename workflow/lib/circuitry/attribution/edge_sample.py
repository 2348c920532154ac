"""A random edge sample of one pair, each edge removed outright from both models: the true
loss changes, and the EAP scores of the same edges on the same samples, as score sets the
circuit metrics read (`circuitry.analysis.survival` tests them base against tuned).

EAP is first order: score[u, v] estimates L(edge removed) - L(clean). Here that change is
measured (`circuitry.attribution.ablation`, eps = 1) for every edge of the sample. The
sample is drawn once per job (seeded), shared by every problem and by both roles, so the
two readings (exact and EAP) and the two models rest on identical edges and problems, and
the cross-sample diversity compares vectors over the same edges.

Torch-free: the ablations come in as a callable (`Ablate`), so the sampling and the score
sets are tested on known numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from circuitry.attribution.faithfulness import Ablate
from circuitry.attribution.scorefile import EdgeScores


def draw_edges(edge_mask: np.ndarray, n_edges: int, seed: int) -> np.ndarray:
    """`[k, 2]` (forward, backward) indices of `n_edges` real edges drawn without
    replacement (every edge when there are no more), in mask order."""
    edges = np.argwhere(edge_mask)
    if n_edges >= len(edges):
        return edges
    chosen = np.random.default_rng(seed).choice(len(edges), n_edges, replace=False)
    return edges[np.sort(chosen)]


def sample_mask(shape: tuple[int, int], edges: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[edges[:, 0], edges[:, 1]] = True
    return mask


def on_sample(scores: EdgeScores, edges: np.ndarray, positions: Sequence[int]) -> EdgeScores:
    """The EAP reading: `scores` of the problems at `positions`, on the sampled edges only
    (the mask holds just those; the window diagnostics kept)."""
    positions = np.asarray(positions, dtype=int)
    mask = sample_mask(scores.edge_mask.shape, edges)
    return dataclasses.replace(
        scores,
        scores=np.where(mask, scores.scores[positions], 0).astype(np.float64),
        idx=scores.idx[positions],
        edge_mask=mask,
        diagnostics={name: values[positions] for name, values in scores.diagnostics.items()},
    )


def exact_changes(
    scores: EdgeScores, edges: np.ndarray, positions: Sequence[int], ablate: Ablate
) -> EdgeScores:
    """The exact reading, laid out as `on_sample`'s: per problem, L(edge removed) - L(clean)
    of each sampled edge, from one `ablate` call (row 0 the clean model)."""
    sampled = on_sample(scores, edges, positions)
    changes = np.zeros_like(sampled.scores)
    rows = [[], *([(int(u), int(v))] for u, v in edges)]
    for i, position in enumerate(positions):
        losses = np.asarray(ablate(int(position), rows), dtype=np.float64)
        changes[i, edges[:, 0], edges[:, 1]] = losses[1:] - losses[0]
    return dataclasses.replace(sampled, scores=changes)


def change_table(exact: EdgeScores, eap: EdgeScores) -> pd.DataFrame:
    """Every sampled edge of every problem: its EAP score beside its true loss change."""
    edges = np.argwhere(exact.edge_mask)
    names = [f"{exact.forward_nodes[u]}->{exact.backward_nodes[v]}" for u, v in edges]
    return pd.DataFrame(
        {
            "sample": np.repeat(exact.idx, len(edges)),
            "edge": names * len(exact.idx),
            "score": eap.edge_values.ravel(),
            "change": exact.edge_values.ravel(),
        }
    )
