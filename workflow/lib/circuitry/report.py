"""The HTML report: gathers the study's outputs, builds tables and sections, renders one file.

Three layers, each usable on its own:

1. *Inputs* (`circuitry.results`): `Layout` knows where every stage writes; `load_study`
   reads those files into a `Study`.
2. *Builders.* Small functions turn results into report blocks (`Table`, `Figure`,
   `Text`, `Code`, `Details`, `Examples`) grouped into `Section`s. They take data, not
   paths, so tests feed them known numbers.
3. *Rendering.* `render_report` fills the jinja2 template (autoescape on: completions
   and questions are untrusted text) with the sections; figures are embedded as base64
   `data:` URIs, so `report.html` is one self-contained file.

Optional sections (training curves now, others later) are just more `Section`s: pass
them as `extra_sections` to `build_sections`; the template renders any block list.
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import ClassVar

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from circuitry.config import control_pairs, enabled_pairs, models_in_use, replicate_groups
from circuitry.fidelity import DEVIATIONS, configured, effects
from circuitry.io import write_text
from circuitry.metrics import METRICS, ROLES, metric_definitions
from circuitry.pairing import cut_length
from circuitry.paths import PAPER_CONDITION, edge_change_figure_name
from circuitry.provenance import Provenance
from circuitry.results import (
    EXAMPLE_CHARS,
    N_EXAMPLES,
    Example,
    Study,
    pair_label,
    require,
)
from circuitry.stats import N_RESAMPLES, SEED, WINDOW_LOSS
from circuitry.verdicts import (
    AGAINST,
    CONSISTENT,
    EXPLAINED,
    NO_CHANGE,
    SAME_WINDOW,
    SIGNIFICANCE_LEVEL,
    headline_verdicts,
    replicate_agreement,
)

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "report" / "report.html.j2"
HEADLINE_METRICS = tuple(name for name, spec in METRICS.items() if spec.headline)
SIGNIFICANCE_MARKS = ((0.001, "***"), (0.01, "**"), (0.05, "*"))
MISSING = "–"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# ---------------------------------------------------------------- layout and inputs

# ---------------------------------------------------------------- blocks


@dataclass
class Cell:
    """A table cell: text (escaped), optional CSS class and tooltip; `parts` for mixed colours."""

    text: str = ""
    css: str = ""
    title: str = ""
    parts: tuple[tuple[str, str], ...] = ()  # (text, css) spans shown instead of `text`


@dataclass
class Row:
    cells: list[Cell]
    group: str | None = None  # a group header row is shown when this changes


@dataclass
class Table:
    kind: ClassVar[str] = "table"
    columns: list[str]
    rows: list[Row]
    caption: str = ""
    notes: list[str | Markup] = field(default_factory=list)
    id: str = ""
    css: str = ""


@dataclass
class Figure:
    kind: ClassVar[str] = "figure"
    src: str  # data: URI
    caption: str
    alt: str


@dataclass
class Text:
    kind: ClassVar[str] = "text"
    paragraphs: list[str | Markup]


@dataclass
class Code:
    kind: ClassVar[str] = "code"
    text: str
    caption: str = ""


@dataclass
class Details:
    """A collapsible group of blocks (closed unless `open`)."""

    kind: ClassVar[str] = "details"
    summary: str
    blocks: list
    open: bool = False


@dataclass
class Examples:
    kind: ClassVar[str] = "examples"
    examples: list[Example]


@dataclass
class Section:
    """A titled part of the report; its subsections appear nested in the table of contents."""

    id: str
    title: str
    blocks: list = field(default_factory=list)
    subsections: list[Section] = field(default_factory=list)


# ---------------------------------------------------------------- formatting


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def format_number(value, digits: int = 3) -> str:
    """`digits` significant digits, thousands separated; very small values in e-notation."""
    if is_missing(value):
        return MISSING
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return f"{int(value):,}"
    value = float(value)
    if value == 0:
        return "0"
    if abs(value) < 1e-3:
        return f"{value:.{digits - 1}e}"
    rounded = float(f"{value:.{digits}g}")
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:,.{decimals}f}"


def format_percent(value, digits: int = 3) -> str:
    """A signed percentage with `digits` significant digits: `+12.3%`."""
    if is_missing(value):
        return MISSING
    sign = "+" if value > 0 else ""
    return f"{sign}{format_number(value, digits)}%"


def format_alpha(alpha) -> str:
    return f"α = {alpha}"


def significance_mark(q) -> str:
    """`***` q < 0.001, `**` q < 0.01, `*` q < 0.05, else nothing (also for a missing q)."""
    if is_missing(q):
        return ""
    return next((mark for level, mark in SIGNIFICANCE_MARKS if q < level), "")


def arrow(change) -> str:
    if is_missing(change):
        return MISSING
    return "↑" if change > 0 else "↓" if change < 0 else "→"


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
    NO_CHANGE: "ns",
    SAME_WINDOW: "na",
}
VERDICT_LEGEND = Markup(
    "Verdicts: "
    '<span class="part expected sig">consistent with the paper</span> significant under the '
    "paper's loss (ce) the way the paper expects, and not explained by confidence; "
    '<span class="part opposite sig">against the paper</span> the same, the other way; '
    '<span class="part confidence">explained by confidence</span> significant under ce but '
    "not the same way under the confidence-free loss (ce_unit), while the window loss "
    "changed significantly the matching way (for intensity: the same sign); "
    '<span class="part ns">no change</span> not significant under ce; '
    '<span class="part na">same window</span> every window equals a smaller α\'s.'
)
HEADLINE_CELL_NOTE = (
    "Each cell: ce, the change under the paper's loss; unit, the change under ce_unit "
    "(every window position's logit gradient of unit length); loss, the change of the "
    "window's mean cross-entropy (negative: the tuned model is surer of its answer); then "
    "the verdict. Intensity changes are geometric means of per-sample ratios. Hover a cell "
    "for values, q and the Spearman correlation between the per-sample intensity and "
    "loss changes."
)
PIPELINE_CHECK_NOTE = (
    "This study runs on the embedded toy: tiny character-level models on synthetic "
    "arithmetic, trained for minutes. It checks that the pipeline works end to end; its "
    "results are not evidence about RL at scale, so its verdicts are shown without the "
    "colours of confirmation or refutation."
)


# ---------------------------------------------------------------- table builders


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
    return all(spec.get("source") == "toy" for spec in config["datasets"].values())


def headline_pairs(config: Mapping) -> dict[str, str]:
    """The study's own pairs (no controls, no seed replicates) -> method, in config order."""
    return {
        p: config["pairs"][p]["method"]
        for p in enabled_pairs(config)
        if not config["pairs"][p].get("control") and not config["pairs"][p].get("replicate_of")
    }


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
    """`label ↑ +12.3%**`: one reading (ce, unit or loss) of a headline cell."""
    change, pct, q = (cell.get(f"{prefix}_{c}") for c in ("change", "change_pct", "q"))
    if is_missing(change):
        return f"{label} {MISSING}"
    shown = format_percent(pct) if not is_missing(pct) else format_number(change)
    return f"{label} {arrow(change)} {shown}{significance_mark(q)}"


def verdict_css(verdict_name: str, neutral: bool) -> str:
    """The verdict's colour; `neutral` (a pipeline check) greys confirmation and refutation."""
    if neutral and verdict_name in (CONSISTENT, AGAINST):
        return "neutral"
    return VERDICT_CSS[verdict_name]


def headline_tooltip(cell: Mapping) -> str:
    parts = [
        f"ce: q = {format_number(cell['ce_q'])}",
        f"ce_unit: q = {format_number(cell['unit_q'])}",
        f"window loss: q = {format_number(cell['loss_q'])}",
        f"n = {format_number(cell['n'])}",
    ]
    if not is_missing(cell["loss_spearman"]):
        parts.append(f"Spearman(Δ metric, Δ loss) = {format_number(cell['loss_spearman'])}")
    return "; ".join(parts)


def headline_cell(cell: Mapping | None, neutral: bool = False) -> Cell:
    """ce, ce_unit and window-loss changes of one headline cell, then its verdict."""
    if cell is None:
        return Cell(MISSING, "na", "no result for this condition")
    if cell["verdict"] == SAME_WINDOW:
        return Cell(f"same window as {format_alpha(cell['duplicate_of'])}", "na")
    parts = (
        (reading_text("ce", cell, "ce"), ""),
        (reading_text("unit", cell, "unit"), ""),
        (reading_text("loss", cell, "loss"), ""),
        (cell["verdict"], verdict_css(cell["verdict"], neutral)),
    )
    return Cell(parts=parts, title=headline_tooltip(cell))


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
    each cell the change under both losses, the window-loss change and the verdict."""
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
    title = ", ".join(
        f"{verdicts.count(v)} {v}" for v in (CONSISTENT, EXPLAINED, AGAINST, NO_CHANGE, SAME_WINDOW)
    )
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


def definitions_table() -> Table:
    """The metric definitions of `circuitry.metrics.metric_definitions()`."""
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


def funnel_table(summaries: Mapping[str, dict], alphas: Sequence) -> Table:
    """The pairing funnel per dataset: how many problems each filter removed, and the windows."""
    reasons: list[str] = []
    for summary in summaries.values():
        reasons += [f["reason"] for f in summary["filters"] if f["reason"] not in reasons]
    rows = []
    for dataset, summary in summaries.items():
        removed = {f["reason"]: f["removed"] for f in summary["filters"]}
        reference = Fraction(summary["reference_length_fraction"])
        analysed = Cell(
            format_number(summary["n_selected"]),
            "warn" if summary.get("too_few") else "",
            "fewer problems than filter.num_samples" if summary.get("too_few") else "",
        )
        rows.append(
            Row(
                [
                    Cell(dataset),
                    Cell(format_number(summary["n_joined"])),
                    *(Cell(format_number(summary["n_correct"][role])) for role in ROLES),
                    *(Cell(format_number(removed.get(reason))) for reason in reasons),
                    analysed,
                    Cell(format_number(float(reference))),
                    Cell(" / ".join(str(cut_length(a, summary)) for a in alphas)),
                ]
            )
        )
    return Table(
        columns=[
            "dataset",
            "problems (joined)",
            "base correct",
            "tuned correct",
            *(f"− {reason}" for reason in reasons),
            "analysed",
            "T (tokens)",
            "window tokens at " + " / ".join(format_alpha(a) for a in alphas),
        ],
        rows=rows,
        caption="Sample filtering: problems removed by each step, in order",
        notes=[
            "T: reference answer length, the smaller of the two models' mean answer lengths "
            "over the problems both answered correctly; window: the answer tokens EAP "
            "scores, max(1, ⌊α·T⌋)."
        ],
    )


def accuracy_table(
    provenance: Mapping[tuple[str, str], dict], models: Sequence[str], datasets: Sequence[str]
) -> Table:
    """Each model's accuracy (graded with math-verify) on each dataset."""
    rows = []
    for model in models:
        cells = [Cell(model)]
        for dataset in datasets:
            record = provenance[model, dataset]
            cells.append(
                Cell(
                    format_percent_plain(100 * record["accuracy"]),
                    title=f"n = {record['n']}, {record.get('dtype', '?')} on "
                    f"{record.get('device', '?')}",
                )
            )
        rows.append(Row(cells))
    return Table(
        columns=["model", *datasets],
        rows=rows,
        caption="Accuracy of greedy answers (all problems of each dataset)",
        id="accuracy",
    )


def agreement_table(
    provenance: Mapping[tuple[str, str], dict],
    models: Sequence[str],
    datasets: Sequence[str],
    threshold: float,
) -> Table:
    """Teacher-forcing agreement of each model with its own answers on each dataset."""
    rows = []
    for model in models:
        cells = [Cell(model)]
        for dataset in datasets:
            forced = provenance[model, dataset]["teacher_forcing"]
            cells.append(
                Cell(
                    f"{100 * forced['agreement']:.2f}%",
                    css="warn" if forced["agreement"] < threshold else "",
                    title=f"{forced['n_rows_disagreeing']} rows depart; "
                    f"{forced['n_tokens']} completion tokens",
                )
            )
        rows.append(Row(cells))
    note = (
        "The share of completion tokens that the model's own forward (the one EAP reads "
        "them with: same dtype and device) predicts as its argmax given their prefix. "
        f"Below {threshold:.0%} (generation.agreement_threshold, highlighted) EAP "
        "attributes text this forward would not have written; hover a cell for the "
        "number of rows that depart."
    )
    return Table(
        columns=["model", *datasets],
        rows=rows,
        caption="Teacher-forcing agreement with the model's own answers",
        notes=[note],
        id="agreement",
    )


def format_percent_plain(value) -> str:
    return MISSING if is_missing(value) else f"{format_number(value)}%"


# ---------------------------------------------------------------- methods and provenance


def model_source(spec: Mapping) -> str:
    if spec.get("train"):
        train = spec["train"]
        start = f"from {train['init']}" if train.get("init") else "from scratch"
        return (
            f"trained by the workflow: {train['method'].upper()} {start} on "
            f"{', '.join(train['data'])} ({train['steps']} steps, seed {train['seed']})"
        )
    if spec.get("hub_id"):
        return f"hub {spec['hub_id']} @ {spec.get('revision', 'main')}"
    return f"local checkpoint {spec.get('path')}"


def answers_origin(records: Mapping[str, dict]) -> str:
    """Where a model's answers (its generation records by dataset) come from: generated
    by the workflow (with which backend), or imported (the format, and each file's sha256
    to 12 digits)."""
    imported = {d: r for d, r in records.items() if r.get("generated") == "imported"}
    if not imported:
        backends = sorted({r["generated"] for r in records.values() if r.get("generated")})
        if backends:
            return f"generated ({', '.join(backends)} backend)"
        return "generated" if any(records.values()) else MISSING
    file_format = next(iter(imported.values()))["format"]
    hashes = ", ".join(f"{d} {r['sha256'][:12]}" for d, r in imported.items())
    return f"imported ({file_format}; sha256 {hashes})"


def models_table(config: Mapping, provenance: Mapping[tuple[str, str], dict]) -> Table:
    """Models in use: where they come from, the revision that ran (a local model's file
    fingerprint), template, token limit, and whether their answers were imported."""
    datasets = list(config["datasets"])
    rows = []
    for model in models_in_use(config):
        spec = config["models"][model]
        record = provenance.get((model, datasets[0]), {})
        rows.append(
            Row(
                [
                    Cell(model),
                    Cell(model_source(spec)),
                    Cell(str(record.get("source", MISSING))),
                    Cell(str(record.get("revision") or record.get("fingerprint") or MISSING)),
                    Cell(spec["template"]),
                    Cell(format_number(spec["max_new_tokens"])),
                    Cell(f"{record.get('dtype', MISSING)} / {record.get('device', MISSING)}"),
                    Cell(answers_origin({d: provenance.get((model, d), {}) for d in datasets})),
                ]
            )
        )
    return Table(
        columns=[
            "model",
            "configured source",
            "loaded from",
            "revision or fingerprint",
            "template",
            "max_new_tokens",
            "dtype / device",
            "answers",
        ],
        rows=rows,
        caption="Models",
        id="models",
    )


def pairs_table(config: Mapping) -> Table:
    rows = [
        Row(
            [
                Cell(pair),
                Cell(config["pairs"][pair]["method"]),
                Cell(config["pairs"][pair]["base"]),
                Cell(config["pairs"][pair]["tuned"]),
            ]
        )
        for pair in enabled_pairs(config)
    ]
    return Table(["pair", "method", "base", "tuned"], rows, caption="Model pairs")


def templates_table(config: Mapping) -> Table:
    used = {config["models"][m]["template"] for m in models_in_use(config)}
    rows = [
        Row(
            [
                Cell(name),
                Cell(template["format"]),
                Cell(template.get("system") or MISSING),
                Cell(template.get("user") or MISSING),
                Cell(", ".join(repr(s) for s in template.get("stop", [])) or MISSING),
            ]
        )
        for name, template in config.get("templates", {}).items()
        if name in used
    ]
    return Table(
        ["template", "format", "system", "user", "stop strings"],
        rows,
        caption="Prompt templates ({question} is replaced by the problem)",
        css="code-cells",
    )


def dataset_source(provenance: Mapping) -> str:
    """Where a dataset's rows came from, in words (and how many were read, if limited)."""
    described = describe_source(provenance)
    limit = provenance.get("limit")
    return f"{described}, first {limit} rows" if limit else described


def describe_source(provenance: Mapping) -> str:
    source = provenance.get("source")
    if source == "hub":
        config = provenance.get("hub_config")
        configs = ", ".join(config) if isinstance(config, list) else config
        return (
            f"hub {provenance.get('hub_id')} ({configs or 'default'}, split "
            f"{provenance.get('split')}) @ {provenance.get('revision')}"
        )
    if source == "url":
        return f"{provenance.get('url')} (sha256 {provenance.get('sha256')})"
    if source == "jsonl":
        return f"local file {provenance.get('path')}"
    if source == "toy":
        settings = ", ".join(f"{k} {v}" for k, v in sorted(provenance.get("toy", {}).items()))
        return f"toy generator ({settings})"
    return str(source)


def datasets_table(summaries: Mapping[str, dict]) -> Table:
    rows = []
    for dataset, summary in summaries.items():
        provenance = summary.get("provenance", {})
        dropped = summary.get("dropped") or {}
        rows.append(
            Row(
                [
                    Cell(dataset),
                    Cell(dataset_source(provenance)),
                    Cell(format_number(summary.get("n_raw"))),
                    Cell(", ".join(f"{k}: {v}" for k, v in dropped.items()) or "none"),
                    Cell(format_number(summary.get("n_kept"))),
                    Cell(summary.get("sha256", MISSING), css="hash"),
                ]
            )
        )
    return Table(
        ["dataset", "source", "rows read", "dropped", "kept", "sha256 of the normalised rows"],
        rows,
        caption="Datasets",
        id="datasets",
    )


def stats_settings(config: Mapping) -> dict:
    return {"n_resamples": N_RESAMPLES, "seed": SEED, **config.get("stats", {})}


FILTER_READINGS = {
    "exact": (
        "Bounds are inclusive and exact (T a fraction, each coefficient the decimal written "
        "in the config), and the answer window of α is cut_len = max(1, ⌊α·T⌋) tokens."
    ),
    "paper": (
        "Bounds and windows are read as the paper's code reads them (filter.mode: paper): T "
        "in floats, the bounds truncated to integers, int(coefficient·T), the balance test "
        "as difference / mean > coefficient, and the answer window of α cut_len = "
        "max(int(T·α), 1) tokens."
    ),
}


def batching_text(generation: Mapping) -> str:
    """How the answers were batched, for the methods text."""
    if generation.get("backend") == "continuous":
        return (
            "with transformers' continuous batching (paged attention: a row leaves the "
            "running batch when it ends and a waiting prompt takes its place)"
        )
    return f"in fixed left-padded batches of {generation.get('batch_size', MISSING)}"


def methods_paragraphs(config: Mapping, n_tests: int) -> list[Markup]:
    """The methods text, generated from the config (values escaped)."""
    filters = config["filter"]
    stats = stats_settings(config)
    alphas = ", ".join(str(a) for a in config["eap"]["alphas"])
    return [
        Markup(
            "Every model answers every problem greedily with its prompt template and its own "
            "<code>max_new_tokens</code> (tables below), {batching}; a completion "
            "ends at an EOS token, a stop string or the token limit. Answers are graded with "
            "<code>math-verify</code> (<code>parse</code> + <code>verify</code>) against the "
            "normalised gold answer."
        ).format(batching=batching_text(config.get("generation", {}))),
        Markup(
            "For each pair and dataset the two models' answers are joined by problem id and "
            "the problems both answered correctly are kept. With T the smaller of the two "
            "models' mean answer lengths (tokens) over those problems, a problem is dropped "
            "when its prompt has a different number of tokens for the two models, when the "
            "mean of its two answer lengths lies outside [{small}·T, {big}·T], or when its two "
            "answer lengths differ by more than {balance} of their mean. Then {n} problems are "
            "sampled with seed {seed} (all of them when fewer are left). {reading}{eos}"
        ).format(
            small=filters["small_coeff"],
            big=filters["big_coeff"],
            balance=filters["balance_coeff"],
            n=filters["num_samples"],
            seed=filters["seed"],
            reading=FILTER_READINGS[filters.get("mode", "exact")],
            eos=(
                " An answer that ended on EOS counts it in its length, as vLLM's token ids do."
                if filters.get("count_eos")
                else ""
            ),
        ),
        Markup(
            "Edge Attribution Patching on the residual graph at block granularity: forward "
            "nodes <code>input</code> (embedding), <code>a<i>l</i></code> (attention output) "
            "and <code>m<i>l</i></code> (MLP output) of each layer <i>l</i>; backward nodes "
            "<code>a<i>l</i>.q</code>, <code>a<i>l</i>.k</code>, <code>a<i>l</i>.v</code> "
            "(each projection's own copy of the residual stream), <code>m<i>l</i></code> and "
            "<code>logits</code>; an edge u → v exists when u is computed before v reads the "
            "residual stream. For each answer fraction α in {{{alphas}}} a model reads the "
            "prompt and the first cut_len tokens of its own answer (above); the loss L is its "
            "mean cross-entropy on those tokens, and edge u → v scores "
            "−Σ O<sub>u</sub> · ∂L/∂in<sub>v</sub> over positions and hidden dimensions "
            "(one forward and one backward pass per batch, accumulated in float32)."
        ).format(alphas=alphas),
        Markup(
            "Statistics, with problems paired by id. Per-sample metrics: the two-sided "
            "Wilcoxon signed-rank test on the per-sample differences, a paired BCa bootstrap "
            "95% CI ({n_resamples} resamples) and the matched-pairs rank-biserial correlation "
            "as effect size. Activation intensity is tested on the per-sample log ratios "
            "log(tuned/base), and its change is the geometric mean of the per-sample ratios "
            "(the ratio of means, which a few samples can dominate, is kept as a secondary "
            "reading). Pooled metrics (one value per model): a two-sided paired permutation "
            "test ({n_resamples} resamples) that swaps base and tuned within a problem. An α "
            "whose windows equal a smaller α's for every problem is a duplicate: reported as "
            "the same window, left out of the corrections. q-values: Benjamini–Hochberg "
            "within each family of each pair (so controls never change a study pair's "
            "q-values): primary, the headline tests under the paper's loss on own answers "
            "({n_tests} over all pairs); secondary, every other loss, comparison and variant; "
            "confidence, the window diagnostics. Every change is shown beside the change of "
            "the window's cross-entropy, with the Spearman correlation of the two across "
            "samples. Random seed {seed}."
        ).format(n_resamples=stats["n_resamples"], n_tests=n_tests, seed=stats["seed"]),
    ]


def provenance_table(provenance: Provenance) -> Table:
    git = provenance.git
    if git.commit is None:
        commit = "not a git checkout"
    else:
        commit = git.commit + (" (with uncommitted changes)" if git.dirty else "")
    items = [
        ("config hash", provenance.config_hash),
        ("git commit", commit),
        ("run date", provenance.run_date),
        ("python", provenance.python),
        ("platform", provenance.platform),
    ]
    items += [
        (f"package {name}", version or "not installed")
        for name, version in provenance.packages.items()
    ]
    return Table(
        ["", "value"],
        [Row([Cell(key), Cell(value)]) for key, value in items],
        caption="Provenance",
        id="provenance-table",
    )


def reproduce_text(provenance: Provenance) -> str:
    """The shell lines that reproduce the run: the checkout, then the snakemake command."""
    lines = []
    if provenance.git.commit:
        lines.append(f"git checkout {provenance.git.commit}")
    lines.append(provenance.command)
    return "\n".join(lines)


# ---------------------------------------------------------------- figures and sections


def data_uri(path: str | os.PathLike) -> str:
    """A PNG file as a base64 `data:` URI; fails naming the file if it is missing or not a PNG."""
    data = require(path).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{path}: not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure(path: str | os.PathLike, caption: str) -> Figure:
    return Figure(src=data_uri(path), caption=caption, alt=caption)


def pair_figure_captions(pair_text: str, datasets: Sequence[str]) -> dict[str, str]:
    captions = {
        "metrics_vs_alpha": (
            f"{pair_text}: headline metrics against α, base and tuned. Per-sample metrics: "
            "mean over the analysed problems with a 95% t-interval; diversity is one value "
            "per model."
        ),
        "diversity": (
            f"{pair_text}: cross-sample diversity (mean pairwise cosine distance of |w| "
            "between problems) of base and tuned model, per dataset and α; labels give the "
            "change (paper, Figure 3a)."
        ),
        "node_entropy": (
            f"{pair_text}: entropy of each forward node's normalised outgoing |w|, mean over "
            "problems (paper, Figure 3b)."
        ),
        "log_abs_w": (
            f"{pair_text}: distribution of log10 |w| over the real edges of all analysed "
            "problems, base and tuned; dashed lines: medians."
        ),
    }
    captions["confidence"] = (
        f"{pair_text}: per problem, the change of log activation intensity (tuned / base, "
        "paper's loss, own answers) against the change of the window's mean cross-entropy, "
        "at the largest α (named in the title). Points along a rising line: the intensity "
        "change goes with the model growing surer (left) or less sure (right) of its answer."
    )
    for dataset in datasets:
        captions[edge_change_figure_name(dataset)] = (
            f"{pair_text} on {dataset}: relative change (tuned − base) / base of each edge's "
            "mean |w|, rows forward nodes (writers), columns backward nodes (readers); blank: "
            "no edge. Colours are clipped at the 98th percentile of |change| (paper, Figure 2)."
        )
    return captions


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def pair_section(study: Study, pair: str) -> Section:
    """One pair: its models, the filtering funnel, and its figures."""
    spec = study.config["pairs"][pair]
    label = pair_label(pair, spec["method"])
    summaries = {d: study.pair_summaries[pair, d] for d in study.datasets}
    captions = pair_figure_captions(label, study.datasets)
    figures = [
        figure(path, captions[name])
        for name, path in study.pair_figures[pair].items()
        if name != "confidence"
    ]
    intro = Text(
        [
            Markup("Base <code>{base}</code> → tuned <code>{tuned}</code> ({method}).").format(
                base=spec["base"], tuned=spec["tuned"], method=spec["method"]
            )
        ]
    )
    return Section(
        f"pair-{slug(pair)}", label, [intro, funnel_table(summaries, study.alphas), *figures]
    )


def headline_alpha_of(study: Study, alpha: float | None) -> float:
    """The alpha of the main table: `alpha` if given (must be configured), else the largest."""
    if alpha is None:
        return max(study.alphas)
    if alpha not in study.alphas:
        raise ValueError(f"headline alpha {alpha} is not one of eap.alphas {study.alphas}")
    return alpha


def overview_text(verdicts: pd.DataFrame, pairs: Mapping[str, str], alpha: float) -> list[str]:
    """One sentence per pair: how many headline cells at the headline alpha get each verdict."""
    sentences = []
    for pair, method in pairs.items():
        rows = verdicts[(verdicts["pair"] == pair) & (verdicts["alpha"] == float(alpha))]
        counts = rows["verdict"].value_counts()
        shown = ", ".join(
            f"{int(counts.get(v, 0))} {v}" for v in (CONSISTENT, EXPLAINED, AGAINST, NO_CHANGE)
        )
        sentences.append(
            f"{pair_label(pair, method)}: of {len(rows)} headline results at "
            f"{format_alpha(alpha)}: {shown}"
            + (f", {int(counts[SAME_WINDOW])} same window" if SAME_WINDOW in counts else "")
            + "."
        )
    return sentences


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


def headline_section(study: Study, alpha: float) -> Section:
    pairs, neutral = headline_pairs(study.config), is_pipeline_check(study.config)
    verdicts = headline_verdicts(study.tests)
    others = [a for a in study.alphas if a != alpha]
    intro = [PIPELINE_CHECK_NOTE] if neutral else []
    intro += [*overview_text(verdicts, pairs, alpha), alpha_choice(alpha, study.alphas)]
    blocks = [
        Text(intro),
        headline_table(verdicts, pairs, study.datasets, alpha, neutral=neutral),
        alpha_sweep_table(verdicts, pairs, study.datasets, study.alphas, neutral=neutral),
    ]
    blocks += [
        Details(
            f"Table at {format_alpha(other)}",
            [
                headline_table(
                    verdicts,
                    pairs,
                    study.datasets,
                    other,
                    neutral=neutral,
                    table_id=f"headline-table-alpha-{slug(str(other))}",
                )
            ],
        )
        for other in others
    ]
    return Section("headline", "Headline results", blocks)


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


def pair_role(config: Mapping, pair: str) -> str:
    """How a pair enters the controls table: study pair, seed replicate, or control."""
    spec = config["pairs"][pair]
    if spec.get("control"):
        return f"control: {spec['control']}"
    if spec.get("replicate_of"):
        return f"seed replicate of {spec['replicate_of']}"
    return "study pair"


def controls_table(
    verdicts: pd.DataFrame, config: Mapping, datasets: Sequence[str], alpha: float, neutral: bool
) -> Table:
    """Activation intensity of every pair (study pairs, seed replicates, controls) side by side."""
    index = verdict_index(verdicts)
    pairs = enabled_pairs(config)
    rows = [
        Row(
            [
                Cell(pair_label(pair, config["pairs"][pair]["method"])),
                Cell(pair_role(config, pair)),
                *(
                    headline_cell(index.get((pair, dataset, float(alpha), "intensity")), neutral)
                    for dataset in datasets
                ),
            ]
        )
        for pair in pairs
    ]
    return Table(
        columns=["pair", "role", *datasets],
        rows=rows,
        caption=f"Activation intensity of every pair and control at {format_alpha(alpha)}",
        notes=[
            "identity: a model against itself (every change must be exactly 0); "
            "more-training: the base model's own training continued for as long as the RL "
            "run, without RL; seed replicates: the same training recipe with another seed.",
            HEADLINE_CELL_NOTE,
            VERDICT_LEGEND,
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


def identity_sentence(tests: pd.DataFrame, pair: str, config: Mapping) -> str:
    """Whether an identity control came out as the exact null it must be."""
    rows = tests[tests["pair"] == pair]
    largest = float(np.nanmax(np.abs(rows["change"]))) if len(rows) else float("nan")
    smallest_q = float(np.nanmin(rows["q"])) if rows["q"].notna().any() else float("nan")
    exact = largest == 0 and smallest_q == 1
    verdict_text = (
        "an exact null, as it must be"
        if exact
        else "NOT an exact null: the same model scored twice gave different results"
    )
    return (
        f"{pair} compares {config['pairs'][pair]['base']} with itself: over its {len(rows)} "
        f"tests the largest |change| is {format_number(largest)} and the smallest q is "
        f"{format_number(smallest_q)}: {verdict_text}."
    )


def confidence_section(study: Study, alpha: float) -> Section:
    """Confidence beside every change: controls, seed agreement, crossed design, scatters."""
    neutral = is_pipeline_check(study.config)
    verdicts = headline_verdicts(study.tests)
    controls = control_pairs(study.config)
    groups = replicate_groups(study.config)
    intro = [
        "A change in the EAP scores can come from the circuit or from the model's "
        "confidence: under the paper's loss (mean cross-entropy of the answer window) every "
        "score is scaled by the logit gradient, which shrinks as a model grows surer of "
        "its answer. The confidence-free loss (ce_unit) gives each window position a "
        "gradient of unit length; the window loss itself is reported beside every change.",
        *(
            identity_sentence(study.tests, pair, study.config)
            for pair, kind in controls.items()
            if kind == "identity"
        ),
    ]
    blocks: list = [
        Text(intro),
        controls_table(verdicts, study.config, study.datasets, alpha, neutral),
    ]
    if groups:
        blocks.append(replicate_table(verdicts, groups))
    if (study.tests["comparison"] != "own").any():
        blocks.append(decomposition_table(study.tests, study.pairs, study.datasets, alpha))
    blocks += [
        figure(
            study.pair_figures[pair]["confidence"],
            pair_figure_captions(pair_label(pair, method), [])["confidence"],
        )
        for pair, method in study.pairs.items()
    ]
    return Section("confidence", "Confidence and controls", blocks)


def metrics_section(study: Study) -> Section:
    neutral = is_pipeline_check(study.config)
    return Section(
        "metrics",
        "Metrics and variants",
        [
            Text(
                [
                    "Where the paper's definition is ambiguous, variants are computed "
                    "alongside the headline metric; the table shows whether the conclusion "
                    "depends on the variant.",
                    *variant_conclusion(study.tests),
                ]
            ),
            definitions_table(),
            variant_table(study.tests, study.pairs, neutral),
            Details("Tests under the paper's loss", [all_tests_table(study.tests, neutral)]),
        ],
    )


def examples_section(study: Study) -> Section:
    subsections = [
        Section(
            f"examples-{slug(pair)}-{slug(dataset)}",
            f"{pair_label(pair, method)} on {dataset}",
            [Examples(study.examples[pair, dataset])],
        )
        for pair, method in study.pairs.items()
        for dataset in study.datasets
    ]
    intro = Text(
        [
            f"The first {N_EXAMPLES} analysed problems (by id) of each pair and dataset, with "
            f"both models' greedy answers (the first {EXAMPLE_CHARS:,} characters; model "
            "output is shown as plain text)."
        ]
    )
    return Section("examples", "Example completions", [intro], subsections)


def accuracy_section(study: Study) -> Section:
    return Section(
        "accuracy",
        "Model accuracy",
        [
            accuracy_table(study.generation_provenance, study.models, study.datasets),
            agreement_table(
                study.generation_provenance,
                study.models,
                study.datasets,
                study.config["generation"]["agreement_threshold"],
            ),
        ],
    )


def training_section(study: Study) -> Section | None:
    """Training curves of the models the workflow trained; None when it trained none."""
    if not study.training_figures:
        return None
    blocks = [
        Text(["Per-step training logs of the models this workflow trained itself."]),
        *(
            figure(path, f"{model}: {model_source(study.config['models'][model])}")
            for model, path in study.training_figures.items()
        ),
    ]
    return Section("training", "Training curves", blocks)


def methods_section(study: Study) -> Section:
    primary = study.tests["family"] == "primary"
    n_tests = int((primary & study.tests["p"].notna() & study.tests["duplicate_of"].isna()).sum())
    return Section(
        "methods",
        "Methods",
        [
            Text(methods_paragraphs(study.config, n_tests)),
            pairs_table(study.config),
            templates_table(study.config),
        ],
    )


def fidelity_table(config: Mapping, measured: pd.DataFrame) -> Table:
    """Every known deviation from the paper's code, this study's setting of it, and its
    measured effect (`circuitry.fidelity`)."""
    found = effects(measured, config)
    rows = [
        Row(
            [
                Cell(deviation.choice),
                Cell(deviation.paper),
                Cell(
                    f"{deviation.setting}: {configured(config, deviation.setting)}"
                    if deviation.setting
                    else MISSING
                ),
                Cell(found[deviation.key]),
            ]
        )
        for deviation in DEVIATIONS
    ]
    columns = ["choice", "paper's code", "setting in this study", "measured effect"]
    return Table(columns, rows, id="fidelity-table")


def fidelity_section(study: Study) -> Section:
    intro = Text(
        [
            "Where the paper's code (run_tests.py, its EAP fork and its vLLM evaluation) "
            "makes a choice the project makes otherwise. A listed setting reproduces the "
            "paper's choice; each effect is measured on this study's own files (rule "
            "fidelity) unless the row says otherwise."
        ]
    )
    return Section(
        "fidelity",
        "Fidelity to the paper's code",
        [intro, fidelity_table(study.config, study.fidelity)],
    )


def provenance_section(study: Study, provenance: Provenance) -> Section:
    """Config hash, code and package versions, model and dataset sources, the command."""
    return Section(
        "provenance",
        "Provenance and reproduction",
        [
            provenance_table(provenance),
            models_table(study.config, study.generation_provenance),
            datasets_table(study.dataset_summaries),
            Code(reproduce_text(provenance), caption="Reproduce this report"),
        ],
    )


def dynamics_table(summary: pd.DataFrame) -> Table:
    """Under the paper's loss: accuracy, each tracked metric's change and the window-loss
    change at every checkpoint, on both texts, one group per run."""
    from circuitry.dynamics import TRACKED_METRICS, paper_loss
    from circuitry.runs import TEXTS

    columns = [
        "step",
        "text",
        "accuracy",
        *(METRICS[m].quantity for m in TRACKED_METRICS),
        "window loss (nats)",
        "n",
    ]
    rows = [
        Row(
            [
                Cell(str(int(row["step"]))),
                Cell(TEXTS[row["text"]]),
                Cell(format_percent_plain(100 * row["accuracy"])),
                *(Cell(format_percent(row[f"{m}_change_pct"])) for m in TRACKED_METRICS),
                Cell(format_signed(row[f"{WINDOW_LOSS}_change"])),
                Cell(format_number(row["n_samples"])),
            ],
            group=f"run {row['run']}",
        )
        for _, row in paper_loss(summary).iterrows()
    ]
    return Table(
        columns,
        rows,
        caption="Accuracy on the eval set and each change against the initial model",
        notes=[
            "Step 0 is the initial model. Every checkpoint is scored on one fixed problem "
            "set (the initial model's correct answers within its length bounds) with one "
            "answer window: on the initial model's answers (the same tokens, so only the "
            "weights differ) and on its own answers where it answered correctly too. "
            "Changes are paired over those problems: intensity as the geometric mean of "
            "per-sample ratios, the other metrics as the change of the mean, the window "
            "loss as the change of its mean cross-entropy. n: problems compared.",
        ],
    )


def format_signed(value) -> str:
    """A signed number with 3 significant digits: `+0.0123`."""
    if is_missing(value):
        return MISSING
    return f"{'+' if value > 0 else ''}{format_number(value)}"


def dynamics_highlights_text(highlights: pd.DataFrame) -> list[str]:
    """One sentence per run and text: the fastest-gain interval and the extrema."""
    from circuitry.runs import TEXTS

    sentences = []
    for (run, text), frame in highlights.groupby(["run", "text"], sort=False):
        start, end = frame.iloc[0][["interval_start", "interval_end"]]
        extrema = "; ".join(
            f"{METRICS[row['metric']].quantity} {format_percent(row['extremum_change_pct'])} "
            f"at step {int(row['extremum_step'])}"
            for _, row in frame.iterrows()
        )
        sentences.append(
            f"Run {run}, on {TEXTS[text]}: accuracy rose fastest between "
            f"steps {int(start)} and {int(end)}; inside that interval each metric is "
            f"furthest from the initial model at: {extrema}."
        )
    return sentences


def describe_run(run: Mapping) -> str:
    """Where a run's checkpoints came from, in words."""
    from circuitry.runs import source_of

    source = source_of(run)
    if source == "train":
        train = run["train"]
        where = (
            f"GRPO run by the workflow from {run['init']} on {', '.join(train['data'])} at "
            f"temperature {train['temperature']:g} ({train['num_generations']} generations "
            f"per prompt, {train['steps']} steps, a checkpoint every "
            f"{train['checkpoint_every']}), its checkpoints read back from trl's output "
            "directory"
        )
    elif source == "trl":
        where = f"the trl checkpoints in {run['trl']}, from {run['init']}"
    elif source == "dirs":
        where = f"the model directories {run['dirs']['glob']}, from {run['init']}"
    else:
        where = f"revisions of {run['revisions']['hub_id']}, from {run['init']}"
    every = run.get("every", 1)
    return f"{run['name']}: {where}" + (f", every {every}th checkpoint" if every > 1 else "")


def dynamics_section(
    config: Mapping,
    summary: pd.DataFrame,
    highlights: pd.DataFrame,
    training_figure: str | os.PathLike,
    metrics_figure: str | os.PathLike,
) -> Section:
    """The training-dynamics section (the paper's Figures 4 and 5)."""
    dynamics = config["dynamics"]
    intro = (
        f"Runs: {'; '.join(describe_run(run) for run in dynamics['runs'])}. Each checkpoint "
        f"answered {dynamics['eval_dataset']}; its circuits were scored (EAP, "
        f"α = {dynamics['alpha']}) on one fixed problem set, its initial model's correct "
        "answers within that model's length bounds, both on the initial model's answers (the "
        "same tokens, so the curve shows the weights alone) and on its own correct answers, "
        "and compared with the initial model on the same problems. The window loss beside "
        "each change says how much surer of the text the checkpoint became."
    )
    return Section(
        "dynamics",
        "Training dynamics",
        [
            Text([intro, *dynamics_highlights_text(highlights)]),
            figure(
                training_figure,
                "What each run's trainer logged (reward, reward standard deviation, and KL, "
                "entropy and completion length where logged), moving averages over 8 steps "
                "(paper, Figure 4); shaded: the interval of fastest accuracy gain.",
            ),
            figure(
                metrics_figure,
                "Accuracy, the change of activation intensity, distribution kurtosis and "
                "information complexity (95% CI bands) and of the window loss against the "
                "initial model, and the problems each point rests on; solid: on the initial "
                "model's answers, dashed: on each checkpoint's own. Shaded: the interval of "
                "fastest accuracy gain, star: each metric's extremum inside it (paper, "
                "Figure 5).",
            ),
            dynamics_table(summary),
        ],
    )


def build_sections(
    study: Study,
    provenance: Provenance,
    *,
    headline_alpha: float | None = None,
    extra_sections: Sequence[Section] = (),
) -> list[Section]:
    """The report's sections in order; `extra_sections` go after the results, before methods."""
    alpha = headline_alpha_of(study, headline_alpha)
    sections = [
        headline_section(study, alpha),
        confidence_section(study, alpha),
        Section(
            "pairs",
            "Pairs",
            [Text(["Per pair: the filtering funnel and the figures."])],
            [pair_section(study, pair) for pair in study.pairs],
        ),
        metrics_section(study),
        accuracy_section(study),
        examples_section(study),
        training_section(study),
        *extra_sections,
        methods_section(study),
        fidelity_section(study),
        provenance_section(study, provenance),
    ]
    return [section for section in sections if section is not None]


# ---------------------------------------------------------------- rendering


def render_report(
    sections: Sequence[Section],
    *,
    title: str = "circuitry: how post-training changes LLM circuitry",
    meta: Sequence[str] = (),
    template: str | os.PathLike = DEFAULT_TEMPLATE,
) -> str:
    """The report as one HTML string (autoescaped; figures already embedded)."""
    template = Path(template)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template.parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(template.name).render(title=title, meta=meta, sections=sections)


def report_meta(study: Study, provenance: Provenance) -> list[str]:
    return [
        f"{len(study.pairs)} pairs × {len(study.datasets)} datasets × {len(study.alphas)} α",
        f"config {provenance.config_hash}",
        f"run {provenance.run_date}",
    ]


def write_report(
    path: str | os.PathLike,
    study: Study,
    provenance: Provenance,
    *,
    headline_alpha: float | None = None,
    extra_sections: Sequence[Section] = (),
    template: str | os.PathLike = DEFAULT_TEMPLATE,
) -> None:
    """Build, render and atomically write `report.html`."""
    sections = build_sections(
        study, provenance, headline_alpha=headline_alpha, extra_sections=extra_sections
    )
    html = render_report(sections, meta=report_meta(study, provenance), template=template)
    write_text(path, html)
