# Sample pairing: problems both models answered correctly, with comparable lengths.


localrules:
    pair_samples,


rule pair_samples:
    input:
        unpack(pair_generations),
    output:
        rows=PAIRS_FILE,
        summary=PAIR_SUMMARY,
    log:
        "logs/pair_samples/{pair}/{dataset}.log",
    benchmark:
        "benchmarks/pair_samples/{pair}/{dataset}.tsv"
    conda:
        "../../envs/circuitry.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        filter=config["filter"],
    script:
        "../scripts/pair_samples.py"
