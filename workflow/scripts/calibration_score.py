"""Rule calibration_score: a base model under each known-answer edit, scored on its own
paired answers at one alpha (every loss), and each edit's teacher-forced agreement with
those answers beside the base model's own."""

from fractions import Fraction

import numpy as np
import torch

from circuitry.attribution.eap import model_graph, score_windows
from circuitry.attribution.edits import apply_edit
from circuitry.attribution.samples import windowed_samples
from circuitry.attribution.scorefile import write_score_files
from circuitry.generation.pairing import cut_length
from circuitry.generation.resumable import teacher_forcing
from circuitry.io import read_json, read_jsonl, write_json
from circuitry.logs import setup_logging
from circuitry.models.loading import load_model

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
params = snakemake.params
files = {
    (c["dataset"], c["edit"], c["loss"]): path
    for c, path in zip(params.conditions, snakemake.output.scores, strict=True)
}
loaded = load_model(params.model)
graph = model_graph(loaded.model).as_arrays()
agreement = {}
for dataset, pairs, summary_path in zip(
    params.datasets, snakemake.input.pairs, snakemake.input.summaries, strict=True
):
    rows, summary = read_jsonl(pairs), read_json(summary_path)
    cut_len = cut_length(float(params.alpha), summary)
    samples = windowed_samples(rows, "base", cut_len)
    answers = [{"idx": row["idx"], **row["base"]} for row in rows]
    agreement[dataset] = {"base": teacher_forcing(loaded, answers, params.batch_size).as_dict()}
    for edit, settings in params.edits.items():
        try:
            handles = apply_edit(loaded.model, settings)
        except ValueError as e:
            raise ValueError(f"calibration.edits.{edit}: {e}") from None
        try:
            forced = teacher_forcing(loaded, answers, params.batch_size)
            scored = score_windows(
                loaded.model, samples, params.losses, batch_size=params.batch_size
            )
        finally:
            for handle in handles:
                handle.remove()
        agreement[dataset][edit] = forced.as_dict()
        log.info(
            "%s, %s: %d samples, cut_len %d, agreement %.4f (base %.4f)",
            dataset,
            edit,
            len(samples),
            cut_len,
            forced.agreement,
            agreement[dataset]["base"]["agreement"],
        )
        write_score_files(
            {loss: files[dataset, edit, loss] for loss in scored},
            scored,
            idx=np.array([row["idx"] for row in rows]),
            graph=graph,
            condition={
                "alpha": float(params.alpha),
                "cut_len": cut_len,
                "reference_length": float(Fraction(summary["reference_length_fraction"])),
                "role": "tuned",
                "text": "crossed",
                "text_role": "base",
                "model_type": loaded.model.config.model_type,
            },
        )
write_json(snakemake.output.agreement, agreement)
