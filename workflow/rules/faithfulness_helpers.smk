# Helpers of rules/faithfulness.smk, which includes this file at its top (Snakemake's lint keeps
# functions out of the files that hold rules).
# faithfulness_files also lists the report's faithfulness inputs and, in the Snakefile,
# the default target's.

FAITHFULNESS_SCOPE = faithfulness_scope(config)


def role_model(wildcards):
    """The model of a job's pair and role."""
    return pair_models(wildcards)[wildcards.role]


def role_resources(resource, **kwargs):
    """A per-model resource of the job's pair and role."""
    return lambda wildcards: resource(role_model(wildcards), **kwargs)


def faithfulness_files(patterns=(FAITHFULNESS_SUMMARY, FAITHFULNESS_EDGES)):
    """Every faithfulness summary and edge table (none when the check is off)."""
    return expand(
        list(patterns),
        pair=FAITHFULNESS_SCOPE["pairs"],
        dataset=FAITHFULNESS_SCOPE["datasets"],
        alpha=FAITHFULNESS_SCOPE["alphas"],
        role=("base", "tuned"),
    )
