"""Rule import_generations: a model's answers produced elsewhere (vLLM, SGLang, the
Qwen2.5-Math harness) become its generation rows: checked against the model, its template
and each dataset, graded, and read back with the model's forward like generated ones."""

import torch

from circuitry.data.prompts import PromptTemplate
from circuitry.generation.imported import import_generations
from circuitry.generation.records import generation_record
from circuitry.io import read_jsonl, sha256_file, write_json, write_jsonl
from circuitry.logs import setup_logging
from circuitry.models.loading import load_model

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
spec, params = snakemake.params.model, snakemake.params
file_format = spec["generations"]["format"]
template = PromptTemplate.from_config(params.template)
lm = load_model(spec)
for dataset, source, path, out, provenance in zip(
    params.datasets,
    snakemake.input.datasets,
    snakemake.input.generations,
    snakemake.output.rows,
    snakemake.output.provenance,
    strict=True,
):
    log.info("importing %s (%s) for %s", path, file_format, dataset)
    problems = read_jsonl(source)
    rows = import_generations(path, file_format, lm, template, problems, spec["max_new_tokens"])
    record = generation_record(
        lm,
        rows,
        problems,
        batch_size=params.batch_size,
        agreement_threshold=params.agreement_threshold,
        label=f"{snakemake.wildcards.model} on {dataset}",
    )
    imported = {"generated": "imported", "format": file_format, "file": path}
    write_json(provenance, {**record, **imported, "sha256": sha256_file(path)})
    write_jsonl(out, rows)
