"""Rule dynamics_problems: an initial model's correct answers, filtered by its lengths, as
the fixed problem set of every checkpoint of its runs."""

from circuitry.analysis.dynamics import problem_set
from circuitry.generation.pairing import FilterSettings
from circuitry.io import read_jsonl, write_json, write_jsonl
from circuitry.logs import setup_logging

log = setup_logging(snakemake.log[0])
rows, summary = problem_set(
    read_jsonl(snakemake.input[0]),
    FilterSettings.from_config(snakemake.params.filter),
    init=snakemake.wildcards.init,
    dataset=snakemake.params.dataset,
)
log.info(
    "%d problems, T = %s, length bounds %s",
    summary["n_selected"],
    summary["reference_length_fraction"],
    summary["length_bounds"],
)
write_jsonl(snakemake.output.rows, rows)
write_json(snakemake.output.summary, summary)
