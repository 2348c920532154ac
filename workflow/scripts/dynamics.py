"""Rule dynamics: accuracy and circuit change along each GRPO run, and Figures 4 and 5."""

import pandas as pd

from circuitry import dynamics
from circuitry.figures import plot_metric_dynamics, plot_reward_dynamics
from circuitry.io import atomic_path, read_json
from circuitry.logs import setup_logging

log = setup_logging(snakemake.log[0])
config = snakemake.config
evaluated = config["dynamics"]["eval_dataset"]
models = [config["dynamics"]["init"]] + [c.name for c in dynamics.checkpoints(config)]
accuracy = {
    m: read_json(p)["accuracy"] for m, p in zip(models, snakemake.input.accuracy, strict=True)
}
per_sample = {
    c.name: pd.read_csv(path)
    for c, path in zip(dynamics.checkpoints(config), snakemake.input.metrics, strict=True)
}
summary = dynamics.summary_table(config, accuracy, per_sample)
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
