"""Rule dynamics: accuracy and circuit change along each GRPO run, and Figures 4 and 5."""

from circuitry import dynamics
from circuitry.figures import plot_metric_dynamics, plot_reward_dynamics
from circuitry.io import atomic_path, read_json
from circuitry.logs import setup_logging

log = setup_logging(snakemake.log[0])
config = snakemake.config
accuracy = {
    model: read_json(path)["accuracy"]
    for model, path in zip(snakemake.params.models, snakemake.input.accuracy, strict=True)
}
values = {
    (s["model"], s["text"], s["loss"]): dynamics.tracked_values(path)
    for s, path in zip(snakemake.params.scored, snakemake.input.scores, strict=True)
}
summary = dynamics.summary_table(config, accuracy, values)
highlights = dynamics.highlights(summary)
for name, frame in (("summary", summary), ("highlights", highlights)):
    with atomic_path(snakemake.output[name]) as tmp:
        frame.to_csv(tmp, index=False)
logs = {
    t: dynamics.reward_log(p)
    for t, p in zip(dynamics.temperatures(config), snakemake.input.logs, strict=True)
}
plot_reward_dynamics(logs, snakemake.output.reward_figure, window=dynamics.REWARD_WINDOW)
plot_metric_dynamics(summary, highlights, snakemake.output.metrics_figure)
log.info("fastest accuracy gain and metric extrema:\n%s", highlights.to_string(index=False))
