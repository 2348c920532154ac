"""The study's outputs as the report reads them: loaders.

`load_study` and `load_pair_results` read the files `circuitry.paths.Layout` names into
plain objects. A missing file fails with a FileNotFoundError that names it. The figures
and report rules take their inputs from the same `Layout` methods the loaders use, so
what a rule declares is what its script reads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from circuitry.config import enabled_pairs, models_in_use
from circuitry.io import read_json, read_jsonl
from circuitry.metrics import ROLES, paper_condition
from circuitry.paths import (
    DATASET_ROWS,
    DATASET_SUMMARY,
    EAP_FILE,
    FIDELITY_FILE,
    GENERATION_PROVENANCE,
    GENERATIONS,
    METRICS_FILE,
    PAIR_SUMMARY,
    PAPER_CONDITION,
    TESTS,
    Layout,
    alpha_labels,
)
from circuitry.stats import COLUMNS

EXAMPLE_CHARS = 3000
N_EXAMPLES = 2


def require(path: str | os.PathLike) -> Path:
    """`path` if it is a file; else FileNotFoundError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"report input missing: {path} (run the stage that writes it)")
    return path


def load_json(path: str | os.PathLike):
    return read_json(require(path))


def load_tests(path: str | os.PathLike) -> pd.DataFrame:
    """`results/stats/tests.csv`, checked for the contract's columns; `as_expected` as bool/None."""
    table = pd.read_csv(require(path))
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    parsed = {True: True, False: False, "True": True, "False": False}
    as_expected = [parsed.get(value) for value in table["as_expected"]]
    return table.assign(as_expected=pd.Series(as_expected, dtype=object))


@dataclass
class PairResults:
    """One pair's metrics over datasets x alphas: what its figures show."""

    name: str
    method: str
    datasets: tuple[str, ...]
    alphas: tuple[float, ...]
    summaries: dict[tuple[str, float], dict]  # metrics JSON per (dataset, alpha)
    per_sample: pd.DataFrame  # dataset, alpha, idx, role, metric, value
    eap_paths: dict[tuple[str, float], dict[str, Path]]  # role -> npz

    @property
    def label(self) -> str:
        return pair_label(self.name, self.method)


def pair_label(pair: str, method: str) -> str:
    return f"{pair} ({method})"


def load_pair_results(layout: Layout, config: Mapping, pair: str) -> PairResults:
    """Metrics JSON and per-sample CSV of every dataset x alpha of `pair`, and its npz paths."""
    alphas = config["eap"]["alphas"]
    summaries, frames, eap_paths = {}, [], {}
    for dataset in config["datasets"]:
        for alpha in alphas:
            where = {"pair": pair, "dataset": dataset, "alpha": str(alpha)}
            summaries[dataset, alpha] = load_json(layout.path(METRICS_FILE, ext="json", **where))
            table = pd.read_csv(require(layout.path(METRICS_FILE, ext="csv", **where)))
            frame = paper_condition(table).drop(columns=["loss", "text"])
            frames.append(frame.assign(dataset=dataset, alpha=alpha))
            eap_paths[dataset, alpha] = {
                role: require(layout.path(EAP_FILE, role=role, **PAPER_CONDITION, **where))
                for role in ROLES
            }
    return PairResults(
        name=pair,
        method=config["pairs"][pair]["method"],
        datasets=tuple(config["datasets"]),
        alphas=tuple(alphas),
        summaries=summaries,
        per_sample=pd.concat(frames, ignore_index=True),
        eap_paths=eap_paths,
    )


@dataclass(frozen=True)
class Completion:
    """One model's answer to an example problem, cut to a readable length."""

    role: str
    model: str
    text: str
    omitted_chars: int
    pred: str | None
    correct: bool
    finish_reason: str
    n_tokens: int


@dataclass(frozen=True)
class Example:
    """A problem both models were analysed on, with both completions."""

    idx: int
    question: str
    answer: str
    completions: tuple[Completion, ...]


def completion_of(row: dict, role: str, model: str, max_chars: int) -> Completion:
    text = row["completion"]
    return Completion(
        role=role,
        model=model,
        text=text[:max_chars],
        omitted_chars=max(0, len(text) - max_chars),
        pred=row.get("pred"),
        correct=bool(row.get("correct")),
        finish_reason=row.get("finish_reason", ""),
        n_tokens=len(row.get("completion_token_ids", ())),
    )


def build_examples(
    idx: Sequence[int],
    problems: Mapping[int, dict],
    rows_by_model: Mapping[str, Mapping[int, dict]],
    models: Mapping[str, str],
    *,
    n: int = N_EXAMPLES,
    max_chars: int = EXAMPLE_CHARS,
) -> list[Example]:
    """The first `n` analysed problems (sorted idx) with each role's completion.

    `models` maps role -> model; `rows_by_model` model -> {idx: generation row}.
    """
    examples = []
    for i in sorted(idx)[:n]:
        problem = problems[i]
        completions = tuple(
            completion_of(rows_by_model[model][i], role, model, max_chars)
            for role, model in models.items()
        )
        examples.append(Example(i, problem["question"], str(problem["answer"]), completions))
    return examples


def rows_by_idx(rows: Iterable[dict]) -> dict[int, dict]:
    return {row["idx"]: row for row in rows}


@dataclass
class Study:
    """Everything the report shows, read from the workflow's outputs."""

    config: dict
    tests: pd.DataFrame
    pair_summaries: dict[tuple[str, str], dict]  # (pair, dataset) -> pairing summary
    fidelity: pd.DataFrame  # circuitry.fidelity.COLUMNS, every pair x dataset
    generation_provenance: dict[tuple[str, str], dict]  # (model, dataset) -> provenance
    dataset_summaries: dict[str, dict]
    examples: dict[tuple[str, str], list[Example]]  # (pair, dataset)
    pair_figures: dict[str, dict[str, Path]]
    training_figures: dict[str, Path] = field(default_factory=dict)

    @property
    def pairs(self) -> dict[str, str]:
        """Enabled pair -> method, in config order."""
        return {p: self.config["pairs"][p]["method"] for p in enabled_pairs(self.config)}

    @property
    def datasets(self) -> list[str]:
        return list(self.config["datasets"])

    @property
    def alphas(self) -> list[float]:
        return list(self.config["eap"]["alphas"])

    @property
    def models(self) -> list[str]:
        return models_in_use(self.config)


def load_examples(layout: Layout, config: Mapping) -> dict[tuple[str, str], list[Example]]:
    """Example problems of every pair x dataset, among those the metrics were computed on."""
    pairs, models = enabled_pairs(config), models_in_use(config)
    first_alpha = alpha_labels(config)[0]
    examples = {}
    for dataset in config["datasets"]:
        problems = rows_by_idx(read_jsonl(require(layout.path(DATASET_ROWS, dataset=dataset))))
        rows = {
            m: rows_by_idx(read_jsonl(require(layout.path(GENERATIONS, model=m, dataset=dataset))))
            for m in models
        }
        for pair in pairs:
            where = {"pair": pair, "dataset": dataset, "alpha": first_alpha, "ext": "json"}
            analysed = load_json(layout.path(METRICS_FILE, **where))["idx"]
            roles = {role: config["pairs"][pair][role] for role in ROLES}
            examples[pair, dataset] = build_examples(analysed, problems, rows, roles)
    return examples


def load_study(layout: Layout, config: Mapping) -> Study:
    """Read every input of the report (the files of `Layout.report_inputs`)."""
    config = dict(config)
    pairs, datasets, models = enabled_pairs(config), list(config["datasets"]), models_in_use(config)
    return Study(
        config=config,
        tests=load_tests(layout.path(TESTS)),
        pair_summaries={
            (p, d): load_json(layout.path(PAIR_SUMMARY, pair=p, dataset=d))
            for p in pairs
            for d in datasets
        },
        fidelity=pd.concat(
            [
                pd.read_csv(require(layout.path(FIDELITY_FILE, pair=p, dataset=d)))
                for p in pairs
                for d in datasets
            ],
            ignore_index=True,
        ).fillna({"role": ""}),
        generation_provenance={
            (m, d): load_json(layout.path(GENERATION_PROVENANCE, model=m, dataset=d))
            for m in models
            for d in datasets
        },
        dataset_summaries={d: load_json(layout.path(DATASET_SUMMARY, dataset=d)) for d in datasets},
        examples=load_examples(layout, config),
        pair_figures={
            p: {k: require(v) for k, v in layout.pair_figures(p, datasets).items()} for p in pairs
        },
        training_figures={m: require(f) for m, f in layout.training_figures(config).items()},
    )
