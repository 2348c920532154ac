"""Rule generate: one model answers every problem of one dataset greedily; rows are graded."""

import torch

from circuitry.generation import generate_rows, load_model, partial_path_for, write_generations
from circuitry.grading import grade
from circuitry.io import read_jsonl, write_json
from circuitry.logs import setup_logging
from circuitry.prompts import PromptTemplate

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
spec = snakemake.params.model
problems = read_jsonl(snakemake.input.dataset)
lm = load_model(spec)
partial = partial_path_for(snakemake.output.rows)
rows = generate_rows(
    lm,
    PromptTemplate.from_config(snakemake.params.template),
    problems,
    max_new_tokens=spec["max_new_tokens"],
    batch_size=snakemake.params.batch_size,
    partial_path=partial,
)
gold = {problem["idx"]: problem["answer"] for problem in problems}
for row in rows:
    row["pred"], row["correct"] = grade(row["completion"], gold[row["idx"]])
accuracy = sum(row["correct"] for row in rows) / len(rows)
write_json(snakemake.output.provenance, {**lm.provenance(), "accuracy": accuracy, "n": len(rows)})
write_generations(snakemake.output.rows, rows, partial)
log.info(
    "%s on %s: accuracy %.3f over %d problems",
    snakemake.wildcards.model,
    snakemake.wildcards.dataset,
    accuracy,
    len(rows),
)
