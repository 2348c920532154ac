"""Rule merge_adapter: a PEFT adapter checkpoint merged onto its run's initial model."""

from circuitry.logs import setup_logging
from circuitry.models.files import merge_adapter

log = setup_logging(snakemake.log[0])
init = snakemake.params.init
merge_adapter(
    init.get("path") or init["hub_id"],
    snakemake.input.adapter,
    snakemake.output[0],
    revision=init.get("revision"),
)
log.info("%s merged onto %s", snakemake.input.adapter, init.get("path") or init["hub_id"])
