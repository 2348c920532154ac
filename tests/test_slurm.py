"""The SLURM path: profiles/slurm drives a small target on a real one-node SLURM cluster.

download_dataset is a localrule and runs here; train_model and generate go through
sbatch, each asking for the cluster's fake GPU. Needs root (it installs and starts SLURM).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from slurm_cluster import check_machine_is_free, ensure_slurm_installed, running_cluster

from conftest import ROOT, run_snakemake

pytestmark = pytest.mark.slow

MODEL, DATASET, TRAINING_DATA = "toy-sft", "toy-gsm8k", "toy-gsm8k-train"
TARGET = f"results/generations/{MODEL}/{DATASET}.jsonl"
PROBLEMS = 20
ACCOUNT = "circuitry-ci"
RUN_TIMEOUT_S = 600
# Poll SLURM every few seconds instead of the executor's default 40 s: one wave of jobs
# would otherwise cost most of a minute.
FAST_POLLING = ["--slurm-init-seconds-before-status-checks", "3"]
FAST_POLLING += ["--seconds-between-status-checks", "3"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    check_machine_is_free()
    ensure_slurm_installed()
    with running_cluster(tmp_path_factory.mktemp("slurm")) as running:
        yield running


def small_study() -> dict:
    """config/toy.yaml cut down: one 20-problem benchmark, a 5-step toy-sft asking for a GPU."""
    toy = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    study = copy.deepcopy(toy)
    benchmark = study["datasets"][DATASET]
    benchmark["toy"]["n"] = PROBLEMS
    study["datasets"] = {DATASET: benchmark}
    training = study["training_data"][TRAINING_DATA]
    training["toy"]["n"] = 64
    study["training_data"] = {TRAINING_DATA: training}
    pair = next(p for p in study["pairs"].values() if p["base"] == MODEL)
    study["pairs"] = {"only": pair}
    study["models"] = {name: study["models"][name] for name in (pair["base"], pair["tuned"])}
    for model in study["models"].values():
        model["gpu"] = True
        model["train"]["data"] = [TRAINING_DATA]
    study["models"][MODEL]["train"]["steps"] = 5
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


def sbatch_options(log: str) -> dict[str, list[str]]:
    """The sbatch options of each submitted job, by rule, from the executor's debug log."""
    options = {}
    for call in re.findall(r"sbatch call: (sbatch .*?) --wrap=", log):
        words = shlex.split(call)
        comment = words[words.index("--comment") + 1]
        rule = re.match(r"rule_(.+?)(_wildcards_|$)", comment).group(1)
        options[rule] = words
    return options


def slurm_records(log: str) -> list[str]:
    """SLURM's own record (scontrol) of every job the executor submitted."""
    job_ids = re.findall(r"submitted with SLURM jobid (\d+)", log)
    return [
        subprocess.run(
            ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True
        ).stdout
        for job_id in job_ids
    ]


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """The target built through profiles/slurm; the run's log and working folder."""
    workdir = tmp_path_factory.mktemp("slurm-run")
    study = workdir / "study.yaml"
    study.write_text(yaml.safe_dump(small_study()))
    profile = edited_profile(workdir / "profile", cluster.partition)
    result = run_snakemake(
        "--profile", str(profile), "--configfile", str(study), "--verbose", *FAST_POLLING,
        TARGET, workdir=workdir, timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:] + "\n" + cluster.daemon_logs()
    return log, workdir


def test_the_target_is_built_through_slurm(slurm_run):
    log, workdir = slurm_run
    rows = [json.loads(line) for line in (workdir / TARGET).read_text().splitlines()]
    assert [row["idx"] for row in rows] == list(range(PROBLEMS))
    assert all(row["completion_token_ids"] for row in rows)
    provenance = json.loads((workdir / TARGET.replace(".jsonl", ".provenance.json")).read_text())
    assert provenance["n"] == PROBLEMS
    assert (workdir / "resources" / "models" / MODEL / "model.safetensors").is_file()


def test_each_gpu_job_gets_its_rules_resources(slurm_run, cluster):
    log, _ = slurm_run
    options = sbatch_options(log)
    assert set(options) == {"train_model", "generate"}  # download_dataset stays local
    for rule, words in options.items():
        call = " ".join(words)
        assert f"-p {cluster.partition}" in call, rule
        assert f"-A {ACCOUNT}" in call, rule
        for option in ("--gpus=1", "--mem 4004", "-t 30", "--cpus-per-task=1"):
            assert option in call, (rule, option, call)


def test_slurm_ran_each_job_on_the_gpu(slurm_run, cluster):
    log, _ = slurm_run
    records = slurm_records(log)
    assert len(records) == 2
    for record in records:
        assert "JobState=COMPLETED" in record, record
        assert "gres/gpu=1" in record, record
        assert f"Account={ACCOUNT}" in record and f"Partition={cluster.partition}" in record
