"""Circuit metrics: EAP edge scores of a base and a tuned model turned into comparable numbers.

For one sample, `w` is the vector of its EAP scores on the real edges of the graph
(`edge_mask`); `a = |w|`. Entropies use the natural log (nats) with `0 log 0 = 0`.

Per sample (one value per problem and role):

- `intensity`      activation intensity, `mean(a)`;
- `entropy`        information complexity (headline): Shannon entropy of the normalised
                   edge mass `p = a / sum(a)`;
- `entropy_hist`   information complexity (variant): Shannon entropy of the histogram of
                   `a` over `HIST_BINS` equal-width bins on `[0, U]`, `U` the
                   `HIST_UPPER_QUANTILE` quantile of `a` pooled over all samples of both
                   roles; values above `U` count in the last bin. The shared grid puts the
                   same `|w|` in the same bin for both models, and the quantile (not the
                   maximum) keeps one extreme edge from squeezing every other edge into the
                   first bin (EAP scores are heavy-tailed);
- `kurtosis`       distribution kurtosis (headline): excess kurtosis of `w`
                   (`scipy.stats.kurtosis`, `fisher=True`, `bias=True`: the edges are the
                   whole graph, not a sample from a larger population);
- `kurtosis_abs`   distribution kurtosis (variant): the same of `a`;
- `node_entropy`   mean over forward nodes of the entropy of each node's normalised
                   outgoing `a` (over its real out-edges).

Readings the paper's text leaves open (variants of the same quantities):

- `entropy_hist_sample`  the histogram entropy on each sample's own grid `[0, U_i]`, `U_i`
                   the same quantile of that sample's `a`: scale-free, so a model that is
                   merely surer (all `|w|` smaller) keeps its value;
- `entropy_hist_full`    the shared-grid histogram entropy over the full
                   `[n_forward, n_backward]` matrix, non-edges counted as zeros (the
                   paper's code saves full matrices). The mass entropy is the same with or
                   without the zeros (`0 log 0 = 0`), so it has no full-matrix variant;
- `kurtosis_full`  excess kurtosis of the full matrix, non-edges as zeros;
- `kurtosis_pearson`     the Pearson kurtosis of `w` (excess + 3): the same change, another
                   percentage;
- `node_entropy_norm`    mean over forward nodes with at least two out-edges of the node's
                   out-edge entropy divided by `log(out-degree)`, so nodes of different
                   out-degree (1 to about 4L) weigh alike.

Pooled (one value per role, tested with a paired permutation test):

- `diversity`        cross-sample diversity (headline): mean pairwise cosine distance
                     `1 - cos(a_i, a_j)` over all pairs of samples `i < j`;
- `diversity_signed` the same of signed `w`: two circuits using the same edges with
                     opposite signs count as different;
- `diversity_cv`     mean over edges of the coefficient of variation of `a` across
                     samples (population std over mean; edges whose mean is 0 left out):
                     scale-free per edge, where the cosine weighs the large edges;
- `pooled_entropy`   entropy of `a` normalised over every sample x edge of the role (the
                     paper's "overall distribution formed by all |w|", read literally);
- `pooled_entropy_hist` entropy of the histogram of every sample x edge `a` of the role,
                     on the shared grid of `entropy_hist` (scale-dependent like it);
- `profile_entropy`  entropy of the normalised sample-mean `a` profile: how spread the
                     average circuit is (the mean of per-sample entropies is not that);
- `profile_kurtosis` excess kurtosis of the sample-mean `w` profile.

The pooled mean of `a` is not listed: it equals the mean of per-sample intensities.
A metric is NaN where it is undefined (all-zero scores, a constant `w`, fewer than two
samples for diversity). Expected directions after RL (the paper's findings): intensity
up, entropy up, kurtosis down, diversity up.

Confidence (`CONFIDENCE_METRICS`, per sample, from the score file's diagnostics):
`window_ce`, the model's mean cross-entropy on the answer window it read, and
`window_entropy`, its mean predictive entropy there. They say how sure the model is of
the text it was scored on, which the paper's loss folds into every `|w|`.

Texts: each model is scored on its own answer (`own`) and, where the run scores it, on
the other model's answer (`crossed`); the per-sample table holds every (role, text).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special, stats

from circuitry.io import write_text
from circuitry.paths import PAPER_CONDITION
from circuitry.scorefile import DIAGNOSTICS, TEXTS

ROLES = ("base", "tuned")
HIST_BINS = 50
HIST_UPPER_QUANTILE = 0.99
NPZ_KEYS = ("scores", "idx", "edge_mask", "forward_nodes", "backward_nodes")


@dataclass(frozen=True)
class MetricSpec:
    """What a metric measures, how, and which way the paper says RL moves it."""

    name: str
    quantity: str
    variant: str
    kind: str  # "per-sample" | "pooled"
    headline: bool
    expected: int  # +1: expected to rise after RL, -1: to fall
    definition: str


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            name="intensity",
            quantity="activation intensity",
            variant="mean |w|",
            kind="per-sample",
            headline=True,
            expected=+1,
            definition="mean of |w| over the real edges",
        ),
        MetricSpec(
            name="entropy",
            quantity="information complexity",
            variant="normalised edge mass",
            kind="per-sample",
            headline=True,
            expected=+1,
            definition="Shannon entropy (nats) of p = |w| / sum |w|",
        ),
        MetricSpec(
            name="entropy_hist",
            quantity="information complexity",
            variant="histogram of |w|",
            kind="per-sample",
            headline=False,
            expected=+1,
            definition=(
                "Shannon entropy (nats) of the histogram of |w| on equal-width bins over "
                "[0, U] shared by both roles, U a quantile of |w| over both roles, larger "
                f"values in the last bin (default {HIST_BINS} bins, U the "
                f"{HIST_UPPER_QUANTILE:g} quantile; the metrics JSON records both)"
            ),
        ),
        MetricSpec(
            name="kurtosis",
            quantity="distribution kurtosis",
            variant="w",
            kind="per-sample",
            headline=True,
            expected=-1,
            definition="excess kurtosis of w (scipy.stats.kurtosis, fisher=True, bias=True)",
        ),
        MetricSpec(
            name="kurtosis_abs",
            quantity="distribution kurtosis",
            variant="|w|",
            kind="per-sample",
            headline=False,
            expected=-1,
            definition="excess kurtosis of |w| (scipy.stats.kurtosis, fisher=True, bias=True)",
        ),
        MetricSpec(
            name="node_entropy",
            quantity="information complexity",
            variant="mean per-node out-edge entropy",
            kind="per-sample",
            headline=False,
            expected=+1,
            definition=(
                "mean over forward nodes of the entropy (nats) of the node's normalised "
                "outgoing |w|"
            ),
        ),
        MetricSpec(
            name="entropy_hist_sample",
            quantity="information complexity",
            variant="histogram of |w| on the sample's own grid",
            kind="per-sample",
            headline=False,
            expected=+1,
            definition=(
                "Shannon entropy (nats) of the histogram of |w| on equal-width bins over "
                "[0, U_i], U_i the sample's own |w| quantile (scale-free)"
            ),
        ),
        MetricSpec(
            name="entropy_hist_full",
            quantity="information complexity",
            variant="histogram of |w|, full matrix",
            kind="per-sample",
            headline=False,
            expected=+1,
            definition=(
                "the shared-grid histogram entropy over the full [n_forward, n_backward] "
                "matrix, non-edges counted as zeros"
            ),
        ),
        MetricSpec(
            name="kurtosis_full",
            quantity="distribution kurtosis",
            variant="w, full matrix",
            kind="per-sample",
            headline=False,
            expected=-1,
            definition="excess kurtosis of the full [n_forward, n_backward] matrix, non-edges 0",
        ),
        MetricSpec(
            name="kurtosis_pearson",
            quantity="distribution kurtosis",
            variant="w, Pearson",
            kind="per-sample",
            headline=False,
            expected=-1,
            definition="Pearson kurtosis of w (scipy.stats.kurtosis, fisher=False, bias=True)",
        ),
        MetricSpec(
            name="node_entropy_norm",
            quantity="information complexity",
            variant="per-node out-edge entropy / log(out-degree)",
            kind="per-sample",
            headline=False,
            expected=+1,
            definition=(
                "mean over forward nodes with at least two out-edges of the node's out-edge "
                "entropy (nats) divided by log(out-degree)"
            ),
        ),
        MetricSpec(
            name="diversity",
            quantity="cross-sample diversity",
            variant="mean pairwise cosine distance",
            kind="pooled",
            headline=True,
            expected=+1,
            definition="mean over sample pairs i < j of 1 - cos(|w_i|, |w_j|)",
        ),
        MetricSpec(
            name="diversity_signed",
            quantity="cross-sample diversity",
            variant="mean pairwise cosine distance of signed w",
            kind="pooled",
            headline=False,
            expected=+1,
            definition="mean over sample pairs i < j of 1 - cos(w_i, w_j), signs kept",
        ),
        MetricSpec(
            name="diversity_cv",
            quantity="cross-sample diversity",
            variant="mean per-edge coefficient of variation",
            kind="pooled",
            headline=False,
            expected=+1,
            definition=(
                "mean over edges of std / mean of |w| across samples (population std; "
                "edges with mean 0 left out)"
            ),
        ),
        MetricSpec(
            name="pooled_entropy",
            quantity="information complexity",
            variant="all samples x edges, mass",
            kind="pooled",
            headline=False,
            expected=+1,
            definition=(
                "Shannon entropy (nats) of p = |w| / sum |w| over every sample x edge of the "
                "role: the paper's 'overall distribution formed by all |w|'"
            ),
        ),
        MetricSpec(
            name="pooled_entropy_hist",
            quantity="information complexity",
            variant="all samples x edges, histogram",
            kind="pooled",
            headline=False,
            expected=+1,
            definition=(
                "Shannon entropy (nats) of the histogram of every sample x edge |w| of the "
                "role, on the shared grid of entropy_hist"
            ),
        ),
        MetricSpec(
            name="profile_entropy",
            quantity="information complexity",
            variant="sample-mean |w| profile",
            kind="pooled",
            headline=False,
            expected=+1,
            definition="Shannon entropy (nats) of the normalised sample-mean |w| profile",
        ),
        MetricSpec(
            name="profile_kurtosis",
            quantity="distribution kurtosis",
            variant="sample-mean w profile",
            kind="pooled",
            headline=False,
            expected=-1,
            definition="excess kurtosis of the sample-mean w profile (bias=True)",
        ),
    )
}
PER_SAMPLE_METRICS = tuple(name for name, spec in METRICS.items() if spec.kind == "per-sample")
POOLED_METRICS = tuple(name for name, spec in METRICS.items() if spec.kind == "pooled")
GRAM_METRICS = ("diversity", "diversity_signed")  # pooled readings of pairwise cosines
CONFIDENCE_METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            name="window_ce",
            quantity="window loss",
            variant="mean cross-entropy",
            kind="confidence",
            headline=False,
            expected=0,
            definition="mean cross-entropy (nats) of the model on the answer window it read",
        ),
        MetricSpec(
            name="window_entropy",
            quantity="predictive entropy",
            variant="mean over the window",
            kind="confidence",
            headline=False,
            expected=0,
            definition="mean entropy (nats) of the model's next-token distribution over the window",
        ),
    )
}


def metric_definitions() -> pd.DataFrame:
    """One row per metric: the table of definitions the report shows."""
    return pd.DataFrame([vars(spec) for spec in METRICS.values()])


@dataclass(frozen=True)
class EdgeScores:
    """The EAP output of one model: scores `[n_samples, n_forward, n_backward]`, its graph,
    and the per-sample `DIAGNOSTICS` of the windows where the file has them."""

    scores: np.ndarray
    idx: np.ndarray
    edge_mask: np.ndarray
    forward_nodes: tuple[str, ...]
    backward_nodes: tuple[str, ...]
    diagnostics: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_npz(cls, source: str | os.PathLike | Mapping) -> EdgeScores:
        """Read an EAP npz (a path or its loaded contents), checking its own consistency."""
        if isinstance(source, Mapping):
            return cls._from_arrays(source, "npz contents")
        with np.load(source, allow_pickle=False) as npz:
            return cls._from_arrays(npz, str(source))

    @classmethod
    def _from_arrays(cls, arrays: Mapping, where: str) -> EdgeScores:
        missing = [key for key in NPZ_KEYS if key not in arrays]
        if missing:
            raise ValueError(f"{where}: missing arrays {missing}")
        edge_scores = cls(
            scores=np.asarray(arrays["scores"]),
            idx=np.asarray(arrays["idx"]),
            edge_mask=np.asarray(arrays["edge_mask"], dtype=bool),
            forward_nodes=tuple(str(name) for name in arrays["forward_nodes"]),
            backward_nodes=tuple(str(name) for name in arrays["backward_nodes"]),
            diagnostics={
                name: np.asarray(arrays[name], dtype=np.float64)
                for name in DIAGNOSTICS
                if name in arrays
            },
        )
        edge_scores.check(where)
        return edge_scores

    def check(self, where: str = "edge scores") -> None:
        """Raise ValueError unless shapes, mask, idx and values agree with each other."""
        if self.scores.ndim != 3:
            raise ValueError(
                f"{where}: scores must be [n_samples, n_forward, n_backward], "
                f"got shape {self.scores.shape}"
            )
        n_samples, n_forward, n_backward = self.scores.shape
        if n_samples == 0:
            raise ValueError(f"{where}: no samples")
        if self.edge_mask.shape != (n_forward, n_backward):
            raise ValueError(
                f"{where}: edge_mask shape {self.edge_mask.shape} does not match scores "
                f"[{n_forward}, {n_backward}]"
            )
        if (len(self.forward_nodes), len(self.backward_nodes)) != (n_forward, n_backward):
            raise ValueError(
                f"{where}: {len(self.forward_nodes)} forward / {len(self.backward_nodes)} "
                f"backward node names for scores of shape {self.scores.shape}"
            )
        if not self.edge_mask.any():
            raise ValueError(f"{where}: edge_mask has no real edge")
        if self.idx.shape != (n_samples,):
            raise ValueError(f"{where}: idx shape {self.idx.shape}, expected ({n_samples},)")
        if len(np.unique(self.idx)) != n_samples:
            raise ValueError(f"{where}: idx has duplicates")
        if not np.isfinite(self.scores).all():
            raise ValueError(f"{where}: scores contain NaN or infinite values")
        if np.any(self.scores[:, ~self.edge_mask]):
            raise ValueError(f"{where}: non-zero scores on non-edges (edge_mask does not match)")
        for name, values in self.diagnostics.items():
            if values.shape != (n_samples,):
                raise ValueError(f"{where}: {name} shape {values.shape}, expected ({n_samples},)")
            if not np.isfinite(values).all():
                bad = self.idx[~np.isfinite(values)].tolist()
                raise ValueError(f"{where}: {name} is NaN or infinite for idx {bad}")

    @property
    def edge_values(self) -> np.ndarray:
        """Real-edge scores `[n_samples, n_edges]` in float64, edges in row-major mask order."""
        return self.scores[:, self.edge_mask].astype(np.float64)


def load_edge_scores(path: str | os.PathLike) -> EdgeScores:
    """One role's EAP npz, checked (ValueError naming the file if it is inconsistent)."""
    return EdgeScores.from_npz(path)


def load_condition(paths: Mapping[tuple[str, str], str | os.PathLike]) -> CircuitMetrics:
    """The metrics of one pair x dataset x alpha x loss from its score files, keyed by
    (role, text): both roles on their own text, and on the other's where scored."""
    scores = {key: load_edge_scores(path) for key, path in paths.items()}
    crossed = {role: s for (role, text), s in scores.items() if text == "crossed"}
    return compute_circuit_metrics(
        scores["base", "own"], scores["tuned", "own"], crossed=crossed or None
    )


def check_paired(base: EdgeScores, tuned: EdgeScores) -> None:
    """Raise ValueError unless both roles scored the same problems on the same graph."""
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


def mass_entropy(mass: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy (nats) of `mass` normalised along `axis`; NaN where the mass is all zero."""
    return entropy_from_sums(mass.sum(axis=axis), special.xlogy(mass, mass).sum(axis=axis))


def entropy_from_sums(total: np.ndarray, xlogx: np.ndarray) -> np.ndarray:
    """Entropy of a mass from two sums over it, `S = sum(m)` and `X = sum(m log m)`:
    `log S - X / S` (one logarithm per element, and sums add up across selected rows,
    which the permutation test uses). NaN where `S` is zero."""
    with np.errstate(invalid="ignore", divide="ignore"):
        entropy = np.log(total) - xlogx / total
    return np.where(total > 0, entropy, np.nan)


def histogram_upper(*abs_values: np.ndarray, quantile: float = HIST_UPPER_QUANTILE) -> float:
    """The upper end `U` of the histogram grid: a quantile of all `|w|` given (both roles)."""
    return float(np.quantile(np.concatenate([a.ravel() for a in abs_values]), quantile))


def histogram_counts(abs_w: np.ndarray, upper: float, bins: int = HIST_BINS) -> np.ndarray:
    """`[n_rows, bins]`: each row's counts on `bins` equal bins over `[0, upper]`.

    Bin `k` holds `k*upper/bins <= |w| < (k+1)*upper/bins`; values `>= upper` go in the
    last bin. With `upper == 0` every value lies in the first bin.
    """
    if upper > 0:
        bin_of = np.minimum(np.floor(abs_w / upper * bins), bins - 1).astype(np.int64)
    else:
        bin_of = np.zeros(abs_w.shape, dtype=np.int64)
    n_rows = abs_w.shape[0]
    offsets = np.arange(n_rows)[:, None] * bins
    counts = np.bincount((bin_of + offsets).ravel(), minlength=n_rows * bins)
    return counts.reshape(n_rows, bins).astype(np.float64)


def histogram_entropy(abs_w: np.ndarray, upper: float, bins: int = HIST_BINS) -> np.ndarray:
    """Entropy (nats) of each row's histogram on `bins` equal bins over `[0, upper]`."""
    return mass_entropy(histogram_counts(abs_w, upper, bins))


def excess_kurtosis(values: np.ndarray) -> np.ndarray:
    """Excess kurtosis along the last axis (`bias=True`); NaN for a constant row."""
    values = np.asarray(values, dtype=np.float64)
    spread = np.ptp(values, axis=-1) > 0
    result = np.full(values.shape[:-1], np.nan)
    result[spread] = stats.kurtosis(values[spread], axis=-1, fisher=True, bias=True)
    return result


def node_entropy(scores: np.ndarray, edge_mask: np.ndarray) -> np.ndarray:
    """`[n_samples, n_forward]`: entropy of each forward node's normalised outgoing `|w|`.

    Non-edges carry no mass; a node whose real out-edges are all zero gets NaN.
    """
    return mass_entropy(np.where(edge_mask, np.abs(scores.astype(np.float64)), 0.0), axis=-1)


def nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean of the defined values along `axis`; NaN (without a warning) where none is."""
    defined = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined, values, 0.0).sum(axis=axis) / defined.sum(axis=axis)


def cosine_gram(abs_w: np.ndarray) -> np.ndarray:
    """Cosine similarities between rows; rows of norm zero give NaN."""
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = abs_w / np.linalg.norm(abs_w, axis=-1, keepdims=True)
    return unit @ unit.T


def diversity_from_gram(gram: np.ndarray) -> np.ndarray:
    """Mean of `1 - cos` over the off-diagonal of `[..., n, n]` cosine matrices (NaN if n < 2)."""
    n = gram.shape[-1]
    if n < 2:
        return np.full(gram.shape[:-2], np.nan)
    off_diagonal = gram.sum(axis=(-2, -1)) - np.trace(gram, axis1=-2, axis2=-1)
    return 1.0 - off_diagonal / (n * (n - 1))


def cross_sample_diversity(abs_w: np.ndarray) -> float:
    """Mean pairwise cosine distance between the rows (samples) of `abs_w`."""
    return float(diversity_from_gram(cosine_gram(abs_w)))


def mean_coefficient_of_variation(mean: np.ndarray, mean_square: np.ndarray) -> np.ndarray:
    """Mean over edges of `std / mean` across samples, from each edge's mean `|w|` and mean
    `|w|^2` over the samples (last axis: edges; population std). Edges whose mean is zero
    have no coefficient and are left out; NaN if no edge has one."""
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = np.sqrt(np.maximum(mean_square - mean * mean, 0.0)) / mean
    return nanmean(np.where(mean > 0, cv, np.nan), axis=-1)


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


def own_grid_histogram_entropy(
    abs_w: np.ndarray, quantile: float = HIST_UPPER_QUANTILE, bins: int = HIST_BINS
) -> np.ndarray:
    """Each row's histogram entropy on its own grid `[0, U_i]`, `U_i` the row's `quantile`
    of `abs_w`: a row scaled by any positive factor keeps its value."""
    upper = np.quantile(abs_w, quantile, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(upper > 0, abs_w / upper, 0.0)
    return histogram_entropy(scaled, 1.0, bins)


def normalised_node_entropy(scores: np.ndarray, edge_mask: np.ndarray) -> np.ndarray:
    """`[n_samples]`: mean over forward nodes with at least two out-edges of their out-edge
    entropy over `log(out-degree)` (1 for a node spreading evenly, whatever its degree)."""
    degree = edge_mask.sum(axis=1)
    spread = degree >= 2
    return nanmean(node_entropy(scores, edge_mask)[:, spread] / np.log(degree[spread]), axis=1)


def per_sample_metrics(
    edges: EdgeScores,
    hist_upper: float,
    hist_bins: int = HIST_BINS,
    hist_upper_quantile: float = HIST_UPPER_QUANTILE,
) -> dict[str, np.ndarray]:
    """Every per-sample metric of one role, each `[n_samples]` in idx order (`hist_upper`:
    the shared grid's end; each sample's own grid ends at its `hist_upper_quantile`)."""
    w = edges.edge_values
    a = np.abs(w)
    full = edges.scores.reshape(len(edges.scores), -1).astype(np.float64)
    kurtosis = excess_kurtosis(w)
    return {
        "intensity": a.mean(axis=1),
        "entropy": mass_entropy(a),
        "entropy_hist": histogram_entropy(a, hist_upper, hist_bins),
        "entropy_hist_sample": own_grid_histogram_entropy(a, hist_upper_quantile, hist_bins),
        "entropy_hist_full": histogram_entropy(np.abs(full), hist_upper, hist_bins),
        "kurtosis": kurtosis,
        "kurtosis_abs": excess_kurtosis(a),
        "kurtosis_full": excess_kurtosis(full),
        "kurtosis_pearson": kurtosis + 3.0,
        "node_entropy": nanmean(node_entropy(edges.scores, edges.edge_mask), axis=1),
        "node_entropy_norm": normalised_node_entropy(edges.scores, edges.edge_mask),
    }


class PairedEdgeStack:
    """Both roles' real-edge scores stacked: rows `0..n-1` base, `n..2n-1` tuned, by idx.

    A pooled metric is a function of a *selection* of `n` rows, one per idx. The
    paired permutation test swaps base and tuned within an idx, which changes only the
    selection, so everything that does not depend on it is computed once:

    - the diversities come from a cosine Gram matrix of all `2n` rows;
    - every other pooled metric is a function of the mean, over the selected rows, of
      per-row statistics (`_row_statistics`), so a selection costs one matrix product.

    `hist_upper` is the end of the shared histogram grid (default: the
    `HIST_UPPER_QUANTILE` quantile of both roles' `|w|`).
    """

    def __init__(
        self,
        base_w: np.ndarray,
        tuned_w: np.ndarray,
        hist_upper: float | None = None,
        hist_bins: int = HIST_BINS,
    ):
        if base_w.shape != tuned_w.shape:
            raise ValueError(f"role shapes differ: {base_w.shape} vs {tuned_w.shape}")
        self.n = base_w.shape[0]
        self.w = np.concatenate([base_w, tuned_w]).astype(np.float64)
        self.abs_w = np.abs(self.w)
        self.hist_upper = histogram_upper(self.abs_w) if hist_upper is None else hist_upper
        self.hist_bins = hist_bins
        self.base_rows = np.arange(self.n)
        self.tuned_rows = np.arange(self.n) + self.n
        self._grams: dict[str, np.ndarray] = {}
        self._statistics: dict[str, tuple[np.ndarray, ...]] = {}

    @property
    def identical_roles(self) -> bool:
        return bool(np.array_equal(self.w[: self.n], self.w[self.n :]))

    def _gram(self, metric: str) -> np.ndarray:
        """The cosine Gram matrix a diversity reading compares rows with (`|w|` or `w`)."""
        if metric not in self._grams:
            self._grams[metric] = cosine_gram(
                self.w if metric == "diversity_signed" else self.abs_w
            )
        return self._grams[metric]

    def _row_statistics(self, metric: str) -> tuple[np.ndarray, ...]:
        """Per-row statistics `[2n, k]` whose means over a selection determine `metric`."""
        if metric not in self._statistics:
            self._statistics[metric] = self._compute_row_statistics(metric)
        return self._statistics[metric]

    def _compute_row_statistics(self, metric: str) -> tuple[np.ndarray, ...]:
        a = self.abs_w
        if metric == "profile_entropy":
            return (a,)
        if metric == "profile_kurtosis":
            return (self.w,)
        if metric == "pooled_entropy":
            return (a.sum(axis=1), special.xlogy(a, a).sum(axis=1))
        if metric == "pooled_entropy_hist":
            return (histogram_counts(a, self.hist_upper, self.hist_bins),)
        if metric == "diversity_cv":
            return (a, a * a)
        raise ValueError(f"unknown pooled metric {metric!r}; known: {POOLED_METRICS}")

    def _from_means(self, metric: str, means: tuple[np.ndarray, ...]) -> np.ndarray:
        """`metric` of a selection, from the selection's means of `_row_statistics`."""
        if metric == "profile_entropy":
            return mass_entropy(means[0])
        if metric == "profile_kurtosis":
            return excess_kurtosis(means[0])
        if metric == "pooled_entropy":
            return entropy_from_sums(self.n * means[0], self.n * means[1])
        if metric == "pooled_entropy_hist":
            return mass_entropy(means[0])
        return mean_coefficient_of_variation(*means)

    def _indicator(self, rows: np.ndarray) -> np.ndarray:
        """`[..., 2n]` 0/1 vectors marking the selected rows."""
        indicator = np.zeros((*rows.shape[:-1], 2 * self.n))
        np.put_along_axis(indicator, np.asarray(rows, dtype=np.int64), 1.0, axis=-1)
        return indicator

    def _indicated_diversity(self, metric: str, indicator: np.ndarray) -> np.ndarray:
        """Diversity of the `n` rows marked by `indicator`, from quadratic forms of the Gram.

        `u' G u` sums the cosines of all selected pairs, `u . diag(G)` the self-pairs: two
        matrix products instead of gathering an `n x n` block per selection.
        """
        n = self.n
        if n < 2:
            return np.full(indicator.shape[:-1], np.nan)
        gram = self._gram(metric)
        all_pairs = ((indicator @ gram) * indicator).sum(axis=-1)
        self_pairs = indicator @ np.diagonal(gram)
        return 1.0 - (all_pairs - self_pairs) / (n * (n - 1))

    def pooled(self, metric: str, rows: np.ndarray) -> np.ndarray:
        """Pooled `metric` of the rows selected by `rows` `[..., n]` (one row per idx)."""
        rows = np.asarray(rows, dtype=np.int64)
        if metric in GRAM_METRICS:
            return diversity_from_gram(self._gram(metric)[rows[..., :, None], rows[..., None, :]])
        # Gathered, not an indicator product: a dot product's SIMD lanes depend on where the
        # rows sit, so equal rows in both halves could give unequal means.
        return self._from_means(
            metric, tuple(s[rows].mean(axis=rows.ndim - 1) for s in self._row_statistics(metric))
        )

    def pooled_change(self, metric: str, base_rows: np.ndarray) -> np.ndarray:
        """`pooled(other rows) - pooled(base_rows)`: the permutation test's statistic.

        `base_rows[i]` is `i` or `n + i` (idx `i`'s base or tuned row); the other rows are
        the remaining row of each idx.

        The two selections hold all `2n` rows between them, so each is the complement of
        the other: one indicator, and one matrix product per statistic for both means.
        Assumes every row has a non-zero `|w|` (else the metric is undefined and untested).
        """
        indicator = self._indicator(base_rows)
        if metric in GRAM_METRICS:
            return self._indicated_diversity(metric, 1.0 - indicator) - self._indicated_diversity(
                metric, indicator
            )
        statistics = self._row_statistics(metric)
        base_means = tuple(indicator @ s / self.n for s in statistics)
        partner_means = tuple(
            s.sum(axis=0) / self.n - mean for s, mean in zip(statistics, base_means, strict=True)
        )
        return self._from_means(metric, partner_means) - self._from_means(metric, base_means)

    def pooled_values(self) -> dict[str, dict[str, float]]:
        """`{metric: {"base": value, "tuned": value}}` for every pooled metric."""
        return {
            metric: {
                "base": float(self.pooled(metric, self.base_rows)),
                "tuned": float(self.pooled(metric, self.tuned_rows)),
            }
            for metric in POOLED_METRICS
        }


@dataclass
class CircuitMetrics:
    """All metrics of one pair x dataset x alpha x loss: per-sample values of every scored
    (role, text), and the pooled, per-node and per-edge metrics of the own-text pair."""

    idx: np.ndarray
    per_sample: pd.DataFrame  # tidy: text, role, idx, metric, value
    pooled: dict[str, dict[str, float]]
    node_entropy: dict[str, np.ndarray]  # role -> [n_samples, n_forward]
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
    """Long table `text, role, idx, metric, value` from `{(role, text): {metric: values}}`."""
    frames = [
        pd.DataFrame({"text": text, "role": role, "idx": idx, "metric": metric, "value": values})
        for (role, text), by_metric in by_file.items()
        for metric, values in by_metric.items()
    ]
    return pd.concat(frames, ignore_index=True)


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
    return CircuitMetrics(
        idx=base.idx,
        per_sample=tidy_per_sample(base.idx, values),
        pooled=stack.pooled_values(),
        node_entropy={role: node_entropy(e.scores, e.edge_mask) for role, e in own.items()},
        edge_change=edge_relative_change(
            np.abs(base.scores).mean(axis=0, dtype=np.float64),
            np.abs(tuned.scores).mean(axis=0, dtype=np.float64),
            base.edge_mask,
        ),
        forward_nodes=base.forward_nodes,
        backward_nodes=base.backward_nodes,
        histogram={"bins": hist_bins, "upper": upper, "upper_quantile": hist_upper_quantile},
        stack=stack,
    )
