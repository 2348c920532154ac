"""The summary that opens the report: one line per pair with the verdicts of its headline
results at the headline alpha, whether the calibrated reading they rest on passed its
known-answer checks, and whether their directions survive exact ablation. The study pairs
come first, their controls and seed replicates below; an identity control reads as the
exact null it must be."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from circuitry.analysis.metrics import HEADLINE_METRICS
from circuitry.analysis.results import pair_label
from circuitry.analysis.survival import NO_CHANGE, NOT_SIGNIFICANT, OPPOSITE, SURVIVES
from circuitry.display import MISSING, format_alpha
from circuitry.report.blocks import Cell, Row, Table
from circuitry.report.confidence import (
    IDENTITY_FAILED,
    IDENTITY_PASSED,
    is_exact_null,
    pair_role,
)
from circuitry.report.findings import (
    SURVIVAL_READINGS,
    study_pairs_first,
    verdict_counts,
    verdict_css,
)

SURVIVAL_OUTCOMES = (SURVIVES, NOT_SIGNIFICANT, OPPOSITE, NO_CHANGE)
CALIBRATION_CSS = {"passed": "pass", "failed": "fail"}

NOTE = (
    "Verdicts: how many of the pair's headline results (dataset × headline metric) get "
    "each verdict, the paper's loss (ce) and the calibrated reading (target_unit) read "
    "together, as in the headline table below (its legend follows it). Calibration: "
    "whether the calibrated reading passed its known-answer checks (see Calibration); a "
    "verdict rests on it only where it passed. Exact ablation: where the check ran, how "
    "many headline cells keep the direction of their change, under each reading, when "
    "the edges of a random sample are removed outright instead of scored to first order "
    "(survives: the same direction and significant)."
)


def verdicts_cell(verdicts: pd.DataFrame, pair: str, alpha: float, neutral: bool) -> Cell:
    """The count of each verdict among the pair's headline cells at `alpha`, coloured."""
    counts = verdict_counts(verdicts, pair, alpha)
    return Cell(
        parts=tuple(
            (f"{count} {name}", verdict_css(name, neutral)) for name, count in counts.items()
        )
    )


def identity_cell(verdicts: pd.DataFrame, tests: pd.DataFrame, pair: str, alpha: float) -> Cell:
    """An identity control: one line where it is the exact null, else the failure first."""
    if is_exact_null(tests, pair):
        return Cell(IDENTITY_PASSED, "pass")
    failed = verdicts_cell(verdicts, pair, alpha, neutral=True)
    return Cell(parts=((IDENTITY_FAILED, "fail"), *failed.parts))


def calibration_cell(rows: pd.DataFrame) -> Cell:
    """The calibration state the pair's verdicts rest on (`passed`, `failed`, `not run`)."""
    state = ", ".join(dict.fromkeys(rows["calibration"])) or MISSING
    return Cell(state, CALIBRATION_CSS.get(state, "na"))


def survival_reading_text(outcomes: pd.Series, reading: str) -> str:
    """`calibrated: 1 of 4 survive (2 opposite direction, 1 no change)`."""
    counts = outcomes.value_counts()
    others = ", ".join(
        f"{int(counts[outcome])} {outcome}"
        for outcome in SURVIVAL_OUTCOMES
        if outcome != SURVIVES and outcome in counts
    )
    text = f"{reading}: {int(counts.get(SURVIVES, 0))} of {len(outcomes)} survive"
    return f"{text} ({others})" if others else text


def checked_outcomes(rows: pd.DataFrame, reading: str) -> pd.Series:
    """The survival outcomes of the cells the check ran on, under one reading."""
    column = f"survival_{reading}"
    if column not in rows:
        return pd.Series(dtype=object)
    outcomes = rows[column]
    return outcomes[outcomes.map(lambda value: isinstance(value, str) and value != "")]


def checked_where(rows: pd.DataFrame) -> str:
    """`toy-math at α = 0.3`: the datasets the check ran on, per alpha."""
    by_alpha = rows.groupby("alpha", sort=True)["dataset"].unique()
    return "; ".join(
        f"{', '.join(datasets)} at {format_alpha(alpha)}" for alpha, datasets in by_alpha.items()
    )


def survival_cell(rows: pd.DataFrame) -> Cell:
    """Where the exact-ablation check ran on the pair and how many cells survive it."""
    outcomes = {reading: checked_outcomes(rows, reading) for reading in SURVIVAL_READINGS}
    checked = [reading for reading, found in outcomes.items() if not found.empty]
    if not checked:
        return Cell("not checked", "na")
    where = checked_where(rows.loc[outcomes[checked[0]].index])
    readings = tuple((survival_reading_text(outcomes[r], r), "") for r in checked)
    return Cell(parts=((where, "cell-note"), *readings))


def summary_row(
    verdicts: pd.DataFrame,
    tests: pd.DataFrame,
    pair: str,
    method: str,
    spec: Mapping,
    alpha: float,
    neutral: bool,
) -> Row:
    rows = verdicts[verdicts["pair"] == pair]
    verdicts_or_null = (
        identity_cell(verdicts, tests, pair, alpha)
        if spec.get("control") == "identity"
        else verdicts_cell(verdicts, pair, alpha, neutral)
    )
    return Row(
        [
            Cell(parts=((pair_label(pair, method), ""), (pair_role(spec), "cell-note"))),
            verdicts_or_null,
            calibration_cell(rows),
            survival_cell(rows),
        ]
    )


def summary_table(
    verdicts: pd.DataFrame,
    tests: pd.DataFrame,
    pairs: Mapping[str, str],
    specs: Mapping[str, Mapping],
    datasets: Sequence[str],
    alpha: float,
    *,
    neutral: bool = False,
) -> Table:
    """One row per enabled pair (`pairs`: pair -> method, `Study.pairs`; `specs`: the
    config's `pairs`), the study pairs first, then their controls and seed replicates."""
    n_results = len(datasets) * len(HEADLINE_METRICS)
    return Table(
        columns=[
            "pair",
            f"verdicts at {format_alpha(alpha)} (of {n_results} results each)",
            "calibration",
            "exact ablation",
        ],
        rows=[
            summary_row(verdicts, tests, pair, method, specs[pair], alpha, neutral)
            for pair, method in study_pairs_first(pairs, specs).items()
        ],
        caption="Did post-training change the circuit, beyond confidence, and does it "
        "survive the controls?",
        notes=[NOTE],
        id="summary-table",
        css="summary",
    )
