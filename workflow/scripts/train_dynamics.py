"""Rule train_dynamics: one temperature's GRPO run, saving every checkpoint."""

import torch

from circuitry.config import model_spec
from circuitry.dynamics import checkpoint_dirs
from circuitry.io import read_jsonl, write_csv
from circuitry.logs import setup_logging
from circuitry.prompts import PromptTemplate
from circuitry.training import train_grpo

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
init = model_spec(snakemake.config, snakemake.config["dynamics"]["init"])
frame = train_grpo(
    init.get("path") or init["hub_id"],
    [row for path in snakemake.input.data for row in read_jsonl(path)],
    PromptTemplate.from_config(snakemake.params.template),
    snakemake.params.settings,
    out_dir=None,
    checkpoints=checkpoint_dirs(snakemake.config, snakemake.wildcards.temperature),
    revision=init.get("revision"),
)
write_csv(snakemake.output.log, frame)
log.info("temperature %s: %d steps logged", snakemake.wildcards.temperature, len(frame))
