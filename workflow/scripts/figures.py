"""Rule figures: every figure of one pair, from its metrics and EAP scores."""

from circuitry.figures import make_pair_figures
from circuitry.logs import setup_logging
from circuitry.paths import Layout
from circuitry.results import load_pair_results

log = setup_logging(snakemake.log[0])
layout, pair = Layout(), snakemake.wildcards.pair
make_pair_figures(
    load_pair_results(layout, snakemake.config, pair),
    layout.pair_figures(pair, snakemake.config["datasets"]),
)
log.info("figures of %s written", pair)
