# Helpers of rules/calibration.smk, which includes this file at its top (Snakemake's lint keeps
# functions out of the files that hold rules).
# calibration_tables are also an input of analysis.smk's verdicts.

CALIBRATION_SCOPE = calibration_scope(config)
CALIBRATION_ALPHA = calibration_alpha(config)


def calibration_pair_files(pattern):
    """A calibrated model's pair's files of `pattern` (answers, summaries), every dataset."""
    return lambda wildcards: [
        pattern.format(pair=CALIBRATION_SCOPE[wildcards.model], dataset=dataset)
        for dataset in DATASETS
    ]


def calibration_score_conditions():
    """dataset x edit x loss of every edited score file of one model, in writing order."""
    return [
        {"dataset": dataset, "edit": edit, "loss": loss}
        for dataset in DATASETS
        for edit in CALIBRATION["edits"]
        for loss in EAP_LOSSES
    ]


def calibration_score_files():
    """The edited score files of one calibrated model, with a {model} wildcard."""
    return [
        CALIBRATION_EAP_FILE.format(model="{model}", **c)
        for c in calibration_score_conditions()
    ]


def calibration_base_conditions():
    """dataset x loss of the base model's own score files a calibration reads."""
    return [{"dataset": d, "loss": loss} for d in DATASETS for loss in EAP_LOSSES]


def calibration_base_files(wildcards):
    """The base model's own scores at the calibration alpha, from its pair's EAP job."""
    where = {"alpha": CALIBRATION_ALPHA, "role": "base", "text": "own"}
    pair = CALIBRATION_SCOPE[wildcards.model]
    return [
        EAP_FILE.format(pair=pair, **where, **c) for c in calibration_base_conditions()
    ]


def calibration_tables():
    return expand(CALIBRATION_TABLE, model=CALIBRATION_SCOPE)
