"""Rule check_rebuilt: a shipped model's rebuild is the shipped weights, bit for bit."""

from circuitry.io import write_json
from circuitry.logs import setup_logging
from circuitry.reproducibility import rebuilt_weights

log = setup_logging(snakemake.log[0])
model = snakemake.wildcards.model
hashes = rebuilt_weights(model, snakemake.input.shipped, snakemake.input.rebuilt)
log.info("%s rebuilt bit for bit: sha256 %s", model, hashes["rebuilt_sha256"])
write_json(snakemake.output[0], hashes)
