"""Rule train_dynamics: one `train` run's GRPO, trl saving its checkpoints as it goes."""

import torch

from circuitry.data.prompts import PromptTemplate
from circuitry.io import read_jsonl
from circuitry.logs import setup_logging
from circuitry.models.training import train_grpo

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
init = snakemake.params.init
frame = train_grpo(
    init.get("path") or init["hub_id"],
    [row for path in snakemake.input.data for row in read_jsonl(path)],
    PromptTemplate.from_config(snakemake.params.template),
    snakemake.params.settings,
    out_dir=None,
    run_dir=snakemake.output[0],
    revision=init.get("revision"),
)
log.info("run %s: %d steps logged", snakemake.wildcards.run, len(frame))
