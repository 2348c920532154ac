# Circuit metrics of every condition, paired statistics over the whole study, the verdict
# of every headline cell, and what the deviations from the paper's code change (fidelity).


rule metrics:
    input:
        score_files(ALPHAS),
    output:
        **metrics_outputs(ALPHAS),
    log:
        "logs/metrics/{pair}/{dataset}.log",
    benchmark:
        "benchmarks/metrics/{pair}/{dataset}.tsv"
    conda:
        "../../envs/circuitry.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        conditions=score_conditions(ALPHAS),
        alphas=ALPHAS,
        losses=EAP_LOSSES,
        stats=config["stats"],
    script:
        "../scripts/metrics.py"


rule fidelity:
    input:
        unpack(pair_generations),
        rows=PAIRS_FILE,
        summary=PAIR_SUMMARY,
        scores=paper_score_files(ALPHAS),
    output:
        FIDELITY_FILE,
    log:
        "logs/fidelity/{pair}/{dataset}.log",
    benchmark:
        "benchmarks/fidelity/{pair}/{dataset}.tsv"
    conda:
        "../../envs/circuitry.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=60,
    params:
        conditions=paper_score_conditions(ALPHAS),
    script:
        "../scripts/fidelity.py"


localrules:
    stats,
    verdicts,


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
    script:
        "../scripts/stats.py"


rule verdicts:
    input:
        tests=TESTS,
        calibration=calibration_tables(),
        summaries=expand(PAIR_SUMMARY, pair=PAIRS, dataset=DATASETS),
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
        summary_keys=[[pair, dataset] for pair in PAIRS for dataset in DATASETS],
    script:
        "../scripts/verdicts.py"
