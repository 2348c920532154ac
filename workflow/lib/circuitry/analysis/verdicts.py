"""What each headline change means once the model's confidence is accounted for.

A headline cell is one pair x dataset x alpha x headline metric on the own-text
comparison (the paper's design). The tests table holds its readings:

- `ce`: the change under the paper's loss;
- `calibrated`: the change under the calibrated confidence-free reading
  (`circuitry.analysis.calibration.CALIBRATED_LOSS`, `target_unit`), which reads zero under a pure
  temperature change and detects a planted one (`circuitry.analysis.calibration`);
- `unit`: the change under `ce_unit`, kept as a reading: a temperature change alone moves
  it (x1.5 reads about +60% intensity on the toy);
- `loss`: the change of the window's own cross-entropy, how much surer the tuned model is
  of its answer. It *moved* when its Wilcoxon q < 0.05 or its paired bootstrap 95% CI of
  the mean change excludes 0: a mean shift carried by a few unsure samples (the ones that
  dominate mean |w| under `ce`) escapes a test of the median.

`headline_verdicts` gives each cell one verdict (`VERDICTS`), the first that applies:

- `same window`: a duplicate condition (every window equals a smaller alpha's);
- `uncalibrated`: the calibrated reading failed its own calibration in this run, or no
  calibration ran: no verdict rests on a control that was not proven on known answers;
- `no change`: not significant under `ce` (q >= 0.05);
- `consistent with the paper` / `against the paper`: significant under `ce` and under the
  calibrated reading, in the same direction: the paper's expected direction or against it;
- `explained by confidence`: the calibrated reading does not agree, and the window loss
  moved the matching way;
- `not robust to the confidence control`: neither.

The matching way (`CONFIDENCE_SIGN`): activation intensity scales with the size of the
logit gradient, which shrinks as the model grows surer, so a confidence effect moves
intensity the same way as the window loss. The other headline metrics are ratios of
scores, with no sign fixed by confidence; for them a loss that moved either way is enough.

Where every window is one token (`cut_len` 1), `ce_unit` is `ce` times a per-sample
constant, so its scale-free readings (entropy, kurtosis, diversity) repeat `ce`'s: the
cell's `note` says that this control is not independent there. (The calibrated reading's
direction differs from `ce`'s even in one token.)

`replicate_agreement` says how often training seeds of one recipe reach the same verdict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from circuitry.analysis.calibration import CALIBRATED_LOSS
from circuitry.analysis.metrics import METRICS
from circuitry.analysis.stats import WINDOW_LOSS
from circuitry.paths import PAPER_CONDITION

SIGNIFICANCE_LEVEL = 0.05
UNIT_LOSS = "ce_unit"
NO_CHANGE = "no change"
EXPLAINED = "explained by confidence"
CONSISTENT = "consistent with the paper"
AGAINST = "against the paper"
NOT_ROBUST = "not robust to the confidence control"
UNCALIBRATED = "uncalibrated"
SAME_WINDOW = "same window"
VERDICTS = (CONSISTENT, AGAINST, EXPLAINED, NOT_ROBUST, NO_CHANGE, UNCALIBRATED, SAME_WINDOW)
CALIBRATION_STATES = ("passed", "failed", "not run")
# sign of (metric change x window-loss change) that a pure confidence effect gives
CONFIDENCE_SIGN = {"activation intensity": +1}
ONE_TOKEN_NOTE = (
    "one-token windows: ce_unit is ce times a per-sample constant here, so its entropy, "
    "kurtosis and diversity repeat ce's (not independent evidence)"
)
KEY = ["pair", "dataset", "alpha", "metric"]
READING_COLUMNS = ("change", "change_pct", "q")
READINGS = {"ce": PAPER_CONDITION["loss"], "calibrated": CALIBRATED_LOSS, "unit": UNIT_LOSS}
VERDICT_COLUMNS = (
    *KEY,
    "quantity",
    "expected",
    "as_expected",
    "duplicate_of",
    "n",
    "cut_len",
    *(f"{reading}_{column}" for reading in (*READINGS, "loss") for column in READING_COLUMNS),
    "loss_ci_low",
    "loss_ci_high",
    "loss_moved",
    "loss_spearman",
    "calibration",
    "note",
    "verdict",
)


def significant(q) -> bool:
    return q is not None and not pd.isna(q) and q < SIGNIFICANCE_LEVEL


def _readings(
    tests: pd.DataFrame,
    loss: str,
    metrics: Sequence[str],
    prefix: str,
    columns: Sequence[str] = READING_COLUMNS,
) -> pd.DataFrame:
    rows = tests[
        (tests["loss"] == loss) & (tests["comparison"] == "own") & tests["metric"].isin(metrics)
    ]
    return rows[[*KEY, *columns]].rename(columns={c: f"{prefix}_{c}" for c in columns})


def _loss_readings(tests: pd.DataFrame) -> pd.DataFrame:
    """The window-loss change of each pair x dataset x alpha (tested under the paper's
    loss), with the bootstrap CI of its mean change."""
    columns = (*READING_COLUMNS, "ci_low", "ci_high")
    loss = _readings(tests, PAPER_CONDITION["loss"], [WINDOW_LOSS], "loss", columns)
    return loss.drop(columns="metric")


def loss_moved(cell: Mapping) -> bool:
    """Whether the window loss moved: Wilcoxon q < 0.05, or a bootstrap CI of its mean
    change that excludes 0."""
    low, high = cell["loss_ci_low"], cell["loss_ci_high"]
    ci_excludes_zero = not (pd.isna(low) or pd.isna(high)) and (low > 0 or high < 0)
    return significant(cell["loss_q"]) or bool(ci_excludes_zero)


def cell_verdict(cell: Mapping) -> str:
    """The verdict of one headline cell (a row of `headline_verdicts`, before `verdict`)."""
    if isinstance(cell["duplicate_of"], str) or not pd.isna(cell["duplicate_of"]):
        return SAME_WINDOW
    if cell["calibration"] != "passed":
        return UNCALIBRATED
    if not significant(cell["ce_q"]) or pd.isna(cell["ce_change"]) or cell["ce_change"] == 0:
        return NO_CHANGE
    direction = np.sign(cell["ce_change"])
    if significant(cell["calibrated_q"]) and np.sign(cell["calibrated_change"]) == direction:
        return CONSISTENT if cell["as_expected"] else AGAINST
    if cell["loss_moved"]:
        sign = CONFIDENCE_SIGN.get(cell["quantity"])
        if sign is None or np.sign(cell["loss_change"]) * direction == sign:
            return EXPLAINED
    return NOT_ROBUST


def headline_verdicts(
    tests: pd.DataFrame,
    calibration: str = "not run",
    cut_lens: Mapping[tuple[str, str, float], int] | None = None,
) -> pd.DataFrame:
    """One row per headline cell (`VERDICT_COLUMNS`): every reading and the verdict.

    `calibration` is the calibrated reading's state in this run (`CALIBRATION_STATES`);
    `cut_lens` maps (pair, dataset, alpha) to its window length, for the one-token note.
    Readings missing from the tests table (a loss not scored, no diagnostics) are NaN.
    """
    if calibration not in CALIBRATION_STATES:
        raise ValueError(f"calibration must be one of {CALIBRATION_STATES}, got {calibration!r}")
    headline = [name for name, spec in METRICS.items() if spec.headline]
    paper = tests[
        (tests["loss"] == PAPER_CONDITION["loss"])
        & (tests["comparison"] == "own")
        & tests["metric"].isin(headline)
    ]
    cells = paper[[*KEY, "quantity", "expected", "as_expected", "duplicate_of", "n"]]
    for prefix, loss in READINGS.items():
        cells = cells.merge(_readings(tests, loss, headline, prefix), on=KEY, how="left")
    cells = cells.merge(_loss_readings(tests), on=["pair", "dataset", "alpha"], how="left")
    cells = cells.merge(paper[[*KEY, "loss_spearman"]], on=KEY, how="left")
    lengths = cut_lens or {}
    cells = cells.assign(
        cut_len=[
            lengths.get((p, d, float(a)))
            for p, d, a in cells[["pair", "dataset", "alpha"]].itertuples(index=False)
        ],
        calibration=calibration,
    )
    records = cells.to_dict("records")
    for record in records:
        record["loss_moved"] = loss_moved(record)
        record["note"] = ONE_TOKEN_NOTE if record["cut_len"] == 1 else ""
        record["verdict"] = cell_verdict(record)
    return pd.DataFrame(records, columns=list(VERDICT_COLUMNS))


def replicate_agreement(
    verdicts: pd.DataFrame, groups: Mapping[str, Sequence[str]]
) -> pd.DataFrame:
    """Per replicate group and headline metric: in how many dataset x alpha conditions
    every seed reaches the same verdict (duplicate windows left out)."""
    records = []
    for name, members in groups.items():
        rows = verdicts[verdicts["pair"].isin(members) & (verdicts["verdict"] != SAME_WINDOW)]
        for metric, frame in rows.groupby("metric", sort=False):
            by_condition = frame.groupby(["dataset", "alpha"])["verdict"]
            complete = by_condition.size() == len(members)
            agreeing = by_condition.nunique() == 1
            records.append(
                {
                    "group": name,
                    "metric": metric,
                    "seeds": len(members),
                    "conditions": int(complete.sum()),
                    "agree": int((agreeing & complete).sum()),
                }
            )
    return pd.DataFrame(records, columns=["group", "metric", "seeds", "conditions", "agree"])
