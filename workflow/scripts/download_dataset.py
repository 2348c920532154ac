"""Rule download_dataset: one benchmark, normalised, with a summary of dropped rows."""

from circuitry.data.benchmarks import build_dataset
from circuitry.io import sha256_file, write_json, write_jsonl
from circuitry.logs import setup_logging

log = setup_logging(snakemake.log[0])
name = snakemake.wildcards.dataset
rows, summary = build_dataset(name, dict(snakemake.params.spec), snakemake.params.download_dir)
write_jsonl(snakemake.output.rows, rows)
summary["sha256"] = sha256_file(snakemake.output.rows)
write_json(snakemake.output.summary, summary)
log.info(
    "%s: kept %d of %d rows, dropped %s",
    name,
    summary["n_kept"],
    summary["n_raw"],
    summary["dropped"],
)
