"""Rule figures: every figure of one pair, from its metrics and EAP scores."""

from circuitry.analysis.results import keyed_files, load_pair_results
from circuitry.figures.pair import make_pair_figures
from circuitry.logs import setup_logging

log = setup_logging(snakemake.log[0])
params = snakemake.params
results = load_pair_results(
    keyed_files(snakemake.input, params.file_keys), pair=params.pair, method=params.method
)
make_pair_figures(results, dict(zip(params.figures, snakemake.output, strict=True)))
log.info("figures of %s written", params.pair)
