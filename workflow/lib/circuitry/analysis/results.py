"""The study's outputs as the report reads them: loaders.

`load_study` and `load_pair_results` read the files a rule hands them, by kind:
`{kind: {key: path}}` as `circuitry.paths.Layout.report_files` and `figure_files` list
them (a rule script rebuilds that mapping from its named inputs and the keys in its
params with `keyed_files`), into plain objects. A missing file fails with a
FileNotFoundError that names it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from circuitry.analysis.calibration import COLUMNS as CALIBRATION_COLUMNS
from circuitry.analysis.circuit_metrics import paper_condition
from circuitry.analysis.metrics import ROLES
from circuitry.analysis.stats import COLUMNS
from circuitry.analysis.verdicts import VERDICT_COLUMNS
from circuitry.config import (
    calibration_alpha,
    calibration_scope,
    control_pairs,
    enabled_pairs,
    models_in_use,
    replicate_groups,
)
from circuitry.io import read_json, read_jsonl

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


def keyed_files(inputs: Mapping[str, Sequence[str]], keys: Mapping[str, Sequence]) -> dict:
    """`{kind: {key: path}}` from a rule's named inputs (`kind` -> paths) and the keys its
    params list for them in the same order."""
    files = {}
    for kind, kind_keys in keys.items():
        paths = list(inputs[kind])
        if len(paths) != len(kind_keys):
            raise ValueError(f"input {kind}: {len(paths)} files for {len(kind_keys)} keys")
        files[kind] = dict(zip(kind_keys, paths, strict=True))
    return files


TEXT_COLUMNS = ("node", "known", "note", "top_node")


def _checked_table(path: str | os.PathLike, columns: Sequence[str]) -> pd.DataFrame:
    """A CSV with at least `columns`, its text columns read as text (empty: ""), its
    boolean columns (`as_expected`, `passed`, `located`, `loss_moved`) as True/False/None."""
    text = {column: str for column in TEXT_COLUMNS if column in columns}
    table = pd.read_csv(require(path), dtype=text).fillna({column: "" for column in text})
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    parsed = {True: True, False: False, "True": True, "False": False}
    flags = {
        column: pd.Series([parsed.get(value) for value in table[column]], dtype=object)
        for column in ("as_expected", "passed", "located", "loss_moved")
        if column in table.columns
    }
    return table.assign(**flags)


def load_tests(path: str | os.PathLike) -> pd.DataFrame:
    """`results/stats/tests.csv`, checked for the contract's columns; `as_expected` as bool/None."""
    return _checked_table(path, COLUMNS)


def load_verdicts(path: str | os.PathLike) -> pd.DataFrame:
    """`results/stats/verdicts.csv`, checked for `VERDICT_COLUMNS`."""
    return _checked_table(path, VERDICT_COLUMNS)


def load_calibration(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Every calibrated model's known-answer table in one frame (empty when none ran)."""
    tables = [_checked_table(path, CALIBRATION_COLUMNS) for path in paths]
    if not tables:
        return pd.DataFrame(columns=list(CALIBRATION_COLUMNS))
    return pd.concat(tables, ignore_index=True)


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


def load_pair_results(
    files: Mapping[str, Mapping[tuple[str, float], str | os.PathLike]], *, pair: str, method: str
) -> PairResults:
    """One pair's metrics JSON and per-sample CSV of every (dataset, alpha), and its npz paths.

    `files`: `summary`, `per_sample`, and each role -> {(dataset, alpha): path}
    (`Layout.figure_files`).
    """
    conditions = list(files["summary"])
    frames = []
    for dataset, alpha in conditions:
        table = pd.read_csv(require(files["per_sample"][dataset, alpha]))
        frame = paper_condition(table).drop(columns=["loss", "text"])
        frames.append(frame.assign(dataset=dataset, alpha=alpha))
    return PairResults(
        name=pair,
        method=method,
        datasets=tuple(dict.fromkeys(dataset for dataset, _ in conditions)),
        alphas=tuple(dict.fromkeys(alpha for _, alpha in conditions)),
        summaries={key: load_json(path) for key, path in files["summary"].items()},
        per_sample=pd.concat(frames, ignore_index=True),
        eap_paths={key: {role: require(files[role][key]) for role in ROLES} for key in conditions},
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
    """Everything the report shows, read from the workflow's outputs, with the config's
    views of the study (`circuitry.config`) computed once by `load_study`, so the report
    reads them here rather than re-deriving them from `config`."""

    config: dict
    pairs: dict[str, str]  # enabled pair -> method, in config order
    models: list[str]  # models of the enabled pairs, in config order
    controls: dict[str, str]  # enabled control pair -> kind (identity, more-training)
    replicates: dict[str, list[str]]  # pair -> [itself, *its enabled seed replicates]
    calibrated: dict[str, str]  # calibrated base model -> the pair it is scored on
    calibration_alpha: str  # the known-answer pairs' alpha, as in paths
    tests: pd.DataFrame
    verdicts: pd.DataFrame  # circuitry.analysis.verdicts.VERDICT_COLUMNS, one row per headline cell
    calibration: pd.DataFrame  # circuitry.analysis.calibration.COLUMNS, every calibrated model
    pair_summaries: dict[tuple[str, str], dict]  # (pair, dataset) -> pairing summary
    fidelity: pd.DataFrame  # circuitry.analysis.fidelity.COLUMNS, every pair x dataset
    generation_provenance: dict[tuple[str, str], dict]  # (model, dataset) -> provenance
    dataset_summaries: dict[str, dict]
    examples: dict[tuple[str, str], list[Example]]  # (pair, dataset)
    pair_figures: dict[str, dict[str, Path]]
    training_figures: dict[str, Path] = field(default_factory=dict)

    @property
    def datasets(self) -> list[str]:
        return list(self.config["datasets"])

    @property
    def alphas(self) -> list[float]:
        return list(self.config["eap"]["alphas"])


def load_examples(
    files: Mapping[str, Mapping], config: Mapping
) -> dict[tuple[str, str], list[Example]]:
    """Example problems of every pair x dataset, among those the metrics were computed on."""
    problems = {d: rows_by_idx(read_jsonl(require(p))) for d, p in files["dataset_rows"].items()}
    rows = {key: rows_by_idx(read_jsonl(require(p))) for key, p in files["generations"].items()}
    examples = {}
    for (pair, dataset), path in files["analysed"].items():
        roles = {role: config["pairs"][pair][role] for role in ROLES}
        by_model = {model: rows[model, dataset] for model in roles.values()}
        analysed = load_json(path)["idx"]
        examples[pair, dataset] = build_examples(analysed, problems[dataset], by_model, roles)
    return examples


def load_study(files: Mapping[str, Mapping], config: Mapping) -> Study:
    """Read every input of the report: `files` as `Layout.report_files` lists them."""
    return Study(
        config=dict(config),
        pairs={p: config["pairs"][p]["method"] for p in enabled_pairs(config)},
        models=models_in_use(config),
        controls=control_pairs(config),
        replicates=replicate_groups(config),
        calibrated=calibration_scope(config),
        calibration_alpha=calibration_alpha(config),
        tests=load_tests(files["tests"]["tests"]),
        verdicts=load_verdicts(files["verdicts"]["verdicts"]),
        calibration=load_calibration(files["calibration"].values()),
        pair_summaries={key: load_json(path) for key, path in files["pair_summaries"].items()},
        fidelity=pd.concat(
            [pd.read_csv(require(path)) for path in files["fidelity"].values()],
            ignore_index=True,
        ).fillna({"role": ""}),
        generation_provenance={
            key: load_json(path) for key, path in files["generation_provenance"].items()
        },
        dataset_summaries={d: load_json(path) for d, path in files["dataset_summaries"].items()},
        examples=load_examples(files, config),
        pair_figures=by_pair(files["pair_figures"]),
        training_figures={m: require(path) for m, path in files["training_figures"].items()},
    )


def by_pair(figures: Mapping[tuple[str, str], str | os.PathLike]) -> dict[str, dict[str, Path]]:
    """`{(pair, name): path}` as `{pair: {name: path}}`, each file checked."""
    nested: dict[str, dict[str, Path]] = {}
    for (pair, name), path in figures.items():
        nested.setdefault(pair, {})[name] = require(path)
    return nested
