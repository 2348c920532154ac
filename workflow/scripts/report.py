"""Rule report: the study's single-file HTML report."""

from circuitry.logs import setup_logging
from circuitry.provenance import collect_provenance
from circuitry.report import write_report
from circuitry.results import Layout, load_study

log = setup_logging(snakemake.log[0])
study = load_study(Layout(), snakemake.config)
provenance = collect_provenance(
    snakemake.config, command=snakemake.params.command, project_dir=snakemake.params.project_dir
)
write_report(snakemake.output[0], study, provenance, template=snakemake.input.template)
log.info("report written to %s", snakemake.output[0])
