"""Where every stage writes: the one owner of the workflow's output patterns.

Each pattern is a `str.format` template whose fields are the rules' wildcards (the
README's "Results layout" says what each file holds). `Layout` turns them into the lists
of files a rule declares and its script or loader reads, so what a rule declares is what
is read. It takes names,
never a config (`circuitry.config` builds on it and reads the config), and imports only
the standard library, so planning the workflow stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# The condition the paper scores (its loss, on each model's own answer): the files the
# figures and the headline results read.
PAPER_CONDITION = {"loss": "ce", "text": "own"}

DATASET_ROWS = "resources/datasets/{dataset}.jsonl"
DATASET_SUMMARY = "resources/datasets/{dataset}.summary.json"
DOWNLOADS = "resources/downloads"
TRAINED_MODEL_DIR = "resources/models/{model}"
TRAINING_LOG = "resources/models/{model}/training_log.csv"
REBUILT_MODEL_DIR = "resources/rebuilt/{model}"
REBUILT_CHECK = "results/rebuilt/{model}.json"
# Files of a model directory: its weights (their sha256 is what a rebuild must match) and
# the `train` settings that built it.
WEIGHTS_FILE = "model.safetensors"
RECIPE_FILE = "recipe.json"
RUN_DIR = "resources/dynamics/{run}"
TESTS = "results/stats/tests.csv"
METRICS_FILE = "results/metrics/{pair}/{dataset}/alpha{alpha}.{ext}"
PAIR_TESTS = "results/metrics/{pair}/{dataset}/tests.csv"
LAYER_INTENSITY = "results/metrics/{pair}/layers.csv"
EAP_FILE = "results/eap/{pair}/{dataset}/alpha{alpha}/{loss}/{role}_on_{text}.npz"
PAIRS_FILE = "results/pairs/{pair}/{dataset}.jsonl"
PAIR_SUMMARY = "results/pairs/{pair}/{dataset}.summary.json"
FIDELITY_FILE = "results/fidelity/{pair}/{dataset}.csv"
# Where post-training changed the weights: one row per tensor, and the summary.
WEIGHT_DIFF_TABLE = "results/weights/{pair}.csv"
WEIGHT_DIFF_SUMMARY = "results/weights/{pair}.json"
WEIGHT_JOIN = "results/weights/layers.csv"
WEIGHT_FIGURES = {
    "update_norm": "results/figures/weights/update_norm.png",
    "layer_join": "results/figures/weights/layer_join.png",
}
CALIBRATION_EAP_FILE = "results/calibration/{model}/{dataset}/{edit}/{loss}.npz"
CALIBRATION_AGREEMENT = "results/calibration/{model}/agreement.json"
CALIBRATION_TABLE = "results/calibration/{model}.csv"
VERDICTS = "results/stats/verdicts.csv"
FAITHFULNESS_SUMMARY = "results/faithfulness/{pair}/{dataset}/alpha{alpha}/{role}.json"
FAITHFULNESS_EDGES = "results/faithfulness/{pair}/{dataset}/alpha{alpha}/{role}.csv"
FAITHFULNESS_FIGURE = "results/figures/faithfulness.png"
SURVIVAL_TESTS = "results/survival/{pair}/{dataset}/alpha{alpha}.csv"
SURVIVAL_CHANGES = "results/survival/{pair}/{dataset}/alpha{alpha}.changes.csv"
DYNAMICS_PROBLEMS = "results/dynamics/problems/{init}.jsonl"
DYNAMICS_PROBLEMS_SUMMARY = "results/dynamics/problems/{init}.summary.json"
DYNAMICS_EAP_FILE = "results/dynamics/eap/{model}/{text}/{loss}.npz"
DYNAMICS_OUTPUTS = {
    "summary": "results/dynamics/summary.csv",
    "highlights": "results/dynamics/highlights.csv",
    "training_figure": "results/figures/dynamics/training.png",
    "metrics_figure": "results/figures/dynamics/metrics.png",
}
GENERATIONS = "results/generations/{model}/{dataset}.jsonl"
GENERATION_PROVENANCE = "results/generations/{model}/{dataset}.provenance.json"
PAIR_FIGURE = "results/figures/{pair}/{name}.png"
TRAINING_FIGURE = "results/figures/training/{model}.png"
REPORT = "results/report/report.html"
PAIR_FIGURE_NAMES = ("metrics_vs_alpha", "diversity", "node_entropy", "log_abs_w", "confidence")


def edge_change_figure_name(dataset: str) -> str:
    return f"edge_change/{dataset}"


@dataclass(frozen=True)
class ReportScope:
    """What the report covers, by name (`config.report_scope` reads it from a config)."""

    datasets: list[str]
    pairs: list[str]
    models: list[str]
    calibrated: list[str]
    trained: list[str]
    alpha: str


@dataclass(frozen=True)
class Layout:
    """Where the workflow's files live under `root` (the Snakemake working directory)."""

    root: Path = Path(".")

    def path(self, pattern: str, **fields) -> Path:
        return Path(self.root) / pattern.format(**fields)

    def pair_figures(self, pair: str, datasets: Iterable[str]) -> dict[str, str]:
        """Every figure of one pair: name -> PNG path (the figures rule's outputs).

        With `pair="{pair}"` the paths are Snakemake patterns with a `{pair}` wildcard.
        """
        names = [*PAIR_FIGURE_NAMES, *(edge_change_figure_name(d) for d in datasets)]
        return {name: str(self.path(PAIR_FIGURE, pair=pair, name=name)) for name in names}

    def training_figures(self, models: Iterable[str]) -> dict[str, str]:
        """Training-curve PNG of each of `models` (those in use the workflow trained)."""
        return {model: str(self.path(TRAINING_FIGURE, model=model)) for model in models}

    def figure_files(
        self, pair: str, datasets: Iterable[str], alphas: Sequence
    ) -> dict[str, dict[tuple[str, float], str]]:
        """What `load_pair_results` reads for one pair (the figures rule's inputs), by kind:
        `summary` (metrics JSON), `per_sample` (metrics CSV) and each role's score file
        under the paper's condition -> {(dataset, alpha): path}.

        With `pair="{pair}"` the paths are Snakemake patterns with a `{pair}` wildcard.
        """
        conditions = [(dataset, alpha) for dataset in datasets for alpha in alphas]

        def files(pattern: str, **fields) -> dict[tuple[str, float], str]:
            return {
                (d, a): str(self.path(pattern, pair=pair, dataset=d, alpha=str(a), **fields))
                for d, a in conditions
            }

        return {
            "summary": files(METRICS_FILE, ext="json"),
            "per_sample": files(METRICS_FILE, ext="csv"),
            **{role: files(EAP_FILE, role=role, **PAPER_CONDITION) for role in ("base", "tuned")},
        }

    def report_files(self, scope: ReportScope) -> dict[str, dict]:
        """Every file `load_study` reads (the report rule's inputs), by kind -> {key: path};
        keys are a dataset, a model, or (model or pair, dataset) or (pair, figure name)."""
        datasets = scope.datasets

        def files(pattern: str, field: str, names: Iterable[str], **fields) -> dict:
            return {
                (name, d): str(self.path(pattern, dataset=d, **{field: name}, **fields))
                for name in names
                for d in datasets
            }

        return {
            "tests": {"tests": str(self.path(TESTS))},
            "verdicts": {"verdicts": str(self.path(VERDICTS))},
            "calibration": {
                model: str(self.path(CALIBRATION_TABLE, model=model)) for model in scope.calibrated
            },
            "dataset_rows": {d: str(self.path(DATASET_ROWS, dataset=d)) for d in datasets},
            "dataset_summaries": {d: str(self.path(DATASET_SUMMARY, dataset=d)) for d in datasets},
            "generations": files(GENERATIONS, "model", scope.models),
            "generation_provenance": files(GENERATION_PROVENANCE, "model", scope.models),
            "pair_summaries": files(PAIR_SUMMARY, "pair", scope.pairs),
            "fidelity": files(FIDELITY_FILE, "pair", scope.pairs),
            "analysed": files(METRICS_FILE, "pair", scope.pairs, alpha=scope.alpha, ext="json"),
            "pair_figures": {
                (pair, name): path
                for pair in scope.pairs
                for name, path in self.pair_figures(pair, datasets).items()
            },
            "training_figures": self.training_figures(scope.trained),
        }


def alpha_labels(config: Mapping) -> list[str]:
    """The alphas as they appear in paths (`str(alpha)`)."""
    return [str(alpha) for alpha in config["eap"]["alphas"]]
