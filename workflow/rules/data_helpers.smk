# Helpers of rules/data.smk, which includes this file at its top (Snakemake's lint keeps
# functions out of the files that hold rules).

ALL_DATASETS = all_datasets(config)


def local_dataset_file(wildcards):
    """A local source file is an input, so editing it reruns the download."""
    spec = ALL_DATASETS[wildcards.dataset]
    return [spec["path"]] if spec["source"] == "jsonl" else []


def dataset_files():
    return expand(DATASET_ROWS, dataset=DATASETS)
