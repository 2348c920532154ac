"""Rule weight_diff: where post-training changed one pair's weights, tensor by tensor."""

import torch

from circuitry.analysis.weight_table import summarise
from circuitry.analysis.weights import diff_models
from circuitry.io import write_csv, write_json
from circuitry.logs import setup_logging
from circuitry.models.sources import weights_dir

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)  # the SVDs would take every core otherwise
models = snakemake.params.models
table, notes = diff_models(weights_dir(models["base"]), weights_dir(models["tuned"]))
summary = summarise(table)
write_csv(snakemake.output.table, table)
write_json(snakemake.output.summary, {"pair": snakemake.wildcards.pair, "notes": notes, **summary})
for note in notes:
    log.warning("%s", note)
log.info("%d tensors compared; whole model: %s", len(table), summary["model"])
