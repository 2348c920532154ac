"""Where every stage writes: the one owner of the workflow's output patterns.

Each pattern is a `str.format` template whose fields are the rules' wildcards
(DESIGN.md, section 3). `Layout` turns them into the lists of files a rule declares and
its script or loader reads, so what a rule declares is what is read. The module imports
only the standard library (`circuitry.config`, which builds on it, where a config is
read), so planning the workflow stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
RUN_DIR = "resources/dynamics/{run}"
TESTS = "results/stats/tests.csv"
METRICS_FILE = "results/metrics/{pair}/{dataset}/alpha{alpha}.{ext}"
PAIR_TESTS = "results/metrics/{pair}/{dataset}/tests.csv"
EAP_FILE = "results/eap/{pair}/{dataset}/alpha{alpha}/{loss}/{role}_on_{text}.npz"
PAIRS_FILE = "results/pairs/{pair}/{dataset}.jsonl"
PAIR_SUMMARY = "results/pairs/{pair}/{dataset}.summary.json"
FIDELITY_FILE = "results/fidelity/{pair}/{dataset}.csv"
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

    def training_figures(self, config: Mapping) -> dict[str, str]:
        """Training-curve PNG of each model in use that the workflow trained itself."""
        from circuitry.config import models_in_use, trained_models

        in_use = set(models_in_use(config))
        return {
            model: str(self.path(TRAINING_FIGURE, model=model))
            for model in trained_models(config)
            if model in in_use
        }

    def figure_inputs(self, config: Mapping, pair: str) -> list[str]:
        """What `load_pair_results` reads for one pair (the figures rule's inputs)."""
        where = {"pair": pair, **PAPER_CONDITION}
        return [
            str(self.path(pattern, dataset=dataset, alpha=alpha, ext=ext, role=role, **where))
            for dataset in config["datasets"]
            for alpha in alpha_labels(config)
            for pattern, ext, role in (
                (METRICS_FILE, "json", None),
                (METRICS_FILE, "csv", None),
                (EAP_FILE, None, "base"),
                (EAP_FILE, None, "tuned"),
            )
        ]

    def report_inputs(self, config: Mapping) -> list[str]:
        """Every file `load_study` reads (the report rule's inputs)."""
        from circuitry.config import enabled_pairs, models_in_use

        datasets = list(config["datasets"])
        pairs = enabled_pairs(config)
        first_alpha = alpha_labels(config)[0]
        files = [self.path(TESTS)]
        for dataset in datasets:
            files += [self.path(DATASET_ROWS, dataset=dataset)]
            files += [self.path(DATASET_SUMMARY, dataset=dataset)]
            for model in models_in_use(config):
                files += [self.path(GENERATIONS, model=model, dataset=dataset)]
                files += [self.path(GENERATION_PROVENANCE, model=model, dataset=dataset)]
            for pair in pairs:
                files += [self.path(PAIR_SUMMARY, pair=pair, dataset=dataset)]
                files += [self.path(FIDELITY_FILE, pair=pair, dataset=dataset)]
                where = {"pair": pair, "dataset": dataset, "alpha": first_alpha}
                files += [self.path(METRICS_FILE, ext="json", **where)]
        for pair in pairs:
            files += self.pair_figures(pair, datasets).values()
        files += self.training_figures(config).values()
        return [str(f) for f in files]


def alpha_labels(config: Mapping) -> list[str]:
    """The alphas as they appear in paths (`str(alpha)`)."""
    return [str(alpha) for alpha in config["eap"]["alphas"]]
