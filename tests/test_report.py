"""The report: builders on known numbers, and a whole report of a synthetic study.

`write_results_tree` writes every file the figures and report rules read, produced by the
real modules (pairing, metrics, statistics) from random EAP scores on a 2-layer graph;
the browser test and the figure tests use it too.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from snakemake.utils import validate

from circuitry import paths
from circuitry.analysis import results
from circuitry.analysis.calibration import COLUMNS as CALIBRATION_COLUMNS
from circuitry.analysis.calibration import READINGS, describe_edit
from circuitry.analysis.circuit_metrics import load_condition, per_sample_table
from circuitry.analysis.fidelity import DEVIATIONS, measure_pair
from circuitry.analysis.metrics import CONFIDENCE_METRICS, HEADLINE_METRICS, METRICS, ROLES
from circuitry.analysis.results import keyed_files, load_pair_results, load_study
from circuitry.analysis.stats import COLUMNS, assemble_tests_table, pair_dataset_tests
from circuitry.analysis.survival import NOT_SIGNIFICANT, OPPOSITE, SURVIVES
from circuitry.analysis.verdicts import AGAINST, ONE_TOKEN_NOTE, VERDICTS, headline_verdicts
from circuitry.attribution.graph import build_graph
from circuitry.attribution.scorefile import DIAGNOSTICS, EdgeScores, write_score_file
from circuitry.config import (
    calibration_alpha,
    calibration_scope,
    config_hash,
    enabled_pairs,
    models_in_use,
    report_scope,
    trained_in_use,
)
from circuitry.display import format_number, format_percent, significance_mark
from circuitry.figures.pair import make_pair_figures
from circuitry.figures.style import REPORT_WIDTH_PX
from circuitry.figures.training import make_training_figure
from circuitry.generation.pairing import FilterSettings, cut_length, pair_samples
from circuitry.io import write_csv, write_json, write_jsonl
from circuitry.paths import PAPER_CONDITION, Layout
from circuitry.provenance import (
    PACKAGES,
    GitState,
    Provenance,
    collect_provenance,
    git_state,
    package_versions,
    reproduce_command,
)
from circuitry.report.blocks import Cell, Code, Details, Figure, Row, Section, Table, Text, figure
from circuitry.report.calibration import calibration_blocks
from circuitry.report.confidence import IDENTITY_FAILED
from circuitry.report.findings import alpha_choice, alpha_sweep_table, headline_table
from circuitry.report.methods import (
    accuracy_table,
    funnel_table,
    methods_paragraphs,
    templates_table,
)
from circuitry.report.render import render_report, write_report
from circuitry.report.sections import (
    confidence_section,
    fold_detail,
    headline_alpha_of,
    pairs_section,
    summary_section,
)
from circuitry.report.summary import summary_table
from circuitry.report.variants import variant_agreement, variant_table
from conftest import ROOT, filter_settings

TITLE_SCRIPT = "<script>document.title = 'pwned'</script>"
XSS = (
    f"{TITLE_SCRIPT}<b>bold?</b>"
    "<img src=x onerror=\"document.body.setAttribute('data-xss', 'ran')\">"
)
# GRPO: stronger edges; DPO: no change; the identity control: the base model's own scores
TUNED_SCALE = {"toy-grpo": 1.4, "toy-dpo": 1.0, "toy-identity": 1.0}
STUDY_PAIRS = ("toy-grpo", "toy-dpo", "toy-identity")
N_PROBLEMS = 24
N_LAYERS = 2


def synthetic_config(datasets: int = 2, alphas=(0.1, 0.5), pairs=("toy-grpo", "toy-dpo")) -> dict:
    """The toy config cut down: fewer datasets and alphas, cheap statistics."""
    config = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    config["datasets"] = dict(list(config["datasets"].items())[:datasets])
    config["pairs"] = {name: config["pairs"][name] for name in pairs}
    config["eap"]["alphas"] = list(alphas)
    config["filter"]["num_samples"] = 12
    config["stats"] = {"n_resamples": 99, "seed": 0}
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))  # defaults
    return config


def problem(i: int) -> dict:
    return {
        "idx": i,
        "question": f"Tom has {i} <apples> & {i} pears. How many fruits?",
        "answer": str(2 * i),
        "solution": None,
        "meta": {},
    }


def generation_row(i: int, model: str, dataset_no: int) -> dict:
    """A graded row; some rows wrong or with odd lengths so that every filter removes some."""
    tuned = model != "toy-sft"
    correct = not (i % 7 == 3 and tuned) and i % 11 != 4
    answer_len = 10 + (i % 3) + (25 if i % 13 == 6 and tuned else 0)
    prompt_len = 8 + (1 if i % 9 == 5 and tuned else 0)
    text = (
        f"Let me add {i} and {i}. {XSS} So the answer is {2 * i}."
        if not tuned
        else (f"{i} + {i} = {2 * i}. <b>done</b> \\boxed{{{2 * i}}}")
    )
    return {
        "idx": i,
        "prompt": f"Q{dataset_no}: {i}",
        "prompt_token_ids": list(range(prompt_len)),
        "completion": text,
        "completion_token_ids": list(range(answer_len)),
        "finish_reason": "eos",
        "pred": str(2 * i) if correct else "0",
        "correct": correct,
    }


def edge_scores(rng, idx: np.ndarray, scale: float, noise: float) -> EdgeScores:
    graph = build_graph(N_LAYERS)
    profile = rng.standard_t(3, size=graph.edge_mask.shape)
    scores = scale * (profile + noise * rng.normal(size=(len(idx), *graph.edge_mask.shape)))
    scores[:, ~graph.edge_mask] = 0
    return EdgeScores(
        scores.astype(np.float32), idx, graph.edge_mask, graph.forward_nodes, graph.backward_nodes
    )


def write_eap(path: Path, edges: EdgeScores, alpha: float, role: str, loss: str, sure: float):
    """A score file; `sure` scales the window loss (below 1: surer of its answer)."""
    n = len(edges.idx)
    diagnostics = {name: np.linspace(0.1, 1.0, n) for name in DIAGNOSTICS}
    diagnostics["window_ce"] = sure * diagnostics["window_ce"]
    write_score_file(
        path,
        scores=edges.scores,
        diagnostics=diagnostics | {"window_len": np.full(n, 3)},
        idx=edges.idx,
        graph={
            "edge_mask": edges.edge_mask,
            "forward_nodes": np.array(edges.forward_nodes),
            "backward_nodes": np.array(edges.backward_nodes),
        },
        condition={
            "alpha": alpha,
            "cut_len": 3,
            "reference_length": 10.0,
            "role": role,
            "text_role": role,
            "loss": loss,
            "text": "own",
            "model_type": "llama",
        },
    )


def write_training_log(path: Path, method: str) -> None:
    steps = np.arange(1, 21)
    columns = {"step": steps, "loss": 2.0 / steps, "learning_rate": np.full(20, 1e-3)}
    if method == "grpo":
        columns |= {"reward": 1 - 1 / steps, "reward_std": np.full(20, 0.1)}
    if method == "dpo":
        columns |= {"rewards/accuracies": 1 - 0.5 / steps, "rewards/margins": np.log(steps)}
    if method == "sft":
        columns |= {"mean_token_accuracy": 1 - 1 / steps}
    pd.DataFrame(columns).to_csv(path, index=False)


def write_condition(layout, rng, pair, dataset, alpha, idx) -> dict:
    """EAP npz of both roles under every loss and the metrics CSV/JSON of one pair x
    dataset x alpha: `{(alpha, loss): CircuitMetrics}`. The tuned GRPO model is surer of
    its answers and its paper-loss scores are larger; under ce_unit and target_unit they
    are not. The identity control's tuned scores are the base model's."""
    where = {"pair": pair, "dataset": dataset, "alpha": str(alpha)}
    base = edge_scores(rng, idx, 1.0, 0.5)
    scale = TUNED_SCALE[pair]
    if pair == "toy-identity":
        tuned = dict.fromkeys(("ce", "ce_unit", "target_unit"), base)
    else:
        tuned = {
            "ce": edge_scores(rng, idx, scale, 0.5 * scale),
            "ce_unit": edge_scores(rng, idx, 1.0, 0.5),
            "target_unit": edge_scores(rng, idx, 1.0, 0.5),
        }
    by_loss = {}
    for loss, tuned_edges in tuned.items():
        files = {}
        for role, edges, sure in (("base", base, 1.0), ("tuned", tuned_edges, 1 / scale)):
            files[role, "own"] = layout.path(
                paths.EAP_FILE, role=role, loss=loss, text="own", **where
            )
            write_eap(files[role, "own"], edges, alpha, role, loss, sure)
        by_loss[loss] = load_condition(files)
    write_csv(layout.path(paths.METRICS_FILE, ext="csv", **where), per_sample_table(by_loss))
    by_loss["ce"].write_summary(layout.path(paths.METRICS_FILE, ext="json", **where))
    return {(alpha, loss): m for loss, m in by_loss.items()}


def teacher_forcing_record(model: str) -> dict:
    """The base model reproduces its answers; the tuned ones depart on 3 rows (98.5%)."""
    departures = {} if model == "toy-sft" else {"2": 5, "7": 0, "11": 9}
    return {
        "agreement": 1.0 if model == "toy-sft" else 0.985,
        "n_tokens": 1000,
        "n_rows_disagreeing": len(departures),
        "first_disagreement": departures,
    }


# change_pct of a calibration edit's intensity / other headline metrics under each reading:
# temperature edits move ce and ce_unit, not the calibrated reading; the planted edit
# moves intensity under every reading
KNOWN_CHANGES = {
    "temperature": {
        "ce": (-30.0, 5.0),
        "ce_unit": (60.0, 3.0),
        "target_unit": (0.2, 0.1),
    },
    "planted": {loss: (12.0, 2.0) for loss in READINGS},
}


def calibration_row(model, pair, dataset, edit_name, edit, loss, metric, *, alpha) -> dict:
    """One plausible known-answer row (`circuitry.analysis.calibration.COLUMNS`), passed as
    `circuitry.analysis.calibration` would judge it."""
    intensity, other = KNOWN_CHANGES[edit["kind"]][loss]
    change_pct = intensity if metric == "intensity" else other
    if edit["kind"] == "temperature":
        known, passed = "0", abs(change_pct) < 1
    elif metric == "intensity":
        known, passed = "detect", True
    else:
        known, passed = "", None
    return {
        "model": model,
        "pair": pair,
        "dataset": dataset,
        "alpha": alpha,
        "edit": edit_name,
        "kind": edit["kind"],
        "node": edit.get("node", ""),
        "factor": edit["factor"],
        "description": describe_edit(edit),
        "loss": loss,
        "reading": READINGS[loss],
        "metric": metric,
        "quantity": METRICS[metric].quantity,
        "n": 12,
        "base": 2.0,
        "tuned": 2.0 * (1 + change_pct / 100),
        "change_pct": change_pct,
        "p": 1e-4 if abs(change_pct) > 1 else 0.6,
        "known": known,
        "passed": passed,
        "top_node": edit.get("node", "m1"),
        "node_rank": 1 if edit["kind"] == "planted" else None,
        "located": True if edit["kind"] == "planted" else None,
        "agreement": 0.985,
        "base_agreement": 0.985,
        "note": "",
    }


def calibration_frame(config: dict, model: str, pair: str) -> pd.DataFrame:
    """One calibrated model's known-answer table: every dataset x edit x reading x metric."""
    alpha = float(calibration_alpha(config))
    rows = [
        calibration_row(model, pair, dataset, name, edit, loss, metric, alpha=alpha)
        for dataset in config["datasets"]
        for name, edit in config["calibration"]["edits"].items()
        for loss in READINGS
        for metric in HEADLINE_METRICS
    ]
    return pd.DataFrame(rows, columns=list(CALIBRATION_COLUMNS))


def write_verdicts(layout: Layout, config: dict, tests: pd.DataFrame) -> None:
    """What rules calibration and verdicts write: the known-answer tables (all passing)
    and the verdicts, with each condition's window length."""
    for model, pair in calibration_scope(config).items():
        write_csv(
            layout.path(paths.CALIBRATION_TABLE, model=model),
            calibration_frame(config, model, pair),
        )
    cut_lens = {
        (pair, dataset, float(alpha)): cut_length(
            float(alpha),
            results.load_json(layout.path(paths.PAIR_SUMMARY, pair=pair, dataset=dataset)),
        )
        for pair, dataset, alpha in tests[["pair", "dataset", "alpha"]]
        .drop_duplicates()
        .itertuples(index=False)
    }
    verdicts = headline_verdicts(tests, "passed", cut_lens)
    write_csv(layout.path(paths.VERDICTS), verdicts)


def write_results_tree(root: Path, config: dict) -> None:
    """Every input of the figures and report rules (not the figures), from the real modules."""
    layout = Layout(root)
    rng = np.random.default_rng(0)
    frames = []
    for number, dataset in enumerate(config["datasets"]):
        problems = [problem(i) for i in range(N_PROBLEMS)]
        rows_path = layout.path(paths.DATASET_ROWS, dataset=dataset)
        write_jsonl(rows_path, problems)
        write_json(
            layout.path(paths.DATASET_SUMMARY, dataset=dataset),
            {
                "dataset": dataset,
                "provenance": {"source": "toy", "format": "normalised", "toy": {"seed": number}},
                "n_raw": N_PROBLEMS,
                "dropped": {},
                "n_kept": N_PROBLEMS,
                "sha256": "0" * 64,
            },
        )
        rows = {}
        for model in models_in_use(config):
            rows[model] = [generation_row(i, model, number) for i in range(N_PROBLEMS)]
            where = {"model": model, "dataset": dataset}
            write_jsonl(layout.path(paths.GENERATIONS, **where), rows[model])
            accuracy = float(np.mean([row["correct"] for row in rows[model]]))
            write_json(
                layout.path(paths.GENERATION_PROVENANCE, **where),
                {
                    "source": f"resources/models/{model}",
                    "revision": None,
                    "dtype": "float32",
                    "device": "cpu",
                    "accuracy": accuracy,
                    "n": N_PROBLEMS,
                    "teacher_forcing": teacher_forcing_record(model),
                },
            )
        for pair in enabled_pairs(config):
            spec = config["pairs"][pair]
            selected, summary = pair_samples(
                rows[spec["base"]],
                rows[spec["tuned"]],
                FilterSettings.from_config(config["filter"]),
                pair=pair,
                dataset=dataset,
            )
            write_json(layout.path(paths.PAIR_SUMMARY, pair=pair, dataset=dataset), summary)
            idx = np.array([row["idx"] for row in selected])
            metrics = {}
            for alpha in config["eap"]["alphas"]:
                metrics |= write_condition(layout, rng, pair, dataset, alpha, idx)
            frames.append(
                pair_dataset_tests(metrics, pair=pair, dataset=dataset, **config["stats"])
            )
            score_files = {
                (alpha, role): layout.path(
                    paths.EAP_FILE,
                    role=role,
                    alpha=str(alpha),
                    pair=pair,
                    dataset=dataset,
                    **PAPER_CONDITION,
                )
                for alpha in config["eap"]["alphas"]
                for role in ROLES
            }
            generations = {role: rows[spec[role]] for role in ROLES}
            measured = measure_pair(
                generations, selected, summary, score_files, pair=pair, dataset=dataset
            )
            write_csv(layout.path(paths.FIDELITY_FILE, pair=pair, dataset=dataset), measured)
    tests = assemble_tests_table(frames)
    write_csv(layout.path(paths.TESTS), tests)
    write_verdicts(layout, config, tests)
    for model in layout.training_figures(trained_in_use(config)):
        method = config["models"][model]["train"]["method"]
        path = layout.path(paths.TRAINING_LOG, model=model)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_training_log(path, method)


def study_of(root: Path, config: dict) -> results.Study:
    """The study under `root`, read as the report rule reads it."""
    return load_study(Layout(root).report_files(report_scope(config)), config)


def pair_results_of(root: Path, config: dict, pair: str) -> results.PairResults:
    """One pair's results under `root`, read as the figures rule reads them."""
    files = Layout(root).figure_files(pair, config["datasets"], config["eap"]["alphas"])
    return load_pair_results(files, pair=pair, method=config["pairs"][pair]["method"])


def write_figures(root: Path, config: dict) -> None:
    """What the figures rules write: every pair's figures and the training curves."""
    layout = Layout(root)
    for pair in enabled_pairs(config):
        make_pair_figures(
            pair_results_of(root, config, pair), layout.pair_figures(pair, config["datasets"])
        )
    for model, path in layout.training_figures(trained_in_use(config)).items():
        make_training_figure(
            layout.path(paths.TRAINING_LOG, model=model),
            path,
            model=model,
            train=config["models"][model]["train"],
        )


def fixed_provenance() -> Provenance:
    return Provenance(
        config_hash="abc123def456",
        packages={"numpy": np.__version__, "trl": None},
        git=GitState("0123456789abcdef0123456789abcdef01234567", True),
        run_date=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC).isoformat(),
        command="snakemake --cores 2 --configfile 'my config.yaml'",
    )


def build_report(root: Path, config: dict) -> Path:
    """A synthetic study, its figures and its report under `root`; the report's path."""
    write_results_tree(root, config)
    write_figures(root, config)
    path = root / paths.REPORT
    write_report(path, study_of(root, config), fixed_provenance())
    return path


@pytest.fixture(scope="module")
def study_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("study")
    config = synthetic_config(pairs=STUDY_PAIRS)
    build_report(root, config)
    return root, config


@pytest.fixture(scope="module")
def html(study_root) -> str:
    root, _ = study_root
    return (root / paths.REPORT).read_text(encoding="utf-8")


# ---------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1234.5, "1,230"),
        (12.345, "12.3"),
        (0.012345, "0.0123"),
        (0.5, "0.500"),
        (-2.5, "-2.50"),
        (0.0, "0"),
        (1.234e-5, "1.23e-05"),
        (1500, "1,500"),
        (np.int64(7), "7"),
        (float("nan"), "–"),
        (None, "–"),
    ],
)
def test_numbers_have_three_significant_digits_and_nan_is_a_dash(value, text):
    assert format_number(value) == text


def test_percentages_are_signed():
    assert format_percent(12.345) == "+12.3%"
    assert format_percent(-3.0) == "-3.00%"
    assert format_percent(float("nan")) == "–"


@pytest.mark.parametrize(
    ("q", "mark"),
    [(0.0005, "***"), (0.005, "**"), (0.03, "*"), (0.05, ""), (0.5, ""), (float("nan"), "")],
)
def test_significance_marks(q, mark):
    assert significance_mark(q) == mark


# ---------------------------------------------------------------- tables on known numbers


def known_row(
    pair, metric, change_pct, q, *, dataset="gsm", alpha=0.5, base=2.0, loss="ce", **extra
) -> dict:
    """One row of the tests table with a known change (own answers)."""
    row = dict.fromkeys(COLUMNS, np.nan)
    change = base * change_pct / 100
    spec = {**METRICS, **CONFIDENCE_METRICS}[metric]
    row.update(
        pair=pair,
        dataset=dataset,
        alpha=alpha,
        loss=loss,
        comparison="own",
        metric=metric,
        quantity=spec.quantity,
        variant=spec.variant,
        headline=spec.headline,
        kind=spec.kind,
        n=30,
        base=base,
        tuned=base + change,
        change=change,
        change_pct=change_pct,
        test="Wilcoxon signed-rank (two-sided)",
        p=q / 2,
        q=q,
        expected={1: "up", -1: "down", 0: "none"}[spec.expected],
        as_expected=None
        if change == 0 or not spec.expected
        else bool(np.sign(change) == spec.expected),
        note="",
        **extra,
    )
    return row


def cells_by_metric(table, column: int) -> dict[str, Cell]:
    return {row.cells[0].text.split(" (")[0]: row.cells[column] for row in table.rows}


def test_headline_cells_lead_with_the_calibrated_reading_then_ce_unit_and_the_window_loss():
    tests = pd.DataFrame(
        [
            known_row("p1", "window_ce", -8.0, 0.001),  # p1 is surer of its answers
            known_row("p1", "intensity", 12.345, 0.004),
            known_row("p1", "intensity", 10.0, 0.012, loss="target_unit"),  # holds calibrated
            known_row("p1", "intensity", 9.0, 0.02, loss="ce_unit"),
            known_row("p1", "entropy", -5.0, 0.2),  # not significant
            known_row("p1", "kurtosis", -40.0, 0.0001),
            known_row("p1", "kurtosis", -1.0, 0.6, loss="target_unit"),  # gone when calibrated
            known_row("p2", "window_ce", -10.0, 0.001),
            known_row("p2", "intensity", -20.0, 0.001),  # down, as a surer model's would
            known_row("p2", "intensity", -1.0, 0.8, loss="target_unit"),
            known_row("p3", "window_ce", -5.0, 0.001),  # surer, yet intensity rose under ce
            known_row("p3", "intensity", 15.0, 0.001),
            known_row("p3", "intensity", 1.0, 0.7, loss="target_unit"),
        ]
    )
    verdicts = headline_verdicts(tests, "passed")
    pairs = {"p1": "GRPO", "p2": "DPO", "p3": "PPO"}
    table = headline_table(verdicts, pairs, ["gsm"], 0.5)
    assert table.columns == ["metric", "p1 (GRPO)", "p2 (DPO)", "p3 (PPO)"]
    assert [row.group for row in table.rows] == ["gsm"] * 4
    p1, p2, p3 = (cells_by_metric(table, column) for column in (1, 2, 3))
    assert p1["activation intensity"].parts == (
        ("calibrated ↑ +10.0%* (q = 0.0120)", ""),
        ("ce ↑ +12.3%**", ""),
        ("unit ↑ +9.00%*", ""),
        ("loss ↓ -8.00%**", ""),
        ("consistent with the paper", "expected sig"),
    )
    assert p1["information complexity"].parts[-1] == ("no change", "ns")
    assert p1["information complexity"].parts[0] == ("calibrated –", "")
    assert p1["distribution kurtosis"].parts[-1] == ("explained by confidence", "confidence")
    assert p2["activation intensity"].parts[-1] == ("explained by confidence", "confidence")
    # confidence would have lowered intensity: the ce rise is not explained, nor calibrated
    assert p3["activation intensity"].parts[-1] == (
        "not robust to the confidence control",
        "not-robust",
    )
    assert (p2["information complexity"].text, p2["information complexity"].css) == ("–", "na")
    title = p1["activation intensity"].title
    assert "target_unit: q = 0.0120" in title and "ce: q = 0.00400" in title
    assert "calibration passed" in title
    neutral = headline_table(verdicts, {"p1": "GRPO"}, ["gsm"], 0.5, neutral=True)
    assert cells_by_metric(neutral, 1)["activation intensity"].parts[-1][1] == "neutral"
    uncalibrated = headline_table(headline_verdicts(tests, "failed"), pairs, ["gsm"], 0.5)
    assert cells_by_metric(uncalibrated, 1)["activation intensity"].parts[-1] == (
        "uncalibrated",
        "uncalibrated",
    )


def test_headline_cells_show_their_note():
    tests = pd.DataFrame([known_row("p1", "intensity", 12.0, 0.004)])
    verdicts = headline_verdicts(tests, "passed", {("p1", "gsm", 0.5): 1})
    cell = cells_by_metric(headline_table(verdicts, {"p1": "GRPO"}, ["gsm"], 0.5), 1)
    assert cell["activation intensity"].parts[-1] == (f"note: {ONE_TOKEN_NOTE}", "cell-note")
    without = headline_table(headline_verdicts(tests, "passed"), {"p1": "GRPO"}, ["gsm"], 0.5)
    assert "note" not in cells_by_metric(without, 1)["activation intensity"].parts[-1][0]


def test_headline_cells_show_the_absolute_change_when_the_base_is_zero():
    row = known_row("p1", "kurtosis", 10.0, 0.01) | {"change": -0.25, "change_pct": np.nan}
    table = headline_table(headline_verdicts(pd.DataFrame([row])), {"p1": "PPO"}, ["gsm"], 0.5)
    assert cells_by_metric(table, 1)["distribution kurtosis"].parts[1][0] == "ce ↓ -0.250*"


def test_alpha_sweep_shows_every_alpha_in_order_and_names_duplicate_windows():
    tests = pd.DataFrame(
        [
            known_row("p1", "intensity", 10.0, 0.001, alpha=0.5),
            known_row("p1", "intensity", 8.0, 0.001, alpha=0.5, loss="target_unit"),
            known_row("p1", "intensity", -10.0, 0.3, alpha=0.1),
            known_row("p1", "intensity", -10.0, 0.3, alpha=0.2, duplicate_of=0.1),
        ]
    )
    verdicts = headline_verdicts(tests, "passed")
    table = alpha_sweep_table(verdicts, {"p1": "GRPO"}, ["gsm"], [0.1, 0.2, 0.5])
    cell = cells_by_metric(table, 1)["activation intensity"]
    assert cell.parts == (
        ("ce ↓ -10.0%", "ns"),
        ("= α = 0.1", "na"),
        ("ce ↑ +10.0%**", "expected sig"),
    )
    assert cell.title == "1 consistent with the paper, 1 no change, 1 same window"
    same = headline_table(verdicts, {"p1": "GRPO"}, ["gsm"], 0.2)
    assert cells_by_metric(same, 1)["activation intensity"].text == "same window as α = 0.1"


def test_the_summary_gives_each_pair_one_line_of_verdicts_calibration_and_survival():
    tests = pd.DataFrame(
        [
            known_row("p1", "window_ce", -8.0, 0.001),  # p1 is surer of its answers
            known_row("p1", "intensity", 12.0, 0.004),
            known_row("p1", "intensity", 10.0, 0.012, loss="target_unit"),  # consistent
            known_row("p1", "kurtosis", -40.0, 0.0001),
            known_row("p1", "kurtosis", -1.0, 0.6, loss="target_unit"),  # confidence
            known_row("p1", "entropy", 5.0, 0.2),  # no change
            known_row("more", "intensity", 3.0, 0.3),
            known_row("id", "intensity", 0.0, 1.0),
            known_row("id", "entropy", 0.0, 1.0),
        ]
    )
    verdicts = headline_verdicts(tests, "passed")
    # (calibrated, ce) where the exact-ablation check ran
    survival = {
        ("p1", "intensity"): (SURVIVES, SURVIVES),
        ("p1", "kurtosis"): (OPPOSITE, NOT_SIGNIFICANT),
    }
    keys = verdicts[["pair", "metric"]].itertuples(index=False, name=None)
    checked = [survival.get(key, (np.nan, np.nan)) for key in keys]
    verdicts["survival_calibrated"], verdicts["survival_ce"] = zip(*checked, strict=True)
    pairs = {"more": "SFT", "id": "none", "p1": "GRPO"}
    specs = {"more": {"control": "more-training"}, "id": {"control": "identity"}, "p1": {}}

    def rows_of(table) -> dict[str, list[Cell]]:
        return {row.cells[0].parts[0][0]: row.cells for row in table.rows}

    table = summary_table(verdicts, tests, pairs, specs, ["gsm", "math"], 0.5)
    assert table.columns[1] == "verdicts at α = 0.5 (of 8 results each)"
    rows = rows_of(table)
    assert list(rows) == ["p1 (GRPO)", "more (SFT)", "id (none)"]  # the study pair first
    pair, verdict, calibration, survival = rows["p1 (GRPO)"]
    assert pair.parts[1] == ("study pair", "cell-note")
    assert verdict.parts == (
        ("1 consistent with the paper", "expected sig"),
        ("1 explained by confidence", "confidence"),
        ("1 no change", "ns"),
    )
    assert (calibration.text, calibration.css) == ("passed", "pass")
    assert survival.parts == (
        ("gsm at α = 0.5", "cell-note"),
        ("calibrated: 1 of 2 survive (1 opposite direction)", ""),
        ("ce: 1 of 2 survive (1 same direction, not significant)", ""),
    )
    pair, verdict, _, survival = rows["more (SFT)"]
    assert pair.parts[1] == ("control: more-training", "cell-note")
    assert verdict.parts == (("1 no change", "ns"),)
    assert (survival.text, survival.css) == ("not checked", "na")
    identity = rows["id (none)"][1]
    assert (identity.text, identity.css) == ("every change exactly 0: passed", "pass")
    # a pipeline check greys confirmation; an uncalibrated run says so on every line
    neutral = rows_of(summary_table(verdicts, tests, pairs, specs, ["gsm"], 0.5, neutral=True))
    assert neutral["p1 (GRPO)"][1].parts[0] == ("1 consistent with the paper", "neutral")
    failed = summary_table(headline_verdicts(tests, "failed"), tests, pairs, specs, ["gsm"], 0.5)
    _, verdict, calibration, _ = rows_of(failed)["p1 (GRPO)"]
    assert verdict.parts == (("3 uncalibrated", "uncalibrated"),)
    assert (calibration.text, calibration.css) == ("failed", "fail")
    # an identity control with any change is no exact null: the failure leads its line
    moved = tests.assign(change=np.where(tests["pair"] == "id", [0.0] * 7 + [1e-6, 0.0], 0.0))
    identity = rows_of(summary_table(verdicts, moved, pairs, specs, ["gsm"], 0.5))["id (none)"]
    assert identity[1].parts[0] == (IDENTITY_FAILED, "fail")


def test_variants_are_compared_with_the_headline_of_their_quantity():
    tests = pd.DataFrame(
        [
            known_row("p1", "entropy", 5.0, 0.01, alpha=0.1),  # expected
            known_row("p1", "entropy_hist", -5.0, 0.01, alpha=0.1),  # opposite: disagrees
            known_row("p1", "entropy", 5.0, 0.5, alpha=0.5),  # ns
            known_row("p1", "entropy_hist", 1.0, 0.9, alpha=0.5),  # ns: agrees
        ]
    )
    agreement = variant_agreement(tests).set_index(["metric", "verdict"])
    assert agreement.loc[("entropy_hist", "opposite"), "agrees"].item() is False
    assert agreement.loc[("entropy_hist", "ns"), "agrees"].item() is True
    table = variant_table(tests, {"p1": "GRPO"}, neutral=False)
    cells = {row.cells[0].text: row.cells[1] for row in table.rows}
    assert cells["entropy: normalised edge mass (headline)"].text == "✓1 ✗0 of 2"
    assert cells["entropy_hist: histogram of |w|"].text == "✓0 ✗1 of 2 · agrees 1/2"
    assert cells["kurtosis_abs: |w|"].text == "–"
    assert cells["entropy_hist: histogram of |w|"].css == "opposite sig"
    # a pipeline check never colours a result as confirming or refuting the paper
    neutral = variant_table(tests, {"p1": "GRPO"}, neutral=True)
    assert {row.cells[1].css for row in neutral.rows} <= {"neutral", "", "na"}


def calibration_rows_of(folds, edit: str, dataset: str) -> dict[str, list[Cell]]:
    """The calibration table's rows of one edit and dataset, by reading label."""
    ((model_table,),) = (fold.blocks for fold in folds)
    return {
        row.cells[0].text: row.cells
        for row in model_table.rows
        if row.group.startswith(f"{edit}:") and row.cells[1].text == dataset
    }


def test_a_failed_calibrated_reading_makes_every_verdict_uncalibrated_and_is_flagged():
    config = synthetic_config()
    table = calibration_frame(config, "toy-sft", "toy-grpo")
    calibrated = (table["loss"] == "target_unit") & (table["dataset"] == "toy-gsm8k")
    sharper = calibrated & (table["edit"] == "sharper") & (table["metric"] == "intensity")
    table.loc[sharper, ["change_pct", "passed"]] = [3.0, False]
    softer = calibrated & (table["edit"] == "softer")
    note = "the edit changed the greedy answers: not a pure temperature change"
    table.loc[softer, ["agreement", "passed", "note"]] = [0.97, False, note]
    text, *tables = calibration_blocks(table)
    status = " ".join(text.paragraphs)
    assert "FAILED its calibration: 5 of its 18 known-answer checks fail" in status
    assert "every verdict of this run is “uncalibrated”" in status
    assert [fold.open for fold in tables] == [True]  # a failure unfolds
    cells = calibration_rows_of(tables, "sharper", "toy-gsm8k")["calibrated (target_unit)"]
    assert [cell.text for cell in cells[2:4]] == ["+3.00%", "+0.100%"]
    assert [cell.css for cell in cells[2:4]] == ["fail", "pass"]
    assert (cells[-1].text, cells[-1].css) == ("FAILED", "fail")
    assert cells[-1].title == "fails: activation intensity"
    cells = calibration_rows_of(tables, "softer", "toy-gsm8k")["calibrated (target_unit)"]
    assert (cells[-2].text, cells[-2].css) == ("97.00% (base 98.50%)", "fail")
    assert cells[-1].text == f"FAILED: {note}"
    # the other dataset's calibrated rows still pass
    math = calibration_rows_of(tables, "sharper", "toy-math")["calibrated (target_unit)"]
    assert (math[-1].text, math[-1].css) == ("passed", "pass")


def test_calibration_shows_the_planted_node_and_ce_units_temperature_bias():
    config = synthetic_config()
    text, *tables = calibration_blocks(calibration_frame(config, "toy-sft", "toy-grpo"))
    status = " ".join(text.paragraphs)
    assert "The calibrated (target_unit) reading passed all 18 of its known-answer checks" in status
    assert [fold.open for fold in tables] == [False]  # a pass folds its table
    assert "paper's loss (ce) failed, ce_unit failed" in status
    assert "+60.0% under logits x 1.5 (toy-sft, toy-gsm8k)" in status
    assert "largest |change| on any headline metric there: 0.200%" in status
    rows = calibration_rows_of(tables, "planted-a0", "toy-math")
    assert list(rows) == ["calibrated (target_unit)", "paper's loss (ce)", "ce_unit"]
    planted = rows["calibrated (target_unit)"]
    assert planted[-3].text == "a0: rank 1; top a0"
    assert [cell.css for cell in planted[2:6]] == ["pass", "", "", ""]  # only intensity known
    unit = calibration_rows_of(tables, "sharper", "toy-math")["ce_unit"]
    assert (unit[2].text, unit[2].css, unit[-1].text) == ("+60.0%", "fail", "FAILED")


def test_without_calibration_every_verdict_is_uncalibrated():
    (text,) = calibration_blocks(pd.DataFrame(columns=list(CALIBRATION_COLUMNS)))
    assert "Calibration did not run" in text.paragraphs[-1]
    assert "every verdict of this run is “uncalibrated”" in text.paragraphs[-1]


def test_funnel_table_counts_every_filter_and_the_windows():
    rows = {
        model: [generation_row(i, model, 0) for i in range(N_PROBLEMS)]
        for model in ("toy-sft", "toy-grpo")
    }
    _, summary = pair_samples(
        rows["toy-sft"], rows["toy-grpo"], filter_settings(num_samples=5), pair="p", dataset="d"
    )
    table = funnel_table({"d": summary}, [0.1, 0.5])
    cells = dict(zip(table.columns, (cell.text for cell in table.rows[0].cells), strict=True))
    removed = {f["reason"]: f["removed"] for f in summary["filters"]}
    assert cells["problems (joined)"] == str(N_PROBLEMS)
    assert cells["− not both correct"] == str(removed["not both correct"])
    assert cells["− not sampled"] == str(removed["not sampled"])
    assert cells["analysed"] == "5"
    reference = Fraction(summary["reference_length_fraction"])
    assert cells["window tokens at α = 0.1 / α = 0.5"] == (
        f"{max(1, int(0.1 * reference))} / {max(1, int(0.5 * reference))}"
    )


def test_accuracy_table_in_percent():
    table = accuracy_table(
        {("m", "d"): {"accuracy": 0.875, "n": 8, "dtype": "bfloat16", "device": "cuda"}},
        ["m"],
        ["d"],
    )
    assert [cell.text for cell in table.rows[0].cells] == ["m", "87.5%"]


def methods_text(config: dict) -> str:
    """The methods text of `config`, with the calibration scope `load_study` gives it."""
    return " ".join(
        methods_paragraphs(
            config,
            n_tests=17,
            calibrated=list(calibration_scope(config)),
            calibration_alpha=calibration_alpha(config),
        )
    )


def test_methods_text_comes_from_the_config_and_is_escaped():
    config = synthetic_config()
    config["filter"]["big_coeff"] = 1.75
    text = methods_text(config)
    assert "[0.5·T, 1.75·T]" in text
    assert "{0.1, 0.5}" in text
    assert "(17 over all pairs)" in text
    assert "log(tuned/base)" in text and "geometric mean" in text
    assert "exactly invariant to a logit scale" in text  # target_unit
    assert "a pure temperature change moves it" in text  # ce_unit
    assert "sharper: logits x 1.5" in text and "planted-a0: a0 output x 1.5" in text
    assert "<em>not robust to the confidence control</em>" in text
    config["calibration"]["enabled"] = False
    text = methods_text(config)
    assert "calibration did not run, so every verdict of this run is <em>uncalibrated</em>" in text
    config["templates"]["toy"]["user"] = "<b>{question}</b>"
    cells = [
        cell.text
        for row in templates_table(config, models_in_use(config)).rows
        for cell in row.cells
    ]
    assert "<b>{question}</b>" in cells  # plain text: escaped when rendered


def test_extra_sections_are_rendered_with_the_toc(tmp_path):
    extra = Section(
        "dynamics",
        "Training dynamics",
        [Text(["Checkpoints <every> 10 steps."]), Code("x < y")],
    )
    html = render_report([extra], title="t")
    assert '<a href="#dynamics">Training dynamics</a>' in html
    assert "Checkpoints &lt;every&gt; 10 steps." in html
    assert "x &lt; y" in html


# ---------------------------------------------------------------- inputs


def test_layout_lists_exactly_what_the_loaders_read(study_root, monkeypatch):
    root, config = study_root
    layout = Layout(root)
    read = []
    original = results.require
    monkeypatch.setattr(results, "require", lambda path: read.append(str(path)) or original(path))
    study_of(root, config)
    assert sorted(read) == sorted(all_files(layout.report_files(report_scope(config))))
    read.clear()
    pair_results_of(root, config, "toy-grpo")
    files = layout.figure_files("toy-grpo", config["datasets"], config["eap"]["alphas"])
    assert sorted(read) == sorted(all_files(files))


def all_files(files: dict) -> list[str]:
    return [path for by_key in files.values() for path in by_key.values()]


def test_a_rules_named_inputs_are_keyed_by_its_params():
    keys = {"summary": [("gsm", 0.1), ("gsm", 0.5)], "tests": ["tests"]}
    inputs = {"summary": ["a.json", "b.json"], "tests": ["tests.csv"]}
    assert keyed_files(inputs, keys) == {
        "summary": {("gsm", 0.1): "a.json", ("gsm", 0.5): "b.json"},
        "tests": {"tests": "tests.csv"},
    }
    with pytest.raises(ValueError, match="input summary: 1 files for 2 keys"):
        keyed_files(inputs | {"summary": ["a.json"]}, keys)


def test_a_missing_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape("results/stats/tests.csv")):
        study_of(tmp_path, synthetic_config())


def test_examples_are_the_first_analysed_problems(study_root):
    root, config = study_root
    examples = study_of(root, config).examples["toy-grpo", "toy-gsm8k"]
    where = {"pair": "toy-grpo", "dataset": "toy-gsm8k", "alpha": "0.1", "ext": "json"}
    analysed = results.load_json(Layout(root).path(paths.METRICS_FILE, **where))["idx"]
    assert [e.idx for e in examples] == sorted(analysed)[: results.N_EXAMPLES]
    assert [(c.role, c.model) for c in examples[0].completions] == [
        ("base", "toy-sft"),
        ("tuned", "toy-grpo"),
    ]


def test_long_completions_are_cut_and_say_how_much_is_left_out():
    row = generation_row(3, "toy-sft", 0)
    completion = results.completion_of(row, "base", "toy-sft", max_chars=20)
    assert completion.text == row["completion"][:20]
    assert completion.omitted_chars == len(row["completion"]) - 20
    assert completion.n_tokens == len(row["completion_token_ids"])


def test_headline_alpha_must_be_configured(study_root):
    root, config = study_root
    study = study_of(root, config)
    assert headline_alpha_of(study, None) == 0.5
    with pytest.raises(ValueError, match="not one of eap.alphas"):
        headline_alpha_of(study, 0.3)
    assert "longest answer window" in alpha_choice(0.5, [0.1, 0.5])
    assert "as chosen for this run" in alpha_choice(0.1, [0.1, 0.5])


# ---------------------------------------------------------------- the rendered report


def test_report_is_one_file_with_every_figure_embedded(html, study_root):
    """Every figure but the identity control's, which is the exact null it must be."""
    root, config = study_root
    shown = [pair for pair in config["pairs"] if pair != "toy-identity"]
    n_figures = sum(len(Layout(root).pair_figures(p, config["datasets"])) for p in shown)
    n_figures += len(Layout(root).training_figures(trained_in_use(config)))
    images = re.findall(r'<img src="([^"]*)"', html)
    assert len(images) == n_figures
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # nothing outside the file


def test_figures_are_drawn_for_the_report_column_with_a_palette(html):
    """As wide as the report's content column, so never rescaled, and 256 colours."""
    src = re.search(r'<img src="data:image/png;base64,([^"]*)"', html).group(1)
    image = Image.open(io.BytesIO(base64.b64decode(src)))
    assert image.mode == "P" and len(image.getcolors()) <= 256
    assert image.width == REPORT_WIDTH_PX


def section_html(html: str, section: str) -> str:
    return html.split(f'<section id="{section}">')[1].split("</section>")[0]


def outside_details(html: str, tag: str) -> int:
    """How many `tag`s of `html` sit outside every <details>."""
    outside, depth = 0, 0
    for match in re.finditer(rf"<details|</details>|{tag}", html):
        if match.group(0) == "<details":
            depth += 1
        elif match.group(0) == "</details>":
            depth -= 1
        else:
            outside += depth == 0
    return outside


def test_the_report_opens_with_the_summary_and_folds_the_detail(html):
    order = re.findall(r'<section id="([^"]+)"', html)
    assert order[:3] == ["summary", "calibration", "headline"]
    summary = section_html(html, "summary")
    assert summary.index('id="summary-table"') < summary.index('id="headline-table"')
    assert "<details" not in summary  # the answer is never folded
    assert outside_details(html, "<img ") == 0
    assert outside_details(html, '<article class="example">') == 0
    assert outside_details(html, 'id="alpha-sweep-table"') == 0
    # the identity control reads as one line, its figures left out
    assert "toy-identity (none): every change exactly 0: passed." in section_html(html, "pairs")
    assert "toy-identity (none):" not in " ".join(re.findall(r'alt="([^"]*)"', html))
    # folded content prints, with no script
    assert "@media print { details::details-content { content-visibility: visible; } }" in html


def test_an_identity_control_that_is_not_an_exact_null_unfolds(study_root):
    root, config = study_root
    study = study_of(root, config)
    pairs = {b.paragraphs[0] for b in pairs_section(study).blocks if isinstance(b, Text)}
    assert "toy-identity (none): every change exactly 0: passed." in pairs
    identity = study.tests["pair"] == "toy-identity"
    study.tests.loc[identity & (study.tests["metric"] == "intensity"), "change"] = 1e-6
    (unfolded,) = [b for b in pairs_section(study).blocks if isinstance(b, Details) and b.open]
    assert unfolded.summary == f"toy-identity (none): {IDENTITY_FAILED}"
    assert sum(isinstance(b, Figure) for b in unfolded.blocks) == 3  # + the α sweep fold
    scatters = confidence_section(study, 0.5).blocks[-1].blocks
    assert any("toy-identity (none)" in figure.caption for figure in scatters)


def test_extra_sections_fold_their_figures_and_tables_under_their_captions(study_root):
    root, _ = study_root
    png = next((root / "results" / "figures").rglob("*.png"))
    table = Table(["a"], [Row([Cell("1")])], caption="Counts & more")
    section = Section("extra", "Extra", [Text(["Found."]), figure(png, "Curves <k>."), table])
    text, curves, counts = fold_detail(section).blocks
    assert text is section.blocks[0]
    assert (curves.summary, curves.blocks[0].caption) == ("Curves <k>.", "")
    assert curves.blocks[0].alt == "Curves <k>."  # the image still says what it shows
    assert (counts.summary, counts.blocks[0].caption, counts.open) == ("Counts & more", "", False)
    assert section.blocks[1].caption == "Curves <k>."  # the section itself is left as it was
    html = render_report([fold_detail(section)])
    assert '<details class="caption"><summary>Curves &lt;k&gt;.</summary>' in html
    assert "<figcaption>" not in html and "<caption>" not in html  # each said once


def test_report_has_the_sections_and_every_toc_link_resolves(html):
    ids = set(re.findall(r'<section id="([^"]+)"', html))
    links = set(re.findall(r'<a href="#([^"]+)"', html))
    assert links == ids
    for section in (
        "summary",
        "calibration",
        "headline",
        "pairs",
        "metrics",
        "accuracy",
        "examples",
        "training",
        "methods",
        "provenance",
    ):
        assert section in ids
    assert 'id="headline-table"' in html
    assert "toy-grpo (GRPO)" in html and "toy-dpo (DPO)" in html


def test_calibration_comes_before_the_headline_results(html):
    order = re.findall(r'<section id="([^"]+)"', html)
    assert order.index("calibration") + 1 == order.index("headline")
    toc = re.findall(r'<a href="#([^"]+)"', html)
    assert toc.index("calibration") < toc.index("headline")
    section = html.split('<section id="calibration">')[1].split("</section>")[0]
    assert "passed all 18 of its known-answer checks" in section
    assert 'id="calibration-toy-sft"' in section


def test_the_report_shows_the_verdicts_the_workflow_wrote(study_root):
    root, config = study_root
    study = study_of(root, config)
    study.verdicts = study.verdicts.assign(verdict=AGAINST, duplicate_of=np.nan)
    _, summary, table = summary_section(study, 0.5).blocks
    assert table.id == "headline-table"
    shown = {part for row in table.rows for cell in row.cells[1:] for part in cell.parts}
    assert {part for part in shown if part[0] in VERDICTS} == {(AGAINST, "neutral")}
    lines = {row.cells[0].parts[0][0]: row.cells[1] for row in summary.rows}
    assert lines["toy-grpo (GRPO)"].parts == (("8 against the paper", "neutral"),)
    assert lines["toy-identity (none)"].text == "every change exactly 0: passed"


def test_model_output_is_escaped_text(html):
    assert TITLE_SCRIPT not in html
    assert "&lt;script&gt;document.title = &#39;pwned&#39;&lt;/script&gt;" in html
    assert "<b>bold?</b>" not in html and "&lt;b&gt;bold?&lt;/b&gt;" in html
    assert "&lt;apples&gt; &amp; " in html  # the question too
    assert len(re.findall(r"<script", html)) == 0


def test_nan_is_never_shown_as_nan(html):
    assert not re.search(r">\s*nan\s*<|\bNaN\b|>None<", html)


def test_report_states_its_alpha_choice_and_provenance(html):
    assert "The main table uses α = 0.5" in html
    assert "abc123def456" in html
    assert "0123456789abcdef0123456789abcdef01234567 (with uncommitted changes)" in html
    assert "git checkout 0123456789abcdef0123456789abcdef01234567" in html
    assert "snakemake --cores 2 --configfile &#39;my config.yaml&#39;" in html


# ---------------------------------------------------------------- provenance


def test_reproduce_command_is_quoted_and_relative_to_the_project(tmp_path):
    command = reproduce_command(
        cores=4,
        configfiles=[ROOT / "config" / "config.yaml", tmp_path / "my config.yaml"],
        config_args=["eap={'alphas': [0.1]}"],
        project_dir=ROOT,
    )
    assert command == (
        f"snakemake --cores 4 --configfile config/config.yaml '{tmp_path}/my config.yaml' "
        "--config 'eap={'\"'\"'alphas'\"'\"': [0.1]}'"
    )
    assert reproduce_command(cores=None) == "snakemake --cores all"


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        check=True,
        capture_output=True,
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_state_of_the_project_checkout_only(tmp_path):
    assert git_state(tmp_path) == GitState(None, None)
    git(tmp_path, "init", "-q")
    assert git_state(tmp_path) == GitState(None, None)  # no commit yet
    (tmp_path / "Snakefile").write_text("rule all:\n")
    git(tmp_path, "add", "Snakefile")
    git(tmp_path, "commit", "-q", "-m", "first")
    state = git_state(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", state.commit) and state.dirty is False
    (tmp_path / "Snakefile").write_text("rule all:\n    input: []\n")
    assert git_state(tmp_path).dirty is True
    (tmp_path / "copy").mkdir()
    assert git_state(tmp_path / "copy") == GitState(None, None)  # not the repo's top level


def test_provenance_records_versions_hash_and_date(tmp_path):
    config = synthetic_config()
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    provenance = collect_provenance(
        config, command="snakemake --cores 1", project_dir=tmp_path, now=now
    )
    assert provenance.config_hash == config_hash(config)
    assert provenance.run_date == "2025-06-01T12:00:00+00:00"
    assert provenance.packages["numpy"] == np.__version__
    assert set(provenance.packages) == set(PACKAGES)
    assert package_versions(["no-such-package-circuitry"]) == {"no-such-package-circuitry": None}


def test_report_lists_every_deviation_from_the_papers_code_with_its_effect(html, study_root):
    _, config = study_root
    table = html.split('id="fidelity-table"')[1].split("</table>")[0]
    for deviation in DEVIATIONS:
        assert deviation.choice in table
    assert f"filter.mode: {config['filter']['mode']}" in table
    assert "would select" in table and "read back with a relative error" in table
    assert "no scored model is of a family the paper capped (mistral, qwen2)" in table


def test_report_shows_teacher_forcing_agreement_and_flags_what_is_below_threshold(html):
    table = html.split('id="agreement"')[1].split("</table>")[0]
    assert table.count(">100.00%<") == 2  # toy-sft on both datasets
    assert 'class="warn" title="3 rows depart; 1000 completion tokens">98.50%<' in table
    assert "Below 99% (generation.agreement_threshold, highlighted)" in html
