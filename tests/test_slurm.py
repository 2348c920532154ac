"""The SLURM path: profiles/slurm drives a small target on a real one-node SLURM cluster.

download_dataset is a localrule and runs here; train_model and generate go through
sbatch, each asking for the cluster's fake GPU. Needs root (it installs and starts SLURM).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from slurm_cluster import check_root_and_no_other_slurm, ensure_slurm_installed, running_cluster

from conftest import ROOT, run_snakemake

pytestmark = pytest.mark.slow

MODEL, DATASET = "toy-sft", "toy-gsm8k"
TARGET = f"results/generations/{MODEL}/{DATASET}.jsonl"
PROBLEMS, TRAINING_PROBLEMS = 20, 64
ACCOUNT = "circuitry-ci"
RUN_TIMEOUT_S = 300
# What the rules ask for toy-sft (size_b 0.001, gpu: true): 4000 + 4 MB, 30 minutes and
# one GPU; two threads to train it from scratch (nothing runs beside it), one to generate.
RULE_OPTIONS = ["--mem 4004", "-t 30", "--gpus=1"]
RULE_CPUS = {"train_model": 2, "generate": 1}
# Poll SLURM every 3 s: with the executor's defaults (a check 40 s after each finished
# wave) this run takes two minutes instead of forty seconds.
FAST_POLLING = ["--slurm-init-seconds-before-status-checks", "3"]
FAST_POLLING += ["--seconds-between-status-checks", "3"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    check_root_and_no_other_slurm()
    ensure_slurm_installed()
    with running_cluster(tmp_path_factory.mktemp("slurm")) as running:
        yield running


def small_study() -> dict:
    """config/toy.yaml with small numbers: 20 problems a benchmark, a 5-step toy-sft, GPUs."""
    study = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    for spec in study["datasets"].values():
        spec["toy"]["n"] = PROBLEMS
    for spec in study["training_data"].values():
        spec["toy"]["n"] = TRAINING_PROBLEMS
    for model in study["models"].values():
        model["gpu"] = True
    study["models"][MODEL]["train"]["steps"] = 5
    study["models"][MODEL]["train"].pop("shipped", None)  # another recipe: trained there
    return study


def edited_profile(folder: Path, partition: str) -> Path:
    """profiles/slurm with its placeholders filled in, as a user does before the first run."""
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    placeholders = profile["default-resources"]
    assert {"slurm_partition", "slurm_account"} <= placeholders.keys()
    placeholders.update(slurm_partition=partition, slurm_account=ACCOUNT)
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def sbatch_calls(log: str) -> dict[str, str]:
    """Each submitted job's sbatch options (logged with --verbose) by rule, space-padded."""
    calls = {}
    for call in re.findall(r"sbatch call: (sbatch .*?) --wrap=", log):
        words = shlex.split(call)
        comment = words[words.index("--comment") + 1]
        rule = re.match(r"rule_(.+?)(_wildcards_|$)", comment).group(1)
        calls[rule] = f" {' '.join(words)} "
    return calls


def slurm_records(log: str) -> list[str]:
    """SLURM's own detailed record (scontrol -d) of every job the executor submitted."""
    job_ids = re.findall(r"submitted with SLURM jobid (\d+)", log)
    show = ["scontrol", "--details", "--oneliner", "show", "job"]
    return [subprocess.run([*show, job], capture_output=True, text=True).stdout for job in job_ids]


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """The target built through profiles/slurm; the run's log and working folder."""
    workdir = tmp_path_factory.mktemp("slurm-run")
    study = workdir / "study.yaml"
    study.write_text(yaml.safe_dump(small_study()))
    profile = edited_profile(workdir / "profile", cluster.partition)
    options = [
        "--profile",
        str(profile),
        "--workflow-profile",
        "none",
        "--configfile",
        str(study),
        "--verbose",
        *FAST_POLLING,
    ]
    try:
        result = run_snakemake(*options, TARGET, workdir=workdir, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as hung:  # e.g. a status command that never answers
        log = (hung.stderr or b"").decode(errors="replace")
        pytest.fail(f"no result after {RUN_TIMEOUT_S} s:\n{log[-6000:]}\n{cluster.daemon_logs()}")
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:] + "\n" + cluster.daemon_logs()
    return log, workdir


def test_the_target_is_built_through_slurm(slurm_run):
    _, workdir = slurm_run
    rows = [json.loads(line) for line in (workdir / TARGET).read_text().splitlines()]
    assert [row["idx"] for row in rows] == list(range(PROBLEMS))
    assert all(row["completion_token_ids"] for row in rows)
    provenance = json.loads((workdir / TARGET.replace(".jsonl", ".provenance.json")).read_text())
    assert provenance["n"] == PROBLEMS
    assert (workdir / "resources" / "models" / MODEL / "model.safetensors").is_file()


def test_each_gpu_job_gets_its_rules_resources(slurm_run, cluster):
    log, _ = slurm_run
    calls = sbatch_calls(log)
    assert set(calls) == {"train_model", "generate"}  # download_dataset stays local
    for rule, call in calls.items():
        cpus = f"--cpus-per-task={RULE_CPUS[rule]}"
        for option in [*RULE_OPTIONS, cpus, f"-p {cluster.partition}", f"-A {ACCOUNT}"]:
            assert f" {option} " in call, (rule, option, call)


def test_slurm_ran_each_job_on_the_gpu(slurm_run, cluster):
    log, _ = slurm_run
    records = slurm_records(log)
    assert len(records) == 2
    for record in records:
        assert "JobState=COMPLETED" in record, record
        assert "JOB_GRES=gpu:1" in record, record
        assert f"Account={ACCOUNT}" in record and f"Partition={cluster.partition}" in record
