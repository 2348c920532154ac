# Circuit metrics of every condition, then paired statistics over the whole study.


rule metrics:
    input:
        score_files(ALPHAS),
    output:
        **metrics_outputs(ALPHAS),
    log:
        "logs/metrics/{pair}/{dataset}.log",
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


localrules:
    stats,


rule stats:
    input:
        pair_test_files(),
    output:
        "results/stats/tests.csv",
    log:
        "logs/stats.log",
    conda:
        "../../envs/circuitry.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/stats.py"
