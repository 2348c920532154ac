"""The "Where the weights changed" section: per pair, how much of the model tuning left
untouched beside the published RL and SFT ranges, the update norm per layer and module
kind, and whether the circuit's intensity changed where the weights did."""

from __future__ import annotations

import os
from collections.abc import Mapping

import pandas as pd

from circuitry.analysis.results import pair_label
from circuitry.analysis.weight_join import layer_correlation
from circuitry.analysis.weight_table import TOLERANCE, TOP_K
from circuitry.display import (
    MISSING,
    format_number,
    format_percent,
    format_percent_plain,
    is_missing,
)
from circuitry.figures.weights import LAYER_JOIN_CAPTION, UPDATE_NORM_CAPTION
from circuitry.report.blocks import Cell, Details, Row, Section, Table, Text, figure

# "RL fine-tunes small subnetworks" (arXiv 2505.11711): the share of parameters left
# unchanged (bf16, |dW| <= 1e-5) by RL (its PPO, GRPO, DPO, ... checkpoints) and by SFT.
PUBLISHED_RANGES = {"RL": (70, 95), "SFT": (6, 15)}
RL_METHODS = ("PPO", "GRPO", "DPO", "RLOO", "REINFORCE")

INTRO = (
    "Where post-training changed the model itself, read from both models' weight files "
    "tensor by tensor (rule weight_diff). Unchanged: the share of parameters bit-identical "
    "in the stored dtype, and the share within {tolerance:g} of the base (|tuned − base| ≤ "
    "{tolerance:g}, the rule of arXiv 2505.11711, which finds RL leaves {rl} of a model's "
    "parameters unchanged in bf16 and SFT {sft}, its updates nonetheless nearly full-rank). "
    "Relative update norm: ||ΔW|| / ||W|| over the whole model."
)
ANGLE_NOTE = (
    "Principal angle: the largest angle between the top-{k} left singular subspaces of W "
    "and W + ΔW (arXiv 2511.08567 finds RLVR moves weights off the principal directions, "
    "SFT rotates them). It is only meaningful where W's spectrum has a gap after its "
    "{k}th singular value: on a flat spectrum, such as a random or lightly trained "
    "matrix's, a small update turns the subspace by degrees."
)
FLOAT32_NOTE = (
    "Pairs stored in float32 are compared at the same tolerance. The published ranges "
    "are of bf16 checkpoints, where an update below bf16's resolution rounds away; in "
    "float32 almost every update survives, so a float32 pair is not comparable to them."
)


def published_range(method: str) -> str:
    """The published unchanged share of the pair's method family, or a dash."""
    family = "RL" if method in RL_METHODS else method if method in PUBLISHED_RANGES else None
    if family is None:
        return MISSING
    low, high = PUBLISHED_RANGES[family]
    return f"{low}–{high}% ({family})"


def whole_model_table(summaries: Mapping[str, dict], pairs: Mapping[str, str]) -> Table:
    """Per pair: the unchanged shares, the update norm and the matrices' medians."""
    rows = []
    for pair, method in pairs.items():
        summary = summaries[pair]
        model, matrices = summary["model"], summary["matrices"]
        rows.append(
            Row(
                [
                    Cell(pair_label(pair, method)),
                    Cell(", ".join(summary["dtypes"])),
                    Cell(format_percent_plain(100 * model["unchanged_exact"])),
                    Cell(format_percent_plain(100 * model["unchanged_tol"])),
                    Cell(published_range(method)),
                    Cell(format_number(model["rel_update_norm"])),
                    Cell(f"{matrices['n']}"),
                    Cell(format_number(matrices["median_rank99_share"])),
                    Cell(format_number(matrices["median_principal_angle_deg"])),
                ]
            )
        )
    notes = [f"{pair}: {note}" for pair in pairs for note in summaries[pair]["notes"]] or [
        "Every tensor was compared as stored (same names, shapes and dtypes)."
    ]
    return Table(
        [
            "pair",
            "stored as",
            "unchanged (exact)",
            f"unchanged (≤ {TOLERANCE:g})",
            "published",
            "||ΔW|| / ||W||",
            "matrices changed",
            "median rank₉₉ / side",
            "median angle (°)",
        ],
        rows,
        caption="The whole model: how much tuning left untouched",
        notes=[
            "rank₉₉ / side: the rank holding 99% of the update's energy over the matrix's "
            "smaller side (1: full rank). Angle: see the note above.",
            *notes,
        ],
    )


def correlation_sentence(correlations: pd.DataFrame, pair: str, method: str) -> str:
    """The pair's rank correlations across layers, one clause per reading."""
    rows = correlations[correlations["pair"] == pair]
    clauses = [
        f"{format_number(row.spearman, 2)} under {row.loss} (p = {format_number(row.p, 2)})"
        for row in rows.itertuples()
        if not is_missing(row.spearman)
    ]
    n_layers = int(rows["n_layers"].max()) if len(rows) else 0
    if not clauses:
        return (
            f"{pair_label(pair, method)}: no rank correlation across its {n_layers} layers "
            "(the update or the intensity change is the same on every layer, e.g. zero)."
        )
    return (
        f"{pair_label(pair, method)}: Spearman ρ across {n_layers} layers between the update "
        f"norm and the intensity change's size: {'; '.join(clauses)}."
    )


def layer_table(join: pd.DataFrame, pairs: Mapping[str, str]) -> Table:
    """Per pair and layer: the weight update and the intensity change under each reading."""
    readings = list(dict.fromkeys(join["loss"]))
    rows = []
    for pair, method in pairs.items():
        wide = join[join["pair"] == pair].pivot(
            index=["layer", "rel_update_norm", "unchanged_tol"],
            columns="loss",
            values="intensity_change_pct",
        )
        rows += [
            Row(
                [
                    Cell(str(layer)),
                    Cell(format_number(norm)),
                    Cell(format_percent_plain(100 * unchanged)),
                    *(Cell(format_percent(changes.get(loss))) for loss in readings),
                ],
                group=pair_label(pair, method),
            )
            for (layer, norm, unchanged), changes in wide.iterrows()
        ]
    return Table(
        ["layer", "||ΔW|| / ||W||", f"unchanged (≤ {TOLERANCE:g})"]
        + [f"intensity change, {loss}" for loss in readings],
        rows,
        caption="Each layer's update beside the intensity change on its edges",
    )


def weights_section(
    summaries: Mapping[str, dict],
    join: pd.DataFrame,
    pairs: Mapping[str, str],
    figures: Mapping[str, str | os.PathLike],
) -> Section:
    """The section: `summaries` (`circuitry.analysis.weights.summarise` per pair), the
    study's layer join, the pairs (name -> method) and the two figures by name."""
    rl, sft = (f"{low}–{high}%" for low, high in PUBLISHED_RANGES.values())
    intro = [INTRO.format(tolerance=TOLERANCE, rl=rl, sft=sft), ANGLE_NOTE.format(k=TOP_K)]
    if any("float32" in summaries[pair]["dtypes"] for pair in pairs):
        intro.append(FLOAT32_NOTE)
    correlations = layer_correlation(join)
    join_text = [
        "Did the circuit change where the weights changed? Per layer, the change of "
        "activation intensity on the edges the layer's nodes write or read is set beside "
        "the layer's relative update norm; one rank correlation per pair and reading "
        "(the paper's loss, ce, and the calibrated one, target_unit).",
        *(correlation_sentence(correlations, pair, method) for pair, method in pairs.items()),
    ]
    return Section(
        "weights",
        "Where the weights changed",
        [
            Text(intro),
            whole_model_table(summaries, pairs),
            figure(figures["update_norm"], UPDATE_NORM_CAPTION),
            Text(join_text),
            figure(figures["layer_join"], LAYER_JOIN_CAPTION),
            Details("Per layer", [layer_table(join, pairs)]),
        ],
    )
