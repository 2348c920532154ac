"""Rule generate: one model answers every problem of its datasets greedily; rows are graded.

One job per model loads it once for all its datasets. Each dataset's rows go to its
partial file as they come, and the final files are written only when every dataset is
done, so a killed job resumes each dataset where it stopped."""

import torch

from circuitry.generation import (
    generate_rows,
    load_model,
    partial_path_for,
    teacher_forcing,
    write_generations,
)
from circuitry.grading import grade
from circuitry.io import read_jsonl, write_json
from circuitry.logs import setup_logging
from circuitry.prompts import PromptTemplate

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
spec, params = snakemake.params.model, snakemake.params
template = PromptTemplate.from_config(params.template)
lm = load_model(spec)
answered = []
for dataset, source, out in zip(
    params.datasets, snakemake.input.datasets, snakemake.output.rows, strict=True
):
    problems = read_jsonl(source)
    rows = generate_rows(
        lm,
        template,
        problems,
        max_new_tokens=spec["max_new_tokens"],
        batch_size=params.batch_size,
        partial_path=partial_path_for(out),
    )
    gold = {problem["idx"]: problem["answer"] for problem in problems}
    for row in rows:
        row["pred"], row["correct"] = grade(row["completion"], gold[row["idx"]])
    accuracy = sum(row["correct"] for row in rows) / len(rows)
    log.info(
        "%s on %s: accuracy %.3f over %d problems",
        snakemake.wildcards.model,
        dataset,
        accuracy,
        len(rows),
    )
    forced = teacher_forcing(lm, rows, params.batch_size)
    if shortfall := forced.shortfall(params.agreement_threshold):
        log.warning("%s on %s: %s", snakemake.wildcards.model, dataset, shortfall)
    answered.append((rows, accuracy, forced))
for (rows, accuracy, forced), out, provenance in zip(
    answered, snakemake.output.rows, snakemake.output.provenance, strict=True
):
    record = {"accuracy": accuracy, "n": len(rows), "teacher_forcing": forced.as_dict()}
    write_json(provenance, {**lm.provenance(), **record})
    write_generations(out, rows, partial_path_for(out))
