"""Rule dynamics: accuracy and circuit change along each run, beside its logged series
(the paper's Figures 4 and 5)."""

from circuitry.analysis import dynamics
from circuitry.figures.dynamics import plot_metric_dynamics, plot_training_log
from circuitry.io import read_json, write_csv
from circuitry.logs import setup_logging

log = setup_logging(snakemake.log[0])
params = snakemake.params
accuracy = {
    model: read_json(path)["accuracy"]
    for model, path in zip(params.models, snakemake.input.accuracy, strict=True)
}
values = {
    (s["model"], s["text"], s["loss"]): dynamics.tracked_values(path)
    for s, path in zip(params.scored, snakemake.input.scores, strict=True)
}
summary = dynamics.summary_table(params.runs, params.losses, params.stats, accuracy, values)
highlights = dynamics.highlights(summary)
write_csv(snakemake.output.summary, summary)
write_csv(snakemake.output.highlights, highlights)
logs = {
    run: dynamics.training_log(path)
    for run, path in zip(params.log_runs, snakemake.input.logs, strict=True)
}
plot_training_log(logs, highlights, snakemake.output.training_figure)
plot_metric_dynamics(summary, highlights, snakemake.output.metrics_figure)
log.info("fastest accuracy gain and metric extrema:\n%s", highlights.to_string(index=False))
