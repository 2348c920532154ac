"""Rule eap_score: EAP scores of both models of a pair on every dataset, per
alpha x text x loss, with diagnostics; one model after the other, each distinct window
scored once (`circuitry.attribution.eap.write_role_scores`)."""

import gc

import torch

from circuitry.attribution.eap import role_memory_budget, write_role_scores
from circuitry.generation.pairing import ROLES, check_shared_vocabulary
from circuitry.io import read_json, read_jsonl
from circuitry.logs import setup_logging
from circuitry.models.loading import load_model, load_tokenizer

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
pair, models, params = snakemake.wildcards.pair, snakemake.params.models, snakemake.params
rows = {d: read_jsonl(path) for d, path in zip(params.datasets, snakemake.input.pairs, strict=True)}
summaries = {
    d: read_json(path) for d, path in zip(params.datasets, snakemake.input.summaries, strict=True)
}
files = {
    (c["role"], c["dataset"], c["alpha"], c["text"], c["loss"]): path
    for c, path in zip(params.conditions, snakemake.output, strict=True)
}
if any(text == "crossed" for *_, text, _ in files):  # checked before the weights load
    tokenizers = {role: load_tokenizer(models[role]) for role in ROLES}
    check_shared_vocabulary(pair, tokenizers, [row for d in rows for row in rows[d]])

budgets = {  # every sample checked against its device before any weights load
    role: role_memory_budget(
        models[role], role, rows, summaries, files, params.losses, params.memory_gib
    )
    for role in ROLES
}

for role in ROLES:
    loaded = load_model(models[role])
    write_role_scores(
        loaded.model,
        role,
        rows,
        summaries,
        files,
        params.losses,
        batch_size=params.batch_size,
        memory_budget=budgets[role],
        progress=True,
    )
    del loaded
    gc.collect()  # the first model's weights go before the second's load
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
