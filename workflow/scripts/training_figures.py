"""Rule training_figures: the training curves of every model the workflow trained."""

from circuitry.figures.training import make_training_figure
from circuitry.logs import setup_logging

setup_logging(snakemake.log[0])
params = snakemake.params
for model, train, log, path in zip(
    params.models, params.train, params.logs, snakemake.output, strict=True
):
    make_training_figure(log, path, model=model, train=train)
