# Helpers of rules/analysis.smk, which includes this file at its top (Snakemake's lint keeps
# functions out of the files that hold rules).


def paper_score_conditions():
    """dataset x alpha x role of one pair's score files of the paper's condition (its
    loss, own text)."""
    return [
        c
        for c in pair_score_conditions()
        if (c["loss"], c["text"]) == (PAPER_CONDITION["loss"], PAPER_CONDITION["text"])
    ]


def paper_score_files():
    return [EAP_FILE.format(pair="{pair}", **c) for c in paper_score_conditions()]


def weight_diff_files():
    return expand(WEIGHT_DIFF_SUMMARY, pair=PAIRS)


def fidelity_files():
    return expand(FIDELITY_FILE, pair=PAIRS, dataset=DATASETS)


def metrics_outputs():
    """One pair's metrics (CSV, JSON) of every dataset x alpha, its tests per dataset, and
    the intensity on each layer's edges (every dataset, alpha and loss)."""
    per_alpha = {
        ext: [
            METRICS_FILE.format(pair="{pair}", dataset=dataset, alpha=alpha, ext=ext)
            for dataset in DATASETS
            for alpha in ALPHAS
        ]
        for ext in ("csv", "json")
    }
    return per_alpha | {"tests": per_dataset(PAIR_TESTS), "layers": LAYER_INTENSITY}


def metric_files(kind="csv"):
    return expand(METRICS_FILE, pair=PAIRS, dataset=DATASETS, alpha=ALPHAS, ext=kind)


def pair_test_files():
    return expand(PAIR_TESTS, pair=PAIRS, dataset=DATASETS)
