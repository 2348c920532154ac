"""Rule calibration: every known-answer pair of one base model, under every reading,
against its known answer."""

from circuitry.analysis.calibration import calibration_table, known_answer_rows, reading_status
from circuitry.attribution.scorefile import load_edge_scores
from circuitry.io import read_json, write_csv
from circuitry.logs import setup_logging

log = setup_logging(snakemake.log[0])
params = snakemake.params
base = {
    (c["dataset"], c["loss"]): load_edge_scores(path, role="base", text="own")
    for c, path in zip(params.base_conditions, snakemake.input.base, strict=True)
}
agreement = read_json(snakemake.input.agreement)
rows = []
for c, path in zip(params.edited_conditions, snakemake.input.edited, strict=True):
    dataset, edit, loss = c["dataset"], c["edit"], c["loss"]
    rows += known_answer_rows(
        base[dataset, loss],
        load_edge_scores(path, role="tuned", text="crossed"),
        model=snakemake.wildcards.model,
        pair=params.pair,
        dataset=dataset,
        edit_name=edit,
        edit=params.edits[edit],
        loss=loss,
        agreement=agreement[dataset][edit]["agreement"],
        base_agreement=agreement[dataset]["base"]["agreement"],
        seed=params.stats["seed"],
        n_resamples=params.stats["n_resamples"],
    )
table = calibration_table(rows)
write_csv(snakemake.output[0], table)
for loss, passed in reading_status(table).items():
    log.info("%s: %s its calibration", loss, "passed" if passed else "FAILED")
