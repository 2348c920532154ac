"""The headline findings: each headline metric's change under the calibrated reading
(target_unit), beside the paper's loss, ce_unit and the window loss, with the verdict the
workflow gave it (`circuitry.analysis.verdicts`), at one alpha and across alphas (the paper's
Table 1 layout)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pandas as pd
from markupsafe import Markup

from circuitry.analysis.metrics import HEADLINE_METRICS, METRICS
from circuitry.analysis.results import pair_label
from circuitry.analysis.verdicts import (
    AGAINST,
    CONSISTENT,
    EXPLAINED,
    NO_CHANGE,
    NOT_ROBUST,
    SAME_WINDOW,
    SIGNIFICANCE_LEVEL,
    UNCALIBRATED,
    VERDICTS,
)
from circuitry.display import (
    MISSING,
    arrow,
    format_alpha,
    format_number,
    format_percent,
    is_missing,
    significance_mark,
)
from circuitry.paths import PAPER_CONDITION
from circuitry.report.blocks import Cell, Row, Table

SIGNIFICANCE_LEGEND = (
    "Significance from Benjamini–Hochberg q-values within each pair's families of tests "
    "(primary: the headline metrics under the paper's loss on each model's own answer; "
    "secondary: every other loss, comparison and variant; confidence: the window "
    "diagnostics): "
    "* q < 0.05, ** q < 0.01, *** q < 0.001."
)


EXPECTATION_NOTE = "Expected after RL (the paper): intensity ↑, entropy ↑, kurtosis ↓, diversity ↑."
VERDICT_CSS = {
    CONSISTENT: "expected sig",
    AGAINST: "opposite sig",
    EXPLAINED: "confidence",
    NOT_ROBUST: "not-robust",
    NO_CHANGE: "ns",
    UNCALIBRATED: "uncalibrated",
    SAME_WINDOW: "na",
}


VERDICT_LEGEND = Markup(
    "Verdicts: "
    '<span class="part expected sig">consistent with the paper</span> significant under the '
    "paper's loss (ce) and under the calibrated reading (target_unit), both the way the "
    "paper expects; "
    '<span class="part opposite sig">against the paper</span> the same, both the other way; '
    '<span class="part confidence">explained by confidence</span> significant under ce, the '
    "calibrated reading does not agree (not significant, or the other way), and the window "
    "loss moved the matching way (Wilcoxon q < 0.05 or a bootstrap 95% CI of its mean "
    "change that excludes 0; for intensity the same sign as the change, for the other "
    "metrics either way); "
    '<span class="part not-robust">not robust to the confidence control</span> significant '
    "under ce, the calibrated reading does not agree, and the window loss did not move the "
    "matching way; "
    '<span class="part ns">no change</span> not significant under ce; '
    '<span class="part uncalibrated">uncalibrated</span> the calibrated reading failed its '
    "known-answer checks in this run, or none ran (see Calibration); "
    '<span class="part na">same window</span> every window equals a smaller α\'s.'
)


HEADLINE_CELL_NOTE = (
    "Each cell: calibrated, the change under target_unit (the confidence-free reading, "
    "proven on known answers: see Calibration) and its q; ce, the change under the paper's "
    "loss; unit, the change under ce_unit (biased by the model's temperature); loss, the "
    "change of the window's mean cross-entropy (negative: the tuned model is surer of its "
    "answer); then the verdict; where the check ran, whether its direction survives exact "
    "ablation (the same metric built from the true loss change of removing each edge of a "
    "random edge sample: survives, same direction but not significant, or opposite); and a "
    "note where one applies. Intensity changes are "
    "geometric means of per-sample ratios. Hover a cell for every q, the window loss's "
    "bootstrap CI and the Spearman correlation between the per-sample intensity and loss "
    "changes."
)


# the readings whose survival under exact ablation a headline cell records, the calibrated first
SURVIVAL_READINGS = ("calibrated", "ce")

PIPELINE_CHECK_NOTE = (
    "This study runs on the embedded toy: tiny character-level models on synthetic "
    "arithmetic, trained for minutes. It checks that the pipeline works end to end; its "
    "results are not evidence about RL at scale, so its verdicts are shown without the "
    "colours of confirmation or refutation."
)


def paper_tests(tests: pd.DataFrame) -> pd.DataFrame:
    """The circuit-metric tests under the paper's loss, each model on its own answer."""
    return tests[
        (tests["loss"] == PAPER_CONDITION["loss"])
        & (tests["comparison"] == "own")
        & tests["metric"].isin(list(METRICS))
    ]


def tests_index(tests: pd.DataFrame) -> dict[tuple[str, str, float, str], dict]:
    """Rows of the paper-condition tests keyed by (pair, dataset, alpha, metric)."""
    return {
        (row["pair"], row["dataset"], float(row["alpha"]), row["metric"]): row
        for row in paper_tests(tests).to_dict("records")
    }


def verdict_index(verdicts: pd.DataFrame) -> dict[tuple[str, str, float, str], dict]:
    """Headline verdict rows keyed by (pair, dataset, alpha, metric)."""
    return {
        (row["pair"], row["dataset"], float(row["alpha"]), row["metric"]): row
        for row in verdicts.to_dict("records")
    }


def is_pipeline_check(config: Mapping) -> bool:
    """Whether every dataset is the embedded toy's: the study checks the pipeline only."""
    return all(spec["source"] == "toy" for spec in config["datasets"].values())


def headline_pairs(pairs: Mapping[str, str], specs: Mapping[str, Mapping]) -> dict[str, str]:
    """The study's own pairs (no controls, no seed replicates) -> method, in config order:
    `pairs` (enabled pair -> method, `Study.pairs`) narrowed by their `specs` (the config's
    `pairs`)."""
    return {
        p: method
        for p, method in pairs.items()
        if not specs[p].get("control") and not specs[p].get("replicate_of")
    }


def study_pairs_first(pairs: Mapping[str, str], specs: Mapping[str, Mapping]) -> dict[str, str]:
    """`pairs` (pair -> method) with the study's own pairs first, then their controls and
    seed replicates, each in config order."""
    return {**headline_pairs(pairs, specs), **pairs}


def verdict(row: Mapping | None) -> str:
    """`expected`/`opposite` (significant, q < 0.05, that way), `ns`, or `na` (no change)."""
    if row is None or is_missing(row["change"]) or row["as_expected"] is None:
        return "na"
    if is_missing(row["q"]) or row["q"] >= SIGNIFICANCE_LEVEL:
        return "ns"
    return "expected" if row["as_expected"] else "opposite"


def cell_css(row: Mapping | None, neutral: bool = False) -> str:
    """CSS classes: direction relative to the expectation (`neutral` on a pipeline check),
    and significance."""
    if row is None or row["as_expected"] is None or is_missing(row["change"]):
        return "na"
    direction = "neutral" if neutral else "expected" if row["as_expected"] else "opposite"
    significant = not is_missing(row["q"]) and row["q"] < SIGNIFICANCE_LEVEL
    return f"{direction} {'sig' if significant else 'ns'}"


def change_text(row: Mapping) -> str:
    """Arrow, percent change (absolute change when no percent exists) and significance marks."""
    amount = row["change_pct"]
    shown = format_percent(amount) if not is_missing(amount) else format_number(row["change"])
    return f"{arrow(row['change'])} {shown}{significance_mark(row['q'])}".strip()


def metric_label(metric: str) -> str:
    spec = METRICS[metric]
    expected = "↑" if spec.expected > 0 else "↓"
    return f"{spec.quantity} ({spec.variant}; expected {expected})"


def headline_rows(
    pairs: Mapping[str, str], datasets: Sequence[str], cell: Callable[[str, str, str], Cell]
) -> list[Row]:
    """Table 1's rows: dataset x headline metric, one `cell(pair, dataset, metric)` per pair."""
    return [
        Row(
            [Cell(metric_label(metric))] + [cell(pair, dataset, metric) for pair in pairs],
            group=dataset,
        )
        for dataset in datasets
        for metric in HEADLINE_METRICS
    ]


def reading_text(label: str, cell: Mapping, prefix: str) -> str:
    """`label ↑ +12.3%**`: one reading (calibrated, ce, unit or loss) of a headline cell."""
    change, pct, q = (cell.get(f"{prefix}_{c}") for c in ("change", "change_pct", "q"))
    if is_missing(change):
        return f"{label} {MISSING}"
    shown = format_percent(pct) if not is_missing(pct) else format_number(change)
    return f"{label} {arrow(change)} {shown}{significance_mark(q)}"


def lead_text(cell: Mapping) -> str:
    """The calibrated reading with its q: `calibrated ↑ +12.3%* (q = 0.0120)`."""
    text = reading_text("calibrated", cell, "calibrated")
    q = cell.get("calibrated_q")
    return text if is_missing(q) else f"{text} (q = {format_number(q)})"


def verdict_css(verdict_name: str, neutral: bool) -> str:
    """The verdict's colour; `neutral` (a pipeline check) greys confirmation and refutation."""
    if neutral and verdict_name in (CONSISTENT, AGAINST):
        return "neutral"
    return VERDICT_CSS[verdict_name]


def headline_tooltip(cell: Mapping) -> str:
    parts = [
        f"target_unit: q = {format_number(cell['calibrated_q'])}",
        f"ce: q = {format_number(cell['ce_q'])}",
        f"ce_unit: q = {format_number(cell['unit_q'])}",
        f"window loss: q = {format_number(cell['loss_q'])}, bootstrap 95% CI of the mean "
        f"change [{format_number(cell['loss_ci_low'])}, {format_number(cell['loss_ci_high'])}]",
        f"n = {format_number(cell['n'])}",
        f"calibration {cell['calibration']}",
    ]
    if not is_missing(cell["loss_spearman"]):
        parts.append(f"Spearman(Δ metric, Δ loss) = {format_number(cell['loss_spearman'])}")
    return "; ".join(parts)


def headline_cell(cell: Mapping | None, neutral: bool = False) -> Cell:
    """The calibrated reading first, then ce, ce_unit and the window loss of one headline
    cell, its verdict and its note (if any)."""
    if cell is None:
        return Cell(MISSING, "na", "no result for this condition")
    if cell["verdict"] == SAME_WINDOW:
        return Cell(f"same window as {format_alpha(cell['duplicate_of'])}", "na")
    parts = (
        (lead_text(cell), ""),
        (reading_text("ce", cell, "ce"), ""),
        (reading_text("unit", cell, "unit"), ""),
        (reading_text("loss", cell, "loss"), ""),
        (cell["verdict"], verdict_css(cell["verdict"], neutral)),
    )
    survived = survival_text(cell)
    if survived:
        parts += ((survived, "cell-note"),)
    if cell["note"]:
        parts += ((f"note: {cell['note']}", "cell-note"),)
    return Cell(parts=parts, title=headline_tooltip(cell))


def survival_text(cell: Mapping) -> str:
    """`exact ablation: survives (calibrated +1.2%*); ...` where the survival check ran on
    this cell (`circuitry.analysis.survival`), else empty."""
    checks = []
    for name in SURVIVAL_READINGS:
        result = cell.get(f"survival_{name}")
        if isinstance(result, str) and result:
            change = format_percent(cell[f"exact_{name}_change_pct"])
            checks.append(f"{result} ({name} {change}{significance_mark(cell[f'exact_{name}_q'])})")
    return f"exact ablation: {'; '.join(checks)}" if checks else ""


def headline_table(
    verdicts: pd.DataFrame,
    pairs: Mapping[str, str],
    datasets: Sequence[str],
    alpha: float,
    *,
    neutral: bool = False,
    table_id: str = "headline-table",
) -> Table:
    """The paper's Table 1 layout at one alpha: dataset x headline metric rows, pair columns,
    each cell the change under every reading, the window-loss change and the verdict."""
    index = verdict_index(verdicts)
    rows = headline_rows(
        pairs,
        datasets,
        lambda pair, dataset, metric: headline_cell(
            index.get((pair, dataset, float(alpha), metric)), neutral
        ),
    )
    return Table(
        columns=["metric", *(pair_label(p, m) for p, m in pairs.items())],
        rows=rows,
        caption=f"Change from base to tuned at {format_alpha(alpha)}, in percent of the base value",
        notes=[HEADLINE_CELL_NOTE, VERDICT_LEGEND, SIGNIFICANCE_LEGEND, EXPECTATION_NOTE],
        id=table_id,
        css="headline",
    )


def sweep_part(cell: Mapping | None, neutral: bool) -> tuple[str, str]:
    if cell is None:
        return MISSING, "na"
    if cell["verdict"] == SAME_WINDOW:
        return f"= {format_alpha(cell['duplicate_of'])}", "na"
    return reading_text("ce", cell, "ce"), verdict_css(cell["verdict"], neutral)


def alpha_sweep_cell(
    index: Mapping, pair: str, dataset: str, metric: str, alphas, neutral: bool
) -> Cell:
    cells = [index.get((pair, dataset, float(alpha), metric)) for alpha in alphas]
    verdicts = [cell["verdict"] for cell in cells if cell is not None]
    title = ", ".join(f"{verdicts.count(v)} {v}" for v in VERDICTS if v in verdicts)
    return Cell(parts=tuple(sweep_part(cell, neutral) for cell in cells), title=title)


def alpha_sweep_table(
    verdicts: pd.DataFrame,
    pairs: Mapping[str, str],
    datasets: Sequence[str],
    alphas: Sequence,
    *,
    neutral: bool = False,
) -> Table:
    """Every headline result at every alpha in one cell: is the conclusion stable in alpha?"""
    index = verdict_index(verdicts)
    rows = headline_rows(
        pairs,
        datasets,
        lambda pair, dataset, metric: alpha_sweep_cell(
            index, pair, dataset, metric, alphas, neutral
        ),
    )
    return Table(
        columns=["metric", *(pair_label(p, m) for p, m in pairs.items())],
        rows=rows,
        caption="Headline changes under the paper's loss at every alpha, left to right "
        + " | ".join(format_alpha(a) for a in alphas),
        notes=[
            "Coloured by each alpha's verdict; a duplicate window says which alpha it repeats.",
            VERDICT_LEGEND,
            SIGNIFICANCE_LEGEND,
        ],
        id="alpha-sweep-table",
        css="headline sweep",
    )


def verdict_counts(verdicts: pd.DataFrame, pair: str, alpha: float) -> dict[str, int]:
    """How many of a pair's headline cells at `alpha` get each verdict that any gets, in
    `VERDICTS` order."""
    rows = verdicts[(verdicts["pair"] == pair) & (verdicts["alpha"] == float(alpha))]
    counts = rows["verdict"].value_counts()
    return {v: int(counts[v]) for v in VERDICTS if v in counts}


def alpha_choice(alpha: float, alphas: Sequence[float]) -> str:
    """Why the main table shows `alpha`, and where the other alphas are."""
    if alpha == max(alphas):
        reason = (
            f"The main table uses {format_alpha(alpha)}, the longest answer window of this run: "
            "its EAP loss averages over the most answer tokens, so per-problem scores are the "
            "least noisy and cover the most of each answer."
        )
    else:
        reason = f"The main table uses {format_alpha(alpha)}, as chosen for this run."
    return (
        f"{reason} The same table at every other α follows, and the α-sweep table shows all "
        "of them side by side, so a conclusion that holds at one α only is easy to spot."
    )
