# Helpers of rules/generation.smk, which includes this file at its top (Snakemake's lint keeps
# functions out of the files that hold rules).
# The training dynamics' models answer through this stage's generate_dynamics, so what
# dynamics.smk shares with it (initial_model, dynamics_models, DYNAMICS_EVAL) lives here.

# The dataset the training dynamics' models answer.
DYNAMICS_EVAL = config["dynamics"]["eval_dataset"] if CHECKPOINTS else None


def local_model_fingerprint(model):
    """The fingerprint of a user's local `path:` model (None for others; the models the
    workflow builds are inputs of the jobs that use them): when its files change, the job's
    parameters change and Snakemake reruns it and everything downstream."""
    path = MODEL_SPECS[model].get("path")
    return model_fingerprint(path) if path and not model_dir(model) else None


def imported_models():
    """Models whose answers are imported (`generations:`) instead of generated."""
    return [m for m in MODELS if "generations" in MODEL_SPECS[m]]


def imported_files(wildcards):
    """The files a model's answers are imported from, one per dataset: inputs, so a
    replaced file reruns the import and everything downstream."""
    spec = MODEL_SPECS[wildcards.model]
    return [imported_file(spec, dataset) for dataset in DATASETS]


def generation_batch_size(wildcards):
    """Rows a model generates, or reads back, together."""
    spec = MODEL_SPECS[wildcards.model]
    return spec.get("batch_size", config["generation"]["batch_size"])


def generation_files():
    return expand(GENERATIONS, model=MODELS, dataset=DATASETS)


def initial_model(model):
    """A checkpoint's run's initial model."""
    return runs.init_of(config, MODEL_SPECS, model)


def dynamics_initial_spec(model):
    """A checkpoint's initial model's entry, whose tokenizer it must share (None for an
    initial model)."""
    init = initial_model(model)
    return None if init == model else model_spec(MODEL_SPECS, init)


def dynamics_model_dirs(model):
    """What a dynamics model's generation waits for: its weights and, for a checkpoint,
    its initial model's (whose tokenizer it is checked against)."""
    return list(dict.fromkeys(model_dir(model) + model_dir(initial_model(model))))


def dynamics_models():
    """The initial models, then every checkpoint in run and step order."""
    return DYNAMICS_INITS + [c.name for c in CHECKPOINTS]
