# Helpers of rules/faithfulness.smk, which includes this file at its top (Snakemake's lint keeps
# functions out of the files that hold rules).
# faithfulness_files also lists the report's faithfulness inputs and, in the Snakefile,
# the default target's.

FAITHFULNESS_SCOPE = check_scope(config, "faithfulness")
SURVIVAL_SCOPE = check_scope(config, "survival")


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


SURVIVAL = config["survival"]
# (role, loss) of each score file a survival job reads: both roles on their own answers
SURVIVAL_SCORE_KEYS = [
    [role, loss] for role in ("base", "tuned") for loss in SURVIVAL["losses"]
]


def survival_score_files():
    return [
        EAP_FILE.format(
            pair="{pair}",
            dataset="{dataset}",
            alpha="{alpha}",
            role=role,
            loss=loss,
            text="own",
        )
        for role, loss in SURVIVAL_SCORE_KEYS
    ]


def survival_files(patterns=(SURVIVAL_TESTS,)):
    """Every survival job's outputs of `patterns` (none when the check is off)."""
    return expand(
        list(patterns),
        pair=SURVIVAL_SCOPE["pairs"],
        dataset=SURVIVAL_SCOPE["datasets"],
        alpha=SURVIVAL_SCOPE["alphas"],
    )
