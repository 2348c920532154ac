"""Rule report: the study's single-file HTML report."""

import pandas as pd

from circuitry.logs import setup_logging
from circuitry.paths import Layout
from circuitry.provenance import collect_provenance
from circuitry.report import dynamics_section, write_report
from circuitry.results import load_study

log = setup_logging(snakemake.log[0])
study = load_study(Layout(), snakemake.config)
provenance = collect_provenance(
    snakemake.config, command=snakemake.params.command, project_dir=snakemake.params.project_dir
)
extra = []
if "dynamics_summary" in snakemake.input.keys():
    extra.append(
        dynamics_section(
            snakemake.config,
            pd.read_csv(snakemake.input.dynamics_summary),
            pd.read_csv(snakemake.input.dynamics_highlights),
            snakemake.input.dynamics_training_figure,
            snakemake.input.dynamics_metrics_figure,
        )
    )
write_report(
    snakemake.output[0],
    study,
    provenance,
    template=snakemake.input.template,
    extra_sections=extra,
)
log.info("report written to %s", snakemake.output[0])
