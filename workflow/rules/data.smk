# Dataset stage: every benchmark normalised to resources/datasets/{dataset}.jsonl.


# Downloads run on the submit host: compute nodes of many clusters have no internet.
localrules:
    download_dataset,


rule download_dataset:
    input:
        local_dataset_file,
    output:
        rows="resources/datasets/{dataset}.jsonl",
        summary="resources/datasets/{dataset}.summary.json",
    log:
        "logs/download_dataset/{dataset}.log",
    conda:
        "../../envs/circuitry.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        spec=lambda wildcards: config["datasets"][wildcards.dataset],
        download_dir="resources/downloads",
    script:
        "../scripts/download_dataset.py"
