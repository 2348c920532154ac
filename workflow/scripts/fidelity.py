"""Rule fidelity: what the deviations from the paper's code change on one pair, per
dataset."""

from circuitry.analysis.fidelity import measure_pair
from circuitry.io import read_json, read_jsonl, write_csv
from circuitry.logs import setup_logging

log = setup_logging(snakemake.log[0])
score_files = {}
for condition, path in zip(snakemake.params.conditions, snakemake.input.scores, strict=True):
    key = (float(condition["alpha"]), condition["role"])
    score_files.setdefault(condition["dataset"], {})[key] = path
for dataset, base, tuned, rows, summary, table_file in zip(
    snakemake.params.datasets,
    snakemake.input.base,
    snakemake.input.tuned,
    snakemake.input.rows,
    snakemake.input.summaries,
    snakemake.output,
    strict=True,
):
    table = measure_pair(
        {"base": read_jsonl(base), "tuned": read_jsonl(tuned)},
        read_jsonl(rows),
        read_json(summary),
        score_files[dataset],
        pair=snakemake.wildcards.pair,
        dataset=dataset,
    )
    write_csv(table_file, table)
    log.info("%s: %d measures", dataset, len(table))
