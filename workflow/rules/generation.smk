# Paired generation: every model answers every benchmark problem greedily, graded. One job
# per model answers all its datasets (one start-up and one model load for all of them).


include: "generation_helpers.smk"


rule generate:
    input:
        datasets=expand(DATASET_ROWS, dataset=DATASETS),
        model=lambda wildcards: model_dir(wildcards.model),
    output:
        rows=expand(GENERATIONS, model="{model}", dataset=DATASETS),
        provenance=expand(GENERATION_PROVENANCE, model="{model}", dataset=DATASETS),
    log:
        "logs/generate/{model}.log",
    benchmark:
        "benchmarks/generate/{model}.tsv"
    wildcard_constraints:
        model=one_of(m for m in MODELS if m not in imported_models()),
    conda:
        "../../envs/circuitry.yaml"
    threads: lambda wildcards: model_threads(wildcards.model)
    resources:
        mem_mb=lambda wildcards: model_mem_mb(wildcards.model),
        runtime=lambda wildcards: model_runtime(wildcards.model, per_billion=120),
        gpu=lambda wildcards: model_gpus(wildcards.model),
    params:
        code=code_of("generate.py"),
        datasets=DATASETS,
        model=lambda wildcards: model_spec(MODEL_SPECS, wildcards.model),
        fingerprint=lambda wildcards: local_model_fingerprint(wildcards.model),
        template=lambda wildcards: template_of(wildcards.model),
        batch_size=generation_batch_size,
        agreement_threshold=config["generation"]["agreement_threshold"],
        backend=config["generation"]["backend"],
        initial_model=None,
    script:
        "../scripts/generate.py"


# Models with `generations:` read their answers from files produced elsewhere instead; the
# rows are checked against the model and the datasets, graded, and read back like the
# generated ones, into the same outputs.
rule import_generations:
    input:
        datasets=expand(DATASET_ROWS, dataset=DATASETS),
        generations=imported_files,
    output:
        rows=expand(GENERATIONS, model="{model}", dataset=DATASETS),
        provenance=expand(GENERATION_PROVENANCE, model="{model}", dataset=DATASETS),
    log:
        "logs/import_generations/{model}.log",
    benchmark:
        "benchmarks/import_generations/{model}.tsv"
    wildcard_constraints:
        model=one_of(imported_models()),
    conda:
        "../../envs/circuitry.yaml"
    threads: lambda wildcards: model_threads(wildcards.model)
    resources:
        mem_mb=lambda wildcards: model_mem_mb(wildcards.model),
        runtime=lambda wildcards: model_runtime(wildcards.model, per_billion=30),
        gpu=lambda wildcards: model_gpus(wildcards.model),
    params:
        code=code_of("import_generations.py"),
        datasets=DATASETS,
        model=lambda wildcards: model_spec(MODEL_SPECS, wildcards.model),
        fingerprint=lambda wildcards: local_model_fingerprint(wildcards.model),
        template=lambda wildcards: template_of(wildcards.model),
        batch_size=generation_batch_size,
        agreement_threshold=config["generation"]["agreement_threshold"],
    script:
        "../scripts/import_generations.py"


if CHECKPOINTS:

    # Models only the training dynamics use (its checkpoints; its initial model where no
    # pair has it) answer its eval dataset only.
    use rule generate as generate_dynamics with:
        input:
            datasets=[DATASET_ROWS.format(dataset=DYNAMICS_EVAL)],
            model=lambda wildcards: dynamics_model_dirs(wildcards.model),
        output:
            rows=[GENERATIONS.format(model="{model}", dataset=DYNAMICS_EVAL)],
            provenance=[
                GENERATION_PROVENANCE.format(model="{model}", dataset=DYNAMICS_EVAL)
            ],
        wildcard_constraints:
            model=one_of(m for m in dynamics_models() if m not in MODELS),
        params:
            datasets=[DYNAMICS_EVAL],
            initial_model=lambda wildcards: dynamics_initial_spec(wildcards.model),
