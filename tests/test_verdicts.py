"""Verdicts: each headline cell reads as the paper, as confidence, against it, not robust,
nothing, or uncalibrated, by the calibrated reading and the window loss's mean."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from circuitry.analysis.calibration import CALIBRATED_LOSS
from circuitry.analysis.metrics import METRICS
from circuitry.analysis.stats import WINDOW_LOSS
from circuitry.analysis.verdicts import (
    AGAINST,
    CONSISTENT,
    EXPLAINED,
    NO_CHANGE,
    NOT_ROBUST,
    ONE_TOKEN_NOTE,
    SAME_WINDOW,
    UNCALIBRATED,
    VERDICT_COLUMNS,
    headline_verdicts,
    replicate_agreement,
)

SIGNIFICANT, NOT_SIGNIFICANT = 0.001, 0.5


def table_row(
    pair, alpha, loss, metric, change, q, duplicate_of=None, dataset="d", ci=None
) -> dict:
    spec = METRICS.get(metric)
    expected = spec.expected if spec else 0
    low, high = ci if ci is not None else (change - 0.1 * abs(change), change + 0.1 * abs(change))
    return {
        "pair": pair,
        "dataset": dataset,
        "alpha": alpha,
        "loss": loss,
        "comparison": "own",
        "metric": metric,
        "quantity": spec.quantity if spec else "window cross-entropy",
        "expected": expected,
        "as_expected": bool(np.sign(change) == expected) if expected else None,
        "duplicate_of": duplicate_of,
        "n": 100,
        "change": change,
        "change_pct": 100 * change,
        "ci_low": low,
        "ci_high": high,
        "q": q,
        "loss_spearman": 0.9 if metric == "intensity" and loss == "ce" else np.nan,
    }


def cell(
    intensity, calibrated=None, loss=None, unit=None, pair="p", alpha=0.5, duplicate_of=None
) -> list[dict]:
    """Test rows of one pair x dataset x alpha: (change, q) readings of intensity under
    ce, the calibrated reading and ce_unit, and of the window loss ((change, q) or
    (change, q, (ci_low, ci_high))); None leaves a reading out."""
    rows = [table_row(pair, alpha, "ce", "intensity", *intensity, duplicate_of=duplicate_of)]
    for name, reading in ((CALIBRATED_LOSS, calibrated), ("ce_unit", unit)):
        if reading is not None:
            rows.append(table_row(pair, alpha, name, "intensity", *reading, duplicate_of))
    if loss is not None:
        change, q, *ci = loss
        rows.append(
            table_row(
                pair, alpha, "ce", WINDOW_LOSS, change, q, duplicate_of, ci=ci[0] if ci else None
            )
        )
    return rows


def verdict_of(rows: list[dict], calibration: str = "passed") -> str:
    (verdict,) = headline_verdicts(pd.DataFrame(rows), calibration)["verdict"]
    return verdict


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        # intensity rises under ce and the calibrated reading: as the paper says
        ({"intensity": (0.3, SIGNIFICANT), "calibrated": (0.2, SIGNIFICANT)}, CONSISTENT),
        # both fall: against the paper, whatever the loss did
        (
            {
                "intensity": (-0.3, SIGNIFICANT),
                "calibrated": (-0.2, SIGNIFICANT),
                "loss": (-0.2, SIGNIFICANT),
            },
            AGAINST,
        ),
        # ce falls alone and the window loss fell: the model is surer
        (
            {
                "intensity": (-0.3, SIGNIFICANT),
                "calibrated": (-0.01, NOT_SIGNIFICANT),
                "loss": (-0.2, SIGNIFICANT),
            },
            EXPLAINED,
        ),
        # the same drop, but the loss rose: confidence would have raised intensity
        (
            {
                "intensity": (-0.3, SIGNIFICANT),
                "calibrated": (-0.01, NOT_SIGNIFICANT),
                "loss": (0.2, SIGNIFICANT),
            },
            NOT_ROBUST,
        ),
        # a rise the calibrated reading reverses while the model grew less sure
        (
            {
                "intensity": (0.3, SIGNIFICANT),
                "calibrated": (-0.1, SIGNIFICANT),
                "loss": (0.2, SIGNIFICANT),
            },
            EXPLAINED,
        ),
        # the window loss's median did not move (Wilcoxon) but its mean did (CI excludes 0)
        (
            {
                "intensity": (-0.3, SIGNIFICANT),
                "calibrated": (0.0, NOT_SIGNIFICANT),
                "loss": (-0.3, 0.91, (-0.49, -0.10)),
            },
            EXPLAINED,
        ),
        # neither its median nor its mean moved: not robust
        (
            {
                "intensity": (-0.3, SIGNIFICANT),
                "calibrated": (0.0, NOT_SIGNIFICANT),
                "loss": (-0.3, 0.91, (-0.49, 0.10)),
            },
            NOT_ROBUST,
        ),
        # ce_unit agreeing is no longer enough: only the calibrated reading counts
        (
            {
                "intensity": (0.3, SIGNIFICANT),
                "unit": (0.3, SIGNIFICANT),
                "calibrated": (0.01, NOT_SIGNIFICANT),
            },
            NOT_ROBUST,
        ),
        # no calibrated scores and no diagnostics: nothing backs the paper's reading
        ({"intensity": (0.3, SIGNIFICANT)}, NOT_ROBUST),
        ({"intensity": (0.3, NOT_SIGNIFICANT), "calibrated": (0.3, SIGNIFICANT)}, NO_CHANGE),
        ({"intensity": (0.0, SIGNIFICANT)}, NO_CHANGE),
    ],
)
def test_cell_verdicts(readings, expected):
    assert verdict_of(cell(**readings)) == expected


@pytest.mark.parametrize("calibration", ["failed", "not run"])
def test_every_verdict_is_uncalibrated_unless_the_calibration_passed(calibration):
    rows = cell((0.3, SIGNIFICANT), (0.2, SIGNIFICANT))
    rows += cell((0.3, NOT_SIGNIFICANT), pair="q")
    verdicts = headline_verdicts(pd.DataFrame(rows), calibration)
    assert set(verdicts["verdict"]) == {UNCALIBRATED}
    assert set(verdicts["calibration"]) == {calibration}
    with pytest.raises(ValueError, match="calibration must be one of"):
        headline_verdicts(pd.DataFrame(rows), "maybe")


def test_duplicate_window_reads_as_same_window():
    rows = cell((0.3, SIGNIFICANT), (0.2, SIGNIFICANT), alpha=0.1, duplicate_of=0.03)
    assert verdict_of(rows) == SAME_WINDOW
    assert verdict_of(rows, "failed") == SAME_WINDOW


def test_ratio_metrics_take_a_loss_that_moved_either_way_as_confidence():
    """Entropy has no sign fixed by confidence: a loss change either way explains it."""
    for loss_change in (-0.2, 0.2):
        rows = [
            table_row("p", 0.5, "ce", "entropy", 0.05, SIGNIFICANT),
            table_row("p", 0.5, CALIBRATED_LOSS, "entropy", 0.0, NOT_SIGNIFICANT),
            table_row("p", 0.5, "ce", WINDOW_LOSS, loss_change, SIGNIFICANT),
        ]
        assert verdict_of(rows) == EXPLAINED


def test_verdict_table_carries_every_reading():
    rows = cell((-0.3, SIGNIFICANT), (-0.01, NOT_SIGNIFICANT), (-0.2, SIGNIFICANT), (0.4, 0.01))
    (verdict,) = headline_verdicts(pd.DataFrame(rows), "passed").to_dict("records")
    assert list(verdict) == list(VERDICT_COLUMNS)
    readings = ("ce_change", "calibrated_change", "unit_change", "loss_change")
    assert tuple(verdict[name] for name in readings) == (-0.3, -0.01, 0.4, -0.2)
    assert verdict["loss_moved"] is True
    assert verdict["loss_spearman"] == 0.9


def test_one_token_windows_say_that_ce_unit_is_not_independent_there():
    rows = cell((0.3, SIGNIFICANT), (0.2, SIGNIFICANT), alpha=0.03)
    rows += cell((0.3, SIGNIFICANT), (0.2, SIGNIFICANT), alpha=0.5)
    cut_lens = {("p", "d", 0.03): 1, ("p", "d", 0.5): 7}
    verdicts = headline_verdicts(pd.DataFrame(rows), "passed", cut_lens)
    assert verdicts.set_index("alpha")["note"].to_dict() == {0.03: ONE_TOKEN_NOTE, 0.5: ""}
    assert verdicts.set_index("alpha")["cut_len"].to_dict() == {0.03: 1, 0.5: 7}


def test_only_headline_metrics_under_the_own_text_get_verdicts():
    rows = cell((0.3, SIGNIFICANT), (0.2, SIGNIFICANT))
    rows.append(table_row("p", 0.5, "ce", "kurtosis_abs", -0.3, SIGNIFICANT))  # not headline
    rows.append({**table_row("p", 0.5, "ce", "intensity", 0.3, SIGNIFICANT), "comparison": "text"})
    assert list(headline_verdicts(pd.DataFrame(rows), "passed")["metric"]) == ["intensity"]


def test_replicate_agreement_counts_conditions_where_every_seed_agrees():
    rows = []
    for pair, changes in {"a": (0.3, 0.3, 0.3), "b": (0.3, -0.3, 0.3)}.items():
        for dataset, change in zip(["x", "y", "z"], changes, strict=True):
            rows += [
                {**row, "dataset": dataset}
                for row in cell((change, SIGNIFICANT), (change, SIGNIFICANT), pair=pair)
            ]
    # a duplicate window is left out; an unreplicated condition is not complete
    rows += cell((0.3, SIGNIFICANT), pair="a", alpha=0.1, duplicate_of=0.03)
    rows += cell((0.3, SIGNIFICANT), pair="b", alpha=0.1, duplicate_of=0.03)
    rows += [{**row, "dataset": "w"} for row in cell((0.3, SIGNIFICANT), pair="a")]
    verdicts = headline_verdicts(pd.DataFrame(rows), "passed")
    agreement = replicate_agreement(verdicts, {"recipe": ["a", "b"]})
    assert agreement.to_dict("records") == [
        {"group": "recipe", "metric": "intensity", "seeds": 2, "conditions": 3, "agree": 2}
    ]
