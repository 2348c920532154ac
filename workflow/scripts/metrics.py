"""Rule metrics: circuit metrics of one pair x dataset x alpha, and their paired tests."""

from circuitry.logs import setup_logging
from circuitry.metrics import compute_circuit_metrics, load_edge_scores
from circuitry.stats import compare_roles, write_tests_table

log = setup_logging(snakemake.log[0])
metrics = compute_circuit_metrics(
    load_edge_scores(snakemake.input.base), load_edge_scores(snakemake.input.tuned)
)
metrics.write(snakemake.output.csv, snakemake.output.json)
tests = compare_roles(
    metrics,
    pair=snakemake.wildcards.pair,
    dataset=snakemake.wildcards.dataset,
    alpha=float(snakemake.wildcards.alpha),
    seed=snakemake.params.stats["seed"],
    n_resamples=snakemake.params.stats["n_resamples"],
)
write_tests_table(tests, snakemake.output.tests)
log.info("%d samples; pooled: %s", len(metrics.idx), metrics.pooled)
