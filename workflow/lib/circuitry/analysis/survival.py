"""Do the headline changes survive exact ablation? The headline metrics recomputed from the
true loss change of removing each edge of a random edge sample (`exact`), and from the EAP
scores of the same edges (`eap`), base against tuned with the study's paired tests; and,
per headline cell, whether the EAP change's direction survives.

A cell survives when the exact reading changes the same way as the full EAP change
(every edge, every analysed problem) under the same loss and is significant (BH q below
`LEVEL` over the exact rows of the pair); `same direction, not significant` when it
changes the same way without that; `opposite direction` when it changes the other way
(`no change` where the full change is exactly 0, as on an identity pair).
The `eap` rows say how much of a difference comes from the edge and problem sample
itself, not from first order: they rest on exactly the edges and problems the exact
reading does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from circuitry.analysis.calibration import CALIBRATED_LOSS
from circuitry.analysis.circuit_metrics import compute_circuit_metrics
from circuitry.analysis.metrics import HEADLINE_METRICS
from circuitry.analysis.stats import compare_roles
from circuitry.attribution.scorefile import EdgeScores
from circuitry.paths import PAPER_CONDITION

READINGS = ("exact", "eap")
LEVEL = 0.05
NO_CHANGE = "no change"
SURVIVES = "survives"
NOT_SIGNIFICANT = "same direction, not significant"
OPPOSITE = "opposite direction"
# verdict columns (`headline_verdicts`) of each loss's reading: the paper's and the calibrated
VERDICT_READINGS = {PAPER_CONDITION["loss"]: "ce", CALIBRATED_LOSS: "calibrated"}


def survival_tests(
    readings: Mapping[tuple[str, str], tuple[EdgeScores, EdgeScores]],
    *,
    pair: str,
    dataset: str,
    alpha: float,
    seed: int,
    n_resamples: int,
) -> pd.DataFrame:
    """The headline metrics' paired tests of each (reading, loss) -> (base, tuned) score
    sets, a `reading` column beside the tests table's columns (no `q` yet)."""
    frames = [
        compare_roles(
            compute_circuit_metrics(base, tuned),
            pair=pair,
            dataset=dataset,
            alpha=alpha,
            loss=loss,
            seed=seed,
            n_resamples=n_resamples,
            only=HEADLINE_METRICS,
        ).assign(reading=reading)
        for (reading, loss), (base, tuned) in readings.items()
    ]
    return pd.concat(frames, ignore_index=True)


def with_q(tests: pd.DataFrame) -> pd.DataFrame:
    """`tests` with `q`: Benjamini-Hochberg over each pair's exact rows (the eap rows,
    which only describe the sample, get none)."""
    q = np.full(len(tests), np.nan)
    exact = (tests["reading"] == "exact") & tests["p"].notna()
    for rows in tests[exact].groupby("pair").indices.values():
        index = np.flatnonzero(exact)[rows]
        q[index] = stats.false_discovery_control(tests["p"].to_numpy()[index])
    return tests.assign(q=q)


def survival(full_change: float, exact_change: float, exact_q: float) -> str:
    """Whether the full EAP change's direction survives exact ablation (see the module)."""
    if any(math.isnan(value) for value in (full_change, exact_change)):
        return ""
    if full_change == 0:
        return NO_CHANGE
    if np.sign(full_change) != np.sign(exact_change):
        return OPPOSITE
    return SURVIVES if exact_q < LEVEL else NOT_SIGNIFICANT


def with_survival(verdicts: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """`verdicts` (one row per headline cell) with, for each loss the survival check ran
    under, the exact change and q, the EAP change on the same edges, and `survival_*`
    (empty where the check did not run on that cell)."""
    tests = with_q(tests)
    key = ["pair", "dataset", "alpha", "metric"]
    out = verdicts.copy()
    for loss, name in VERDICT_READINGS.items():
        chosen = tests[(tests["loss"] == loss) & (tests["comparison"] == "own")]
        if chosen.empty:
            continue
        wide = chosen.pivot_table(
            index=key, columns="reading", values=["change", "change_pct", "q"], aggfunc="first"
        )
        columns = {
            f"exact_{name}_change_pct": wide["change_pct"]["exact"],
            f"exact_{name}_q": wide["q"]["exact"],
            f"sample_{name}_change_pct": wide["change_pct"]["eap"],
            f"exact_{name}_change": wide["change"]["exact"],
        }
        out = out.join(pd.DataFrame(columns), on=key)
        out[f"survival_{name}"] = [
            survival(*row)
            for row in out[
                [f"{name}_change", f"exact_{name}_change", f"exact_{name}_q"]
            ].itertuples(index=False)
        ]
        out = out.drop(columns=f"exact_{name}_change")
    return out
