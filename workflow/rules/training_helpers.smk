# Helpers of rules/training.smk, which includes this file at its top (Snakemake's lint keeps
# functions out of the files that hold rules).

SHIPPED = shipped_models(config)


def train_threads(model):
    """Training from scratch starts the lineage: no other job can run beside it, so a tiny
    model takes two threads there (1.4x faster than one for the toy's SFT)."""
    from_scratch = config["models"][model]["train"].get("init") is None
    return max(2, model_threads(model)) if from_scratch else model_threads(model)


def trained_model_dirs():
    """Every model the workflow trains for the pairs in this run (and what they start from)."""
    needed, todo = set(), [m for m in MODELS if m in TRAINED]
    while todo:
        model = todo.pop()
        needed.add(model)
        init = config["models"][model]["train"].get("init")
        if init and init not in needed:
            todo.append(init)
    return [TRAINED_MODEL_DIR.format(model=m) for m in TRAINED if m in needed]


def train_inputs(wildcards):
    train = config["models"][wildcards.model]["train"]
    inputs = {"data": expand(DATASET_ROWS, dataset=train["data"])}
    if train.get("init"):
        inputs["init"] = TRAINED_MODEL_DIR.format(model=train["init"])
    return inputs
