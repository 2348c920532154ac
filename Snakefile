# circuitry: how post-training changes the internal circuitry of language models.
#
#   snakemake --cores 2                                   toy study (config/toy.yaml)
#   snakemake --cores all --configfile config/config.yaml  the paper's reproduction
#
# The workflow itself is workflow/Snakefile (the layout the Snakemake workflow catalog
# and snakedeploy expect); this file is the entry point in the project root.


include: "workflow/Snakefile"


# Snakemake keeps the default target of the including file, not the included one's.
workflow.default_target = "all"
