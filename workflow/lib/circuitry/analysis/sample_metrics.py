"""Per-sample circuit metrics of one role's edge scores, and the entropy, histogram and
kurtosis functions they and the pooled metrics are built of (definitions:
`circuitry.analysis.metrics`)."""

from __future__ import annotations

import numpy as np
from scipy import special, stats

from circuitry.analysis.metrics import HIST_BINS, HIST_UPPER_QUANTILE
from circuitry.attribution.scorefile import EdgeScores


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
