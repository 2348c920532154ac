# Helpers of rules/dynamics.smk, which includes this file at its top (Snakemake's lint keeps
# functions out of the files that hold rules).
# generation_helpers.smk holds what the dynamics' generation needs as well: DYNAMICS_EVAL,
# initial_model and dynamics_models.

TRAIN_RUNS = [name for name, run in RUNS.items() if "train" in run]
DYNAMICS_ALPHA = str(config["dynamics"]["alpha"]) if CHECKPOINTS else None


def dynamics_train_inputs(wildcards):
    train = RUNS[wildcards.run]["train"]
    return {
        "data": expand(DATASET_ROWS, dataset=train["data"]),
        "init": model_dir(RUNS[wildcards.run]["init"]),
    }


def adapter_models():
    """Checkpoints that are PEFT adapters, merged onto their run's initial model."""
    return [c.name for c in CHECKPOINTS if c.kind == "adapter"]


def merge_inputs(wildcards):
    spec = MODEL_SPECS[wildcards.model]
    return {
        "adapter": spec["adapter"],
        "init": model_dir(initial_model(wildcards.model)),
    }


def dynamics_scored():
    """model x text x loss of every dynamics score file, in the order the summary reads them."""
    return [
        {"model": model, "text": text, "loss": loss}
        for model in dynamics_models()
        for text in runs.scored_texts(config, model)
        for loss in EAP_LOSSES
    ]


def dynamics_score_files(texts):
    """One dynamics model's score files of these texts, with a {model} wildcard."""
    return [
        DYNAMICS_EAP_FILE.format(model="{model}", text=text, loss=loss)
        for text in texts
        for loss in EAP_LOSSES
    ]


def dynamics_problem_files(model):
    """The problem set (and its summary) of a dynamics model's initial model."""
    init = initial_model(model)
    return {
        "problems": DYNAMICS_PROBLEMS.format(init=init),
        "summary": DYNAMICS_PROBLEMS_SUMMARY.format(init=init),
    }


def dynamics_score_inputs(wildcards):
    """What scoring a dynamics model reads: its weights, its initial model's problem set
    and, for a checkpoint, its own answers."""
    inputs = {
        "model": model_dir(wildcards.model),
        **dynamics_problem_files(wildcards.model),
    }
    if wildcards.model not in DYNAMICS_INITS:
        inputs["generations"] = GENERATIONS.format(
            model=wildcards.model, dataset=DYNAMICS_EVAL
        )
    return inputs


def dynamics_logs():
    """`{run: where its logged series are}` for the runs that have them."""
    return {
        name: source
        for name, run in RUNS.items()
        if (source := runs.log_source(run)) is not None
    }


def dynamics_inputs():
    """What the dynamics summary reads: logs, accuracies and every score file."""
    if not CHECKPOINTS:
        return {}
    return {
        "logs": list(dynamics_logs().values()),
        "accuracy": [
            GENERATION_PROVENANCE.format(model=m, dataset=DYNAMICS_EVAL)
            for m in dynamics_models()
        ],
        "scores": [DYNAMICS_EAP_FILE.format(**s) for s in dynamics_scored()],
    }
