"""Rule eap_score: EAP scores of both models of a pair on every dataset, per
alpha x text x loss, with diagnostics; one model after the other, each distinct window
scored once."""

import gc
from fractions import Fraction

import numpy as np
import torch

from circuitry.eap import (
    model_graph,
    paper_context_excess,
    score_distinct_windows,
    text_role,
    windowed_samples,
)
from circuitry.generation import load_model, load_tokenizer
from circuitry.io import read_json, read_jsonl
from circuitry.logs import setup_logging
from circuitry.pairing import ROLES, check_shared_vocabulary, cut_length
from circuitry.scorefile import write_score_files

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
pair, models, params = snakemake.wildcards.pair, snakemake.params.models, snakemake.params
rows = {d: read_jsonl(path) for d, path in zip(params.datasets, snakemake.input.pairs, strict=True)}
summaries = {
    d: read_json(path) for d, path in zip(params.datasets, snakemake.input.summaries, strict=True)
}
reference = {d: Fraction(summary["reference_length_fraction"]) for d, summary in summaries.items()}
files = {
    (c["role"], c["dataset"], c["alpha"], c["text"], c["loss"]): path
    for c, path in zip(params.conditions, snakemake.output, strict=True)
}
cut_lens = {(d, a): cut_length(float(a), summaries[d]) for _, d, a, _, _ in files}
if any(text == "crossed" for *_, text, _ in files):  # checked before the weights load
    tokenizers = {role: load_tokenizer(models[role]) for role in ROLES}
    check_shared_vocabulary(pair, tokenizers, [row for d in rows for row in rows[d]])


def score_role(role: str) -> None:
    """Load the `role` model and write its score file of every condition."""
    loaded = load_model(models[role])
    graph = model_graph(loaded.model).as_arrays()
    conditions = {}
    for r, dataset, alpha, text, _ in files:
        cut_len = cut_lens[dataset, alpha]
        if r == role and (dataset, alpha, text) not in conditions:
            log.info(
                "%s on %s, alpha %s, %s text: %d samples, T = %s, cut_len %d",
                role,
                dataset,
                alpha,
                text,
                len(rows[dataset]),
                reference[dataset],
                cut_len,
            )
            samples = windowed_samples(rows[dataset], role, cut_len, text)
            excess = paper_context_excess(loaded.model, samples)
            if excess and summaries[dataset]["settings"]["mode"] == "paper":
                log.warning("%s on %s, alpha %s, %s text: %s", role, dataset, alpha, text, excess)
            conditions[dataset, alpha, text] = samples
    scored = score_distinct_windows(
        loaded.model,
        conditions,
        params.losses,
        batch_size=params.batch_size,
        progress=True,
    )
    for (dataset, alpha, text), by_loss in scored.items():
        write_score_files(
            {loss: files[role, dataset, alpha, text, loss] for loss in by_loss},
            by_loss,
            idx=np.array([row["idx"] for row in rows[dataset]]),
            graph=graph,
            condition={
                "alpha": float(alpha),
                "cut_len": cut_lens[dataset, alpha],
                "reference_length": float(reference[dataset]),
                "role": role,
                "text": text,
                "text_role": text_role(role, text),
                "model_type": loaded.model.config.model_type,
            },
        )


for role in ROLES:
    score_role(role)
    gc.collect()  # the first model's weights go before the second's load
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
