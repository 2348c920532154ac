"""The embedded toy study end to end, and a generation job killed and resumed.

`test_toy_study_end_to_end` runs the README's own command (`snakemake --cores 2`) in the
project directory: after the quickstart every output is up to date and Snakemake only
checks them; on a fresh checkout it builds the whole study (about 6 minutes on 2 cores of
the reference machine). Every rule's `code` param hashes the library modules its script
imports, so outputs that other library code built are planned again, never checked as
they are.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_report_browser import CHROMIUM, NO_CHROMIUM, assert_reads_in_one_screen, probed_dom

from circuitry.analysis.calibration import CALIBRATED_LOSS
from circuitry.analysis.metrics import ROLES
from circuitry.attribution.samples import text_role
from circuitry.attribution.scorefile import DIAGNOSTICS, EdgeScores
from circuitry.config import trained_in_use
from circuitry.io import read_json, read_jsonl
from circuitry.models import runs
from circuitry.paths import (
    CALIBRATION_TABLE,
    DYNAMICS_EAP_FILE,
    DYNAMICS_OUTPUTS,
    EAP_FILE,
    FAITHFULNESS_EDGES,
    FAITHFULNESS_FIGURE,
    FAITHFULNESS_SUMMARY,
    SURVIVAL_CHANGES,
    SURVIVAL_TESTS,
    TRAINED_MODEL_DIR,
    VERDICTS,
    WEIGHT_DIFF_SUMMARY,
    WEIGHT_DIFF_TABLE,
    WEIGHT_FIGURES,
    Layout,
)
from conftest import ROOT, SNAKEMAKE, load_config, numpy_diff, run_snakemake

# The whole toy study, built or checked (`-m "not slow"` leaves it out; CI runs it).
pytestmark = pytest.mark.slow

TOY = load_config("toy")
PAIRS = list(TOY["pairs"])
DATASETS = list(TOY["datasets"])
ALPHAS = [str(alpha) for alpha in TOY["eap"]["alphas"]]
LOSSES, TEXTS = TOY["eap"]["losses"], TOY["eap"]["texts"]


@pytest.fixture(scope="module")
def toy_study():
    result = run_snakemake("--cores", "2", timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return ROOT


def accuracy(root, model: str, dataset: str) -> float:
    return read_json(root / f"results/generations/{model}/{dataset}.provenance.json")["accuracy"]


def test_toy_study_end_to_end(toy_study):
    report = (toy_study / "results" / "report" / "report.html").read_text()
    assert "Headline results" in report
    assert "Confidence and controls" in report and 'id="controls-table"' in report
    assert "an exact null, as it must be" in report
    assert "checks that the pipeline works end to end" in report
    assert 'id="fidelity-table"' in report and "read back with a relative error" in report
    for reading in ("pooled_entropy", "diversity_cv", "entropy_hist_sample", "kurtosis_pearson"):
        assert reading in report
    for pair in PAIRS:
        assert f"{pair} ({TOY['pairs'][pair]['method']})" in report
        for dataset in DATASETS:
            rows = read_jsonl(toy_study / f"results/pairs/{pair}/{dataset}.jsonl")
            assert len(rows) == TOY["filter"]["num_samples"]
            for alpha, loss, text, role in itertools.product(ALPHAS, LOSSES, TEXTS, ROLES):
                where = {"pair": pair, "dataset": dataset, "alpha": alpha}
                path = toy_study / EAP_FILE.format(role=role, loss=loss, text=text, **where)
                edges = EdgeScores.from_npz(path)  # checks shapes and finite values
                assert list(edges.idx) == [row["idx"] for row in rows]
                assert set(edges.diagnostics) == set(DIAGNOSTICS)
                with np.load(path, allow_pickle=False) as npz:
                    assert (str(npz["loss"]), str(npz["text"])) == (loss, text)
                    assert str(npz["text_role"]) == text_role(role, text)
                    if loss == "ce_unit":
                        np.testing.assert_allclose(
                            npz["grad_logits_norm"], 1 / npz["window_len"], rtol=1e-5
                        )


def test_the_report_says_how_faithful_eap_is_on_each_toy_model(toy_study):
    """Each checked model's single-edge correlations and top-k curves, in the report's
    Faithfulness section, every job on the configured number of samples."""
    section = TOY["faithfulness"]
    report = (toy_study / "results" / "report" / "report.html").read_text()
    assert 'id="faithfulness"' in report and "Spearman" in report
    for pair, dataset, alpha, role in itertools.product(
        section["pairs"], section["datasets"], section["alphas"], ROLES
    ):
        where = {"pair": pair, "dataset": dataset, "alpha": alpha, "role": role}
        summary = read_json(toy_study / FAITHFULNESS_SUMMARY.format(**where))
        assert summary["n_samples"] == section["samples"]
        assert -1 <= summary["spearman"] <= 1 and np.isfinite(summary["area"])
        assert -1 <= summary["ig_spearman"] <= 1
        edges = pd.read_csv(toy_study / FAITHFULNESS_EDGES.format(**where))
        assert summary["largest_change_edge"] in set(edges["edge"])
        checked = section["top_edges"] + section["random_edges"]
        assert len(edges) == section["samples"] * checked
    assert (toy_study / FAITHFULNESS_FIGURE).is_file()


def test_the_calibrated_reading_passes_the_toys_known_answers(toy_study):
    """On toy-sft: both temperature edits move ce and ce_unit by tens of percent in
    opposite directions, the calibrated reading by under 1% on every headline metric (and
    leave every greedy answer as it was); the planted edit is detected. So the verdicts
    rest on it, and the report shows the Calibration section before the headline."""
    table = pd.read_csv(toy_study / CALIBRATION_TABLE.format(model="toy-sft"))
    assert set(table["dataset"]) == set(DATASETS)
    temperature = table[table["kind"] == "temperature"]
    assert (temperature["agreement"] == temperature["base_agreement"]).all()
    calibrated = temperature[temperature["loss"] == CALIBRATED_LOSS]
    assert calibrated["change_pct"].abs().max() < 1 and calibrated["passed"].all()
    sharper = temperature[(temperature["metric"] == "intensity") & (temperature["factor"] > 1)]
    change = {loss: rows["change_pct"] for loss, rows in sharper.groupby("loss")}
    assert (change["ce"] < -20).all() and (change["ce_unit"] > 20).all()
    planted = table[(table["kind"] == "planted") & (table["loss"] == CALIBRATED_LOSS)]
    detected = planted[planted["metric"] == "intensity"]
    assert len(detected) == len(DATASETS) and detected["passed"].all()
    verdicts = pd.read_csv(toy_study / VERDICTS)
    assert set(verdicts["calibration"]) == {"passed"}
    assert "uncalibrated" not in set(verdicts["verdict"])
    report = (toy_study / "results" / "report" / "report.html").read_text()
    assert report.index('<section id="calibration">') < report.index('<section id="headline">')


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_toy_report_gives_the_answer_first_and_folds_the_detail(toy_study, tmp_path):
    """One file under 4 MB; in Chromium at 1,400 px wide the summary is in the first screen,
    every fold opens, and folded the page is under 15,000 px; the identity control, an
    exact null, is one line."""
    path = toy_study / "results" / "report" / "report.html"
    assert path.stat().st_size < 4_000_000
    report = path.read_text()
    assert re.findall(r'<section id="([^"]+)"', report)[:2] == ["summary", "calibration"]
    summary = report.split('<section id="summary">')[1].split("</section>")[0]
    assert summary.count('<td class="pass">passed</td>') == len(PAIRS)  # every calibration
    assert "toy-identity (none): every change exactly 0: passed." in report
    assert "toy-math at α = 0.3" in summary  # where the exact-ablation check ran
    copy = tmp_path / "report.html"
    shutil.copy(path, copy)
    assert_reads_in_one_screen(probed_dom(copy, tmp_path / "profile"))


def test_every_model_reproduces_its_own_answers_under_teacher_forcing(toy_study):
    """On CPU in float32 the EAP forward writes exactly the answers generation wrote."""
    report = (toy_study / "results" / "report" / "report.html").read_text()
    assert 'id="agreement"' in report
    for model in {TOY["pairs"][p][role] for p in PAIRS for role in ("base", "tuned")}:
        for dataset in DATASETS:
            path = toy_study / f"results/generations/{model}/{dataset}.provenance.json"
            forced = read_json(path)["teacher_forcing"]
            assert forced["n_tokens"] > 0 and forced["agreement"] == 1.0, (model, dataset)


def stated_hashes() -> dict[str, str]:
    """The README's table of toy model files and their sha256 (after `<!-- toy-hashes -->`)."""
    table = (ROOT / "README.md").read_text().split("<!-- toy-hashes -->")[1].split("\n\n")[1]
    rows = re.findall(r"^\| `([^`]+)` \| `([0-9a-f]{64})` \|$", table, flags=re.MULTILINE)
    return dict(rows)


def test_the_toy_models_are_the_bits_the_readme_states(toy_study):
    """Every model the toy trains (and every checkpoint of its GRPO run) has the sha256 the
    README states: the same bits on any x86-64 CPU with AVX2 (the workflow pins the CPU
    code paths, `circuitry.reproducibility`). A change that moves them updates the README."""
    files = sorted(toy_study.glob("resources/models/*/model.safetensors")) + sorted(
        toy_study.glob("resources/dynamics/*/checkpoint-*/model.safetensors")
    )
    built = {
        str(path.parent.relative_to(toy_study / "resources")): hashlib.sha256(
            path.read_bytes()
        ).hexdigest()
        for path in files
    }
    assert len(built) == len(TOY["models"]) + len(runs.all_followed(TOY))
    assert built == stated_hashes()


def test_toy_lineage_meets_its_accuracy_targets(toy_study):
    """toy-sft has learned every set but not perfectly; GRPO, averaged over its training
    seeds, beats it by at least half a point on average.

    toy-sft trains to its plateau (83-91% mean accuracy over two seeds here, 93% on the CI
    machine): a toy-sft stopped mid-way through learning was 14-58% on one set across
    seeds and machines, too erratic to pair 100 problems. From the plateau GRPO's 60 steps
    gain 1-2 points (2.0 and 2.1 over two SFT seeds here; 0.98 on the CI machine, whose
    higher plateau leaves less to gain), so half a point still fails a GRPO that gains
    nothing without failing one whose machine gains less.
    """
    sft = [accuracy(toy_study, "toy-sft", d) for d in DATASETS]
    seeds = [p for p, spec in TOY["pairs"].items() if "toy-grpo" in (p, spec.get("replicate_of"))]
    grpo = [accuracy(toy_study, TOY["pairs"][p]["tuned"], d) for p in seeds for d in DATASETS]
    assert len(seeds) >= 3
    assert all(0.5 <= a <= 0.99 for a in sft), sft
    assert np.mean(grpo) - np.mean(sft) >= 0.005, (sft, grpo)


def test_tests_table_covers_every_condition(toy_study):
    tests = pd.read_csv(toy_study / "results" / "stats" / "tests.csv")
    conditions = tests.groupby(["pair", "dataset", "alpha", "loss", "comparison"]).size()
    expected = len(PAIRS) * len(DATASETS) * len(ALPHAS) * len(LOSSES) * 3  # own, weights, text
    assert len(conditions) == expected
    assert tests["q"].dropna().between(0, 1).all()
    assert set(tests["family"]) == {"primary", "secondary", "confidence"}


def test_identity_pair_is_an_exact_null(toy_study):
    """toy-sft against itself through every rule: every change is exactly 0, q = 1."""
    (identity,) = [p for p, spec in TOY["pairs"].items() if spec.get("control") == "identity"]
    tests = pd.read_csv(toy_study / "results" / "stats" / "tests.csv")
    rows = tests[tests["pair"] == identity]
    assert len(rows) > 0
    assert (rows["change"] == 0).all()
    assert (rows["p"] == 1).all()
    assert (rows.loc[rows["duplicate_of"].isna(), "q"] == 1).all()


def test_the_weight_diff_of_every_toy_pair_agrees_with_a_numpy_recomputation(toy_study):
    """The per-tensor fractions and norms read back from each pair's table, against plain
    numpy on the models' safetensors; the identity pair is 100% unchanged, and the report
    has the section with every pair in it."""
    report = (toy_study / "results" / "report" / "report.html").read_text()
    assert 'id="weights"' in report
    for pair, spec in TOY["pairs"].items():
        dirs = [toy_study / TRAINED_MODEL_DIR.format(model=spec[role]) for role in ROLES]
        expected = numpy_diff(*dirs)
        table = pd.read_csv(toy_study / WEIGHT_DIFF_TABLE.format(pair=pair)).set_index("name")
        assert sorted(table.index) == sorted(expected)
        for name, (exact, tol, rel) in expected.items():
            assert table.loc[name, "unchanged_exact"] == pytest.approx(exact, abs=1e-12)
            assert table.loc[name, "unchanged_tol"] == pytest.approx(tol, abs=1e-12)
            assert table.loc[name, "rel_update_norm"] == pytest.approx(rel, rel=1e-5, abs=1e-12)
        whole = read_json(toy_study / WEIGHT_DIFF_SUMMARY.format(pair=pair))["model"]
        if spec.get("control") == "identity":
            assert whole == whole | {"unchanged_exact": 1.0, "unchanged_tol": 1.0}
            assert whole["rel_update_norm"] == 0
        assert f"{pair} ({spec['method']})" in report.split('id="weights"')[1]


def test_the_headline_says_what_survives_exact_ablation_and_the_identity_reads_zero(toy_study):
    """Each checked pair's survival tests: both readings, both losses, every headline
    metric; on the identity pair (the same model twice) the two roles' true changes are
    identical, so every exact change of a metric is exactly 0."""
    section = TOY["survival"]
    verdicts = pd.read_csv(toy_study / VERDICTS)
    for pair, dataset, alpha in itertools.product(
        section["pairs"], section["datasets"], section["alphas"]
    ):
        where = {"pair": pair, "dataset": dataset, "alpha": alpha}
        tests = pd.read_csv(toy_study / SURVIVAL_TESTS.format(**where))
        assert set(tests["reading"]) == {"exact", "eap"}
        assert set(tests["loss"]) == set(section["losses"])
        changes = pd.read_csv(toy_study / SURVIVAL_CHANGES.format(**where))
        assert (
            changes.groupby(["role", "loss"]).size().eq(section["samples"] * section["edges"]).all()
        )
        cells = verdicts[(verdicts["pair"] == pair) & (verdicts["alpha"] == float(alpha))]
        checked = cells[cells["dataset"] == dataset]
        assert checked["survival_ce"].notna().all()
        assert cells.loc[cells["dataset"] != dataset, "survival_ce"].isna().all()
        if TOY["pairs"][pair].get("control") == "identity":
            base, tuned = (changes[changes["role"] == role].reset_index() for role in ROLES)
            assert base["change"].abs().max() > 0  # removing edges does change the loss
            pd.testing.assert_series_equal(base["change"], tuned["change"])
            assert (tests["change"] == 0).all()
            assert (checked["survival_ce"] == "no change").all()
    report = (toy_study / "results" / "report" / "report.html").read_text()
    assert "exact ablation: " in report


def test_dynamics_score_every_checkpoint_on_one_problem_set(toy_study):
    """One problem set and one cut_len for the whole run: every checkpoint reads the
    initial model's answers on all its problems, and its own on a subset of them."""
    (run,) = TOY["dynamics"]["runs"]
    problems = read_jsonl(toy_study / f"results/dynamics/problems/{run['init']}.jsonl")
    idx = [row["idx"] for row in problems]
    assert len(idx) == TOY["filter"]["num_samples"]
    models = [run["init"], *(c.name for c in runs.all_followed(TOY))]
    cut_lens = set()
    for model, loss in itertools.product(models, LOSSES):
        for text in runs.scored_texts(TOY, model):
            path = DYNAMICS_EAP_FILE.format(model=model, text=text, loss=loss)
            with np.load(toy_study / path, allow_pickle=False) as npz:
                cut_lens.add(int(npz["cut_len"]))
                scored = list(npz["idx"])
            assert scored == idx if text == "initial" else set(scored) <= set(idx)
    assert len(cut_lens) == 1
    summary = pd.read_csv(toy_study / "results/dynamics/summary.csv")
    start = summary[summary["step"] == 0]
    assert (start["intensity_change"] == 0).all() and (start["window_ce_p"] == 1).all()
    initial = summary[summary["text"] == "initial"]
    assert (initial["n_samples"] == len(idx)).all()


def test_snakemakes_own_report_carries_every_figure(toy_study, tmp_path):
    """`snakemake --report` archives every figure the rules declare with report()."""
    archive = tmp_path / "report.zip"
    result = run_snakemake("--report", str(archive), timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    layout = Layout()
    figures = [f for pair in PAIRS for f in layout.pair_figures(pair, DATASETS).values()]
    figures += layout.training_figures(trained_in_use(TOY)).values()
    figures += [DYNAMICS_OUTPUTS[f"{name}_figure"] for name in ("training", "metrics")]
    figures.append(FAITHFULNESS_FIGURE)
    figures += WEIGHT_FIGURES.values()
    with zipfile.ZipFile(archive) as report:
        archived = Counter(Path(name).name for name in report.namelist() if name.endswith(".png"))
    assert archived == Counter(Path(figure).name for figure in figures)


def sources_config(tmp_path, toy_root, runs: list[dict]) -> str:
    """A study whose dynamics start from a copy of the toy's SFT model (a `path:` model
    under the same name, so resampling is seeded alike) and follow `runs` on the toy's
    eval dataset; the toy's GRPO run folder is copied to `tmp_path / "grpo"`."""
    config = copy.deepcopy(TOY)
    eval_dataset = config["dynamics"]["eval_dataset"]
    config["datasets"] = {eval_dataset: config["datasets"][eval_dataset]}
    config["training_data"] = {}
    init = {k: v for k, v in config["models"]["toy-sft"].items() if k != "train"}
    shutil.copytree(toy_root / "resources/models/toy-sft", tmp_path / "toy-sft")
    config["models"] = {"toy-sft": {**init, "path": str(tmp_path / "toy-sft")}}
    config["pairs"] = {"toy-identity": config["pairs"]["toy-identity"]}
    config["faithfulness"]["enabled"] = False
    config["survival"]["enabled"] = False
    config["calibration"]["enabled"] = False
    config["dynamics"]["runs"] = runs
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def hub_cache(root, hub_id: str, folders: dict[str, Path]) -> None:
    """A Hugging Face hub cache holding `folders` as revisions of `hub_id` (one commit
    each), as `hf download --revision` would leave it."""
    repo = root / "hub" / f"models--{hub_id.replace('/', '--')}"
    for number, (revision, folder) in enumerate(folders.items()):
        commit = f"{number:040x}"
        shutil.copytree(folder, repo / "snapshots" / commit)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / revision).write_text(commit)


def lora_adapter(base: Path, folder: Path) -> None:
    """A random LoRA adapter of `base`, saved as trl saves an adapter checkpoint."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    model.save_pretrained(folder)
    state = {"log_history": [{"step": 5, "reward": 0.25, "reward_std": 0.1}]}
    (folder / "trainer_state.json").write_text(json.dumps(state))


def test_every_source_reads_the_toy_run_as_the_train_source_does(toy_study, tmp_path):
    """The toy's GRPO run read back as a trl output directory, as a glob of one of its
    two checkpoint folders and as hub revisions of both: the same weights give the same
    summary rows as the run the workflow trained. A trl run of a LoRA adapter is merged
    onto its initial model. Then the other folder joins the glob and only its own jobs (and
    the summary) are planned."""
    (toy_run,) = TOY["dynamics"]["runs"]
    shutil.copytree(toy_study / "resources/dynamics" / toy_run["name"], tmp_path / "grpo")
    folders = {s: tmp_path / "grpo" / f"checkpoint-{s}" for s in (15, 30)}
    hub_cache(
        tmp_path / "hf", "circuitry/toy-grpo", {"step-15": folders[15], "step-30": folders[30]}
    )
    lora_adapter(toy_study / "resources/models/toy-sft", tmp_path / "lora" / "checkpoint-5")
    runs = [
        {"name": "reread", "init": "toy-sft", "trl": str(tmp_path / "grpo")},
        {
            "name": "dirs",
            "init": "toy-sft",
            "dirs": {"glob": str(tmp_path / "grpo" / "checkpoint-1*"), "step": r"-(\d+)$"},
        },
        {
            "name": "hub",
            "init": "toy-sft",
            "revisions": {"hub_id": "circuitry/toy-grpo", "revisions": ["step-15", "step-30"]},
        },
        {"name": "lora", "init": "toy-sft", "trl": str(tmp_path / "lora")},
    ]
    config = sources_config(tmp_path, toy_study, runs)
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    target = ("results/dynamics/summary.csv", "--configfile", config, "--cores", "2")
    result = run_snakemake(*target, workdir=tmp_path, env=env, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    expected = pd.read_csv(toy_study / "results/dynamics/summary.csv")
    expected = expected[expected["run"] == toy_run["name"]].drop(columns="run")
    summary = pd.read_csv(tmp_path / "results/dynamics/summary.csv")
    for run, steps in (("reread", [0, 15, 30]), ("dirs", [0, 15]), ("hub", [0, 15, 30])):
        rows = summary[summary["run"] == run].drop(columns="run").reset_index(drop=True)
        assert sorted(set(rows["step"])) == steps
        pd.testing.assert_frame_equal(
            rows, expected[expected["step"].isin(steps)].reset_index(drop=True)
        )
    lora = summary[summary["run"] == "lora"]
    assert sorted(set(lora["step"])) == [0, 5]  # the adapter, merged onto toy-sft
    assert (tmp_path / "resources/models/dyn-lora-step5/model.safetensors").is_file()
    assert (tmp_path / "results/figures/dynamics/training.png").is_file()

    study = yaml.safe_load(Path(config).read_text())
    study["dynamics"]["runs"][1]["dirs"]["glob"] = str(tmp_path / "grpo" / "checkpoint-*")
    Path(config).write_text(yaml.safe_dump(study))  # the glob now finds step 30 too
    planned = run_snakemake(*target, "--dry-run", workdir=tmp_path, env=env)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    jobs = set()
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", planned.stdout):
        if rule := re.match(r"(?:local)?rule (\w+):\n", block):
            wildcards = re.search(r"wildcards: (.*)", block)
            jobs.add((rule.group(1), wildcards.group(1) if wildcards else None))
    assert jobs == {
        ("generate_dynamics", "model=dyn-dirs-step30"),
        ("eap_score_checkpoint", "model=dyn-dirs-step30"),
        ("dynamics", None),
    }


def reduced_toy_config(tmp_path, n_problems: int, batch_size: int) -> str:
    """The toy config cut to one dataset and a toy-sft trained for a few steps."""
    config = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    config["datasets"] = {"toy-gsm8k": config["datasets"]["toy-gsm8k"]}
    config["datasets"]["toy-gsm8k"]["toy"]["n"] = n_problems
    config["training_data"] = {"toy-gsm8k-train": config["training_data"]["toy-gsm8k-train"]}
    config["training_data"]["toy-gsm8k-train"]["toy"]["n"] = 64
    for model in config["models"].values():
        model["train"]["data"] = ["toy-gsm8k-train"]
    config["models"]["toy-sft"]["train"]["steps"] = 20
    del config["models"]["toy-sft"]["train"]["shipped"]  # another recipe: trained here
    config["generation"]["batch_size"] = batch_size
    del config["dynamics"]
    config["faithfulness"]["enabled"] = False
    config["survival"]["enabled"] = False
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


GENERATIONS = "results/generations/toy-sft/toy-gsm8k.jsonl"


def generate(workdir, config: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            *SNAKEMAKE,
            GENERATIONS,
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--directory",
            str(workdir),
            "--cores",
            "1",
            "--configfile",
            config,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def job_processes(snakemake_pid: int) -> list[int]:
    """The processes Snakemake started for its job (its session, without Snakemake)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, session = int(stat.parent.name), int(fields[3])
        if session == snakemake_pid and pid != snakemake_pid:
            pids.append(pid)
    return pids


def kill_job_after_first_batches(process: subprocess.Popen, partial, timeout: float = 300):
    """SIGKILL the running job (as an out-of-memory kill would) once the partial file holds
    a finished batch; Snakemake itself sees the job fail and exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if partial.exists() and len(partial.read_text().splitlines()) > 1:
            for pid in job_processes(process.pid):
                os.kill(pid, signal.SIGKILL)
            assert process.wait(timeout=60) != 0
            return
        time.sleep(0.02)
    raise AssertionError("the generate job ended before it could be interrupted")


def test_killed_generation_resumes_to_identical_output(tmp_path):
    config = reduced_toy_config(tmp_path, n_problems=240, batch_size=8)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert generate(whole, config).wait(timeout=600) == 0

    kill_job_after_first_batches(generate(resumed, config), resumed / (GENERATIONS + ".partial"))
    assert not (resumed / GENERATIONS).exists()
    kept = len((resumed / (GENERATIONS + ".partial")).read_text().splitlines()) - 1
    assert 0 < kept < 240

    assert generate(resumed, config).wait(timeout=600) == 0
    assert (resumed / GENERATIONS).read_bytes() == (whole / GENERATIONS).read_bytes()
    assert not (resumed / (GENERATIONS + ".partial")).exists()
    log = (resumed / "logs" / "generate" / "toy-sft.log").read_text()
    assert int(re.search(r"(\d+) rows restored", log).group(1)) == kept
