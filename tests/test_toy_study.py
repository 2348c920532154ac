"""The embedded toy study end to end, and a generation job killed and resumed.

`test_toy_study_end_to_end` runs the README's own command (`snakemake --cores 2`) in the
project directory: after the quickstart every output is up to date and Snakemake only
checks them; on a fresh checkout it builds the whole study (about 8 minutes on 2 cores).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from circuitry.io import read_json, read_jsonl
from conftest import ROOT, SNAKEMAKE, run_snakemake

TOY = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
PAIRS = list(TOY["pairs"])
DATASETS = list(TOY["datasets"])
ALPHAS = [str(alpha) for alpha in TOY["eap"]["alphas"]]


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
    for pair in PAIRS:
        assert f"{pair} ({TOY['pairs'][pair]['method']})" in report
        for dataset in DATASETS:
            rows = read_jsonl(toy_study / f"results/pairs/{pair}/{dataset}.jsonl")
            assert len(rows) == TOY["filter"]["num_samples"]
            for alpha in ALPHAS:
                for role in ("base", "tuned"):
                    path = toy_study / f"results/eap/{pair}/{dataset}/alpha{alpha}/{role}.npz"
                    with np.load(path, allow_pickle=False) as npz:
                        assert npz["scores"].shape[0] == len(rows)
                        assert np.isfinite(npz["scores"]).all()
                        assert list(npz["idx"]) == [row["idx"] for row in rows]


def test_toy_lineage_meets_its_accuracy_targets(toy_study):
    """toy-sft leaves room on every set; GRPO beats it by 5+ points on average."""
    sft = [accuracy(toy_study, "toy-sft", d) for d in DATASETS]
    grpo = [accuracy(toy_study, "toy-grpo", d) for d in DATASETS]
    assert all(0.2 <= a <= 0.8 for a in sft), sft
    assert np.mean(grpo) - np.mean(sft) >= 0.05, (sft, grpo)


def test_tests_table_covers_every_condition(toy_study):
    import pandas as pd

    tests = pd.read_csv(toy_study / "results" / "stats" / "tests.csv")
    conditions = tests.groupby(["pair", "dataset", "alpha"]).size()
    assert len(conditions) == len(PAIRS) * len(DATASETS) * len(ALPHAS)
    assert tests["q"].dropna().between(0, 1).all()


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
    config["generation"]["batch_size"] = batch_size
    del config["dynamics"]
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
    log = (resumed / "logs" / "generate" / "toy-sft" / "toy-gsm8k.log").read_text()
    assert int(re.search(r"(\d+) rows restored", log).group(1)) == kept
