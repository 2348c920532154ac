# EAP: every residual edge of both models of a pair scored under each loss, on their own
# answers and (crossed) on each other's. One job per pair and dataset scores one model
# after the other (one start-up, both models' files) and writes every
# alpha x text x loss x role file.


rule eap_score:
    input:
        unpack(pair_model_dirs),
        pairs="results/pairs/{pair}/{dataset}.jsonl",
        summary="results/pairs/{pair}/{dataset}.summary.json",
    output:
        score_files(ALPHAS),
    log:
        "logs/eap_score/{pair}/{dataset}.log",
    benchmark:
        "benchmarks/eap_score/{pair}/{dataset}.tsv"
    conda:
        "../../envs/circuitry.yaml"
    threads: pair_resources(model_threads)
    resources:
        mem_mb=pair_resources(model_mem_mb),
        runtime=pair_runtime,
        gpu=pair_resources(model_gpus),
    params:
        conditions=score_conditions(ALPHAS),
        losses=EAP_LOSSES,
        models=pair_model_specs,
        batch_size=config["eap"]["batch_size"],
    script:
        "../scripts/eap_score.py"
