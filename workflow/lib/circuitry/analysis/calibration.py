"""Known-answer pairs: does each reading of a circuit change read what is known?

A known-answer pair is a base model and the same model under an edit
(`circuitry.attribution.edits`), both scored on the base model's own paired answers at one alpha,
under every loss (a *reading*). The change of each headline metric is tested exactly as
a study pair's (`circuitry.analysis.stats.compare_roles`), and set against the known answer:

- `temperature` (logits x s): the circuit is unchanged, so every headline metric must read
  |change| < `ZERO_TOLERANCE_PCT` (1%), and the edited model's teacher-forced agreement
  with the answers must equal the base model's (the edit left the greedy answers alone);
- `planted` (node u's output x f): the change must be detected: activation intensity
  moves by at least `DETECT_MIN_PCT` (2%) at p < `DETECT_P` (0.01). The other metrics
  have no known answer there. Where it lands is reported beside it, not required: of all
  forward nodes, whose outgoing edge mass (the sample-mean sum of |w| over its edges)
  changed by the largest fraction (`top_node`), and u's rank in that order (`node_rank`;
  `located` when it is 1). A change planted in u also changes every node computed after
  it and every gradient, and behind scale-invariant norms scaling a node that dominates
  what its readers read (often the embedding or the first MLP) reads like scaling the
  others down; on the toy a mid-network node ranks first on most datasets, m0 never
  (README, Calibration).

A reading passes its calibration when all its known-answer rows pass
(`reading_status`). The verdicts (`circuitry.analysis.verdicts`) rely on `CALIBRATED_LOSS` and say
"uncalibrated" wherever it failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from circuitry.analysis.circuit_metrics import compute_circuit_metrics
from circuitry.analysis.metrics import HEADLINE_METRICS, METRICS
from circuitry.analysis.stats import compare_roles
from circuitry.attribution.scorefile import EdgeScores

CALIBRATED_LOSS = "target_unit"
READINGS = {
    "ce": "paper's loss (ce)",
    "ce_unit": "ce_unit",
    "target_unit": "calibrated (target_unit)",
}
ZERO_TOLERANCE_PCT = 1.0
DETECT_MIN_PCT = 2.0
DETECT_P = 0.01
DETECTED_METRIC = "intensity"
COLUMNS = (
    "model",
    "pair",
    "dataset",
    "alpha",
    "edit",
    "kind",
    "node",
    "factor",
    "description",
    "loss",
    "reading",
    "metric",
    "quantity",
    "n",
    "base",
    "tuned",
    "change_pct",
    "p",
    "known",
    "passed",
    "top_node",
    "node_rank",
    "located",
    "agreement",
    "base_agreement",
    "note",
)


def describe_edit(edit: Mapping) -> str:
    """One phrase for tables and logs, e.g. `logits x 1.5` or `m1 output x 2`."""
    target = "logits" if edit["kind"] == "temperature" else f"{edit['node']} output"
    return f"{target} x {edit['factor']:g}"


def node_ranking(base: EdgeScores, tuned: EdgeScores) -> list[str]:
    """Forward nodes by the |relative change| of their outgoing edge mass (sample-mean
    sum of |w| over the node's edges), largest first; a node with no mass ranks last."""
    base_mass = np.abs(base.scores).mean(axis=0).sum(axis=1)
    tuned_mass = np.abs(tuned.scores).mean(axis=0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        change = np.abs(tuned_mass / base_mass - 1.0)
    change = np.where(base_mass > 0, change, -1.0)
    return [base.forward_nodes[i] for i in np.argsort(-change, kind="stable")]


def _known_answer(edit: Mapping, metric: str, row: Mapping, answers_kept: bool):
    """(known answer, passed, note) of one metric's row; passed None where nothing is known."""
    change = abs(row["change_pct"])
    if edit["kind"] == "temperature":
        if not answers_kept:
            return "0", False, "the edit changed the greedy answers: not a pure temperature change"
        return "0", bool(change < ZERO_TOLERANCE_PCT), ""
    if metric != DETECTED_METRIC:
        return "", None, ""
    return "detect", bool(change >= DETECT_MIN_PCT and row["p"] < DETECT_P), ""


def known_answer_rows(
    base: EdgeScores,
    edited: EdgeScores,
    *,
    model: str,
    pair: str,
    dataset: str,
    edit_name: str,
    edit: Mapping,
    loss: str,
    agreement: float,
    base_agreement: float,
    seed: int,
    n_resamples: int,
) -> list[dict]:
    """One row per headline metric of one known-answer pair under one reading."""
    metrics = compute_circuit_metrics(base, edited)
    alpha = base.condition["alpha"]
    tests = compare_roles(
        metrics,
        pair=f"{model}:{edit_name}",
        dataset=dataset,
        alpha=alpha,
        loss=loss,
        seed=seed,
        n_resamples=n_resamples,
        only=HEADLINE_METRICS,
    )
    ranking = node_ranking(base, edited)
    node = edit.get("node")
    rank = ranking.index(node) + 1 if node in ranking else None
    rows = []
    where = (
        ""
        if rank in (None, 1)
        else f"{node} ranks {rank} by the change of its edges (first: {ranking[0]})"
    )
    for row in tests.to_dict("records"):
        known, passed, note = _known_answer(edit, row["metric"], row, agreement == base_agreement)
        rows.append(
            {
                "model": model,
                "pair": pair,
                "dataset": dataset,
                "alpha": alpha,
                "edit": edit_name,
                "kind": edit["kind"],
                "node": node or "",
                "factor": float(edit["factor"]),
                "description": describe_edit(edit),
                "loss": loss,
                "reading": READINGS[loss],
                "metric": row["metric"],
                "quantity": METRICS[row["metric"]].quantity,
                "n": row["n"],
                "base": row["base"],
                "tuned": row["tuned"],
                "change_pct": row["change_pct"],
                "p": row["p"],
                "known": known,
                "passed": passed,
                "top_node": ranking[0],
                "node_rank": rank,
                "located": None if rank is None else rank == 1,
                "agreement": agreement,
                "base_agreement": base_agreement,
                "note": "; ".join(filter(None, (note, where))),
            }
        )
    return rows


def calibration_table(rows: Iterable[Mapping]) -> pd.DataFrame:
    """The calibration CSV of one model: known-answer rows in `COLUMNS` order."""
    table = pd.DataFrame(list(rows), columns=list(COLUMNS))
    if table.empty:
        raise ValueError("no known-answer rows: calibration needs at least one edit and dataset")
    return table


def reading_status(table: pd.DataFrame) -> dict[str, bool]:
    """Per loss: whether every known-answer row of that reading passes."""
    known = table[table["known"].fillna("").astype(str) != ""]
    passed = known["passed"].astype(str).str.lower() == "true"
    return {loss: bool(rows.all()) for loss, rows in passed.groupby(known["loss"], sort=False)}


def calibration_state(table: pd.DataFrame) -> str:
    """The calibrated reading's state in a run, from all its calibration tables: `passed`
    (every known-answer row of `CALIBRATED_LOSS` passes), `failed`, or `not run` (none)."""
    if table.empty:
        return "not run"
    return "passed" if reading_status(table).get(CALIBRATED_LOSS) else "failed"
