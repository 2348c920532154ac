"""What else could explain a change: the control pairs, the agreement over training
seeds, and the crossed design that splits a change into a weights and a text effect."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from circuitry.analysis.results import pair_label
from circuitry.analysis.stats import WINDOW_LOSS
from circuitry.analysis.verdicts import replicate_agreement
from circuitry.display import MISSING, format_alpha, format_number
from circuitry.paths import PAPER_CONDITION
from circuitry.report.blocks import Cell, Row, Table
from circuitry.report.findings import (
    SIGNIFICANCE_LEGEND,
    change_text,
    headline_cell,
    metric_label,
    verdict_index,
)

DECOMPOSED = (("intensity", "intensity"), (WINDOW_LOSS, "window loss"))


def decomposition_table(
    tests: pd.DataFrame, pairs: Mapping[str, str], datasets: Sequence[str], alpha: float
) -> Table:
    """The crossed design at one alpha: each change split into a weights and a text effect."""
    rows_of = tests[
        (tests["loss"] == PAPER_CONDITION["loss"]) & (tests["alpha"] == float(alpha))
    ].set_index(["pair", "dataset", "metric", "comparison"])
    comparisons = ("own", "weights", "text")

    def cell(pair, dataset, metric, comparison) -> Cell:
        key = (pair, dataset, metric, comparison)
        if key not in rows_of.index:
            return Cell(MISSING, "na")
        row = rows_of.loc[key]
        return Cell(change_text(row), "", f"q = {format_number(row['q'])}, n = {row['n']}")

    rows = [
        Row(
            [
                Cell(dataset),
                *(
                    cell(pair, dataset, metric, comparison)
                    for metric, _ in DECOMPOSED
                    for comparison in comparisons
                ),
            ],
            group=pair_label(pair, method),
        )
        for pair, method in pairs.items()
        for dataset in datasets
    ]
    return Table(
        columns=[
            "dataset",
            *(f"{label}: {comparison}" for _, label in DECOMPOSED for comparison in comparisons),
        ],
        rows=rows,
        caption=f"Crossed design at {format_alpha(alpha)}: where each change comes from",
        notes=[
            "own: each model on its own answer (the paper's comparison); weights: tuned vs "
            "base model on the same answers (both answers, averaged); text: the tuned "
            "model's answer vs the base model's, same weights. weights + text = own exactly "
            "(for intensity on the log scale). Paper's loss (ce).",
            SIGNIFICANCE_LEGEND,
        ],
        id="decomposition-table",
        css="headline",
    )


def pair_role(spec: Mapping) -> str:
    """How a pair (its config entry) enters the controls table: study pair, seed
    replicate, or control."""
    if spec.get("control"):
        return f"control: {spec['control']}"
    if spec.get("replicate_of"):
        return f"seed replicate of {spec['replicate_of']}"
    return "study pair"


def controls_table(
    verdicts: pd.DataFrame,
    pairs: Mapping[str, str],
    specs: Mapping[str, Mapping],
    datasets: Sequence[str],
    alpha: float,
    neutral: bool,
) -> Table:
    """Activation intensity of every pair (study pairs, seed replicates, controls) side by
    side: `pairs` is enabled pair -> method (`Study.pairs`), `specs` the config's `pairs`."""
    index = verdict_index(verdicts)
    rows = [
        Row(
            [
                Cell(pair_label(pair, method)),
                Cell(pair_role(specs[pair])),
                *(
                    headline_cell(index.get((pair, dataset, float(alpha), "intensity")), neutral)
                    for dataset in datasets
                ),
            ]
        )
        for pair, method in pairs.items()
    ]
    return Table(
        columns=["pair", "role", *datasets],
        rows=rows,
        caption=f"Activation intensity of every pair and control at {format_alpha(alpha)}",
        notes=[
            "identity: a model against itself (every change must be exactly 0); "
            "more-training: the base model's own training continued for as long as the RL "
            "run, without RL; seed replicates: the same training recipe with another seed. "
            "Each cell reads as the headline table's (its notes say how).",
        ],
        id="controls-table",
        css="headline",
    )


def replicate_table(verdicts: pd.DataFrame, groups: Mapping[str, Sequence[str]]) -> Table:
    """Per seed group and headline metric: conditions where every seed reaches one verdict."""
    agreement = replicate_agreement(verdicts, groups)
    rows = [
        Row(
            [
                Cell(metric_label(row["metric"])),
                Cell(f"{row['agree']} of {row['conditions']}"),
            ],
            group=f"{row['group']} ({row['seeds']} seeds)",
        )
        for row in agreement.to_dict("records")
    ]
    return Table(
        columns=["metric", "every seed agrees"],
        rows=rows,
        caption="Agreement over training seeds",
        notes=[
            "Conditions: dataset × α (duplicate windows left out) where every seed of the "
            "recipe was analysed; agrees: all seeds reach the same verdict."
        ],
        id="replicate-table",
    )


IDENTITY_PASSED = "every change exactly 0: passed"
IDENTITY_FAILED = "NOT an exact null: the same model scored twice gave different results"


def null_check(tests: pd.DataFrame, pair: str) -> tuple[float, float]:
    """The largest |change| and the smallest q over every test of `pair`."""
    rows = tests[tests["pair"] == pair]
    largest = float(np.nanmax(np.abs(rows["change"]))) if len(rows) else float("nan")
    smallest_q = float(np.nanmin(rows["q"])) if rows["q"].notna().any() else float("nan")
    return largest, smallest_q


def is_exact_null(tests: pd.DataFrame, pair: str) -> bool:
    """Whether every test of `pair` reads a change of exactly 0 with q = 1, as an identity
    control must."""
    largest, smallest_q = null_check(tests, pair)
    return largest == 0 and smallest_q == 1


def identity_sentence(tests: pd.DataFrame, pair: str, config: Mapping) -> str:
    """Whether an identity control came out as the exact null it must be."""
    largest, smallest_q = null_check(tests, pair)
    n_tests = int((tests["pair"] == pair).sum())
    verdict_text = "an exact null, as it must be" if is_exact_null(tests, pair) else IDENTITY_FAILED
    return (
        f"{pair} compares {config['pairs'][pair]['base']} with itself: over its {n_tests} "
        f"tests the largest |change| is {format_number(largest)} and the smallest q is "
        f"{format_number(smallest_q)}: {verdict_text}."
    )
