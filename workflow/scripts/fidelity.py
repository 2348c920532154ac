"""Rule fidelity: what the deviations from the paper's code change on one pair x dataset."""

from circuitry.fidelity import measure_pair
from circuitry.io import read_json, read_jsonl, write_csv
from circuitry.logs import setup_logging

log = setup_logging(snakemake.log[0])
score_files = {
    (float(condition["alpha"]), condition["role"]): path
    for condition, path in zip(snakemake.params.conditions, snakemake.input.scores, strict=True)
}
table = measure_pair(
    {role: read_jsonl(snakemake.input[role]) for role in ("base", "tuned")},
    read_jsonl(snakemake.input.rows),
    read_json(snakemake.input.summary),
    score_files,
    pair=snakemake.wildcards.pair,
    dataset=snakemake.wildcards.dataset,
)
write_csv(snakemake.output[0], table)
log.info("%d measures", len(table))
