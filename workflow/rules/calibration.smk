# Calibration: known-answer pairs that prove each reading before a verdict relies on it.
# One job per calibrated base model scores it under every edit (applied at load, no copy
# of the weights) on its own paired answers at one alpha; a second sets every reading's
# change against the known answer, beside the base model's own scores from its pair.


include: "calibration_helpers.smk"


rule calibration_score:
    input:
        model=lambda wildcards: model_dir(wildcards.model),
        pairs=calibration_pair_files(PAIRS_FILE),
        summaries=calibration_pair_files(PAIR_SUMMARY),
    output:
        scores=calibration_score_files(),
        agreement=CALIBRATION_AGREEMENT,
    log:
        "logs/calibration_score/{model}.log",
    benchmark:
        "benchmarks/calibration_score/{model}.tsv"
    conda:
        "../../envs/circuitry.yaml"
    threads: lambda wildcards: model_threads(wildcards.model)
    resources:
        mem_mb=lambda wildcards: model_mem_mb(wildcards.model),
        runtime=lambda wildcards: model_runtime(wildcards.model, per_billion=60),
        gpu=lambda wildcards: model_gpus(wildcards.model),
    params:
        code=code_of("calibration_score.py"),
        model=lambda wildcards: model_spec(MODEL_SPECS, wildcards.model),
        datasets=DATASETS,
        edits=CALIBRATION["edits"],
        conditions=calibration_score_conditions(),
        losses=EAP_LOSSES,
        alpha=CALIBRATION_ALPHA,
        batch_size=config["eap"]["batch_size"],
    script:
        "../scripts/calibration_score.py"


rule calibration:
    input:
        base=calibration_base_files,
        edited=calibration_score_files(),
        agreement=CALIBRATION_AGREEMENT,
    output:
        CALIBRATION_TABLE,
    log:
        "logs/calibration/{model}.log",
    benchmark:
        "benchmarks/calibration/{model}.tsv"
    conda:
        "../../envs/circuitry.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        code=code_of("calibration.py"),
        pair=lambda wildcards: CALIBRATION_SCOPE[wildcards.model],
        base_conditions=calibration_base_conditions(),
        edited_conditions=calibration_score_conditions(),
        edits=CALIBRATION["edits"],
        stats=config["stats"],
    script:
        "../scripts/calibration.py"
