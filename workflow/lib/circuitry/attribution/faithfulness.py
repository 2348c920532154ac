"""Is EAP faithful? Each score against the loss change of removing its edge entirely.

EAP's score[u, v] is the first-order change of the loss when O_u is removed from v's
input (`circuitry.attribution.eap`). Here the edge is removed outright
(`circuitry.attribution.ablation`, eps = 1) on the study's own samples, under the
paper's condition (loss `ce`, each model on its own answer), with the scores that rule
eap_score wrote for those samples (read back, not recomputed). Per sample:

- per-edge check: a stratified edge set, the `top_edges` largest |score| (stratum `top`)
  and `random_edges` drawn at random from the rest (`random`), plus any edges the config
  lists (`listed`); true change = L(edge removed) - L(clean). The correlations and the
  top-k overlap use the `top` and `random` strata only (listed edges are in the CSV);
- cumulative curve: L(top-k edges by |score| removed together) - L(clean) for k on a log
  grid, and the same for k random edges (`random_draws` nested random orders).

Summary of a job (pair x dataset x alpha x role): the headline `pearson` and `spearman`
are means over samples of each sample's correlation (each sample ranks its own edges, as
the circuit metrics do); `pooled_*` pool every checked edge of every sample. `top_k_overlap`
is the mean share of the top-k by |score| that are also top-k by true |change| (k =
top_edges, within the checked set). `area` is the mean over log k (trapezoids, divided
by the log range) of the gap between the mean top-k curve and the mean random curve, in
nats: positive when the edges EAP ranks first change the loss more than random ones.

Torch-free: the ablations come in as a callable (`ablate`), so the analysis is tested on
known numbers and the report loads the outputs without torch.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from circuitry.attribution.graph import node_layer
from circuitry.io import read_json

log = logging.getLogger(__name__)

STRATA = ("top", "random", "listed")
CHECKED = ("top", "random")

Edge = tuple[int, int]
# ablate(sample position, rows): the loss with each row's edges removed together
Ablate = Callable[[int, Sequence[Sequence[Edge]]], np.ndarray]
# integrate(sample position, edges): each edge's per-edge integrated gradient
Integrate = Callable[[int, Sequence[Edge]], np.ndarray]
MISSES = 10  # the largest |estimate - true change| counted by stratum


@dataclass(frozen=True)
class Settings:
    """The `faithfulness:` config section's analysis settings (defaults in the schema)."""

    top_edges: int
    random_edges: int
    random_draws: int
    curve_max: int | None
    seed: int
    ig_steps: int = 0  # per-edge integrated gradients' points (0: not computed)


@dataclass(frozen=True)
class SampleResult:
    """One sample's per-edge rows and its cumulative curves (loss changes on `grid`)."""

    edges: pd.DataFrame
    top_curve: np.ndarray
    random_curves: np.ndarray  # [random_draws, len(grid)]
    seconds: float


def embedding_edges(forward: Sequence[str], backward: Sequence[str]) -> np.ndarray:
    """`[n_forward, n_backward]`: the edges from the embedding (`input`) into layer 0's
    nodes, where the embedding is all (a0.q/k/v) or most (m0) of what a node reads: a
    scale-invariant norm keeps the loss flat until such an edge is removed entirely, then
    it jumps, a change no derivative along the path foresees (structural misses)."""
    return np.array([[u == "input" and node_layer(v) == 0 for v in backward] for u in forward])


def parse_edges(names: Iterable[str], forward: Sequence[str], backward: Sequence[str], mask):
    """Edges named "source->target" as (row, column) indices of the graph; a name that is
    not an edge of the graph fails, naming it."""
    edges = []
    for name in names:
        source, _, target = (part.strip() for part in name.partition("->"))
        if source not in forward or target not in backward:
            raise ValueError(f"faithfulness.edges: {name!r} is not an edge of the model's graph")
        edge = (forward.index(source), backward.index(target))
        if not mask[edge]:
            raise ValueError(
                f"faithfulness.edges: {name!r} is not an edge of the model's graph "
                f"({source} is computed after {target} reads)"
            )
        edges.append(edge)
    return edges


def choose_samples(n_available: int, wanted: int, seed: int) -> np.ndarray:
    """Positions of `wanted` samples drawn without replacement (seeded, in file order);
    all of them, logged, when fewer are available."""
    if wanted >= n_available:
        log.info(
            "faithfulness: %d samples asked for, %d analysed: using all of them",
            wanted,
            n_available,
        )
        return np.arange(n_available)
    return np.sort(np.random.default_rng(seed).choice(n_available, wanted, replace=False))


def edges_by_magnitude(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Real edges `[n_edges, 2]`, largest |score| first (ties in mask order)."""
    edges = np.argwhere(mask)
    order = np.argsort(-np.abs(scores[mask]), kind="stable")
    return edges[order]


def stratified_edges(
    ranked: np.ndarray, top: int, n_random: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    """The `top` first edges of `ranked` and `n_random` drawn from the rest, with strata."""
    rest = ranked[top:]
    drawn = rest[np.sort(rng.choice(len(rest), min(n_random, len(rest)), replace=False))]
    chosen = np.concatenate([ranked[:top], drawn])
    return chosen, ["top"] * len(ranked[:top]) + ["random"] * len(drawn)


def log_grid(n_edges: int, curve_max: int | None) -> np.ndarray:
    """k = 1, 2, 4, ... below the largest k (all edges, or `curve_max`), then that k."""
    largest = n_edges if curve_max is None else min(curve_max, n_edges)
    powers = 2 ** np.arange(int(np.log2(largest)) + 1)
    return np.unique(np.append(powers[powers < largest], largest))


def top_k_overlap(scores: np.ndarray, changes: np.ndarray, k: int) -> float:
    """Share of the k largest |score| that are also among the k largest |change|."""
    k = min(k, len(scores))
    by_score = np.argsort(-np.abs(scores), kind="stable")[:k]
    by_change = np.argsort(-np.abs(changes), kind="stable")[:k]
    return len(np.intersect1d(by_score, by_change)) / k


def correlations(scores: np.ndarray, changes: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation of scores with true changes (NaN if either is constant)."""
    if len(scores) < 2 or np.ptp(scores) == 0 or np.ptp(changes) == 0:
        return {"pearson": float("nan"), "spearman": float("nan")}
    return {
        "pearson": float(stats.pearsonr(scores, changes)[0]),
        "spearman": float(stats.spearmanr(scores, changes)[0]),
    }


def curve_area(grid: np.ndarray, top: np.ndarray, random: np.ndarray) -> float:
    """Mean over log k of top - random (trapezoids over log k, divided by its range; the
    single gap where the grid has one point)."""
    gap = np.asarray(top, dtype=float) - np.asarray(random, dtype=float)
    if len(grid) == 1:
        return float(gap[0])
    x = np.log(grid)
    return float(np.trapezoid(gap, x) / (x[-1] - x[0]))


def analyse_sample(
    position: int,
    scores: np.ndarray,
    mask: np.ndarray,
    settings: Settings,
    listed: Sequence[Edge],
    ablate: Ablate,
    integrate: Integrate | None = None,
    embedding: np.ndarray | None = None,
) -> SampleResult:
    """Per-edge check and cumulative curves of one sample, all its ablations in one call
    of `ablate` (row 0 is the clean model); each checked edge's integrated gradient from
    `integrate` where given (else NaN), and whether it is an `embedding` edge."""
    start = time.perf_counter()
    rng = np.random.default_rng((settings.seed, position))
    ranked = edges_by_magnitude(scores, mask)
    checked, strata = stratified_edges(ranked, settings.top_edges, settings.random_edges, rng)
    extra = [edge for edge in listed if not (checked == edge).all(axis=1).any()]
    singles = [*map(tuple, checked), *extra]
    grid = log_grid(len(ranked), settings.curve_max)
    orders = [ranked] + [rng.permutation(ranked) for _ in range(settings.random_draws)]
    curves = [[list(map(tuple, order[:k])) for k in grid] for order in orders]
    rows = [[], *([edge] for edge in singles), *(row for curve in curves for row in curve)]
    losses = np.asarray(ablate(position, rows), dtype=float)
    changes = losses[1:] - losses[0]
    single_changes, curve_changes = np.split(changes, [len(singles)])
    curve_changes = curve_changes.reshape(len(orders), len(grid))
    no_ig = np.full(len(singles), np.nan)
    integrated = no_ig if integrate is None else integrate(position, singles)
    edges = pd.DataFrame(
        {
            "source": [int(u) for u, _ in singles],
            "target": [int(v) for _, v in singles],
            "score": [float(scores[edge]) for edge in singles],
            "ig": np.asarray(integrated, dtype=float),
            "change": single_changes,
            "stratum": strata + ["listed"] * len(extra),
            "embedding": [bool(embedding is not None and embedding[edge]) for edge in singles],
        }
    )
    return SampleResult(edges, curve_changes[0], curve_changes[1:], time.perf_counter() - start)


def run_faithfulness(
    scores: np.ndarray,
    mask: np.ndarray,
    positions: Sequence[int],
    settings: Settings,
    listed: Sequence[Edge],
    ablate: Ablate,
    integrate: Integrate | None = None,
    embedding: np.ndarray | None = None,
) -> dict[int, SampleResult]:
    """`analyse_sample` of each sample position, `scores` `[n_samples, n_forward, n_backward]`."""
    results = {}
    for position in map(int, positions):
        result = analyse_sample(
            position, scores[position], mask, settings, listed, ablate, integrate, embedding
        )
        log.info("faithfulness: sample %d in %.2f s", position, result.seconds)
        results[position] = result
    return results


def edge_table(
    results: Mapping[int, SampleResult],
    idx: Sequence,
    forward: Sequence[str],
    backward: Sequence[str],
) -> pd.DataFrame:
    """Every checked edge of every sample: sample idx, edge name, score, change, stratum."""
    tables = []
    for position, result in results.items():
        table = result.edges
        names = [
            f"{forward[u]}->{backward[v]}" for u, v in zip(table.source, table.target, strict=True)
        ]
        tables.append(
            pd.DataFrame({"sample": idx[position], "edge": names}).join(
                table[["score", "ig", "change", "stratum", "embedding"]]
            )
        )
    return pd.concat(tables, ignore_index=True)


def largest_change(table: pd.DataFrame) -> dict[str, object]:
    """The checked edge (of `edge_table`) whose removal moved the loss most, its score and
    the rank of its |score| among its sample's checked edges (1: the largest): where the
    first-order estimate misses most."""
    checked = table[table.stratum.isin(CHECKED)]
    row = checked.iloc[int(np.argmax(checked.change.abs().to_numpy()))]
    sample = checked[checked["sample"] == row["sample"]]
    return {
        "largest_change_edge": row.edge,
        "largest_change": float(row.change),
        "largest_change_score": float(row.score),
        "largest_change_rank": int((sample.score.abs() > abs(row.score)).sum()) + 1,
        "largest_change_of": len(sample),
    }


def summarise(
    results: Mapping[int, SampleResult], settings: Settings, n_edges: int
) -> dict[str, object]:
    """The job's summary (see the module docstring), JSON-ready."""
    per_sample = [result.edges[result.edges.stratum.isin(CHECKED)] for result in results.values()]
    correlation = [correlations(t.score.to_numpy(), t.change.to_numpy()) for t in per_sample]
    pooled = pd.concat(per_sample)
    grid = log_grid(n_edges, settings.curve_max)
    top = np.mean([r.top_curve for r in results.values()], axis=0)
    random = np.mean([r.random_curves.mean(axis=0) for r in results.values()], axis=0)
    overlap = [
        top_k_overlap(t.score.to_numpy(), t.change.to_numpy(), settings.top_edges)
        for t in per_sample
    ]
    return {
        "pearson": float(np.nanmean([c["pearson"] for c in correlation])),
        "spearman": float(np.nanmean([c["spearman"] for c in correlation])),
        "spearman_per_sample": [c["spearman"] for c in correlation],
        **estimate_strata(per_sample),
        **{
            f"pooled_{name}": value
            for name, value in correlations(
                pooled.score.to_numpy(), pooled.change.to_numpy()
            ).items()
        },
        "top_k_overlap": float(np.mean(overlap)),
        "overlap_k": settings.top_edges,
        "grid": grid.tolist(),
        "top_curve": top.tolist(),
        "random_curve": random.tolist(),
        "area": curve_area(grid, top, random),
        "n_samples": len(results),
        "n_edges": n_edges,
        "seconds_per_sample": float(np.mean([r.seconds for r in results.values()])),
    }


def mean_correlations(tables: Sequence[pd.DataFrame], estimate: str) -> dict[str, float]:
    """Each sample's Pearson and Spearman of `estimate` (score or ig) with the true
    change, averaged over samples (NaN where none is defined)."""
    found = [correlations(t[estimate].to_numpy(), t.change.to_numpy()) for t in tables]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all NaN: IG not computed
        return {name: float(np.nanmean([c[name] for c in found])) for name in found[0]}


def estimate_strata(per_sample: Sequence[pd.DataFrame]) -> dict[str, object]:
    """Per-edge IG's correlations with the true change; EAP's and IG's without the
    embedding edges (`embedding_edges`); and how many of the `MISSES` largest |estimate -
    change| of the pooled checked edges are embedding edges (keys prefixed `ig_` for IG)."""
    others = [t[~t.embedding] for t in per_sample]
    pooled = pd.concat(per_sample, ignore_index=True)
    ig = mean_correlations(per_sample, "ig")
    found = {"ig_pearson": ig["pearson"], "ig_spearman": ig["spearman"]}
    for prefix, estimate in (("", "score"), ("ig_", "ig")):
        miss = (pooled[estimate] - pooled.change).abs().dropna()
        found |= {
            f"{prefix}spearman_without_embedding": mean_correlations(others, estimate)["spearman"],
            f"{prefix}largest_misses_embedding": int(
                pooled.embedding[miss.nlargest(MISSES).index].sum()
            ),
        }
    return found | {
        "largest_misses": min(MISSES, len(pooled)),
        "embedding_edges_checked": int(pooled.embedding.sum()),
    }


def load_faithfulness(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Every faithfulness summary as one tidy frame for the report: one row per job
    (pair, dataset, alpha, role) and curve point k, with the job's summary beside the
    mean top-k and random loss changes at k."""
    frames = []
    for path in paths:
        summary = read_json(path)
        curve = pd.DataFrame(
            {"k": summary["grid"], "top": summary["top_curve"], "random": summary["random_curve"]}
        )
        scalars = {
            key: value
            for key, value in summary.items()
            if key not in ("grid", "top_curve", "random_curve", "spearman_per_sample")
        }
        frames.append(curve.assign(**scalars))
    return pd.concat(frames, ignore_index=True)
