"""Paired statistics of base vs tuned circuit metrics: one row per pair x dataset x alpha x metric.

Per-sample metrics, paired by idx (pairs with an undefined value on either side dropped):

- `change = mean(tuned) - mean(base)` (the mean paired difference) and
  `change_pct = 100 * change / |mean(base)|` (NaN when `mean(base) == 0`);
- test: Wilcoxon signed-rank, two-sided (`scipy.stats.wilcoxon`, zero differences
  dropped, exact or normal approximation as scipy's `method="auto"` chooses);
- CIs: paired bootstrap (`scipy.stats.bootstrap`, `paired=True`, BCa, 95%) of `change`
  and of `change_pct`, both from the same resamples (percentile interval where BCa is
  undefined: a degenerate bootstrap distribution);
- effect size: the matched-pairs rank-biserial correlation `r = (T+ - T-) / (T+ + T-)`,
  `T+`/`T-` the rank sums of the positive/negative differences among the non-zero ones
  (the ranks the Wilcoxon test uses; -1..1, positive when tuned is larger).

Pooled metrics (one value per role): paired permutation test of
`pooled(tuned) - pooled(base)`, swapping base and tuned within an idx
(`scipy.stats.permutation_test`, `permutation_type="samples"`, two-sided; exact when
`2**n <= n_resamples`). No CI or effect size (NaN): resampling idx with replacement
duplicates samples, and a duplicate has cosine distance 0 to itself, which biases diversity.

`q`: Benjamini-Hochberg over every row of the whole table that has a p-value
(`scipy.stats.false_discovery_control`); rows without one keep `q` NaN.

Randomness: each row draws from its own generator,
`np.random.default_rng([seed, crc32("pair/dataset/alpha/metric")])`, so a row's numbers
depend on the seed and its own key, not on which rows run before it.

Degenerate inputs give `p` NaN and a `note` instead of an error: fewer than
`MIN_PAIRS` pairs (6 is the smallest n for which a two-sided exact Wilcoxon or
permutation p, at least `2 / 2**n`, can fall below 0.05), all paired differences zero,
identical edge scores in both roles, or a pooled metric undefined for a role.
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import stats

from circuitry.io import atomic_path
from circuitry.metrics import (
    METRICS,
    PER_SAMPLE_METRICS,
    POOLED_METRICS,
    CircuitMetrics,
    PairedEdgeStack,
)

MIN_PAIRS = 6
CONFIDENCE_LEVEL = 0.95
N_RESAMPLES = 9999
SEED = 0
PERMUTATION_BATCH_ELEMENTS = 1 << 22  # bounds the memory of one vectorised batch
WILCOXON = "Wilcoxon signed-rank (two-sided)"
PERMUTATION = "paired permutation (two-sided)"
RANK_BISERIAL = "matched-pairs rank-biserial"

COLUMNS = (
    "pair",
    "dataset",
    "alpha",
    "metric",
    "quantity",
    "variant",
    "headline",
    "kind",
    "n",
    "base",
    "tuned",
    "change",
    "change_pct",
    "ci_low",
    "ci_high",
    "ci_pct_low",
    "ci_pct_high",
    "test",
    "p",
    "q",
    "effect_size",
    "effect_size_measure",
    "expected",
    "as_expected",
    "note",
)


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


def _bootstrap_intervals(
    base: np.ndarray, tuned: np.ndarray, rng: np.random.Generator, n_resamples: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paired bootstrap intervals of (change, change_pct): lows, highs, where BCa was undefined.

    BCa is undefined when the bootstrap distribution is degenerate (e.g. every paired
    difference equal); those intervals fall back to percentiles of the same resamples.
    """
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            (base, tuned),
            _change_and_percent,
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
        "ci_low": np.nan,
        "ci_high": np.nan,
        "ci_pct_low": np.nan,
        "ci_pct_high": np.nan,
        "test": test,
        "p": np.nan,
        "effect_size": np.nan,
        "effect_size_measure": "",
        "note": "",
    }


def paired_sample_test(
    base: np.ndarray,
    tuned: np.ndarray,
    *,
    rng: np.random.Generator,
    n_resamples: int = N_RESAMPLES,
) -> dict:
    """Change, bootstrap CIs, Wilcoxon p and rank-biserial effect of paired per-sample values."""
    base, tuned = np.asarray(base, dtype=np.float64), np.asarray(tuned, dtype=np.float64)
    complete = ~(np.isnan(base) | np.isnan(tuned))
    base, tuned = base[complete], tuned[complete]
    result = _empty_result(WILCOXON)
    result["effect_size_measure"] = RANK_BISERIAL
    notes = []
    if not complete.all():
        notes.append(f"dropped {int((~complete).sum())} pairs with an undefined value")
    n = len(base)
    result["n"] = n
    if n:
        result["base"], result["tuned"] = float(base.mean()), float(tuned.mean())
        result["change"] = float((tuned - base).mean())
        result["change_pct"] = percent_change(result["base"], result["tuned"])
    differences = tuned - base
    if n < MIN_PAIRS:
        notes.append(f"only {n} pairs (< {MIN_PAIRS}): not tested")
    elif not differences.any():
        notes.append("all paired differences are zero: not tested")
    else:
        result["p"] = float(stats.wilcoxon(base, tuned).pvalue)
        result["effect_size"] = rank_biserial(differences)
        lows, highs, undefined = _bootstrap_intervals(base, tuned, rng, n_resamples)
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


def _permutation_batch(stack: PairedEdgeStack) -> int:
    """Relabellings per vectorised call: each holds a `2n` indicator and an edge profile."""
    return max(1, PERMUTATION_BATCH_ELEMENTS // (2 * stack.n + stack.w.shape[1]))


def pooled_permutation_test(
    stack: PairedEdgeStack,
    metric: str,
    *,
    rng: np.random.Generator,
    n_resamples: int = N_RESAMPLES,
) -> dict:
    """Pooled values of both roles and the paired permutation p of their difference."""
    result = _empty_result(PERMUTATION)
    base = float(stack.pooled(metric, stack.base_rows))
    tuned = float(stack.pooled(metric, stack.tuned_rows))
    result.update(n=stack.n, base=base, tuned=tuned, change=tuned - base)
    result["change_pct"] = percent_change(base, tuned)
    if stack.n < MIN_PAIRS:
        result["note"] = f"only {stack.n} pairs (< {MIN_PAIRS}): not tested"
    elif stack.identical_roles:
        result["note"] = "identical edge scores in both roles: not tested"
    elif np.isnan(base) or np.isnan(tuned):
        result["note"] = f"{metric} undefined for a role: not tested"
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


def _as_expected(change: float, expected: int) -> bool | None:
    """Whether the change goes the paper's way; None when there is no change to judge."""
    if np.isnan(change) or change == 0:
        return None
    return bool(np.sign(change) == expected)


def _describe(metric: str, change: float) -> dict:
    spec = METRICS[metric]
    return {
        "metric": metric,
        "quantity": spec.quantity,
        "variant": spec.variant,
        "headline": spec.headline,
        "kind": spec.kind,
        "expected": "up" if spec.expected > 0 else "down",
        "as_expected": _as_expected(change, spec.expected),
    }


def _paired_values(per_sample: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    wide = per_sample[per_sample["metric"] == metric].pivot(
        index="idx", columns="role", values="value"
    )
    return wide["base"].to_numpy(dtype=np.float64), wide["tuned"].to_numpy(dtype=np.float64)


def compare_roles(
    metrics: CircuitMetrics,
    *,
    pair: str,
    dataset: str,
    alpha,
    seed: int = SEED,
    n_resamples: int = N_RESAMPLES,
) -> pd.DataFrame:
    """Every metric of one pair x dataset x alpha tested base vs tuned (no `q` yet)."""
    rows = []
    for metric in (*PER_SAMPLE_METRICS, *POOLED_METRICS):
        rng = row_rng(seed, pair, dataset, alpha, metric)
        if metric in PER_SAMPLE_METRICS:
            base, tuned = _paired_values(metrics.per_sample, metric)
            result = paired_sample_test(base, tuned, rng=rng, n_resamples=n_resamples)
        else:
            result = pooled_permutation_test(
                metrics.stack, metric, rng=rng, n_resamples=n_resamples
            )
        rows.append(
            {"pair": pair, "dataset": dataset, "alpha": alpha}
            | _describe(metric, result["change"])
            | result
        )
    return pd.DataFrame(rows)


def with_fdr(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with `q`: Benjamini-Hochberg over all rows that have a p-value."""
    p = table["p"].to_numpy(dtype=np.float64)
    q = np.full_like(p, np.nan)
    tested = ~np.isnan(p)
    if tested.any():
        q[tested] = stats.false_discovery_control(p[tested], method="bh")
    return table.assign(q=q)


def assemble_tests_table(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """The `results/stats/tests.csv` table: all conditions, BH q-values, fixed columns."""
    table = pd.concat(list(frames), ignore_index=True)
    return with_fdr(table).loc[:, list(COLUMNS)]


def write_tests_table(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write `results/stats/tests.csv` atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
