"""Rule generate: one model answers every problem of its datasets greedily; rows are graded.

One job per model loads it once for all its datasets. Each dataset's rows go to its
partial file as they come, and the final files are written only when every dataset is
done, so a killed job resumes each dataset where it stopped."""

import torch

from circuitry.data.prompts import PromptTemplate
from circuitry.generation.records import generation_record
from circuitry.generation.resumable import generate_rows, partial_path_for, write_generations
from circuitry.io import read_jsonl, write_json
from circuitry.logs import setup_logging
from circuitry.models.loading import load_model, load_tokenizer
from circuitry.models.runs import check_same_tokenizer

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
spec, params = snakemake.params.model, snakemake.params
template = PromptTemplate.from_config(params.template)
lm = load_model(spec)
if params.initial_model is not None:  # a checkpoint of the training dynamics
    check_same_tokenizer(
        snakemake.wildcards.model, load_tokenizer(params.initial_model), lm.tokenizer
    )
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
        backend=params.backend,
    )
    record = generation_record(
        lm,
        rows,
        problems,
        batch_size=params.batch_size,
        agreement_threshold=params.agreement_threshold,
        label=f"{snakemake.wildcards.model} on {dataset}",
    )
    answered.append((rows, {**record, "generated": params.backend}))
for (rows, record), out, provenance in zip(
    answered, snakemake.output.rows, snakemake.output.provenance, strict=True
):
    write_json(provenance, record)
    write_generations(out, rows, partial_path_for(out))
