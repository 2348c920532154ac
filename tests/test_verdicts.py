"""Verdicts: each headline cell reads as the paper, as confidence, against it, or nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from circuitry.metrics import METRICS
from circuitry.stats import WINDOW_LOSS
from circuitry.verdicts import (
    AGAINST,
    CONSISTENT,
    EXPLAINED,
    NO_CHANGE,
    SAME_WINDOW,
    VERDICT_COLUMNS,
    headline_verdicts,
    replicate_agreement,
)

SIGNIFICANT, NOT_SIGNIFICANT = 0.001, 0.5


def table_row(pair, alpha, loss, metric, change, q, duplicate_of=None, dataset="d") -> dict:
    spec = METRICS.get(metric)
    expected = spec.expected if spec else 0
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
        "q": q,
        "loss_spearman": 0.9 if metric == "intensity" and loss == "ce" else np.nan,
    }


def cell(intensity, unit=None, loss=None, pair="p", alpha=0.5, duplicate_of=None) -> list[dict]:
    """Test rows of one pair x dataset x alpha: (change, q) readings of intensity under
    ce and ce_unit and of the window loss; None leaves a reading out."""
    rows = [table_row(pair, alpha, "ce", "intensity", *intensity, duplicate_of=duplicate_of)]
    if unit is not None:
        rows.append(table_row(pair, alpha, "ce_unit", "intensity", *unit, duplicate_of))
    if loss is not None:
        rows.append(table_row(pair, alpha, "ce", WINDOW_LOSS, *loss, duplicate_of))
    return rows


def verdict_of(rows: list[dict]) -> str:
    verdicts = headline_verdicts(pd.DataFrame(rows))
    (verdict,) = verdicts["verdict"]
    return verdict


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        # intensity rises under both losses: the circuit changed as the paper says
        ({"intensity": (0.3, SIGNIFICANT), "unit": (0.2, SIGNIFICANT)}, CONSISTENT),
        # intensity falls under ce only, and the window loss falls too: the model is surer
        (
            {
                "intensity": (-0.3, SIGNIFICANT),
                "unit": (-0.01, NOT_SIGNIFICANT),
                "loss": (-0.2, SIGNIFICANT),
            },
            EXPLAINED,
        ),
        # the same drop, but the loss rose: confidence would have raised intensity
        (
            {
                "intensity": (-0.3, SIGNIFICANT),
                "unit": (-0.01, NOT_SIGNIFICANT),
                "loss": (0.2, SIGNIFICANT),
            },
            AGAINST,
        ),
        # the drop survives ce_unit: not confidence, and against the paper
        (
            {
                "intensity": (-0.3, SIGNIFICANT),
                "unit": (-0.2, SIGNIFICANT),
                "loss": (-0.2, SIGNIFICANT),
            },
            AGAINST,
        ),
        # a rise that ce_unit reverses while the model grew less sure: confidence again
        (
            {
                "intensity": (0.3, SIGNIFICANT),
                "unit": (-0.1, SIGNIFICANT),
                "loss": (0.2, SIGNIFICANT),
            },
            EXPLAINED,
        ),
        # no ce_unit scores: a significant loss change the matching way still explains it
        ({"intensity": (-0.3, SIGNIFICANT), "loss": (-0.2, SIGNIFICANT)}, EXPLAINED),
        # no diagnostics at all: the paper's reading stands
        ({"intensity": (0.3, SIGNIFICANT)}, CONSISTENT),
        ({"intensity": (0.3, NOT_SIGNIFICANT), "unit": (0.3, SIGNIFICANT)}, NO_CHANGE),
        ({"intensity": (0.0, SIGNIFICANT)}, NO_CHANGE),
    ],
)
def test_cell_verdicts(readings, expected):
    assert verdict_of(cell(**readings)) == expected


def test_duplicate_window_reads_as_same_window():
    rows = cell((0.3, SIGNIFICANT), (0.2, SIGNIFICANT), alpha=0.1, duplicate_of=0.03)
    assert verdict_of(rows) == SAME_WINDOW


def test_ratio_metrics_take_any_significant_loss_change_as_confidence():
    """Entropy has no sign fixed by confidence: a loss change either way explains it."""
    for loss_change in (-0.2, 0.2):
        rows = [
            table_row("p", 0.5, "ce", "entropy", 0.05, SIGNIFICANT),
            table_row("p", 0.5, "ce_unit", "entropy", 0.0, NOT_SIGNIFICANT),
            table_row("p", 0.5, "ce", WINDOW_LOSS, loss_change, SIGNIFICANT),
        ]
        assert verdict_of(rows) == EXPLAINED


def test_verdict_table_carries_every_reading():
    rows = cell((-0.3, SIGNIFICANT), (-0.01, NOT_SIGNIFICANT), (-0.2, SIGNIFICANT))
    (verdict,) = headline_verdicts(pd.DataFrame(rows)).to_dict("records")
    assert list(verdict) == list(VERDICT_COLUMNS)
    assert (verdict["ce_change"], verdict["unit_change"], verdict["loss_change"]) == (
        -0.3,
        -0.01,
        -0.2,
    )
    assert verdict["loss_spearman"] == 0.9


def test_only_headline_metrics_under_the_own_text_get_verdicts():
    rows = cell((0.3, SIGNIFICANT), (0.2, SIGNIFICANT))
    rows.append(table_row("p", 0.5, "ce", "kurtosis_abs", -0.3, SIGNIFICANT))  # not headline
    rows.append({**table_row("p", 0.5, "ce", "intensity", 0.3, SIGNIFICANT), "comparison": "text"})
    assert list(headline_verdicts(pd.DataFrame(rows))["metric"]) == ["intensity"]


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
    verdicts = headline_verdicts(pd.DataFrame(rows))
    agreement = replicate_agreement(verdicts, {"recipe": ["a", "b"]})
    assert agreement.to_dict("records") == [
        {"group": "recipe", "metric": "intensity", "seeds": 2, "conditions": 3, "agree": 2}
    ]
