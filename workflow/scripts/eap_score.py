"""Rule eap_score: EAP edge scores of one role's model on its own paired answers, per alpha."""

from fractions import Fraction

import numpy as np
import torch

from circuitry.eap import cut_length, model_graph, score_samples, windowed_samples
from circuitry.generation import load_model
from circuitry.io import read_json, read_jsonl, write_npz
from circuitry.logs import setup_logging

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
role = snakemake.wildcards.role
rows = read_jsonl(snakemake.input.pairs)
reference = Fraction(read_json(snakemake.input.summary)["reference_length_fraction"])
model = load_model(snakemake.params.model).model
graph = model_graph(model).as_arrays()
for alpha, output in zip(snakemake.params.alphas, snakemake.output, strict=True):
    cut_len = cut_length(float(alpha), reference)
    samples = windowed_samples(rows, role, cut_len)
    log.info("alpha %s: %d samples, T = %s, cut_len %d", alpha, len(samples), reference, cut_len)
    scores = score_samples(model, samples, batch_size=snakemake.params.batch_size, progress=True)
    write_npz(
        output,
        scores=scores,
        idx=np.array([row["idx"] for row in rows]),
        cut_len=np.array(cut_len),
        window_len=np.array([sample.cut_len for sample in samples]),
        reference_length=np.array(float(reference)),
        alpha=np.array(float(alpha)),
        **graph,
    )
