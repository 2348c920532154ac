# Circuit metrics of every condition, then paired statistics over the whole study.


rule metrics:
    input:
        base="results/eap/{pair}/{dataset}/alpha{alpha}/base.npz",
        tuned="results/eap/{pair}/{dataset}/alpha{alpha}/tuned.npz",
    output:
        csv="results/metrics/{pair}/{dataset}/alpha{alpha}.csv",
        json="results/metrics/{pair}/{dataset}/alpha{alpha}.json",
        tests="results/metrics/{pair}/{dataset}/alpha{alpha}.tests.csv",
    log:
        "logs/metrics/{pair}/{dataset}/alpha{alpha}.log",
    conda:
        "../../envs/circuitry.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        stats=config["stats"],
    script:
        "../scripts/metrics.py"


localrules:
    stats,


rule stats:
    input:
        metric_files("tests.csv"),
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
