"""Rule pair_samples: the problems both models got right, filtered for comparable lengths."""

from circuitry.io import read_jsonl, write_json, write_jsonl
from circuitry.logs import setup_logging
from circuitry.pairing import FilterSettings, pair_samples

log = setup_logging(snakemake.log[0])
rows, summary = pair_samples(
    read_jsonl(snakemake.input.base),
    read_jsonl(snakemake.input.tuned),
    FilterSettings.from_config(snakemake.params.filter),
    pair=snakemake.wildcards.pair,
    dataset=snakemake.wildcards.dataset,
)
for step in summary["filters"]:
    log.info("%s: removed %d, %d left", step["reason"], step["removed"], step["remaining"])
if summary["too_few"]:
    log.warning(
        "only %d samples survive filtering (num_samples %d)",
        summary["n_selected"],
        snakemake.params.filter["num_samples"],
    )
write_jsonl(snakemake.output.rows, rows)
write_json(snakemake.output.summary, summary)
