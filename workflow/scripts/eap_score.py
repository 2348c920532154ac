"""Rule eap_score: EAP scores of both models of a pair on one dataset, per
alpha x text x loss, with diagnostics; one model after the other."""

import gc
from fractions import Fraction

import numpy as np
import torch

from circuitry.eap import model_graph, score_windows, text_role, windowed_samples
from circuitry.generation import load_model, load_tokenizer
from circuitry.io import read_json, read_jsonl
from circuitry.logs import setup_logging
from circuitry.metrics import ROLES
from circuitry.pairing import check_shared_vocabulary, cut_length
from circuitry.scorefile import write_score_files

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
pair, models = snakemake.wildcards.pair, snakemake.params.models
rows = read_jsonl(snakemake.input.pairs)
reference = Fraction(read_json(snakemake.input.summary)["reference_length_fraction"])
files = {
    (c["role"], c["alpha"], c["text"], c["loss"]): path
    for c, path in zip(snakemake.params.conditions, snakemake.output, strict=True)
}
if any(text == "crossed" for _, _, text, _ in files):  # checked before the weights load
    check_shared_vocabulary(pair, {role: load_tokenizer(models[role]) for role in ROLES}, rows)


def score_role(role: str) -> None:
    """Load the `role` model and write its score file of every condition."""
    loaded = load_model(models[role])
    graph = model_graph(loaded.model).as_arrays()
    conditions = dict.fromkeys((a, text) for r, a, text, _ in files if r == role)
    for alpha, text in conditions:
        cut_len = cut_length(float(alpha), reference)
        log.info(
            "%s, alpha %s, %s text: %d samples, T = %s, cut_len %d",
            role,
            alpha,
            text,
            len(rows),
            reference,
            cut_len,
        )
        scored = score_windows(
            loaded.model,
            windowed_samples(rows, role, cut_len, text),
            snakemake.params.losses,
            batch_size=snakemake.params.batch_size,
            progress=True,
        )
        write_score_files(
            {loss: files[role, alpha, text, loss] for loss in scored},
            scored,
            idx=np.array([row["idx"] for row in rows]),
            graph=graph,
            condition={
                "alpha": float(alpha),
                "cut_len": cut_len,
                "reference_length": float(reference),
                "role": role,
                "text": text,
                "text_role": text_role(role, text),
            },
        )


for role in ROLES:
    score_role(role)
    gc.collect()  # the first model's weights go before the second's load
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
