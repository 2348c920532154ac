"""The per-tensor table of a weight diff (`circuitry.analysis.weights`), read without
torch: its columns, the names it is keyed by (`layer_of`, `kind_of`), the tolerance and
principal-angle k it was computed with, and its summaries: `summarise` pools it by model,
layer and kind, `layer_kind_norms` by layer x kind (the report's heatmap)."""

from __future__ import annotations

import math
import re

import pandas as pd

TOLERANCE = 1e-5
TOP_K = 8
COLUMNS = (
    "name", "layer", "kind", "shape", "dtype", "numel", "unchanged_exact", "unchanged_tol",
    "rel_update_norm", "base_norm", "update_norm", "stable_rank", "rank90", "rank99",
    "principal_angle_deg", "top_sv_change",
)  # fmt: skip
LAYER = re.compile(r"\.(?:layers|h|blocks)\.(\d+)\.")
KIND_PARTS = {
    "q": ("q_proj", "query"),
    "k": ("k_proj", "key"),
    "v": ("v_proj", "value"),
    "o": ("o_proj", "out_proj"),
    "gate": ("gate_proj", "w1"),
    "up": ("up_proj", "w3", "c_fc", "fc1"),
    "down": ("down_proj", "w2", "fc2"),
    "embed": ("embed_tokens", "wte", "wpe", "embed_in"),
    "head": ("lm_head", "embed_out"),
}


def layer_of(name: str) -> int | None:
    """The block index in `model.layers.3.…` or `transformer.h.3.…`; None outside blocks."""
    found = LAYER.search(name)
    return int(found.group(1)) if found else None


def kind_of(name: str) -> str:
    """q, k, v, o, gate, up, down, norm, embed, head or other, from the name's parts."""
    parts = name.split(".")
    if any("norm" in part or part.startswith("ln_") for part in parts):
        return "norm"
    return next((kind for kind, known in KIND_PARTS.items() if set(known) & set(parts)), "other")


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, 0 for 0 / 0 and inf for x / 0."""
    if denominator:
        return numerator / denominator
    return 0.0 if numerator == 0 else math.inf


def table_order(name: str) -> tuple[int, str]:
    """Tensors outside the blocks first, then block by block."""
    layer = layer_of(name)
    return (-1 if layer is None else layer, name)


def summarise(table: pd.DataFrame) -> dict:
    """Numel-weighted unchanged fractions and the pooled relative update norm
    sqrt(sum ||dW||^2 / sum ||W||^2): for the whole model, per layer, per kind; and the
    medians over the matrices the update touched (`changed_matrices`)."""
    return {
        "dtypes": sorted(table["dtype"].unique()),
        "model": pooled(table),
        "layers": {int(layer): pooled(rows) for layer, rows in table.groupby("layer")},
        "kinds": {kind: pooled(rows) for kind, rows in table.groupby("kind")},
        "matrices": changed_matrices(table),
    }


def changed_matrices(table: pd.DataFrame) -> dict:
    """How many matrices the update touched, and their median stable rank, rank at 99%
    energy as a share of the smaller side (1: full rank) and largest principal angle."""
    changed = table[(table["shape"].map(len) == 2) & (table["update_norm"] > 0)]
    smaller_side = changed["shape"].map(min)
    medians = {
        "median_stable_rank": changed["stable_rank"],
        "median_rank99_share": (changed["rank99"] / smaller_side).clip(upper=1),
        "median_principal_angle_deg": changed["principal_angle_deg"],
    }
    return {"n": len(changed)} | {
        name: float(values.median()) if len(changed) else None for name, values in medians.items()
    }


def pooled(rows: pd.DataFrame) -> dict:
    """The pooled figures of some rows; `rel_update_norm` is None (JSON null) where the
    base norm is 0 and the update is not (a relative change from zero is undefined)."""
    numel = rows["numel"].sum()
    norm = ratio(
        math.sqrt((rows["update_norm"] ** 2).sum()), math.sqrt((rows["base_norm"] ** 2).sum())
    )
    return {
        "numel": int(numel),
        "unchanged_exact": float((rows["unchanged_exact"] * rows["numel"]).sum() / numel),
        "unchanged_tol": float((rows["unchanged_tol"] * rows["numel"]).sum() / numel),
        "rel_update_norm": norm if math.isfinite(norm) else None,
    }


def layer_kind_norms(table: pd.DataFrame) -> pd.DataFrame:
    """The pooled relative update norm of each kind (rows) in each layer (columns): the
    report's heatmap. NaN where a layer has no tensor of that kind; empty where no tensor
    lies in a numbered block."""
    blocks = table.dropna(subset=["layer"])
    if blocks.empty:
        return pd.DataFrame()
    norms = {
        (kind, int(layer)): pooled(rows)["rel_update_norm"]
        for (kind, layer), rows in blocks.groupby(["kind", "layer"])
    }
    frame = pd.Series(norms, dtype=float).unstack()
    kinds = [kind for kind in (*KIND_PARTS, "norm", "other") if kind in frame.index]
    return frame.loc[kinds]
