"""The Calibration section: whether the calibrated reading read the known answers right
(`circuitry.analysis.calibration`), each edit under every reading, and ce_unit's temperature bias;
and the methods text of the readings, the known-answer pairs and the verdict rule.

The section comes before the headline results: a verdict rests on the calibrated reading
only where it passed here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from markupsafe import Markup

from circuitry.analysis.calibration import (
    CALIBRATED_LOSS,
    DETECT_MIN_PCT,
    DETECT_P,
    DETECTED_METRIC,
    READINGS,
    ZERO_TOLERANCE_PCT,
    calibration_state,
    describe_edit,
    reading_status,
)
from circuitry.analysis.metrics import HEADLINE_METRICS, METRICS
from circuitry.analysis.verdicts import SIGNIFICANCE_LEVEL, UNCALIBRATED, UNIT_LOSS
from circuitry.display import (
    MISSING,
    format_alpha,
    format_number,
    format_percent,
    is_missing,
    slug,
)
from circuitry.report.blocks import Cell, Row, Table, Text, fold

READING_ORDER = (CALIBRATED_LOSS, *(loss for loss in READINGS if loss != CALIBRATED_LOSS))

INTRO = (
    "Before any verdict relies on the calibrated reading, it must read known answers right. "
    "A known-answer pair is a base model against the same model with an edit applied when "
    "it is loaded, both scored on the base model's own paired answers at one α, under "
    "every reading. A temperature edit (logits × s) leaves the circuit unchanged: every "
    f"headline metric must read |change| < {ZERO_TOLERANCE_PCT:g}%, and the edited model's "
    "teacher-forced agreement with the answers must equal the base model's. A planted edit "
    "(one node's output × f) is a real change: activation intensity must move by at least "
    f"{DETECT_MIN_PCT:g}% at p < {DETECT_P:g}. Where it lands is shown beside it, not "
    "required: the planted node's rank among the forward nodes by the change of their "
    "outgoing edge mass (a change planted in one node also changes every node after it)."
)
NOT_RUN = (
    "Calibration did not run (calibration.enabled is false, or no calibrated model is the "
    f"base of an enabled pair), so every verdict of this run is “{UNCALIBRATED}”: no "
    "verdict rests on a control that was not proven on known answers."
)
TABLE_NOTE = (
    "Each metric cell: the change from the base model to the edited one, in percent "
    "(green: it meets the known answer, red: it does not, plain: no known answer; hover "
    "for p). Planted node: the edited node's rank among the forward nodes by the change of "
    "its outgoing edge mass, and the first node (shown, not required). Teacher forcing: "
    "the edited model's agreement with the answers beside the base model's (a temperature "
    "edit must leave it equal)."
)


def known_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows with a known answer."""
    return table[table["known"].fillna("").astype(str) != ""]


def failing(known: pd.DataFrame) -> pd.Series:
    """Which known-answer rows fail (anything but a true `passed`, as `reading_status`)."""
    return known["passed"].astype(str).str.lower() != "true"


def pass_css(passed) -> str:
    """`pass`, `fail`, or nothing where no answer is known (`passed` None)."""
    return {"true": "pass", "false": "fail"}.get(str(passed).lower(), "")


def fraction_text(value) -> str:
    """A teacher-forcing agreement in percent, two decimals: `98.50%`."""
    return MISSING if is_missing(value) else f"{100 * value:.2f}%"


def status_text(table: pd.DataFrame) -> str:
    """Whether the calibrated reading passed (as rule verdicts judges it from the same
    tables), and what that means for the verdicts."""
    known = known_rows(table[table["loss"] == CALIBRATED_LOSS])
    reading = READINGS[CALIBRATED_LOSS]
    if known.empty:
        return (
            f"The {reading} reading has no known-answer checks in this run (is "
            f"{CALIBRATED_LOSS} among eap.losses?), so every verdict of this run is "
            f"“{UNCALIBRATED}”."
        )
    if calibration_state(table) == "passed":
        return (
            f"The {reading} reading passed all {len(known)} of its known-answer checks: "
            "the verdicts of this run rest on it."
        )
    return (
        f"The {reading} reading FAILED its calibration: {int(failing(known).sum())} of its "
        f"{len(known)} known-answer checks fail (flagged below), so every verdict of this "
        f"run is “{UNCALIBRATED}”."
    )


def other_readings_text(table: pd.DataFrame) -> str:
    """How the readings no verdict rests on fared on the same known answers."""
    status = reading_status(table)
    shown = ", ".join(
        f"{READINGS.get(loss, loss)} {'passed' if passed else 'failed'}"
        for loss, passed in status.items()
        if loss != CALIBRATED_LOSS
    )
    return f"The other readings, which no verdict rests on: {shown}." if shown else ""


def unit_bias_text(table: pd.DataFrame) -> str:
    """ce_unit's measured intensity change under each temperature edit, beside the largest
    |change| of the calibrated reading there."""
    temperature = table[table["kind"] == "temperature"]
    unit = temperature[
        (temperature["loss"] == UNIT_LOSS) & (temperature["metric"] == DETECTED_METRIC)
    ]
    if unit.empty:
        return ""
    readings = "; ".join(
        f"{format_percent(row['change_pct'])} under {row['description']} "
        f"({row['model']}, {row['dataset']})"
        for row in unit.to_dict("records")
    )
    calibrated = temperature.loc[temperature["loss"] == CALIBRATED_LOSS, "change_pct"].abs()
    largest = (
        f" The calibrated reading's largest |change| on any headline metric there: "
        f"{format_number(calibrated.max())}%."
        if calibrated.notna().any()
        else ""
    )
    return (
        f"ce_unit's bias: under a pure temperature change (true change 0) it reads "
        f"{METRICS[DETECTED_METRIC].quantity} {readings}.{largest}"
    )


def metric_cell(row: dict | None) -> Cell:
    """One metric's change under one edit, reading and dataset, coloured by its known answer."""
    if row is None:
        return Cell(MISSING, "na")
    known = {"0": "known: no change", "detect": "known: detected"}.get(str(row["known"]), "")
    title = "; ".join(filter(None, [f"p = {format_number(row['p'])}", known]))
    return Cell(format_percent(row["change_pct"]), pass_css(row["passed"]), title)


def node_cell(rows: pd.DataFrame) -> Cell:
    """The planted node's rank by the change of its edge mass, and the first node."""
    row = rows.iloc[0]
    if row["kind"] != "planted":
        return Cell(MISSING, "na")
    rank = row["node_rank"]
    text = (
        f"{row['node']}: rank {MISSING if is_missing(rank) else int(rank)}; top {row['top_node']}"
    )
    return Cell(text)


def agreement_cell(rows: pd.DataFrame) -> Cell:
    """Teacher-forced agreement of the edited model beside the base's; a temperature edit
    that changed it is flagged."""
    row = rows.iloc[0]
    agreement, base = row["agreement"], row["base_agreement"]
    text = f"{fraction_text(agreement)} (base {fraction_text(base)})"
    return Cell(text, "fail" if row["kind"] == "temperature" and agreement != base else "")


def verdict_cell(rows: pd.DataFrame) -> Cell:
    """Whether one edit x reading x dataset meets its known answer, with the rows' notes."""
    known = known_rows(rows)
    if known.empty:
        return Cell("no known answer", "na")
    notes = "; ".join(
        dict.fromkeys(note for note in known["note"] if isinstance(note, str) and note)
    )
    if failing(known).any():
        failed = ", ".join(METRICS[m].quantity for m in known.loc[failing(known), "metric"])
        return Cell(f"FAILED: {notes}" if notes else "FAILED", "fail", f"fails: {failed}")
    return Cell("passed", "pass", notes)


def edit_rows(rows: pd.DataFrame) -> list[Row]:
    """One edit's rows: each reading (the calibrated one first) x dataset."""
    first = rows.iloc[0]
    group = f"{first['edit']}: {first['description']} ({first['kind']})"
    by_key = dict(list(rows.groupby(["loss", "dataset"], sort=False)))
    result = []
    for loss in READING_ORDER:
        for dataset in rows["dataset"].unique():
            frame = by_key.get((loss, dataset))
            if frame is None:
                continue
            metrics = {row["metric"]: row for row in frame.to_dict("records")}
            cells = [
                Cell(READINGS[loss]),
                Cell(dataset),
                *(metric_cell(metrics.get(metric)) for metric in HEADLINE_METRICS),
                node_cell(frame),
                agreement_cell(frame),
                verdict_cell(frame),
            ]
            result.append(Row(cells, group=group))
    return result


def model_table(table: pd.DataFrame, model: str) -> Table:
    """One calibrated model's known-answer pairs: edit x reading x dataset rows."""
    rows = table[table["model"] == model]
    alphas = ", ".join(format_alpha(a) for a in rows["alpha"].unique())
    return Table(
        columns=[
            "reading",
            "dataset",
            *(METRICS[m].quantity for m in HEADLINE_METRICS),
            "planted node",
            "teacher forcing",
            "known answer",
        ],
        rows=[row for _, edit in rows.groupby("edit", sort=False) for row in edit_rows(edit)],
        caption=f"Known-answer pairs of {model} (pair {rows['pair'].iloc[0]}, {alphas})",
        notes=[TABLE_NOTE],
        id=f"calibration-{slug(model)}",
        css="compact",
    )


def calibration_blocks(table: pd.DataFrame) -> list:
    """The section's blocks: the status, ce_unit's bias, and one table per calibrated model,
    folded unless the calibrated reading failed."""
    if table.empty:
        return [Text([INTRO, NOT_RUN])]
    paragraphs = [INTRO, status_text(table), other_readings_text(table), unit_bias_text(table)]
    failed = calibration_state(table) != "passed"
    tables = [model_table(table, model) for model in table["model"].unique()]
    return [Text([p for p in paragraphs if p]), *(fold(known, open=failed) for known in tables)]


LOSSES_TEXT = Markup(
    "Readings. The same forward pass scores every edge under each loss of "
    "<code>eap.losses</code>, one backward pass each. <code>ce</code>, the paper's loss: "
    "the mean cross-entropy of the window, whose gradient at the logits is "
    "softmax − onehot(target), so a model that is merely surer of its answer (a smaller "
    "gradient) gets smaller scores everywhere. <code>ce_unit</code>: the same gradient "
    "directions at the logits with each window position's of unit length; it is kept as a "
    "reading but is not confidence-free: a logit scale still multiplies the Jacobian of "
    "the logits, and a sharper model changes the directions, so a pure temperature change "
    "moves it (measured in the Calibration section). <code>target_unit</code>, the "
    "calibrated confidence-free reading: the negative centred target logit "
    "(mean logit − target logit) of each window position, divided by the length of its "
    "gradient at that position's final-norm input (held fixed on the unperturbed forward), "
    "so its gradient at every final-norm input is a unit vector, the direction that raises "
    "the target logit above the mean logit. Scaling the logits by any s &gt; 0 scales the "
    "centred logit and that length alike: the loss, its gradients and hence every score "
    "are exactly invariant to a logit scale (a temperature), while anything upstream of "
    "the final norm still moves them."
)


def calibration_text(config: Mapping, models: Sequence[str], alpha: str) -> Markup:
    """The known-answer pairs of this run (or that none ran): the calibrated `models` and
    the `alpha` they were scored at (`Study.calibrated`, `Study.calibration_alpha`), the
    edits from the config."""
    models = list(models)
    if not models:
        return Markup(
            "Known-answer pairs: calibration did not run, so every verdict of this run is "
            "<em>uncalibrated</em>."
        )
    edits = "; ".join(
        f"{name}: {describe_edit(edit)}" for name, edit in config["calibration"]["edits"].items()
    )
    return Markup(
        "Known-answer pairs. Each edit is applied to a base model when it is loaded "
        "({models}); the edited model is scored on the base model's own paired answers at "
        "α = {alpha} under every reading, and each headline metric's change is tested as a "
        "pair's. Edits: {edits}. A temperature edit (logits × s, no circuit change) passes "
        "when every headline metric reads |change| &lt; {zero}% and the edited model's "
        "teacher-forced agreement with the answers equals the base model's; a planted edit "
        "(one node's output × f) when activation intensity moves by at least {detect}% at "
        "p &lt; {p} (the planted node's rank by the change of its outgoing edge mass is "
        "shown, not required). A reading passes its calibration when all its known-answer "
        "checks pass."
    ).format(
        models=", ".join(models),
        alpha=alpha,
        edits=edits,
        zero=f"{ZERO_TOLERANCE_PCT:g}",
        detect=f"{DETECT_MIN_PCT:g}",
        p=f"{DETECT_P:g}",
    )


VERDICT_RULE_TEXT = Markup(
    "Verdicts, the first that applies to each headline cell (a pair × dataset × α × "
    "headline metric on own answers): <em>same window</em> for a duplicate α; "
    "<em>uncalibrated</em> when the calibrated reading failed its calibration in this run "
    "or none ran; <em>no change</em> when not significant under ce (q ≥ {level}); "
    "<em>consistent with the paper</em> (<em>against the paper</em>) when significant "
    "under ce and under target_unit in the same direction, the one the paper expects (the "
    "other one); <em>explained by confidence</em> when target_unit does not agree and the "
    "window loss moved the matching way (Wilcoxon q &lt; {level} or a paired bootstrap "
    "95% CI of its mean change that excludes 0; for activation intensity the same sign "
    "as the change, since intensity scales with the logit gradient that shrinks as the "
    "window loss falls; for the ratio metrics either way); otherwise <em>not robust to "
    "the confidence control</em>. ce_unit is shown beside them but decides nothing."
).format(level=SIGNIFICANCE_LEVEL)
