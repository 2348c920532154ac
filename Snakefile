# circuitry: how post-training changes the internal circuitry of language models.
#
#   snakemake --cores 2                                   toy study (config/toy.yaml)
#   snakemake --cores all --configfile config/config.yaml  the paper's reproduction


import os

from snakemake.utils import min_version

min_version("9.0")


# The toy study is the default; --configfile replaces it instead of merging into it.
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "toy.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/generation.smk"
include: "workflow/rules/pairs.smk"
include: "workflow/rules/eap.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/dynamics.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "results/report/report.html",


# One target per stage (`snakemake stage_eap` builds every EAP score file, and
# everything it needs); `snakemake --list-target-rules` lists them.


localrules:
    all,
    stage_data,
    stage_models,
    stage_generation,
    stage_pairs,
    stage_eap,
    stage_metrics,
    stage_figures,


rule stage_data:
    input:
        dataset_files(),


rule stage_models:
    input:
        trained_model_dirs(),


rule stage_generation:
    input:
        generation_files(),


rule stage_pairs:
    input:
        pair_files(),


rule stage_eap:
    input:
        eap_files(),


rule stage_metrics:
    input:
        metric_files("csv"),
        "results/stats/tests.csv",
        fidelity_files(),


rule stage_figures:
    input:
        figure_files(),
