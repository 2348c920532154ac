"""The metrics' definitions, whether each variant reaches its headline metric's verdict,
and every test under the paper's loss."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from circuitry.analysis.metrics import METRICS, metric_definitions
from circuitry.analysis.results import pair_label
from circuitry.display import MISSING, format_number, format_percent, is_missing
from circuitry.paths import PAPER_CONDITION
from circuitry.report.blocks import Cell, Row, Table
from circuitry.report.findings import (
    SIGNIFICANCE_LEGEND,
    cell_css,
    change_text,
    tests_index,
    verdict,
)


def definitions_table() -> Table:
    """The metric definitions of `circuitry.analysis.metrics.metric_definitions()`."""
    definitions = metric_definitions()
    rows = [
        Row(
            [
                Cell(d["name"]),
                Cell(d["quantity"]),
                Cell(d["variant"]),
                Cell(d["kind"]),
                Cell("headline" if d["headline"] else "variant"),
                Cell("↑" if d["expected"] > 0 else "↓"),
                Cell(d["definition"]),
            ]
        )
        for d in definitions.to_dict("records")
    ]
    return Table(
        columns=["metric", "quantity", "variant", "kind", "role", "expected", "definition"],
        rows=rows,
        caption="Metric definitions (w: a sample's EAP scores on the real edges)",
        id="definitions",
    )


def variant_agreement(tests: pd.DataFrame) -> pd.DataFrame:
    """One record per row of the tests table: pair, metric, its verdict, and whether that
    equals the verdict of the headline metric of the same quantity in the same
    pair x dataset x alpha condition.
    """
    headline_of = {spec.quantity: name for name, spec in METRICS.items() if spec.headline}
    index = tests_index(tests)
    records = []
    for (pair, dataset, alpha, metric), row in index.items():
        headline = index.get((pair, dataset, alpha, headline_of[METRICS[metric].quantity]))
        records.append(
            {
                "pair": pair,
                "metric": metric,
                "verdict": verdict(row),
                "agrees": headline is not None and verdict(headline) == verdict(row),
            }
        )
    return pd.DataFrame(records, columns=["pair", "metric", "verdict", "agrees"])


def variant_cell(group: pd.DataFrame, headline: bool, neutral: bool) -> Cell:
    if group.empty:
        return Cell(MISSING, "na")
    n = len(group)
    expected = int((group["verdict"] == "expected").sum())
    opposite = int((group["verdict"] == "opposite").sum())
    text = f"✓{expected} ✗{opposite} of {n}"
    if not headline:
        text += f" · agrees {int(group['agrees'].sum())}/{n}"
    css = "expected sig" if expected > opposite else "opposite sig" if opposite > expected else ""
    if neutral and css:
        css = "neutral"
    return Cell(text, css)


def variant_table(tests: pd.DataFrame, pairs: Mapping[str, str], neutral: bool) -> Table:
    """Every metric (headline and variants, grouped by quantity) summarised per pair."""
    agreement = variant_agreement(tests)
    by_quantity: dict[str, list[str]] = {}
    for name, spec in METRICS.items():
        by_quantity.setdefault(spec.quantity, []).append(name)
    rows = []
    for quantity, names in by_quantity.items():
        for name in sorted(names, key=lambda n: not METRICS[n].headline):
            spec = METRICS[name]
            label = f"{name}: {spec.variant}" + (" (headline)" if spec.headline else "")
            cells = [
                variant_cell(
                    agreement[(agreement["pair"] == pair) & (agreement["metric"] == name)],
                    spec.headline,
                    neutral,
                )
                for pair in pairs
            ]
            rows.append(Row([Cell(label), *cells], group=quantity))
    return Table(
        columns=["metric", *(pair_label(p, m) for p, m in pairs.items())],
        rows=rows,
        caption="Headline and variant metrics over all datasets x alphas",
        notes=[
            "✓ k: conditions (dataset x alpha) with a change the way the paper expects and "
            "q < 0.05; ✗ k: significant against the expectation; of N: conditions. "
            "agrees: conditions where the variant reaches the same verdict (✓, ✗ or not "
            "significant) as the headline metric of the same quantity.",
        ],
        id="variant-table",
    )


def variant_conclusion(tests: pd.DataFrame) -> list[str]:
    """One sentence per quantity with variants: how often variants agree with the headline."""
    agreement = variant_agreement(tests)
    sentences = []
    for name, spec in METRICS.items():
        if not spec.headline:
            continue
        variants = [v for v, s in METRICS.items() if s.quantity == spec.quantity and not s.headline]
        rows = agreement[agreement["metric"].isin(variants)]
        if rows.empty:
            continue
        sentences.append(
            f"{spec.quantity}: the variants ({', '.join(variants)}) reach the same verdict "
            f"(significant as expected, significant against, or not significant) as the "
            f"headline metric ({name}) in {int(rows['agrees'].sum())} of {len(rows)} "
            "comparisons (each variant in each pair x dataset x alpha condition)."
        )
    return sentences


ALL_TESTS_COLUMNS = (
    ("pair", "pair"),
    ("dataset", "dataset"),
    ("alpha", "α"),
    ("family", "family"),
    ("metric", "metric"),
    ("n", "n"),
    ("base", "base"),
    ("tuned", "tuned"),
    ("change_pct", "change"),
    ("ci_pct_low", "95% CI low"),
    ("ci_pct_high", "95% CI high"),
    ("p", "p"),
    ("q", "q"),
    ("effect_size", "effect size"),
    ("loss_spearman", "Spearman with Δ loss"),
    ("expected", "expected"),
    ("note", "note"),
)


def all_tests_cell(row: Mapping, column: str, neutral: bool) -> Cell:
    value = row[column]
    if column == "change_pct":
        return Cell(change_text(row), cell_css(row, neutral))
    if column in ("ci_pct_low", "ci_pct_high"):
        return Cell(format_percent(value))
    if column in ("pair", "dataset", "alpha", "family", "metric", "expected"):
        return Cell(MISSING if is_missing(value) else str(value))
    if column == "note":
        return Cell(value if isinstance(value, str) else "")
    return Cell(format_number(value))


def all_tests_table(tests: pd.DataFrame, neutral: bool) -> Table:
    """The tests under the paper's loss on each model's own answer, window diagnostics
    included, one row per pair x dataset x alpha x metric (duplicate windows left out)."""
    shown = tests[
        (tests["loss"] == PAPER_CONDITION["loss"])
        & (tests["comparison"] == "own")
        & tests["duplicate_of"].isna()
    ]
    rows = [
        Row([all_tests_cell(row, column, neutral) for column, _ in ALL_TESTS_COLUMNS])
        for row in shown.to_dict("records")
    ]
    return Table(
        columns=[label for _, label in ALL_TESTS_COLUMNS],
        rows=rows,
        caption="Paired tests under the paper's loss, own answers (every loss, comparison "
        "and duplicate window: results/stats/tests.csv)",
        notes=[
            "change and CI in percent of the base value (intensity: geometric mean of the "
            "per-sample ratios); effect size: matched-pairs rank-biserial correlation "
            "(per-sample metrics only); Spearman: across samples, between the metric's "
            "change and the window loss's change.",
            SIGNIFICANCE_LEGEND,
        ],
        id="all-tests",
        css="compact",
    )
