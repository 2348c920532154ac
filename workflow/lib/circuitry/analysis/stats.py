"""Paired statistics of base vs tuned circuit metrics.

One row per pair x dataset x alpha x loss x comparison x metric.

Comparisons (`COMPARISONS`), each a per-sample contrast of two sides:

- `own`: the tuned model on its own answer vs the base model on its own (the paper's);
- `weights`: tuned model vs base model on the same text, averaged over both texts;
- `text`: the tuned model's text vs the base model's, same model, averaged over both.

With crossed scoring (each model also on the other's answer) `weights + text = own`,
exactly, for every per-sample effect; pooled metrics are compared on `own` only.

Each row's numbers come from `circuitry.analysis.paired_tests`: per-sample metrics are tested
paired by idx, `intensity` (and any metric in `LOG_SCALE_METRICS`) on per-sample log
ratios, the sides of `weights`/`text` then being per-sample geometric means of the two
texts/models; pooled metrics with a paired permutation test. `loss_spearman` is the
Spearman correlation across samples between the metric's per-sample effect and the
change in window cross-entropy of the same comparison: how much the change tracks the
model's confidence.

The window diagnostics (`circuitry.analysis.metrics.CONFIDENCE_METRICS`: window cross-entropy,
predictive entropy) are compared the same way, beside every change.

Multiple testing (`with_fdr`): Benjamini-Hochberg (`scipy.stats.false_discovery_control`)
within each family of each pair: `primary` (headline metrics, the paper's loss, own
text), `confidence` (the window diagnostics) and `secondary` (every other loss,
comparison and variant). An alpha whose answer windows equal a smaller alpha's for every sample
(`duplicate_alphas`) repeats that condition: its rows are copies of that alpha's (not
tested again), name the alpha in `duplicate_of`, and stay out of the correction (q NaN).

Randomness: each row draws from its own generator, `np.random.default_rng([seed,
crc32("pair/dataset/alpha/loss/comparison/metric")])` (`row_rng`); `seed` and
`n_resamples` come from the config's `stats` section.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from circuitry.analysis.circuit_metrics import CircuitMetrics
from circuitry.analysis.metrics import (
    CONFIDENCE_METRICS,
    METRICS,
    PER_SAMPLE_METRICS,
    POOLED_METRICS,
)
from circuitry.analysis.paired_tests import (
    loss_correlation,
    paired_sample_test,
    pooled_permutation_test,
    row_rng,
    sample_effect,
)
from circuitry.paths import PAPER_CONDITION

LOG_SCALE_METRICS = ("intensity",)
WINDOW_LOSS = "window_ce"
FAMILIES = ("primary", "secondary", "confidence")
# (role, text) scores averaged into each side (base side, tuned side) of a comparison
COMPARISONS: dict[str, tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]] = {
    "own": ((("base", "own"),), (("tuned", "own"),)),
    "weights": ((("base", "own"), ("base", "crossed")), (("tuned", "crossed"), ("tuned", "own"))),
    "text": ((("base", "own"), ("tuned", "crossed")), (("base", "crossed"), ("tuned", "own"))),
}

COLUMNS = (
    "pair",
    "dataset",
    "alpha",
    "loss",
    "comparison",
    "family",
    "duplicate_of",
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
    "change_measure",
    "ci_low",
    "ci_high",
    "ci_pct_low",
    "ci_pct_high",
    "ratio_of_means_pct",
    "test",
    "p",
    "q",
    "effect_size",
    "effect_size_measure",
    "loss_spearman",
    "loss_spearman_p",
    "expected",
    "as_expected",
    "note",
)


def _as_expected(change: float, expected: int) -> bool | None:
    """Whether the change goes the paper's way; None when there is no change or expectation."""
    if np.isnan(change) or change == 0 or expected == 0:
        return None
    return bool(np.sign(change) == expected)


def family(metric: str, loss: str, comparison: str) -> str:
    """The FDR family of a row: `primary` is the paper's claim as the paper tested it."""
    if metric in CONFIDENCE_METRICS:
        return "confidence"
    paper = loss == PAPER_CONDITION["loss"] and comparison == "own"
    return "primary" if paper and METRICS[metric].headline else "secondary"


def _describe(metric: str, loss: str, comparison: str, change: float) -> dict:
    spec = METRICS.get(metric) or CONFIDENCE_METRICS[metric]
    return {
        "loss": loss,
        "comparison": comparison,
        "family": family(metric, loss, comparison),
        "duplicate_of": np.nan,
        "metric": metric,
        "quantity": spec.quantity,
        "variant": spec.variant,
        "headline": spec.headline,
        "kind": spec.kind,
        "expected": {1: "up", -1: "down", 0: ""}[spec.expected],
        "as_expected": _as_expected(change, spec.expected),
    }


def comparison_sides(
    metrics: CircuitMetrics, metric: str, comparison: str, log_scale: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample (base side, tuned side) of a comparison: each side the mean of its scored
    (role, text) values, geometric on the log scale, so that `weights + text = own`."""
    sides = []
    for files in COMPARISONS[comparison]:
        values = np.stack([metrics.values(metric, role, text) for role, text in files])
        with np.errstate(invalid="ignore", divide="ignore"):
            sides.append(np.exp(np.log(values).mean(axis=0)) if log_scale else values.mean(axis=0))
    return sides[0], sides[1]


def comparisons_of(metrics: CircuitMetrics) -> tuple[str, ...]:
    """`own`, and the crossed decomposition where each model was also scored crossed."""
    return tuple(COMPARISONS) if "crossed" in metrics.texts else ("own",)


def compare_roles(
    metrics: CircuitMetrics,
    *,
    pair: str,
    dataset: str,
    alpha,
    loss: str = PAPER_CONDITION["loss"],
    seed: int,
    n_resamples: int,
    only: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Every metric of one pair x dataset x alpha x loss tested in every comparison (no `q`).

    Per comparison: the per-sample metrics, then (under the paper's loss only: they come
    from the same forward pass whatever the loss) the window diagnostics present; the
    pooled metrics on `own`. `only` restricts the rows to those metrics (no diagnostics).
    """
    present = set(metrics.per_sample["metric"])
    window = [m for m in CONFIDENCE_METRICS if m in present]
    tested_window = window if loss == PAPER_CONDITION["loss"] and only is None else []
    per_sample = [m for m in PER_SAMPLE_METRICS if only is None or m in only]
    pooled = [m for m in POOLED_METRICS if only is None or m in only]
    rows = []
    for comparison in comparisons_of(metrics):
        loss_effect = (
            sample_effect(*comparison_sides(metrics, WINDOW_LOSS, comparison, False), False)
            if WINDOW_LOSS in window
            else None
        )
        for metric in (*per_sample, *tested_window):
            log_scale = metric in LOG_SCALE_METRICS
            base, tuned = comparison_sides(metrics, metric, comparison, log_scale)
            result = paired_sample_test(
                base,
                tuned,
                rng=row_rng(seed, pair, dataset, alpha, loss, comparison, metric),
                n_resamples=n_resamples,
                log_scale=log_scale,
            )
            if loss_effect is not None and metric in PER_SAMPLE_METRICS:
                effect = sample_effect(base, tuned, log_scale)
                rho, p = loss_correlation(effect, loss_effect)
                result.update(loss_spearman=rho, loss_spearman_p=p)
            rows.append(_row(pair, dataset, alpha, loss, comparison, metric, result))
    for metric in pooled:
        result = pooled_permutation_test(
            metrics.stack,
            metric,
            rng=row_rng(seed, pair, dataset, alpha, loss, "own", metric),
            n_resamples=n_resamples,
        )
        rows.append(_row(pair, dataset, alpha, loss, "own", metric, result))
    return pd.DataFrame(rows)


def _row(pair, dataset, alpha, loss, comparison, metric, result) -> dict:
    described = _describe(metric, loss, comparison, result["change"])
    return {"pair": pair, "dataset": dataset, "alpha": alpha} | described | result


def duplicate_alphas(window_lengths: Mapping[float, np.ndarray | None]) -> dict[float, float]:
    """`{alpha: smaller alpha}` for every alpha whose windows equal a smaller alpha's.

    `window_lengths[alpha]` holds the length of every window scored at that alpha (all
    roles and texts, in one fixed order). Windows start at the answer, so equal lengths
    mean equal windows. Alphas without lengths (None) are never duplicates.
    """
    duplicates: dict[float, float] = {}
    seen: list[tuple[float, np.ndarray]] = []
    for alpha in sorted(window_lengths, key=float):
        lengths = window_lengths[alpha]
        if lengths is None:
            continue
        same = next((a for a, other in seen if np.array_equal(lengths, other)), None)
        if same is None:
            seen.append((alpha, lengths))
        else:
            duplicates[alpha] = same
    return duplicates


def mark_duplicates(table: pd.DataFrame, duplicates: Mapping[float, float]) -> pd.DataFrame:
    """Rows of duplicate alphas name the alpha they repeat (`duplicate_of`) and say so."""
    table = table.copy()
    for alpha, same in duplicates.items():
        rows = table["alpha"].astype(float) == float(alpha)
        table.loc[rows, "duplicate_of"] = float(same)
        notes = table.loc[rows, "note"].fillna("")
        mark = f"same window as alpha = {same}: left out of the FDR correction"
        table.loc[rows, "note"] = [f"{note}; {mark}" if note else mark for note in notes]
    return table


def pair_dataset_tests(
    metrics: Mapping[tuple[str, str], CircuitMetrics],
    *,
    pair: str,
    dataset: str,
    seed: int,
    n_resamples: int,
) -> pd.DataFrame:
    """Every test of one pair x dataset, `metrics` keyed by (alpha, loss), duplicate
    alphas marked (from the paper loss's windows, which every loss shares); no `q` yet.

    A duplicate alpha is not tested again: its rows are the rows of the alpha it repeats,
    numbers and all, under its own alpha."""
    windows = {
        alpha: m.window_lengths()
        for (alpha, loss), m in metrics.items()
        if loss == PAPER_CONDITION["loss"]
    }
    duplicates = duplicate_alphas(windows)

    def source(alpha, loss) -> tuple:
        same = (duplicates.get(alpha), loss)
        return same if same in metrics else (alpha, loss)

    tested = {
        (alpha, loss): compare_roles(
            metrics[alpha, loss],
            pair=pair,
            dataset=dataset,
            alpha=alpha,
            loss=loss,
            seed=seed,
            n_resamples=n_resamples,
        )
        for alpha, loss in dict.fromkeys(source(*key) for key in metrics)
    }
    frames = [tested[source(alpha, loss)].assign(alpha=alpha) for alpha, loss in metrics]
    return mark_duplicates(pd.concat(frames, ignore_index=True), duplicates)


def with_fdr(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with `q`: Benjamini-Hochberg within each family of each pair, over the rows
    that have a p-value and repeat no other condition (`duplicate_of` empty).

    Each pair is corrected on its own, so a control pair never changes a study pair's
    q-values and a seed replicate is corrected exactly as the run it repeats.
    """
    q = np.full(len(table), np.nan)
    p = table["p"].to_numpy(dtype=np.float64)
    counted = ~np.isnan(p) & table["duplicate_of"].isna().to_numpy()
    groups = table.groupby(["pair", "family"], sort=False).indices
    for (_, name), rows in groups.items():
        if name not in FAMILIES:
            raise ValueError(f"unknown FDR family {name!r}")
        members = rows[counted[rows]]
        if len(members):
            q[members] = stats.false_discovery_control(p[members], method="bh")
    return table.assign(q=q)


def assemble_tests_table(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """The `results/stats/tests.csv` table: all conditions, BH q-values, fixed columns."""
    table = pd.concat(list(frames), ignore_index=True)
    return with_fdr(table).loc[:, list(COLUMNS)]
