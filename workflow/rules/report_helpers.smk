# Helpers of rules/report.smk, which includes this file at its top (Snakemake's lint keeps
# functions out of the files that hold rules).

LAYOUT = Layout()
TRAINING_FIGURES = LAYOUT.training_figures(trained_in_use(config))
# Relative to the working directory, as every input is: a checkout moved with its results
# (or a fresh clone given them) plans nothing to rerun.
REPORT_TEMPLATE = os.path.relpath(WORKFLOW_DIR / "report" / "report.html.j2")


def faithfulness_report_inputs():
    """The faithfulness summaries and their figure, which the report shows (none when
    the check is off)."""
    summaries = faithfulness_files([FAITHFULNESS_SUMMARY])
    return {"summaries": summaries, "figure": FAITHFULNESS_FIGURE} if summaries else {}


def weights_report_inputs():
    """Every pair's weight-diff summary, the layer join and its figures."""
    return {
        "summaries": expand(WEIGHT_DIFF_SUMMARY, pair=PAIRS),
        "join": WEIGHT_JOIN,
        **WEIGHT_FIGURES,
    }


def dynamics_report_inputs():
    """The dynamics outputs the report shows (none when dynamics is off)."""
    return DYNAMICS_OUTPUTS if CHECKPOINTS else {}


def figure_files():
    files = [f for pair in PAIRS for f in LAYOUT.pair_figures(pair, DATASETS).values()]
    return files + list(TRAINING_FIGURES.values())


def named_inputs(files):
    """A rule's named inputs from `{kind: {key: path}}` (`Layout.report_files`,
    `figure_files`): kind -> paths."""
    return {kind: list(paths.values()) for kind, paths in files.items()}


def input_keys(files):
    """The keys of `named_inputs(files)` in the same order, handed to the script as a param
    (`circuitry.analysis.results.keyed_files` pairs them again)."""
    return {kind: list(paths) for kind, paths in files.items()}
