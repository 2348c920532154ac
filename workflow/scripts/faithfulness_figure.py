"""Rule faithfulness_figure: top-k against random-k edges removed, every checked model."""

from circuitry.attribution.faithfulness import load_faithfulness
from circuitry.figures.faithfulness import plot_faithfulness
from circuitry.logs import setup_logging

log = setup_logging(snakemake.log[0])
plot_faithfulness(load_faithfulness(snakemake.input), snakemake.output[0])
log.info("faithfulness curves of %d jobs drawn", len(snakemake.input))
