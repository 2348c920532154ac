"""Rule training_figures: the training curves of every model the workflow trained."""

from pathlib import Path

from circuitry.figures import make_training_figure
from circuitry.logs import setup_logging
from circuitry.training import LOG_FILE

setup_logging(snakemake.log[0])
params = snakemake.params
for model, train, model_dir, path in zip(
    params.models, params.train, snakemake.input, snakemake.output, strict=True
):
    make_training_figure(Path(model_dir) / LOG_FILE, path, model=model, train=train)
