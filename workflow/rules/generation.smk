# Paired generation: every model answers every benchmark problem greedily, graded. One job
# per model answers all its datasets (one start-up and one model load for all of them).


rule generate:
    input:
        datasets=expand("resources/datasets/{dataset}.jsonl", dataset=DATASETS),
        model=lambda wildcards: model_dir(wildcards.model),
    output:
        rows=expand("results/generations/{{model}}/{dataset}.jsonl", dataset=DATASETS),
        provenance=expand(
            "results/generations/{{model}}/{dataset}.provenance.json", dataset=DATASETS
        ),
    log:
        "logs/generate/{model}.log",
    benchmark:
        "benchmarks/generate/{model}.tsv"
    wildcard_constraints:
        model=one_of(MODELS),
    conda:
        "../../envs/circuitry.yaml"
    threads: lambda wildcards: model_threads(wildcards.model)
    resources:
        mem_mb=lambda wildcards: model_mem_mb(wildcards.model),
        runtime=lambda wildcards: model_runtime(wildcards.model, per_billion=120),
        gpu=lambda wildcards: model_gpus(wildcards.model),
    params:
        datasets=DATASETS,
        model=lambda wildcards: model_spec(config, wildcards.model),
        fingerprint=lambda wildcards: local_model_fingerprint(wildcards.model),
        template=lambda wildcards: template_of(wildcards.model),
        batch_size=lambda wildcards: config["models"][wildcards.model].get(
            "batch_size", config["generation"]["batch_size"]
        ),
        agreement_threshold=config["generation"]["agreement_threshold"],
    script:
        "../scripts/generate.py"


if CHECKPOINTS:

    # Models only the training dynamics use (its checkpoints; its initial model where no
    # pair has it) answer its eval dataset only.
    use rule generate as generate_dynamics with:
        input:
            datasets=[f"resources/datasets/{DYNAMICS_EVAL}.jsonl"],
            model=lambda wildcards: model_dir(wildcards.model),
        output:
            rows=[f"results/generations/{{model}}/{DYNAMICS_EVAL}.jsonl"],
            provenance=[
                f"results/generations/{{model}}/{DYNAMICS_EVAL}.provenance.json"
            ],
        wildcard_constraints:
            model=one_of(m for m in dynamics_models() if m not in MODELS),
        params:
            datasets=[DYNAMICS_EVAL],
