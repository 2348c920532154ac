"""Rule pair_samples: per dataset, the problems both models of a pair got right, filtered
for comparable lengths."""

from circuitry.generation.pairing import FilterSettings, pair_samples
from circuitry.io import read_jsonl, write_json, write_jsonl
from circuitry.logs import setup_logging

log = setup_logging(snakemake.log[0])
settings = FilterSettings.from_config(snakemake.params.filter)
for dataset, base, tuned, rows_file, summary_file in zip(
    snakemake.params.datasets,
    snakemake.input.base,
    snakemake.input.tuned,
    snakemake.output.rows,
    snakemake.output.summaries,
    strict=True,
):
    rows, summary = pair_samples(
        read_jsonl(base),
        read_jsonl(tuned),
        settings,
        pair=snakemake.wildcards.pair,
        dataset=dataset,
    )
    for step in summary["filters"]:
        log.info(
            "%s: %s: removed %d, %d left",
            dataset,
            step["reason"],
            step["removed"],
            step["remaining"],
        )
    if summary["too_few"]:
        log.warning(
            "%s: only %d samples survive filtering (num_samples %d)",
            dataset,
            summary["n_selected"],
            snakemake.params.filter["num_samples"],
        )
    write_jsonl(rows_file, rows)
    write_json(summary_file, summary)
