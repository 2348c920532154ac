"""Rule metrics: circuit metrics of one pair x dataset at every alpha and loss, and the
paired tests of every comparison."""

from circuitry.circuit_metrics import load_condition, per_sample_table
from circuitry.io import write_csv
from circuitry.logs import setup_logging
from circuitry.paths import PAPER_CONDITION
from circuitry.stats import pair_dataset_tests

log = setup_logging(snakemake.log[0])
paths = {}
for condition, path in zip(snakemake.params.conditions, snakemake.input, strict=True):
    key = (condition["alpha"], condition["loss"])
    paths.setdefault(key, {})[condition["role"], condition["text"]] = path
metrics = {}
for alpha, csv, json in zip(
    snakemake.params.alphas, snakemake.output.csv, snakemake.output.json, strict=True
):
    by_loss = {loss: load_condition(paths[alpha, loss]) for loss in snakemake.params.losses}
    write_csv(csv, per_sample_table(by_loss))
    by_loss[PAPER_CONDITION["loss"]].write_summary(json)
    metrics |= {(alpha, loss): m for loss, m in by_loss.items()}
    log.info("alpha %s: %d samples", alpha, len(by_loss[PAPER_CONDITION["loss"]].idx))
tests = pair_dataset_tests(
    metrics,
    pair=snakemake.wildcards.pair,
    dataset=snakemake.wildcards.dataset,
    seed=snakemake.params.stats["seed"],
    n_resamples=snakemake.params.stats["n_resamples"],
)
write_csv(snakemake.output.tests, tests)
log.info("%d tests, %d duplicate-window rows", len(tests), int(tests["duplicate_of"].notna().sum()))
