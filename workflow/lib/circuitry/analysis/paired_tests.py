"""The paired tests of one metric, base vs tuned, over the same problems.

Per-sample metrics, paired by idx (pairs with an undefined value on either side dropped):

- on the log scale (`log_scale`) values are compared on per-sample log ratios
  `d = log(tuned / base)`: a Wilcoxon test of `d`, `change = mean d`, and the
  geometric-mean change `change_pct = 100 * (exp(mean d) - 1)` with paired bootstrap
  CIs, so the sign of every reading is the tested effect's. A few loud samples
  dominate a ratio of means, so that stays a secondary reading (`ratio_of_means_pct`);
- otherwise on differences: `change = mean(tuned) - mean(base)`,
  `change_pct = 100 * change / |mean(base)|` (NaN when `mean(base) == 0`);
- test: Wilcoxon signed-rank, two-sided (`scipy.stats.wilcoxon`, zero differences
  dropped, exact or normal approximation as scipy's `method="auto"` chooses); every
  difference zero gives `p = 1` (the identity control);
- CIs: paired bootstrap (`scipy.stats.bootstrap`, `paired=True`, BCa, 95%) of `change`
  and `change_pct`, both from the same resamples (percentile interval where BCa is
  undefined: a degenerate bootstrap distribution);
- effect size: the matched-pairs rank-biserial correlation `r = (T+ - T-) / (T+ + T-)`
  of the tested differences (-1..1, positive when tuned is larger);
- `loss_correlation`: Spearman correlation across samples between a per-sample effect
  and the change in window cross-entropy.

Pooled metrics (one value per role): paired permutation test of
`pooled(tuned) - pooled(base)`, swapping base and tuned within an idx
(`scipy.stats.permutation_test`, `permutation_type="samples"`, two-sided; exact when
`2**n <= n_resamples`). No CI or effect size (NaN): resampling idx with replacement
duplicates samples, and a duplicate has cosine distance 0 to itself, which biases diversity.

Randomness: each test draws from its own generator (`row_rng`), from the seed and the
test's own key, so its numbers do not depend on which tests run before it.

Degenerate inputs give `p` NaN and a `note` instead of an error: fewer than
`MIN_PAIRS` pairs (6 is the smallest n for which a two-sided exact Wilcoxon or
permutation p, at least `2 / 2**n`, can fall below 0.05), or a pooled metric undefined
for a role.
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np
from scipy import stats

from circuitry.analysis.pooled_metrics import PairedEdgeStack

MIN_PAIRS = 6
CONFIDENCE_LEVEL = 0.95
PERMUTATION_BATCH_ELEMENTS = 1 << 22  # bounds the memory of one vectorised batch
WILCOXON = "Wilcoxon signed-rank (two-sided)"
WILCOXON_LOG = "Wilcoxon signed-rank on log(tuned/base) (two-sided)"
GEOMETRIC_MEAN = "mean of log(tuned/base); percent: geometric mean of per-sample ratios"
DIFFERENCE_OF_MEANS = "difference of means"
PERMUTATION = "paired permutation (two-sided)"
RANK_BISERIAL = "matched-pairs rank-biserial"


def row_rng(seed: int, *key) -> np.random.Generator:
    """The generator of one table row: from the seed and the row's own key only."""
    text = "/".join(str(part) for part in key)
    return np.random.default_rng([seed, zlib.crc32(text.encode("utf-8"))])


def percent_change(base_mean: float, tuned_mean: float) -> float:
    """`100 * (tuned - base) / |base|`; NaN when the base mean is zero."""
    if base_mean == 0 or np.isnan(base_mean):
        return np.nan
    return float(100.0 * (tuned_mean - base_mean) / abs(base_mean))


def rank_biserial(differences: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of paired differences (zeros dropped)."""
    nonzero = differences[differences != 0]
    if nonzero.size == 0:
        return np.nan
    ranks = stats.rankdata(np.abs(nonzero))
    positive = ranks[nonzero > 0].sum()
    return float((2 * positive - ranks.sum()) / ranks.sum())


def _change_and_percent(base: np.ndarray, tuned: np.ndarray, axis: int = -1) -> np.ndarray:
    base_mean, tuned_mean = base.mean(axis=axis), tuned.mean(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        percent = 100.0 * (tuned_mean - base_mean) / np.abs(base_mean)
    return np.stack([tuned_mean - base_mean, percent])


def _change_and_geometric_percent(
    base: np.ndarray, tuned: np.ndarray, axis: int = -1
) -> np.ndarray:
    """The mean log ratio (the quantity the log-ratio test is about) and its geometric-mean
    percent change; both have the sign of the tested effect."""
    with np.errstate(invalid="ignore", divide="ignore"):
        change = (np.log(tuned) - np.log(base)).mean(axis=axis)
    return np.stack([change, 100.0 * np.expm1(change)])


def _bootstrap_intervals(
    base: np.ndarray,
    tuned: np.ndarray,
    rng: np.random.Generator,
    n_resamples: int,
    log_scale: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paired bootstrap intervals of (change, change_pct): lows, highs, where BCa was undefined.

    `change_pct` is the geometric-mean change on the log scale, else the change in percent
    of the base mean. BCa is undefined when the bootstrap distribution is degenerate (e.g.
    every paired difference equal); those intervals fall back to percentiles of the same
    resamples.
    """
    statistic = _change_and_geometric_percent if log_scale else _change_and_percent
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            (base, tuned),
            statistic,
            paired=True,
            vectorized=True,
            n_resamples=n_resamples,
            confidence_level=CONFIDENCE_LEVEL,
            method="BCa",
            rng=rng,
        )
        lows, highs = result.confidence_interval.low, result.confidence_interval.high
        undefined = np.isnan(lows) | np.isnan(highs)
        tail = 50 * (1 - CONFIDENCE_LEVEL)
        percentile_lows, percentile_highs = np.nanpercentile(
            result.bootstrap_distribution, [tail, 100 - tail], axis=-1
        )
    lows = np.where(undefined, percentile_lows, lows)
    highs = np.where(undefined, percentile_highs, highs)
    return lows, highs, undefined


def _empty_result(test: str) -> dict:
    return {
        "n": 0,
        "base": np.nan,
        "tuned": np.nan,
        "change": np.nan,
        "change_pct": np.nan,
        "change_measure": "",
        "ci_low": np.nan,
        "ci_high": np.nan,
        "ci_pct_low": np.nan,
        "ci_pct_high": np.nan,
        "ratio_of_means_pct": np.nan,
        "test": test,
        "p": np.nan,
        "effect_size": np.nan,
        "effect_size_measure": "",
        "loss_spearman": np.nan,
        "loss_spearman_p": np.nan,
        "note": "",
    }


def sample_effect(base: np.ndarray, tuned: np.ndarray, log_scale: bool) -> np.ndarray:
    """Per-sample effect of tuned over base: `log(tuned / base)`, or `tuned - base`."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(tuned) - np.log(base) if log_scale else tuned - base


def paired_sample_test(
    base: np.ndarray,
    tuned: np.ndarray,
    *,
    rng: np.random.Generator,
    n_resamples: int,
    log_scale: bool = False,
) -> dict:
    """Change, bootstrap CIs, Wilcoxon p and rank-biserial effect of paired per-sample values.

    `log_scale` tests the per-sample log ratios and reports the geometric-mean change;
    its values must be positive (others count as undefined and drop their pair).
    """
    base, tuned = np.asarray(base, dtype=np.float64), np.asarray(tuned, dtype=np.float64)
    complete = ~(np.isnan(base) | np.isnan(tuned))
    if log_scale:
        complete &= (base > 0) & (tuned > 0)
    base, tuned = base[complete], tuned[complete]
    result = _empty_result(WILCOXON_LOG if log_scale else WILCOXON)
    result["effect_size_measure"] = RANK_BISERIAL
    result["change_measure"] = GEOMETRIC_MEAN if log_scale else DIFFERENCE_OF_MEANS
    notes = []
    if not complete.all():
        undefined = "a non-positive or undefined value" if log_scale else "an undefined value"
        notes.append(f"dropped {int((~complete).sum())} pairs with {undefined}")
    n = len(base)
    result["n"] = n
    effect = sample_effect(base, tuned, log_scale)
    if n:
        result["base"], result["tuned"] = float(base.mean()), float(tuned.mean())
        result["change"] = float(effect.mean())
        result["ratio_of_means_pct"] = percent_change(result["base"], result["tuned"])
        result["change_pct"] = (
            float(100.0 * np.expm1(effect.mean())) if log_scale else result["ratio_of_means_pct"]
        )
    if n < MIN_PAIRS:
        notes.append(f"only {n} pairs (< {MIN_PAIRS}): not tested")
    elif not effect.any():
        result["p"] = 1.0
        result.update(ci_low=0.0, ci_high=0.0, ci_pct_low=0.0, ci_pct_high=0.0)
        notes.append("all paired differences are zero: p = 1")
    else:
        result["p"] = float(stats.wilcoxon(effect).pvalue)
        result["effect_size"] = rank_biserial(effect)
        lows, highs, undefined = _bootstrap_intervals(base, tuned, rng, n_resamples, log_scale)
        result["ci_low"], result["ci_pct_low"] = (float(v) for v in lows)
        result["ci_high"], result["ci_pct_high"] = (float(v) for v in highs)
        if np.isnan(result["change_pct"]):
            result["ci_pct_low"] = result["ci_pct_high"] = np.nan
            undefined[1] = False
            notes.append("base mean is zero: no percent change")
        if undefined.any():
            notes.append("percentile CI where BCa was undefined (degenerate bootstrap)")
    result["note"] = "; ".join(notes)
    return result


def loss_correlation(effect: np.ndarray, loss_effect: np.ndarray) -> tuple[float, float]:
    """Spearman rho (and p) across samples between a metric's effect and the window loss's.

    NaN where fewer than `MIN_PAIRS` samples have both, or either is constant.
    """
    both = ~(np.isnan(effect) | np.isnan(loss_effect))
    effect, loss_effect = effect[both], loss_effect[both]
    if both.sum() < MIN_PAIRS or np.ptp(effect) == 0 or np.ptp(loss_effect) == 0:
        return np.nan, np.nan
    rho, p = stats.spearmanr(effect, loss_effect)
    return float(rho), float(p)


def _permutation_batch(stack: PairedEdgeStack) -> int:
    """Relabellings per vectorised call: each holds a `2n` indicator and at most two edge
    profiles (`diversity_cv` keeps the mean of `|w|` and of `|w|^2`)."""
    return max(1, PERMUTATION_BATCH_ELEMENTS // (2 * stack.n + 2 * stack.w.shape[1]))


def pooled_permutation_test(
    stack: PairedEdgeStack,
    metric: str,
    *,
    rng: np.random.Generator,
    n_resamples: int,
) -> dict:
    """Pooled values of both roles and the paired permutation p of their difference."""
    result = _empty_result(PERMUTATION)
    base = float(stack.pooled(metric, stack.base_rows))
    tuned = float(stack.pooled(metric, stack.tuned_rows))
    result.update(n=stack.n, base=base, tuned=tuned, change=tuned - base)
    result["change_pct"] = result["ratio_of_means_pct"] = percent_change(base, tuned)
    result["change_measure"] = DIFFERENCE_OF_MEANS
    if stack.n < MIN_PAIRS:
        result["note"] = f"only {stack.n} pairs (< {MIN_PAIRS}): not tested"
    elif np.isnan(base) or np.isnan(tuned):
        result["note"] = f"{metric} undefined for a role: not tested"
    elif stack.identical_roles:
        result["p"] = 1.0
        result["note"] = "identical edge scores in both roles: p = 1"
    else:

        def difference(base_rows, _tuned_rows, axis=-1):  # scipy batches along axis -1
            return stack.pooled_change(metric, base_rows)

        test = stats.permutation_test(
            (stack.base_rows, stack.tuned_rows),
            difference,
            permutation_type="samples",
            vectorized=True,
            n_resamples=n_resamples,
            batch=_permutation_batch(stack),
            alternative="two-sided",
            rng=rng,
        )
        result["p"] = float(test.pvalue)
    return result
