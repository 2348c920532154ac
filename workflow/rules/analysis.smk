# Circuit metrics of every condition, paired statistics over the whole study, the verdict
# of every headline cell, and what the deviations from the paper's code change (fidelity).


include: "analysis_helpers.smk"


# One job per pair (every dataset): each job's start-up costs more than a dataset's metrics.
rule metrics:
    input:
        pair_score_files(),
    output:
        **metrics_outputs(),
    log:
        "logs/metrics/{pair}.log",
    benchmark:
        "benchmarks/metrics/{pair}.tsv"
    conda:
        "../../envs/circuitry.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30 * len(DATASETS),
    params:
        code=code_of("metrics.py"),
        conditions=pair_score_conditions(),
        datasets=DATASETS,
        alphas=ALPHAS,
        losses=EAP_LOSSES,
        stats=config["stats"],
    script:
        "../scripts/metrics.py"


# Where post-training changed the weights, tensor by tensor (never a whole model in memory).
rule weight_diff:
    input:
        unpack(pair_model_dirs),
    output:
        table=WEIGHT_DIFF_TABLE,
        summary=WEIGHT_DIFF_SUMMARY,
    log:
        "logs/weight_diff/{pair}.log",
    benchmark:
        "benchmarks/weight_diff/{pair}.tsv"
    conda:
        "../../envs/circuitry.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=60,
    params:
        code=code_of("weight_diff.py"),
        models=pair_model_specs,
    script:
        "../scripts/weight_diff.py"


# Each pair's layers: the weight update beside the intensity change on the layer's edges,
# under the paper's loss and the calibrated reading; one job draws every pair's figures.
rule weight_join:
    input:
        summaries=expand(WEIGHT_DIFF_SUMMARY, pair=PAIRS),
        tables=expand(WEIGHT_DIFF_TABLE, pair=PAIRS),
        layers=expand(LAYER_INTENSITY, pair=PAIRS),
    output:
        **{
            name: report(
                path,
                caption=f"../report/weights_{name}.rst",
                category="Weights",
                labels={"figure": name},
            )
            for name, path in WEIGHT_FIGURES.items()
        },
        join=WEIGHT_JOIN,
    log:
        "logs/weight_join.log",
    benchmark:
        "benchmarks/weight_join.tsv"
    conda:
        "../../envs/circuitry.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_of("weight_join.py"),
        pairs=PAIRS,
    script:
        "../scripts/weight_join.py"


rule fidelity:
    input:
        unpack(pair_generations),
        rows=per_dataset(PAIRS_FILE),
        summaries=per_dataset(PAIR_SUMMARY),
        scores=paper_score_files(),
    output:
        per_dataset(FIDELITY_FILE),
    log:
        "logs/fidelity/{pair}.log",
    benchmark:
        "benchmarks/fidelity/{pair}.tsv"
    conda:
        "../../envs/circuitry.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=60 * len(DATASETS),
    params:
        code=code_of("fidelity.py"),
        conditions=paper_score_conditions(),
        datasets=DATASETS,
    script:
        "../scripts/fidelity.py"


localrules:
    stats,
    verdicts,
    weight_join,


rule stats:
    input:
        pair_test_files(),
    output:
        TESTS,
    log:
        "logs/stats.log",
    benchmark:
        "benchmarks/stats.tsv"
    conda:
        "../../envs/circuitry.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_of("stats.py"),
    script:
        "../scripts/stats.py"


rule verdicts:
    input:
        tests=TESTS,
        calibration=calibration_tables(),
        summaries=expand(PAIR_SUMMARY, pair=PAIRS, dataset=DATASETS),
        survival=survival_files(),
    output:
        VERDICTS,
    log:
        "logs/verdicts.log",
    benchmark:
        "benchmarks/verdicts.tsv"
    conda:
        "../../envs/circuitry.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_of("verdicts.py"),
        summary_keys=[[pair, dataset] for pair in PAIRS for dataset in DATASETS],
    script:
        "../scripts/verdicts.py"
