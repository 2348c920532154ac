# Paired generation: every model answers every benchmark problem greedily, graded.


rule generate:
    input:
        dataset="resources/datasets/{dataset}.jsonl",
        model=lambda wildcards: model_dir(wildcards.model),
    output:
        rows="results/generations/{model}/{dataset}.jsonl",
        provenance="results/generations/{model}/{dataset}.provenance.json",
    log:
        "logs/generate/{model}/{dataset}.log",
    benchmark:
        "benchmarks/generate/{model}/{dataset}.tsv"
    conda:
        "../../envs/circuitry.yaml"
    threads: lambda wildcards: model_threads(wildcards.model)
    resources:
        mem_mb=lambda wildcards: model_mem_mb(wildcards.model),
        runtime=lambda wildcards: model_runtime(wildcards.model, per_billion=120),
        gpu=lambda wildcards: model_gpus(wildcards.model),
    params:
        model=lambda wildcards: model_spec(config, wildcards.model),
        template=lambda wildcards: template_of(wildcards.model),
        batch_size=lambda wildcards: config["models"][wildcards.model].get(
            "batch_size", config["generation"]["batch_size"]
        ),
    script:
        "../scripts/generate.py"
