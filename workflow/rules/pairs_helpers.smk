# Helpers of rules/pairs.smk, which includes this file at its top (Snakemake's lint keeps
# functions out of the files that hold rules).
# The fidelity job of analysis.smk reads a pair's answers and samples the same way.


def pair_generations(wildcards):
    """role -> the answers of the pair's model in that role, one file per dataset."""
    pair = config["pairs"][wildcards.pair]
    return {
        role: [GENERATIONS.format(model=pair[role], dataset=d) for d in DATASETS]
        for role in ("base", "tuned")
    }


def per_dataset(pattern):
    """`pattern`'s file of every dataset of one pair, with a {pair} wildcard (what a pair's
    job reads or writes, in `DATASETS` order)."""
    return [pattern.format(pair="{pair}", dataset=d) for d in DATASETS]


def pair_files():
    return expand(PAIRS_FILE, pair=PAIRS, dataset=DATASETS)
