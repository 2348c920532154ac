"""Rule stats: every condition's tests in one table, with Benjamini-Hochberg q-values."""

import pandas as pd

from circuitry.analysis.stats import assemble_tests_table
from circuitry.io import write_csv
from circuitry.logs import setup_logging

log = setup_logging(snakemake.log[0])
table = assemble_tests_table(pd.read_csv(path) for path in snakemake.input)
write_csv(snakemake.output[0], table)
log.info("%d tests, %d with q < 0.05", len(table), int((table["q"] < 0.05).sum()))
