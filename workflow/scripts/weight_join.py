"""Rule weight_join: each pair's layers, weight update beside intensity change, and the
figures of where the weights changed."""

import pandas as pd

from circuitry.analysis.weight_join import layer_correlation, study_join
from circuitry.analysis.weight_table import layer_kind_norms
from circuitry.figures.weights import plot_layer_join, plot_update_norms
from circuitry.io import read_json, write_csv
from circuitry.logs import setup_logging

log = setup_logging(snakemake.log[0])
pairs = snakemake.params.pairs
inputs = snakemake.input
summaries = dict(zip(pairs, map(read_json, inputs.summaries), strict=True))
layers = dict(zip(pairs, map(pd.read_csv, inputs.layers), strict=True))
join = study_join(summaries, layers)
write_csv(snakemake.output.join, join)
tables = dict(zip(pairs, map(pd.read_csv, inputs.tables), strict=True))
norms = {pair: layer_kind_norms(table) for pair, table in tables.items()}
plot_update_norms(norms, snakemake.output.update_norm)
correlations = layer_correlation(join)
plot_layer_join(join, correlations, snakemake.output.layer_join)
for row in correlations.itertuples():
    log.info("%s, %s: Spearman %.3f over %d layers", row.pair, row.loss, row.spearman, row.n_layers)
