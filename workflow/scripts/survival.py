"""Rule survival: a random edge sample removed outright from both models of a pair at one
alpha, and the headline metrics of the true loss changes and of the same edges' EAP
scores, tested base against tuned."""

import pandas as pd
import torch

from circuitry.analysis.survival import survival_tests
from circuitry.attribution.ablation import ablated_losses
from circuitry.attribution.edge_sample import change_table, draw_edges, exact_changes, on_sample
from circuitry.attribution.faithfulness import choose_samples
from circuitry.attribution.samples import windowed_samples
from circuitry.attribution.scorefile import load_edge_scores
from circuitry.generation.pairing import cut_length
from circuitry.io import read_json, read_jsonl, write_csv
from circuitry.logs import setup_logging
from circuitry.models.loading import load_model

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
params, wildcards = snakemake.params, snakemake.wildcards
settings = params.settings
alpha = float(wildcards.alpha)
rows = read_jsonl(snakemake.input.pairs)
cut_len = cut_length(alpha, read_json(snakemake.input.summary))
scores = {
    (role, loss): load_edge_scores(path, role=role, loss=loss, text="own", cut_len=cut_len)
    for (role, loss), path in zip(params.score_keys, snakemake.input.scores, strict=True)
}
first = next(iter(scores.values()))
if first.idx.tolist() != [row["idx"] for row in rows]:
    raise ValueError(f"{snakemake.input.scores[0]}: its samples are not those of the pair file")
positions = choose_samples(len(first.idx), settings["samples"], settings["seed"])
edges = draw_edges(first.edge_mask, settings["edges"], settings["seed"])
log.info("%d problems x %d edges, cut_len %d", len(positions), len(edges), cut_len)


def ablator(model, samples, loss):
    """`ablate(position, rows)` of one model under one loss (`faithfulness.Ablate`)."""

    def ablate(position, edge_rows):
        return ablated_losses(
            model, samples[position], edge_rows, loss=loss, batch_size=settings["batch_size"]
        )

    return ablate


losses = list(dict.fromkeys(loss for _, loss in scores))
exact, eap, tables = {}, {}, []
for role, spec in params.models.items():
    model = load_model(spec).model
    samples = windowed_samples(rows, role, cut_len)
    for loss in losses:
        scored = scores[role, loss]
        exact[role, loss] = exact_changes(scored, edges, positions, ablator(model, samples, loss))
        eap[role, loss] = on_sample(scored, edges, positions)
        tables.append(change_table(exact[role, loss], eap[role, loss]).assign(role=role, loss=loss))
        log.info("%s, %s: %d ablations per problem", role, loss, len(edges) + 1)
    del model
readings = {
    (reading, loss): (by["base", loss], by["tuned", loss])
    for reading, by in (("exact", exact), ("eap", eap))
    for loss in losses
}
tests = survival_tests(
    readings,
    pair=wildcards.pair,
    dataset=wildcards.dataset,
    alpha=alpha,
    seed=params.stats["seed"],
    n_resamples=params.stats["n_resamples"],
)
write_csv(snakemake.output.changes, pd.concat(tables, ignore_index=True))
write_csv(snakemake.output.tests, tests)
for row in tests[tests["comparison"] == "own"].itertuples():
    log.info("%s %s %s: %+.2f%% (p %.3g)", row.reading, row.loss, row.metric, row.change_pct, row.p)
