"""Rule verdicts: the verdict of every headline cell, under the calibration of this run."""

import pandas as pd

from circuitry.analysis.calibration import calibration_state
from circuitry.analysis.results import load_calibration, load_tests
from circuitry.analysis.survival import with_survival
from circuitry.analysis.verdicts import headline_verdicts
from circuitry.generation.pairing import cut_length
from circuitry.io import read_json, write_csv
from circuitry.logs import setup_logging

log = setup_logging(snakemake.log[0])
tests = load_tests(snakemake.input.tests)
calibration = calibration_state(load_calibration(snakemake.input.calibration))
summaries = {
    tuple(key): read_json(path)
    for key, path in zip(snakemake.params.summary_keys, snakemake.input.summaries, strict=True)
}
cut_lens = {
    (pair, dataset, float(alpha)): cut_length(float(alpha), summaries[pair, dataset])
    for pair, dataset, alpha in tests[["pair", "dataset", "alpha"]]
    .drop_duplicates()
    .itertuples(index=False)
}
verdicts = headline_verdicts(tests, calibration, cut_lens)
if snakemake.input.survival:
    survival = pd.concat(map(pd.read_csv, snakemake.input.survival), ignore_index=True)
    verdicts = with_survival(verdicts, survival)
write_csv(snakemake.output[0], verdicts)
log.info("calibration %s; %s", calibration, verdicts["verdict"].value_counts().to_dict())
