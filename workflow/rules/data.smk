# Dataset stage: every benchmark and training set normalised to resources/datasets/.


include: "data_helpers.smk"


# Downloads run on the submit host: compute nodes of many clusters have no internet.
localrules:
    download_dataset,


rule download_dataset:
    input:
        local_dataset_file,
    output:
        rows=DATASET_ROWS,
        summary=DATASET_SUMMARY,
    log:
        "logs/download_dataset/{dataset}.log",
    benchmark:
        "benchmarks/download_dataset/{dataset}.tsv"
    wildcard_constraints:
        dataset=one_of(ALL_DATASETS),
    conda:
        "../../envs/circuitry.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        code=code_of("download_dataset.py"),
        spec=lambda wildcards: ALL_DATASETS[wildcards.dataset],
        download_dir=DOWNLOADS,
    script:
        "../scripts/download_dataset.py"
