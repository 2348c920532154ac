"""Pooled circuit metrics (one value per role) of both roles' stacked edge scores, built
so that the paired permutation test's relabellings cost one matrix product each
(definitions: `circuitry.analysis.metrics`)."""

from __future__ import annotations

import numpy as np
from scipy import special

from circuitry.analysis.metrics import HIST_BINS, POOLED_METRICS
from circuitry.analysis.sample_metrics import (
    entropy_from_sums,
    excess_kurtosis,
    histogram_counts,
    histogram_upper,
    mass_entropy,
    nanmean,
)

GRAM_METRICS = ("diversity", "diversity_signed")  # pooled readings of pairwise cosines


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
