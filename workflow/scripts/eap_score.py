"""Rule eap_score: EAP scores of both models of a pair on every dataset, per
alpha x text x loss, with diagnostics; one model after the other, each distinct window
scored once (`circuitry.attribution.eap.write_role_scores`)."""

import gc

import torch

from circuitry.attribution.eap import check_fits, role_conditions, write_role_scores
from circuitry.attribution.memory import ModelShape, memory_budget
from circuitry.generation.pairing import ROLES, check_shared_vocabulary
from circuitry.io import read_json, read_jsonl
from circuitry.logs import setup_logging
from circuitry.models.loading import choose_device, choose_dtype, load_model, load_tokenizer
from circuitry.models.sources import weights_dir

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

budgets = {}
for role in ROLES:  # every sample checked against the device before any weights load
    spec, device = models[role], choose_device(models[role])
    dtype = str(choose_dtype(spec, device)).removeprefix("torch.")
    shape = ModelShape.from_config(read_json(weights_dir(spec) / "config.json"), dtype)
    total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    budgets[role] = memory_budget(shape, total, params.memory_gib)
    if budgets[role] is not None:
        conditions = role_conditions(role, rows, summaries, files).values()
        check_fits(
            shape,
            [s for _, samples in conditions for s in samples],
            len(params.losses),
            budgets[role],
        )

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
