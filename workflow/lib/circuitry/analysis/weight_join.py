"""Where the weights changed beside where the circuit changed: each layer's weight update
(`circuitry.analysis.weights.summarise`) joined with the change of activation intensity
on that layer's edges (`circuitry.analysis.circuit_metrics.layer_intensity`), and one rank
correlation per pair and reading across layers."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from circuitry.analysis.calibration import CALIBRATED_LOSS
from circuitry.paths import PAPER_CONDITION

# the readings set beside each layer's update: the paper's loss, and the calibrated one
READINGS = (PAPER_CONDITION["loss"], CALIBRATED_LOSS)
JOIN_COLUMNS = (
    "layer", "rel_update_norm", "unchanged_exact", "unchanged_tol", "loss",
    "intensity_change_pct", "log_ratio",
)  # fmt: skip


def layer_join(summary: dict, layers: pd.DataFrame) -> pd.DataFrame:
    """Each layer's weight update beside the change of activation intensity on its edges
    (`circuitry.analysis.circuit_metrics.layer_intensity`) under each of `READINGS` scored.

    `summary` is `summarise`'s output; `layers` the metrics rule's per-layer intensities
    of one pair (every dataset x alpha x loss). The change of a layer under one loss is
    the geometric mean over datasets and alphas of tuned / base, minus 1, in percent (0
    where both are 0, NaN where only the base is). Rows: layer x loss."""
    if not summary["layers"]:  # no tensor name with a block index (`weights.layer_of`)
        return pd.DataFrame(columns=list(JOIN_COLUMNS))
    weights = pd.DataFrame.from_dict(summary["layers"], orient="index")
    weights.index = weights.index.astype(int)
    chosen = layers[layers["loss"].isin(READINGS)]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(
            chosen["base"] == 0,
            np.where(chosen["tuned"] == 0, 1.0, np.nan),
            chosen["tuned"] / chosen["base"],
        )
    change = (
        chosen.assign(log_ratio=np.log(ratios))
        .groupby(["layer", "loss"], sort=True)["log_ratio"]
        .mean()
        .rename("log_ratio")
        .reset_index()
    )
    change["intensity_change_pct"] = 100 * np.expm1(change["log_ratio"])
    columns = ["rel_update_norm", "unchanged_exact", "unchanged_tol"]
    joined = change.join(weights[columns].astype(float), on="layer", how="inner")
    return joined.loc[:, list(JOIN_COLUMNS)]


def study_join(summaries: Mapping[str, dict], layers: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """`layer_join` of every pair, a `pair` column first."""
    frames = [layer_join(summaries[pair], layers[pair]).assign(pair=pair) for pair in summaries]
    joined = pd.concat(frames, ignore_index=True)
    return joined.loc[:, ["pair", *JOIN_COLUMNS]]


def layer_correlation(join: pd.DataFrame) -> pd.DataFrame:
    """Per pair and loss: Spearman's rank correlation across layers between the relative update
    norm and |log(tuned / base)| of the intensity on the layer's edges, i.e. whether
    intensity changed most where the weights changed most. NaN (with `n_layers`) where
    either side is constant, e.g. an identity pair, or fewer than 3 layers are joined."""
    rows = []
    for (pair, loss), group in join.groupby(["pair", "loss"], sort=False):
        both = group.dropna(subset=["rel_update_norm", "log_ratio"])
        x, y = both["rel_update_norm"], both["log_ratio"].abs()
        defined = len(both) >= 3 and x.nunique() > 1 and y.nunique() > 1
        rho, p = stats.spearmanr(x, y) if defined else (math.nan, math.nan)
        rows.append(
            {
                "pair": pair,
                "loss": loss,
                "spearman": float(rho),
                "p": float(p),
                "n_layers": len(both),
            }
        )
    return pd.DataFrame(rows, columns=["pair", "loss", "spearman", "p", "n_layers"])
