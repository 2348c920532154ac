"""The workflow as Snakemake sees it: lint, the job lists it plans, resources, failures."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pandas as pd
import torch
import yaml

from circuitry.models.files import save_model
from circuitry.models.sft import toy_model
from circuitry.models.tokenizer import build_char_tokenizer
from circuitry.paths import (
    EAP_FILE,
    LAYER_INTENSITY,
    WEIGHT_DIFF_SUMMARY,
    WEIGHT_DIFF_TABLE,
    WEIGHT_FIGURES,
    WEIGHT_JOIN,
)
from circuitry.provenance import model_fingerprint
from conftest import ROOT, dry_run_jobs, run_snakemake

PAPER_MODELS_PER_PAIR = {
    "deepseek": {"deepseek-math-7b-instruct", "deepseek-math-7b-rl"},
    "mistral": {"mistral-7b-sft", "math-shepherd-mistral-7b-rl"},
    "distill-qwen": {"deepseek-r1-distill-qwen-7b", "acereason-nemotron-7b"},
    "qwen": {"qwen25-7b-sft", "qwen25-7b-dpo"},
}


def full_config_with_qwen(tmp_path) -> str:
    """config/config.yaml with the disabled qwen pair's models set and the pair enabled."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["models"]["qwen25-7b-sft"]["hub_id"] = "example-org/qwen2.5-7b-sft"
    config["models"]["qwen25-7b-dpo"]["hub_id"] = "example-org/qwen2.5-7b-dpo"
    config["pairs"]["qwen"]["enabled"] = True
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def test_lint_is_clean():
    result = run_snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_full_config_plans_every_stage(tmp_path):
    """EAP: one job per pair writes every dataset, alpha and role; faithfulness: one job per
    pair, dataset and role. Dynamics: 2 runs (the temperatures) x 40 checkpoints, each
    answering GSM8K and scored on one problem set of the initial model's answers, which the
    initial model is scored on once. Calibration: one scoring and one analysis job per
    study pair's base model. Weights: one diff per pair and one join; survival: one job per
    pair and dataset."""
    jobs = dry_run_jobs("--configfile", full_config_with_qwen(tmp_path))
    models, datasets, pairs = 8, 3, 4
    checkpoints = 2 * 400 // 10
    assert Counter(job["rule"] for job in jobs) == {
        "download_dataset": datasets + 1,  # + GSM8K train
        "generate": models,  # one job per model: every dataset
        "generate_dynamics": checkpoints + 1,  # + the initial model, on GSM8K only
        "pair_samples": pairs,  # one job per pair: every dataset
        "eap_score": pairs,
        "metrics": pairs,
        "fidelity": pairs,
        "faithfulness": pairs * datasets * 2,  # both roles at one alpha (0.1)
        "faithfulness_figure": 1,
        "dynamics_problems": 1,
        "eap_score_initial": 1,
        "eap_score_checkpoint": checkpoints,
        "train_dynamics": 2,
        "dynamics": 1,
        "calibration_score": pairs,  # every study pair has its own base model
        "calibration": pairs,
        "figures": pairs,
        "stats": 1,
        "verdicts": 1,
        "report": 1,
        "all": 1,
        "weight_diff": pairs,
        "weight_join": 1,
        "survival": pairs * datasets,  # both roles in one job at one alpha (0.1)
    }


def test_gpu_jobs_request_one_gpu_and_memory_scales_with_the_model(tmp_path):
    path = full_config_with_qwen(tmp_path)
    sizes = {name: model["size_b"] for name, model in yaml.safe_load(open(path))["models"].items()}
    jobs = dry_run_jobs("--configfile", path)
    heavy_rules = (
        "generate", "eap_score", "faithfulness", "survival", "train_dynamics", "calibration_score",
    )  # fmt: skip
    heavy = [job for job in jobs if job["rule"] in heavy_rules]
    assert heavy and all(job["resources"]["gpu"] == "1" for job in heavy)
    generate = [job for job in jobs if job["rule"] in ("generate", "generate_dynamics")]
    mem = {job["wildcards"]["model"]: int(job["resources"]["mem_mb"]) for job in generate}
    assert mem["mistral-7b-sft"] == 4000 + 4000 * sizes["mistral-7b-sft"]
    assert mem["qwen25-3b-instruct"] < mem["mistral-7b-sft"]
    # GPU memory is planned from the pair files, which do not exist before the run: 0 until
    # Snakemake evaluates the resource again when the job is ready (tests/test_memory.py)
    planned = [job for job in jobs if job["rule"] in ("eap_score", "faithfulness")]
    assert planned and all(job["resources"]["gpu_mem_mb"] == "0" for job in planned)
    toy = dry_run_jobs()
    toy_heavy = [job for job in toy if job["rule"] in ("train_model", "generate", "eap_score")]
    assert toy_heavy and all(job["resources"]["gpu"] == "0" for job in toy_heavy)
    assert all(int(job["resources"]["mem_mb"]) < 5_000 for job in toy_heavy)


def test_one_family_plans_only_that_pairs_jobs(tmp_path):
    jobs = dry_run_jobs(
        "--configfile", full_config_with_qwen(tmp_path), "--config", "only_pairs=[mistral]"
    )
    mistral = PAPER_MODELS_PER_PAIR["mistral"]
    for job in jobs:
        wildcards = job["wildcards"]
        assert wildcards.get("pair", "mistral") == "mistral", job
        assert wildcards.get("model", "mistral-7b-sft") in mistral, job
    counts = Counter(job["rule"] for job in jobs)
    assert counts["generate"] == 2
    assert counts["pair_samples"] == 1  # one job: every dataset
    assert counts["eap_score"] == 1  # one job: both roles, every dataset and alpha
    assert counts["figures"] == 1


def test_one_eap_job_writes_every_condition_and_one_metrics_job_reads_them():
    """dataset x alpha x loss x text x role files from one EAP job per pair; the pair's
    metrics job reads exactly those files and writes every dataset's metrics and tests."""
    toy = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    jobs = dry_run_jobs()
    (eap,) = [
        job for job in jobs if job["rule"] == "eap_score" and job["wildcards"]["pair"] == "toy-grpo"
    ]

    def score_files(dataset: str) -> list[str]:
        return sorted(
            EAP_FILE.format(
                pair="toy-grpo", dataset=dataset, alpha=alpha, loss=loss, role=role, text=text
            )
            for alpha, loss, text, role in itertools.product(
                toy["eap"]["alphas"], toy["eap"]["losses"], ["own", "crossed"], ["base", "tuned"]
            )
        )

    assert sorted(eap["output"]) == sorted(f for d in toy["datasets"] for f in score_files(d))
    (metrics,) = [
        job for job in jobs if job["rule"] == "metrics" and job["wildcards"] == {"pair": "toy-grpo"}
    ]
    assert sorted(metrics["input"]) == sorted(eap["output"])
    assert sorted(metrics["output"]) == sorted(
        [
            *(
                f"results/metrics/toy-grpo/{dataset}/{name}"
                for dataset in toy["datasets"]
                for name in [
                    "tests.csv",
                    *(f"alpha{a}.{ext}" for a in toy["eap"]["alphas"] for ext in ("csv", "json")),
                ]
            ),
            "results/metrics/toy-grpo/layers.csv",
        ]
    )


def test_every_input_is_relative_so_a_moved_checkout_reruns_nothing():
    """The report template and the shipped weights were absolute inputs: a checkout moved
    with its results (or a clone given them) reran toy-sft's install and everything after."""
    inputs = {path for job in dry_run_jobs() for path in job["input"]}
    assert "workflow/report/report.html.j2" in inputs
    assert "config/shipped/toy-sft" in inputs
    assert [path for path in inputs if Path(path).is_absolute()] == []


def test_only_pairs_must_name_an_enabled_pair():
    result = run_snakemake(
        "--dry-run", "--configfile", "config/config.yaml", "--config", "only_pairs=[qwen]"
    )
    assert result.returncode != 0
    assert "only_pairs: pair 'qwen' is disabled" in result.stdout + result.stderr


def test_stage_targets_stop_at_their_stage():
    def rules(target):
        return {job["rule"] for job in dry_run_jobs(target)}

    assert rules("stage_data") == {"download_dataset", "stage_data"}
    assert rules("stage_models") == {
        "download_dataset",
        "install_shipped_model",
        "train_model",
        "stage_models",
    }
    assert "eap_score" not in rules("stage_pairs")
    assert "report" not in rules("stage_eap") | rules("stage_metrics")


def test_offline_generation_names_the_missing_model(tmp_path):
    """With HF_HUB_OFFLINE=1 and an empty cache the generate job fails, naming the model
    and the command that fetches it."""
    config = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    config["datasets"] = {"toy-gsm8k": config["datasets"]["toy-gsm8k"]}
    config["datasets"]["toy-gsm8k"]["toy"]["n"] = 4
    del config["dynamics"]
    config["faithfulness"]["enabled"] = False
    config["survival"]["enabled"] = False
    config["calibration"]["enabled"] = False
    for name in ("base-model", "tuned-model"):
        config["models"][name] = {
            "hub_id": f"example-org/{name}",
            "revision": "main",
            "template": "toy",
            "max_new_tokens": 8,
            "gpu": False,
        }
    config["pairs"] = {"hub-pair": {"base": "base-model", "tuned": "tuned-model", "method": "GRPO"}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_snakemake(
        "results/generations/base-model/toy-gsm8k.jsonl",
        "--cores",
        "1",
        "--configfile",
        str(path),
        workdir=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    log = (tmp_path / "logs" / "generate" / "base-model.log").read_text()
    assert result.returncode != 0
    assert "model example-org/base-model (revision main) is not in the local" in log
    assert "HF_HUB_OFFLINE=1 forbids downloading it" in log
    assert "`hf download example-org/base-model --revision main`" in log
    assert not (tmp_path / "results" / "generations" / "base-model" / "toy-gsm8k.jsonl").exists()


def save_local_model(directory, seed: int) -> None:
    """A tiny random Llama with the toy tokenizer, saved as a user's local model."""
    tokenizer = build_char_tokenizer()
    torch.manual_seed(seed)
    save_model(toy_model(tokenizer), tokenizer, directory, pd.DataFrame(), {})


def test_replacing_a_local_models_weights_reruns_its_generations(tmp_path):
    """A `path:` model's files are fingerprinted (names, sizes, mtimes): weights replaced in
    place change the generate job's parameters, so Snakemake plans it again."""
    config = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    config["datasets"] = {"toy-gsm8k": config["datasets"]["toy-gsm8k"]}
    config["datasets"]["toy-gsm8k"]["toy"]["n"] = 4
    del config["dynamics"]
    config["faithfulness"]["enabled"] = False
    config["survival"]["enabled"] = False
    config["calibration"]["enabled"] = False
    for seed, name in enumerate(("base-model", "tuned-model")):
        save_local_model(tmp_path / name, seed)
        config["models"][name] = {
            "path": str(tmp_path / name),
            "template": "toy",
            "max_new_tokens": 8,
            "gpu": False,
            "size_b": 0.001,
        }
    config["pairs"] = {"local": {"base": "base-model", "tuned": "tuned-model", "method": "GRPO"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    config_path = str(tmp_path / "config.yaml")
    target = ("results/generations/base-model/toy-gsm8k.jsonl", "--configfile", config_path)

    def planned() -> str:
        result = run_snakemake(*target, "--dry-run", "--cores", "1", workdir=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    result = run_snakemake(*target, "--cores", "1", workdir=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Nothing to be done" in planned()
    save_local_model(tmp_path / "base-model", seed=2)  # retrained in place
    assert "rule generate:" in planned()


def test_a_swap_that_keeps_names_sizes_and_mtimes_still_changes_the_fingerprint(tmp_path):
    """Another training's weights copied over with `cp -p`: same names, sizes and times."""
    for seed, name in enumerate(("model", "other")):
        save_local_model(tmp_path / name, seed)
    weights = tmp_path / "model" / "model.safetensors"
    before, times = model_fingerprint(tmp_path / "model"), weights.stat()
    shutil.copyfile(tmp_path / "other" / "model.safetensors", weights)
    os.utime(weights, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert model_fingerprint(tmp_path / "model") != before
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # past the head: only a sampled block sees it
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert len(data) > 1 << 17
    assert model_fingerprint(tmp_path / "model") not in (
        before,
        model_fingerprint(tmp_path / "other"),
    )


def test_a_change_to_a_jobs_library_code_plans_it_again_and_only_it(tmp_path):
    """A checkout's copy builds one dataset; editing a module the download script imports
    (through circuitry.data.benchmarks) plans the job again, editing one it does not
    import plans nothing: outputs built by other library code are never taken as done."""
    tracked = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in tracked:
        if (ROOT / name).is_file():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tmp_path / name)
    target = "resources/datasets/toy-gsm8k.jsonl"

    def planned() -> str:
        result = run_snakemake(
            target, "--dry-run", "--cores", "1", snakefile=tmp_path / "Snakefile", workdir=tmp_path
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    built = run_snakemake(
        target, "--cores", "1", snakefile=tmp_path / "Snakefile", workdir=tmp_path
    )
    assert built.returncode == 0, built.stdout + built.stderr
    library = tmp_path / "workflow" / "lib" / "circuitry"
    with open(library / "analysis" / "stats.py", "a") as f:
        f.write("# not imported by the download\n")
    assert "Nothing to be done" in planned()
    with open(library / "data" / "toy.py", "a") as f:
        f.write("# imported by the download, through circuitry.data.benchmarks\n")
    assert "rule download_dataset:" in planned()


def test_one_job_joins_every_pairs_weight_diff_with_its_layers_for_the_report():
    jobs = dry_run_jobs()
    (join,) = [job for job in jobs if job["rule"] == "weight_join"]
    (report,) = [job for job in jobs if job["rule"] == "report"]
    pairs = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())["pairs"]
    for pair in pairs:
        for pattern in (WEIGHT_DIFF_SUMMARY, WEIGHT_DIFF_TABLE, LAYER_INTENSITY):
            assert pattern.format(pair=pair) in join["input"]
    assert sorted(join["output"]) == sorted([WEIGHT_JOIN, *WEIGHT_FIGURES.values()])
    assert set(join["output"]) <= set(report["input"])
    metrics = [job for job in jobs if job["rule"] == "metrics"]
    assert {LAYER_INTENSITY.format(**job["wildcards"]) for job in metrics} == {
        LAYER_INTENSITY.format(pair=pair) for pair in pairs
    }
    assert all(LAYER_INTENSITY.format(**job["wildcards"]) in job["output"] for job in metrics)


def test_the_weight_diff_of_the_identity_pair_reads_nothing_changed(tmp_path):
    """`snakemake stage_weights` plans one job per pair; on the toy's identity pair (the
    shipped toy-sft against itself) every tensor is unchanged."""
    planned = [job for job in dry_run_jobs("stage_weights") if job["rule"] == "weight_diff"]
    assert sorted(job["wildcards"]["pair"] for job in planned) == sorted(
        yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())["pairs"]
    )
    target = "results/weights/toy-identity.json"
    result = run_snakemake(target, "--cores", "1", workdir=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / target).read_text())
    assert summary["model"]["unchanged_exact"] == summary["model"]["unchanged_tol"] == 1.0
    assert summary["model"]["rel_update_norm"] == 0.0
    assert summary["notes"] == []
