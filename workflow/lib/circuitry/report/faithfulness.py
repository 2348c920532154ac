"""The faithfulness section: how well each model's EAP scores predict the loss change of
removing an edge entirely, on the study's own samples, and what that means for the
headline metrics built from |w|."""

from __future__ import annotations

import os
from collections.abc import Mapping

import pandas as pd

from circuitry.display import format_number, format_percent_plain, format_signed
from circuitry.figures.faithfulness import FAITHFULNESS_CAPTION
from circuitry.report.blocks import Cell, Row, Section, Table, Text, figure

# Below this Spearman correlation a model's scores are flagged: |w| then ranks edges
# differently from what removing them does.
SPEARMAN_FLOOR = 0.5


def job_summaries(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per job (pair, dataset, alpha, role): `load_faithfulness`'s frame without
    its curve points."""
    return frame.drop(columns=["k", "top", "random"]).drop_duplicates(
        ["pair", "dataset", "alpha", "role"]
    )


def flagged(summaries: pd.DataFrame) -> pd.Series:
    return summaries["spearman"] < SPEARMAN_FLOOR


def spearman_cell(value: float) -> Cell:
    """The correlation, marked where it is below the floor."""
    if value < SPEARMAN_FLOOR:
        return Cell(f"{format_number(value)} ⚠", css="warn", title=f"below {SPEARMAN_FLOOR}")
    return Cell(format_number(value))


def largest_change_cell(row: Mapping) -> Cell:
    """The edge whose removal moved the loss most, and where EAP ranked it."""
    return Cell(
        f"{row['largest_change_edge']}: {format_signed(row['largest_change'])} "
        f"(rank {row['largest_change_rank']} of {row['largest_change_of']})",
        title=f"its EAP score: {format_number(row['largest_change_score'])}",
    )


def misses_cell(row: Mapping) -> Cell:
    """How many of the largest misses of EAP and of IG are embedding edges."""
    return Cell(
        f"{int(row['largest_misses_embedding'])} / {int(row['ig_largest_misses_embedding'])} "
        f"of {int(row['largest_misses'])}",
        title=f"{int(row['embedding_edges_checked'])} embedding edges checked in all",
    )


def faithfulness_table(summaries: pd.DataFrame, pairs: Mapping) -> Table:
    """Per model: its samples, the correlations, the top-k overlap and the curve area."""
    rows = [
        Row(
            [
                Cell(row["dataset"]),
                Cell(f"{row['alpha']:g}"),
                Cell(f"{pairs[row['pair']][row['role']]} ({row['role']})"),
                Cell(str(int(row["n_samples"]))),
                spearman_cell(row["spearman"]),
                Cell(format_number(row["pearson"])),
                Cell(format_number(row["ig_spearman"])),
                Cell(format_number(row["ig_pearson"])),
                Cell(
                    f"{format_number(row['spearman_without_embedding'])} / "
                    f"{format_number(row['ig_spearman_without_embedding'])}"
                ),
                misses_cell(row),
                Cell(format_percent_plain(100 * row["top_k_overlap"])),
                Cell(format_number(row["area"])),
                largest_change_cell(row),
            ],
            group=f"pair {row['pair']}",
        )
        for _, row in summaries.iterrows()
    ]
    return Table(
        [
            "dataset",
            "α",
            "model",
            "samples",
            "Spearman",
            "Pearson",
            "IG Spearman",
            "IG Pearson",
            "without embedding edges (EAP / IG Spearman)",
            "largest misses on embedding edges (EAP / IG)",
            "top-k overlap",
            "area",
            "largest change",
        ],
        rows,
        caption="EAP scores against the loss change of removing each edge entirely",
        notes=[
            "Per sample, the edges with the largest |score| and as many drawn at random from "
            "the rest were each removed outright (O_u subtracted from v's input); Spearman "
            "and Pearson correlate score and true loss change within each sample and are "
            "averaged over samples. IG: per-edge integrated gradients, the derivative of the "
            "loss along the edge's removal averaged over the midpoints of its steps (EAP is "
            "that derivative at the start alone), against the same true changes. Without "
            "embedding edges: the same correlations leaving out the edges from the embedding "
            "into layer 0, where a scale-invariant norm keeps the loss flat until the edge is "
            "removed entirely (a structural miss no derivative foresees). Largest misses: of "
            "the checked edges with the largest |estimate − true change|, how many are "
            "embedding edges. Top-k overlap: the share of the k largest |score| that "
            "are also among the k largest true |change| (k = the top edges checked). Area: "
            "the mean gap, over log k, between the loss change of removing the top-k edges "
            "and k random ones (nats). Largest change: the checked edge whose removal moved "
            "the loss most (nats), and the rank of its |score| among its sample's checked "
            f"edges (1: the largest). ⚠: Spearman below {SPEARMAN_FLOOR}.",
        ],
    )


def reading_text(summaries: pd.DataFrame) -> str:
    """What the correlations mean for the headline metrics, from how many were flagged."""
    low = summaries[flagged(summaries)]
    if low.empty:
        return (
            f"Every model's Spearman correlation is at least {SPEARMAN_FLOOR}: on these "
            "samples |w| ranks edges much as removing them does, so the headline metrics, "
            "built from |w| over every edge, describe edges that matter to the loss."
        )
    models = sorted({f"{row['pair']} {row['role']}" for _, row in low.iterrows()})
    return (
        f"{len(low)} of {len(summaries)} checks have a Spearman correlation below "
        f"{SPEARMAN_FLOOR} ({', '.join(models)}): there |w| ranks edges differently from "
        "what removing them does, so the headline metrics built from |w| describe the "
        "first-order estimate (gradient times activation) rather than each edge's effect on "
        "the loss, and a change in them need not be a change in which edges matter."
    )


def area_text(summaries: pd.DataFrame) -> str:
    """Whether the edges EAP ranks first matter more than random ones."""
    above = int((summaries["area"] > 0).sum())
    return (
        f"In {above} of {len(summaries)} checks removing the top-ranked edges raises the "
        "loss more than removing as many random edges (a positive area): the ranking "
        "finds edges that matter, whatever its correlation."
    )


def faithfulness_section(
    config: Mapping, frame: pd.DataFrame, figure_path: str | os.PathLike
) -> Section:
    """The faithfulness section: the table per model, the curves and their reading."""
    summaries = job_summaries(frame)
    intro = (
        "EAP scores an edge by the first-order change of the loss when the edge is removed. "
        "This section measures how well that estimate predicts removing the edge entirely, "
        "under the paper's condition (the mean cross-entropy of each model's own answer "
        "window), on samples of the study's own paired answers."
    )
    return Section(
        "faithfulness",
        "Faithfulness",
        [
            Text([intro, reading_text(summaries), area_text(summaries)]),
            faithfulness_table(summaries, config["pairs"]),
            figure(figure_path, FAITHFULNESS_CAPTION),
        ],
    )
