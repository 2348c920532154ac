"""Rule faithfulness: one model's EAP scores (paper's condition) against full edge
ablations on a sample of its own answers, at one alpha."""

import torch

from circuitry.attribution.ablation import ablated_losses, integrated_changes
from circuitry.attribution.faithfulness import (
    Settings,
    choose_samples,
    edge_table,
    embedding_edges,
    largest_change,
    parse_edges,
    run_faithfulness,
    summarise,
)
from circuitry.attribution.samples import windowed_samples
from circuitry.attribution.scorefile import load_edge_scores
from circuitry.generation.pairing import cut_length
from circuitry.io import read_json, read_jsonl, write_csv, write_json
from circuitry.logs import setup_logging
from circuitry.models.loading import load_model
from circuitry.paths import PAPER_CONDITION

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
params = snakemake.params
condition = params.condition
rows = read_jsonl(snakemake.input.pairs)
cut_len = cut_length(condition["alpha"], read_json(snakemake.input.summary))
scored = load_edge_scores(
    snakemake.input.scores, role=condition["role"], cut_len=cut_len, **PAPER_CONDITION
)
if scored.idx.tolist() != [row["idx"] for row in rows]:
    raise ValueError(
        f"{snakemake.input.scores}: its samples are not those of {snakemake.input.pairs}"
    )
samples = windowed_samples(rows, condition["role"], cut_len)
listed = parse_edges(params.edges, scored.forward_nodes, scored.backward_nodes, scored.edge_mask)
settings = Settings(**params.settings)
positions = choose_samples(len(samples), params.samples, settings.seed)
model = load_model(params.model).model
log.info("%s: %d of %d samples, cut_len %d", condition, len(positions), len(samples), cut_len)


def ablate(position, edge_rows):
    return ablated_losses(model, samples[position], edge_rows, batch_size=params.batch_size)


def integrate(position, edges):
    return integrated_changes(
        model, samples[position], edges, steps=settings.ig_steps, batch_size=params.batch_size
    )


results = run_faithfulness(
    scored.scores,
    scored.edge_mask,
    positions,
    settings,
    listed,
    ablate,
    integrate if settings.ig_steps else None,
    embedding_edges(scored.forward_nodes, scored.backward_nodes),
)
table = edge_table(results, scored.idx, scored.forward_nodes, scored.backward_nodes)
write_csv(snakemake.output.edges, table)
summary = summarise(results, settings, int(scored.edge_mask.sum())) | largest_change(table)
write_json(
    snakemake.output.summary, {**condition, "model_type": model.config.model_type, **summary}
)
log.info(
    "Spearman %.3f (IG %.3f), Pearson %.3f (IG %.3f), area %.4f",
    summary["spearman"],
    summary["ig_spearman"],
    summary["pearson"],
    summary["ig_pearson"],
    summary["area"],
)
