# EAP: every residual edge of both models of a pair scored under each loss, on their own
# answers and (crossed) on each other's. One job per pair scores one model after the other
# on every dataset (one start-up and one load per model) and writes every
# dataset x alpha x text x loss x role file.


include: "eap_helpers.smk"


rule eap_score:
    input:
        unpack(pair_model_dirs),
        pairs=expand(PAIRS_FILE, pair="{pair}", dataset=DATASETS),
        summaries=expand(PAIR_SUMMARY, pair="{pair}", dataset=DATASETS),
    output:
        pair_score_files(),
    log:
        "logs/eap_score/{pair}.log",
    benchmark:
        "benchmarks/eap_score/{pair}.tsv"
    conda:
        "../../envs/circuitry.yaml"
    threads: pair_resources(model_threads)
    resources:
        mem_mb=pair_resources(model_mem_mb),
        runtime=pair_runtime,
        gpu=pair_resources(model_gpus),
        gpu_mem_mb=planned_gpu_mem_mb(pair_models, pair_conditions, len(EAP_LOSSES)),
    params:
        code=code_of("eap_score.py"),
        datasets=DATASETS,
        conditions=pair_score_conditions(),
        losses=EAP_LOSSES,
        models=pair_model_specs,
        batch_size=config["eap"]["batch_size"],
        memory_gib=config["eap"].get("memory_gib"),
    script:
        "../scripts/eap_score.py"
