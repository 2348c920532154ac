"""Rule train_model: one model of the lineage, trained with trl."""

import torch

from circuitry.data.prompts import PromptTemplate
from circuitry.io import read_jsonl
from circuitry.logs import setup_logging
from circuitry.models.training import train_model

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
problems = [row for path in snakemake.input.data for row in read_jsonl(path)]
frame = train_model(
    snakemake.params.train,
    problems,
    PromptTemplate.from_config(snakemake.params.template),
    snakemake.input.get("init"),
    snakemake.output[0],
)
log.info("trained %s: %d logged steps", snakemake.wildcards.model, len(frame))
