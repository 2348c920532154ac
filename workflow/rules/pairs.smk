# Sample pairing: problems both models answered correctly, with comparable lengths.


include: "pairs_helpers.smk"


localrules:
    pair_samples,


rule pair_samples:
    input:
        unpack(pair_generations),
    output:
        rows=per_dataset(PAIRS_FILE),
        summaries=per_dataset(PAIR_SUMMARY),
    log:
        "logs/pair_samples/{pair}.log",
    benchmark:
        "benchmarks/pair_samples/{pair}.tsv"
    conda:
        "../../envs/circuitry.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        code=code_of("pair_samples.py"),
        filter=config["filter"],
        datasets=DATASETS,
    script:
        "../scripts/pair_samples.py"
