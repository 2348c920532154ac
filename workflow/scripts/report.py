"""Rule report: the study's single-file HTML report."""

import pandas as pd

from circuitry.analysis.results import keyed_files, load_study
from circuitry.attribution.faithfulness import load_faithfulness
from circuitry.io import read_json
from circuitry.logs import setup_logging
from circuitry.provenance import collect_provenance
from circuitry.report.dynamics import dynamics_section
from circuitry.report.faithfulness import faithfulness_section
from circuitry.report.render import write_report
from circuitry.report.weights import weights_section

log = setup_logging(snakemake.log[0])
params = snakemake.params
study = load_study(keyed_files(snakemake.input, params.file_keys), params.config)
provenance = collect_provenance(
    params.config, command=params.command, project_dir=params.project_dir
)
extra = []
if "dynamics_summary" in snakemake.input.keys():
    extra.append(
        dynamics_section(
            params.config,
            pd.read_csv(snakemake.input.dynamics_summary),
            pd.read_csv(snakemake.input.dynamics_highlights),
            snakemake.input.dynamics_training_figure,
            snakemake.input.dynamics_metrics_figure,
        )
    )
if "faithfulness_figure" in snakemake.input.keys():
    extra.append(
        faithfulness_section(
            params.config,
            load_faithfulness(snakemake.input.faithfulness_summaries),
            snakemake.input.faithfulness_figure,
        )
    )
extra.append(
    weights_section(
        dict(zip(study.pairs, map(read_json, snakemake.input.weights_summaries), strict=True)),
        pd.read_csv(snakemake.input.weights_join),
        study.pairs,
        {name: snakemake.input[f"weights_{name}"] for name in params.weight_figures},
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
