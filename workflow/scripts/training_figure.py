"""Rule training_figure: the training curves of a model the workflow trained."""

from pathlib import Path

from circuitry.figures import make_training_figure
from circuitry.logs import setup_logging
from circuitry.training import LOG_FILE

setup_logging(snakemake.log[0])
model = snakemake.wildcards.model
make_training_figure(
    Path(snakemake.input[0]) / LOG_FILE,
    snakemake.output[0],
    model=model,
    train=snakemake.config["models"][model]["train"],
)
