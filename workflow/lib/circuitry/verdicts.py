"""What each headline change means once the model's confidence is accounted for.

A headline cell is one pair x dataset x alpha x headline metric on the own-text
comparison (the paper's design). The tests table holds three readings of it: the change
under the paper's loss (`ce`), the change under the confidence-free loss (`ce_unit`), and
the change of the window's own cross-entropy (how much surer the tuned model is of its
answer). `headline_verdicts` turns them into one verdict per cell (`VERDICTS`):

- `no change`: not significant under `ce` (q >= 0.05);
- `explained by confidence`: significant under `ce`, but not the same way under
  `ce_unit`, while the window loss changed significantly the matching way;
- `consistent with the paper` / `against the paper`: significant under `ce` and not
  explained by confidence, in the paper's expected direction or against it;
- `same window`: a duplicate condition (every window equals a smaller alpha's).

The matching way (`CONFIDENCE_SIGN`): activation intensity scales with the size of the
logit gradient, which shrinks as the model grows surer, so a confidence effect moves
intensity the same way as the window loss. The other headline metrics are ratios of
scores, with no sign fixed by confidence; for them a significant loss change is enough.

`replicate_agreement` says how often training seeds of one recipe reach the same verdict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from circuitry.metrics import METRICS
from circuitry.paths import PAPER_CONDITION
from circuitry.stats import WINDOW_LOSS

SIGNIFICANCE_LEVEL = 0.05
CONFIDENCE_FREE_LOSS = "ce_unit"
NO_CHANGE = "no change"
EXPLAINED = "explained by confidence"
CONSISTENT = "consistent with the paper"
AGAINST = "against the paper"
SAME_WINDOW = "same window"
VERDICTS = (CONSISTENT, EXPLAINED, AGAINST, NO_CHANGE, SAME_WINDOW)
# sign of (metric change x window-loss change) that a pure confidence effect gives
CONFIDENCE_SIGN = {"activation intensity": +1}
KEY = ["pair", "dataset", "alpha", "metric"]
READING_COLUMNS = ("change", "change_pct", "q")
VERDICT_COLUMNS = (
    *KEY,
    "quantity",
    "expected",
    "as_expected",
    "duplicate_of",
    "n",
    *(f"{reading}_{column}" for reading in ("ce", "unit", "loss") for column in READING_COLUMNS),
    "loss_spearman",
    "verdict",
)


def significant(q) -> bool:
    return q is not None and not pd.isna(q) and q < SIGNIFICANCE_LEVEL


def _readings(tests: pd.DataFrame, loss: str, metrics: Sequence[str], prefix: str) -> pd.DataFrame:
    rows = tests[
        (tests["loss"] == loss) & (tests["comparison"] == "own") & tests["metric"].isin(metrics)
    ]
    return rows[[*KEY, *READING_COLUMNS]].rename(
        columns={column: f"{prefix}_{column}" for column in READING_COLUMNS}
    )


def _loss_readings(tests: pd.DataFrame) -> pd.DataFrame:
    """The window-loss change of each pair x dataset x alpha (tested under the paper's loss)."""
    loss = _readings(tests, PAPER_CONDITION["loss"], [WINDOW_LOSS], "loss")
    return loss.drop(columns="metric")


def cell_verdict(cell: Mapping) -> str:
    """The verdict of one headline cell (a row of `headline_verdicts`, before `verdict`)."""
    if isinstance(cell["duplicate_of"], str) or not pd.isna(cell["duplicate_of"]):
        return SAME_WINDOW
    if not significant(cell["ce_q"]) or pd.isna(cell["ce_change"]) or cell["ce_change"] == 0:
        return NO_CHANGE
    direction = np.sign(cell["ce_change"])
    unit_agrees = significant(cell["unit_q"]) and np.sign(cell["unit_change"]) == direction
    if not unit_agrees and significant(cell["loss_q"]):
        sign = CONFIDENCE_SIGN.get(cell["quantity"])
        if sign is None or np.sign(cell["loss_change"]) * direction == sign:
            return EXPLAINED
    return CONSISTENT if cell["as_expected"] else AGAINST


def headline_verdicts(tests: pd.DataFrame) -> pd.DataFrame:
    """One row per headline cell: the `ce`, `ce_unit` and window-loss readings and the verdict.

    Readings missing from the tests table (no `ce_unit` scores, no diagnostics) are NaN;
    a cell without a `ce_unit` reading can still be `explained by confidence`.
    """
    headline = [name for name, spec in METRICS.items() if spec.headline]
    paper = tests[
        (tests["loss"] == PAPER_CONDITION["loss"])
        & (tests["comparison"] == "own")
        & tests["metric"].isin(headline)
    ]
    cells = (
        paper[[*KEY, "quantity", "expected", "as_expected", "duplicate_of", "n"]]
        .merge(_readings(tests, PAPER_CONDITION["loss"], headline, "ce"), on=KEY)
        .merge(_readings(tests, CONFIDENCE_FREE_LOSS, headline, "unit"), on=KEY, how="left")
        .merge(_loss_readings(tests), on=["pair", "dataset", "alpha"], how="left")
        .merge(paper[[*KEY, "loss_spearman"]], on=KEY, how="left")
    )
    verdicts = [cell_verdict(cell) for cell in cells.to_dict("records")]
    return cells.assign(verdict=pd.Series(verdicts, index=cells.index, dtype=object))[
        list(VERDICT_COLUMNS)
    ]


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
