"""Rule metrics: circuit metrics of one pair at every dataset, alpha and loss, and the
paired tests of every comparison; one dataset after the other, so memory holds one."""

import pandas as pd

from circuitry.analysis.circuit_metrics import load_condition, per_sample_table
from circuitry.analysis.stats import pair_dataset_tests
from circuitry.io import write_csv
from circuitry.logs import setup_logging
from circuitry.paths import PAPER_CONDITION

log = setup_logging(snakemake.log[0])
params = snakemake.params
paths = {}
for condition, path in zip(params.conditions, snakemake.input, strict=True):
    key = (condition["dataset"], condition["alpha"], condition["loss"])
    paths.setdefault(key, {})[condition["role"], condition["text"]] = path
csvs, jsons = iter(snakemake.output.csv), iter(snakemake.output.json)  # dataset x alpha
layers = []
for dataset, tests_file in zip(params.datasets, snakemake.output.tests, strict=True):
    metrics = {}
    for alpha in params.alphas:
        by_loss = {loss: load_condition(paths[dataset, alpha, loss]) for loss in params.losses}
        write_csv(next(csvs), per_sample_table(by_loss))
        by_loss[PAPER_CONDITION["loss"]].write_summary(next(jsons))
        metrics |= {(alpha, loss): m for loss, m in by_loss.items()}
        layers += [
            m.layer_intensity().assign(dataset=dataset, alpha=alpha, loss=loss)
            for loss, m in by_loss.items()
        ]
        n = len(by_loss[PAPER_CONDITION["loss"]].idx)
        log.info("%s, alpha %s: %d samples", dataset, alpha, n)
    tests = pair_dataset_tests(
        metrics,
        pair=snakemake.wildcards.pair,
        dataset=dataset,
        seed=params.stats["seed"],
        n_resamples=params.stats["n_resamples"],
    )
    write_csv(tests_file, tests)
    duplicates = int(tests["duplicate_of"].notna().sum())
    log.info("%s: %d tests, %d duplicate-window rows", dataset, len(tests), duplicates)
write_csv(snakemake.output.layers, pd.concat(layers, ignore_index=True))
