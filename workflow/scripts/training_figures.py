"""Rule training_figures: the training curves of every model the workflow trained."""

from pathlib import Path

from circuitry.figures import make_training_figure
from circuitry.logs import setup_logging
from circuitry.training import LOG_FILE

setup_logging(snakemake.log[0])
for model, model_dir, path in zip(
    snakemake.params.models, snakemake.input, snakemake.output, strict=True
):
    make_training_figure(
        Path(model_dir) / LOG_FILE,
        path,
        model=model,
        train=snakemake.config["models"][model]["train"],
    )
