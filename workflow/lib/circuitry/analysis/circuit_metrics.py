"""All circuit metrics of one pair x dataset x alpha x loss, assembled from its score
files: per-sample values of every scored (role, text), pooled values, per-node entropy
and per-edge change, and the metrics rule's outputs."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from circuitry.analysis.metrics import HIST_BINS, HIST_UPPER_QUANTILE, METRICS, ROLES
from circuitry.analysis.pooled_metrics import PairedEdgeStack
from circuitry.analysis.sample_metrics import (
    histogram_upper,
    nanmean,
    node_entropy,
    per_sample_metrics,
)
from circuitry.attribution.graph import node_layer
from circuitry.attribution.samples import TEXTS
from circuitry.attribution.scorefile import EdgeScores, load_edge_scores
from circuitry.io import write_text
from circuitry.paths import PAPER_CONDITION

# what both roles' score files of one condition share
PAIRED_CONDITION = ("alpha", "cut_len", "reference_length", "loss")


@dataclass
class CircuitMetrics:
    """All metrics of one pair x dataset x alpha x loss: per-sample values of every scored
    (role, text), and the pooled, per-node and per-edge metrics of the own-text pair."""

    idx: np.ndarray
    per_sample: pd.DataFrame  # tidy: text, role, idx, metric, value
    pooled: dict[str, dict[str, float]]
    node_entropy: dict[str, np.ndarray]  # role -> [n_samples, n_forward]
    edge_mean: dict[str, np.ndarray]  # role -> [n_forward, n_backward] sample-mean |w|
    edge_mask: np.ndarray  # [n_forward, n_backward], True on edges
    edge_change: np.ndarray  # [n_forward, n_backward], NaN on non-edges
    forward_nodes: tuple[str, ...]
    backward_nodes: tuple[str, ...]
    histogram: dict[str, float]
    stack: PairedEdgeStack = field(repr=False)

    @property
    def texts(self) -> tuple[str, ...]:
        """The texts scored: `("own",)`, or `("own", "crossed")`."""
        return tuple(t for t in TEXTS if t in set(self.per_sample["text"]))

    def values(self, metric: str, role: str, text: str = "own") -> np.ndarray:
        """One per-sample metric (or diagnostic) of `role` on `text`, in idx order."""
        try:
            return self._values[metric, role, text]
        except KeyError:
            raise KeyError(f"no {metric!r} for {role} on {text} text") from None

    @functools.cached_property
    def _values(self) -> dict[tuple[str, str, str], np.ndarray]:
        """`per_sample` split once by (metric, role, text): the tests read it hundreds of
        times."""
        groups = self.per_sample.groupby(["metric", "role", "text"], sort=False)["value"]
        return {key: values.to_numpy(dtype=np.float64) for key, values in groups}

    def layer_intensity(self) -> pd.DataFrame:
        """Activation intensity on each layer's edges, both roles (`layer_intensity`)."""
        return layer_intensity(
            self.edge_mean, self.edge_mask, self.forward_nodes, self.backward_nodes
        )

    def window_lengths(self) -> np.ndarray | None:
        """Every scored window's length, all roles and texts (None without diagnostics)."""
        rows = self.per_sample[self.per_sample["metric"] == "window_len"]
        return None if rows.empty else rows["value"].to_numpy(dtype=np.float64)

    def summary(self) -> dict:
        """A JSON-safe summary (NaN written as null) for the metrics `.json` output."""
        return {
            "n_samples": len(self.idx),
            "n_edges": int(self.stack.w.shape[1]),
            "idx": self.idx.tolist(),
            "forward_nodes": list(self.forward_nodes),
            "backward_nodes": list(self.backward_nodes),
            "histogram": self.histogram,
            "pooled": {
                metric: {role: _json_number(value) for role, value in by_role.items()}
                for metric, by_role in self.pooled.items()
            },
            "node_entropy_mean": {
                role: _json_list(nanmean(values, axis=0))
                for role, values in self.node_entropy.items()
            },
            "edge_relative_change": _json_list(self.edge_change),
            "definitions": {name: vars(spec) for name, spec in METRICS.items()},
        }

    def write_summary(self, json_path: str | os.PathLike) -> None:
        """The metrics rule's `.json` output."""
        write_text(json_path, json.dumps(self.summary(), indent=2, allow_nan=False) + "\n")


def _json_number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _json_list(values: np.ndarray) -> list:
    return np.where(np.isnan(values), None, values).tolist()


def tidy_per_sample(
    idx: np.ndarray, by_file: Mapping[tuple[str, str], Mapping[str, np.ndarray]]
) -> pd.DataFrame:
    """Long table `text, role, idx, metric, value` from `{(role, text): {metric: values}}`,
    built from whole columns at once (a frame per metric cost more than the metrics)."""
    keys = [(t, r, m) for (r, t), by_metric in by_file.items() for m in by_metric]
    values = [by_file[r, t][m] for t, r, m in keys]
    texts, roles, metrics = (
        np.repeat(np.array(column, dtype=object), len(idx)) for column in zip(*keys, strict=True)
    )
    return pd.DataFrame(
        {
            "text": texts,
            "role": roles,
            "idx": np.tile(idx, len(keys)),
            "metric": metrics,
            "value": np.concatenate(values),
        }
    )


def per_sample_table(by_loss: Mapping[str, CircuitMetrics]) -> pd.DataFrame:
    """The metrics rule's per-sample CSV: every loss's tidy table, a `loss` column first."""
    frames = [m.per_sample.assign(loss=loss) for loss, m in by_loss.items()]
    table = pd.concat(frames, ignore_index=True)
    return table.loc[:, ["loss", *frames[0].columns.drop("loss")]]


def paper_condition(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a per-sample CSV under the paper's loss with each model on its own text."""
    chosen = (table["loss"] == PAPER_CONDITION["loss"]) & (table["text"] == PAPER_CONDITION["text"])
    return table[chosen]


def scored_files(
    base: EdgeScores, tuned: EdgeScores, crossed: Mapping[str, EdgeScores] | None
) -> dict[tuple[str, str], EdgeScores]:
    """`{(role, text): scores}`: each role on its own text, and on the other's if given."""
    files = {("base", "own"): base, ("tuned", "own"): tuned}
    for role, edges in (crossed or {}).items():
        files[role, "crossed"] = edges
    if crossed is not None and set(crossed) != set(ROLES):
        raise ValueError(f"crossed scores need both roles, got {sorted(crossed)}")
    return files


def compute_circuit_metrics(
    base: EdgeScores,
    tuned: EdgeScores,
    *,
    crossed: Mapping[str, EdgeScores] | None = None,
    hist_bins: int = HIST_BINS,
    hist_upper_quantile: float = HIST_UPPER_QUANTILE,
) -> CircuitMetrics:
    """Per-sample, per-node, per-edge and pooled metrics of a base/tuned pair of EAP outputs.

    `crossed` (`{role: scores on the other role's answer}`) adds per-sample values of each
    model on the other's text, on the same histogram grid (its `U` is taken over every
    file), so the crossed design compares like with like.
    """
    files = scored_files(base, tuned, crossed)
    for edges in files.values():
        check_paired(base, edges)
    upper = histogram_upper(
        *(np.abs(edges.edge_values) for edges in files.values()), quantile=hist_upper_quantile
    )
    values = {
        key: per_sample_metrics(edges, upper, hist_bins, hist_upper_quantile) | edges.diagnostics
        for key, edges in files.items()
    }
    stack = PairedEdgeStack(base.edge_values, tuned.edge_values, upper, hist_bins)
    own = {"base": base, "tuned": tuned}
    edge_mean = {
        role: np.abs(edges.scores).mean(axis=0, dtype=np.float64) for role, edges in own.items()
    }
    return CircuitMetrics(
        idx=base.idx,
        per_sample=tidy_per_sample(base.idx, values),
        pooled=stack.pooled_values(),
        node_entropy={role: node_entropy(e.scores, e.edge_mask) for role, e in own.items()},
        edge_mean=edge_mean,
        edge_mask=base.edge_mask,
        edge_change=edge_relative_change(edge_mean["base"], edge_mean["tuned"], base.edge_mask),
        forward_nodes=base.forward_nodes,
        backward_nodes=base.backward_nodes,
        histogram={"bins": hist_bins, "upper": upper, "upper_quantile": hist_upper_quantile},
        stack=stack,
    )


def load_condition(paths: Mapping[tuple[str, str], str | os.PathLike]) -> CircuitMetrics:
    """The metrics of one pair x dataset x alpha x loss from its score files, keyed by
    (role, text): both roles on their own text, and on the other's where scored."""
    scores = {
        (role, text): load_edge_scores(path, role=role, text=text)
        for (role, text), path in paths.items()
    }
    crossed = {role: s for (role, text), s in scores.items() if text == "crossed"}
    return compute_circuit_metrics(
        scores["base", "own"], scores["tuned", "own"], crossed=crossed or None
    )


def check_paired(base: EdgeScores, tuned: EdgeScores) -> None:
    """Raise ValueError unless both roles scored the same problems on the same graph, and
    (scores read from files) under the same condition."""
    base.check("base")
    tuned.check("tuned")
    if not np.array_equal(base.idx, tuned.idx):
        raise ValueError(
            "base and tuned idx differ: both roles must score the same problems in the same order"
        )
    if base.scores.shape != tuned.scores.shape:
        raise ValueError(
            f"score shapes differ: base {base.scores.shape}, tuned {tuned.scores.shape}"
        )
    if (base.forward_nodes, base.backward_nodes) != (tuned.forward_nodes, tuned.backward_nodes):
        raise ValueError("base and tuned graphs have different node names")
    if not np.array_equal(base.edge_mask, tuned.edge_mask):
        raise ValueError("base and tuned edge_mask differ")
    if base.condition and tuned.condition:
        differ = {
            key: (base.condition[key], tuned.condition[key])
            for key in PAIRED_CONDITION
            if base.condition[key] != tuned.condition[key]
        }
        if differ:
            raise ValueError(f"base and tuned scored different conditions (base, tuned): {differ}")


def edge_relative_change(
    base_mean: np.ndarray, tuned_mean: np.ndarray, edge_mask: np.ndarray
) -> np.ndarray:
    """`(tuned - base) / base` per edge of the sample-mean `|w|`; NaN on non-edges.

    A zero base mean is handled explicitly: 0 if the tuned mean is zero too (no change),
    NaN otherwise (a relative change from zero is undefined).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        change = (tuned_mean - base_mean) / base_mean
    change = np.where(base_mean == 0, np.where(tuned_mean == 0, 0.0, np.nan), change)
    return np.where(edge_mask, change, np.nan)


def layer_intensity(
    edge_mean: Mapping[str, np.ndarray],
    edge_mask: np.ndarray,
    forward_nodes: tuple[str, ...],
    backward_nodes: tuple[str, ...],
) -> pd.DataFrame:
    """Activation intensity restricted to each layer's edges: per layer l and role, the
    mean |w| over the samples and over the edges that l's nodes write (a{l}, m{l}) or read
    (a{l}.q/k/v, m{l}). Columns `layer, n_edges` and one per role; the weight-space join
    (`circuitry.analysis.weights.layer_join`) sets it beside l's weight update."""
    writer = np.array([node_layer(name) for name in forward_nodes], dtype=object)
    reader = np.array([node_layer(name) for name in backward_nodes], dtype=object)
    rows = []
    for layer in sorted({n for n in (*writer, *reader) if n is not None}):
        edges = edge_mask & ((writer == layer)[:, None] | (reader == layer)[None, :])
        rows.append(
            {"layer": layer, "n_edges": int(edges.sum())}
            | {role: float(mean[edges].mean()) for role, mean in edge_mean.items()}
        )
    return pd.DataFrame(rows)
