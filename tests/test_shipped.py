"""Shipped models: the toy's toy-sft weights are installed as a study downloads its base
model, and rebuilding them from their recipe gives the same bits.

`test_rebuilding_the_shipped_toy_sft_gives_its_bits` trains toy-sft again (4,000 steps,
about 5 minutes on 2 cores of the reference machine), as `snakemake rebuild_shipped` does.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from circuitry.io import read_json
from circuitry.paths import REBUILT_CHECK, REBUILT_MODEL_DIR, TRAINED_MODEL_DIR, WEIGHTS_FILE
from circuitry.reproducibility import rebuilt_weights
from conftest import ROOT, dry_run_jobs, load_config, run_snakemake

TOY = load_config("toy")
SHIPPED = TOY["models"]["toy-sft"]["train"]["shipped"]


def test_the_toy_installs_toy_sft_and_trains_the_rest():
    jobs = dry_run_jobs()
    installed = [j["wildcards"]["model"] for j in jobs if j["rule"] == "install_shipped_model"]
    trained = {j["wildcards"]["model"] for j in jobs if j["rule"] == "train_model"}
    assert installed == ["toy-sft"]
    assert trained == {m for m, spec in TOY["models"].items() if m != "toy-sft" and "train" in spec}
    install = next(j for j in jobs if j["rule"] == "install_shipped_model")
    assert install["output"] == [TRAINED_MODEL_DIR.format(model="toy-sft")]


def test_rebuild_shipped_trains_into_its_own_directory_and_checks():
    jobs = dry_run_jobs("rebuild_shipped")
    rules = {j["rule"] for j in jobs}
    assert rules == {"download_dataset", "rebuild_model", "check_rebuilt", "rebuild_shipped"}
    rebuild = next(j for j in jobs if j["rule"] == "rebuild_model")
    assert rebuild["output"] == ["resources/rebuilt/toy-sft"]


def test_a_rebuild_with_other_weights_fails_naming_both(tmp_path):
    shipped, rebuilt = tmp_path / "shipped", tmp_path / "rebuilt"
    shipped.mkdir()
    rebuilt.mkdir()
    (shipped / WEIGHTS_FILE).write_bytes(b"weights")
    (rebuilt / WEIGHTS_FILE).write_bytes(b"weights")
    same = rebuilt_weights("m", shipped, rebuilt)
    assert same["shipped_sha256"] == same["rebuilt_sha256"]
    (rebuilt / WEIGHTS_FILE).write_bytes(b"other weights")
    with pytest.raises(ValueError, match=r"m: the rebuilt .*rebuilt/model.safetensors .* shipped"):
        rebuilt_weights("m", shipped, rebuilt)


@pytest.mark.slow
def test_rebuilding_the_shipped_toy_sft_gives_its_bits():
    result = run_snakemake("rebuild_shipped", "--cores", "2", timeout=1800)
    try:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        shipped = hashlib.sha256((ROOT / SHIPPED / WEIGHTS_FILE).read_bytes()).hexdigest()
        assert read_json(ROOT / REBUILT_CHECK.format(model="toy-sft")) == {
            "model": "toy-sft",
            "shipped_sha256": shipped,
            "rebuilt_sha256": shipped,
        }
    finally:
        for rebuilt in (REBUILT_MODEL_DIR, REBUILT_CHECK):
            shutil.rmtree(ROOT / Path(rebuilt).parent, ignore_errors=True)
