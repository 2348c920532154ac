# EAP: every residual edge of each model scored on its own answers, per alpha.


rule eap_score:
    input:
        pairs="results/pairs/{pair}/{dataset}.jsonl",
        summary="results/pairs/{pair}/{dataset}.summary.json",
        model=lambda wildcards: model_dir(role_model(wildcards)),
    output:
        "results/eap/{pair}/{dataset}/alpha{alpha}/{role}.npz",
    log:
        "logs/eap_score/{pair}/{dataset}/alpha{alpha}/{role}.log",
    benchmark:
        "benchmarks/eap_score/{pair}/{dataset}/alpha{alpha}/{role}.tsv"
    conda:
        "../../envs/circuitry.yaml"
    threads: lambda wildcards: model_threads(role_model(wildcards))
    resources:
        mem_mb=lambda wildcards: model_mem_mb(role_model(wildcards)),
        runtime=lambda wildcards: model_runtime(role_model(wildcards), per_billion=30),
        gpu=lambda wildcards: model_gpus(role_model(wildcards)),
    params:
        model=lambda wildcards: model_spec(config, role_model(wildcards)),
        batch_size=config["eap"]["batch_size"],
    script:
        "../scripts/eap_score.py"
