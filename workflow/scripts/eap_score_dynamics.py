"""Rule eap_score_checkpoint / eap_score_initial: EAP scores of one model of the training
dynamics on the fixed problem set, on the initial model's answers and (a checkpoint) on
its own correct ones, one window length for all."""

from fractions import Fraction

import numpy as np
import torch

from circuitry.analysis.dynamics import own_answer_rows
from circuitry.attribution.eap import model_graph, score_distinct_windows
from circuitry.attribution.samples import windowed_samples
from circuitry.attribution.scorefile import write_score_files
from circuitry.generation.pairing import cut_length
from circuitry.io import read_json, read_jsonl
from circuitry.logs import setup_logging
from circuitry.models.loading import load_model

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
params = snakemake.params
problems = read_jsonl(snakemake.input.problems)
summary = read_json(snakemake.input.summary)
reference = Fraction(summary["reference_length_fraction"])
cut_len = cut_length(float(params.alpha), summary)
# text -> (rows, the side of a row whose answer is read); problem rows hold the initial
# model's answer on both sides
texts = {"initial": (problems, "base")}
if "own" in params.texts:
    own = own_answer_rows(problems, read_jsonl(snakemake.input.generations), summary)
    texts["own"] = (own, "tuned")
files = iter(snakemake.output)
paths = {(text, loss): next(files) for text in params.texts for loss in params.losses}
loaded = load_model(params.model)
graph = model_graph(loaded.model).as_arrays()
for text, (rows, _) in texts.items():
    log.info("%s text: %d of %d problems, cut_len %d", text, len(rows), len(problems), cut_len)
scored = score_distinct_windows(
    loaded.model,
    {text: windowed_samples(rows, side, cut_len) for text, (rows, side) in texts.items()},
    params.losses,
    batch_size=params.batch_size,
    progress=True,
)
for text, by_loss in scored.items():
    rows, side = texts[text]
    write_score_files(
        {loss: paths[text, loss] for loss in by_loss},
        by_loss,
        idx=np.array([row["idx"] for row in rows], dtype=np.int64),
        graph=graph,
        condition={
            "alpha": float(params.alpha),
            "cut_len": cut_len,
            "reference_length": float(reference),
            "role": params.role,
            "text": text,
            "text_role": side,
            "model_type": loaded.model.config.model_type,
        },
    )
