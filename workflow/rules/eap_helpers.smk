# Helpers of rules/eap.smk, which includes this file at its top (Snakemake's lint keeps
# functions out of the files that hold rules).
# analysis.smk reads a pair's score files by these lists too (and weight_diff its model
# directories), and faithfulness.smk a pair's models by pair_models.

from circuitry.attribution.memory import planned_job_device_mb
from circuitry.io import read_json, read_jsonl
from circuitry.models.sources import ModelUnavailableError


def pair_models(wildcards):
    """role -> model name of the pair."""
    pair = config["pairs"][wildcards.pair]
    return {role: pair[role] for role in ("base", "tuned")}


def pair_model_dirs(wildcards):
    """The pair's models built by the workflow, as inputs of its jobs that read weights (EAP,
    weight_diff)."""
    return {role: model_dir(model) for role, model in pair_models(wildcards).items()}


def pair_model_specs(wildcards):
    return {
        role: model_spec(MODEL_SPECS, model)
        for role, model in pair_models(wildcards).items()
    }


def pair_resources(resource, **kwargs):
    """A per-model resource of the pair's EAP job: the larger of its two models'."""
    return lambda wildcards: max(
        resource(model, **kwargs) for model in pair_models(wildcards).values()
    )


def planned_gpu_mem_mb(roles, conditions, n_losses):
    """A resource callable: the GPU memory (MB) a job's GPU models need for its samples
    (`circuitry.attribution.memory.planned_job_device_mb`), from its pair files and each
    model's config.json. `roles(wildcards)`: role -> model, `conditions(wildcards)`: its
    (dataset, alpha, text). 0 without a GPU model, and while those files do not exist yet:
    Snakemake evaluates resources again before it schedules a job."""

    def resource(wildcards):
        models = {r: m for r, m in roles(wildcards).items() if uses_gpu(m)}
        listed = conditions(wildcards)
        datasets = sorted({dataset for dataset, _, _ in listed})
        files = {
            d: (
                PAIRS_FILE.format(pair=wildcards.pair, dataset=d),
                PAIR_SUMMARY.format(pair=wildcards.pair, dataset=d),
            )
            for d in datasets
        }
        if not models or not all(os.path.exists(p) for d in files for p in files[d]):
            return 0
        try:
            return planned_job_device_mb(
                {
                    role: model_spec(MODEL_SPECS, model)
                    for role, model in models.items()
                },
                {d: read_jsonl(rows) for d, (rows, _) in files.items()},
                {d: read_json(summary) for d, (_, summary) in files.items()},
                listed,
                n_losses,
            )
        except (FileNotFoundError, ModelUnavailableError):  # no config.json yet
            return 0

    return resource


def pair_conditions(wildcards):
    """(dataset, alpha, text) of every condition an EAP job scores."""
    return [(d, a, t) for d in DATASETS for a in ALPHAS for t in EAP_TEXTS]


def pair_runtime(wildcards):
    """The EAP job scores one model after the other, on every dataset: their runtimes add up."""
    return len(DATASETS) * sum(
        model_runtime(model, per_billion=60)
        for model in pair_models(wildcards).values()
    )


def score_conditions(alphas):
    """alpha x text x loss x role of every score file of one pair x dataset, in the order
    the EAP job writes them and the metrics job reads them."""
    return [
        {"alpha": alpha, "text": text, "loss": loss, "role": role}
        for alpha in alphas
        for text in EAP_TEXTS
        for loss in EAP_LOSSES
        for role in ("base", "tuned")
    ]


def pair_score_conditions():
    """dataset x alpha x text x loss x role of every score file of one pair, in the order
    the EAP job writes them."""
    return [
        {"dataset": dataset, **condition}
        for dataset in DATASETS
        for condition in score_conditions(ALPHAS)
    ]


def pair_score_files():
    """Every score file of one pair, with a {pair} wildcard."""
    return [EAP_FILE.format(pair="{pair}", **c) for c in pair_score_conditions()]


def eap_files():
    return [
        EAP_FILE.format(pair=pair, dataset=dataset, **condition)
        for pair in PAIRS
        for dataset in DATASETS
        for condition in score_conditions(ALPHAS)
    ]
