# Models the workflow trains itself (the toy lineage; RL checkpoints of the dynamics).


rule train_model:
    input:
        unpack(train_inputs),
    output:
        directory(TRAINED_MODEL_DIR),
    log:
        "logs/train_model/{model}.log",
    benchmark:
        "benchmarks/train_model/{model}.tsv"
    wildcard_constraints:
        model=one_of(TRAINED),
    # A trained model starts the longest chain of jobs (generation, pairs, EAP, metrics):
    # train it before the jobs of models already done, or the last one trains at the end.
    priority: 10
    conda:
        "../../envs/circuitry.yaml"
    threads: lambda wildcards: train_threads(wildcards.model)
    resources:
        mem_mb=lambda wildcards: model_mem_mb(wildcards.model),
        runtime=lambda wildcards: model_runtime(wildcards.model, per_billion=240),
        gpu=lambda wildcards: model_gpus(wildcards.model),
    params:
        train=lambda wildcards: config["models"][wildcards.model]["train"],
        template=lambda wildcards: template_of(wildcards.model),
    script:
        "../scripts/train_model.py"
