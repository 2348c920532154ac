"""RL runs as checkpoints: each source's discovery, thinning, guard rails and logs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from circuitry.analysis import dynamics
from circuitry.models import runs
from circuitry.models.runs import RunError
from circuitry.models.tokenizer import build_char_tokenizer
from conftest import schema_defaults

RUN_DEFAULTS = schema_defaults("$defs", "run")  # as the validated config holds a run
INIT = {"template": "toy", "max_new_tokens": 48, "gpu": False, "size_b": 0.001}


def model_folder(path, adapter: bool = False, state: list | None = None):
    """A checkpoint folder: config.json (a model) or adapter files, and a trainer state."""
    path.mkdir(parents=True)
    if adapter:
        (path / "adapter_config.json").write_text("{}")
        (path / "adapter_model.safetensors").write_bytes(b"")
    else:
        (path / "config.json").write_text("{}")
    if state is not None:
        (path / runs.TRAINER_STATE).write_text(json.dumps({"log_history": state}))
    return path


def trl_run(tmp_path, steps=(10, 20, 30), **extra) -> dict:
    for step in steps:
        model_folder(tmp_path / "out" / f"checkpoint-{step}")
    return {**RUN_DEFAULTS, "name": "mine", "init": "base", "trl": str(tmp_path / "out"), **extra}


def test_trl_checkpoints_in_step_order_and_every_kth(tmp_path):
    run = trl_run(tmp_path, steps=(100, 20, 3))
    (tmp_path / "out" / "checkpoint-last").mkdir()  # not a step: ignored
    (tmp_path / "out" / "runs").mkdir()
    assert [c.step for c in runs.checkpoints(run)] == [3, 20, 100]
    assert [c.name for c in runs.checkpoints(run)][0] == "dyn-mine-step3"
    assert [c.step for c in runs.checkpoints({**run, "every": 2})] == [20]
    assert [c.step for c in runs.checkpoints({**run, "every": 3})] == [100]


def test_a_trl_adapter_checkpoint_is_merged_into_a_model_the_workflow_builds(tmp_path):
    model_folder(tmp_path / "out" / "checkpoint-5", adapter=True)
    run = {**RUN_DEFAULTS, "name": "lora", "init": "base", "trl": str(tmp_path / "out")}
    (checkpoint,) = runs.checkpoints(run)
    assert checkpoint.kind == "adapter"
    entry = runs.model_entry(run, checkpoint, INIT)
    assert entry["path"] == "resources/models/dyn-lora-step5"
    assert entry["adapter"] == str(tmp_path / "out" / "checkpoint-5")
    assert entry["checkpoint"]["built"] == "resources/models/dyn-lora-step5"
    assert entry["template"] == "toy" and entry["max_new_tokens"] == 48


def test_a_full_trl_checkpoint_is_read_where_it_is(tmp_path):
    run = trl_run(tmp_path, steps=(10,))
    (checkpoint,) = runs.checkpoints(run)
    entry = runs.model_entry(run, checkpoint, INIT)
    assert entry["path"] == str(tmp_path / "out" / "checkpoint-10")
    assert entry["checkpoint"] == {"run": "mine", "step": 10, "built": None}


def test_dirs_take_the_step_from_the_name(tmp_path):
    for step in (200, 50):
        model_folder(tmp_path / f"global_step{step}_hf")
    (tmp_path / "global_step7_hf.txt").write_text("a file, not a directory")
    run = {
        **RUN_DEFAULTS,
        "name": "openrlhf",
        "init": "base",
        "dirs": {"glob": str(tmp_path / "global_step*_hf*"), "step": r"global_step(\d+)"},
    }
    assert [(c.step, c.kind) for c in runs.checkpoints(run)] == [(50, "dir"), (200, "dir")]


def test_revisions_from_a_list_or_a_mapping(tmp_path):
    listed = {
        **RUN_DEFAULTS,
        "name": "hub",
        "init": "base",
        "revisions": {"hub_id": "org/run", "revisions": ["step-300", "step-100"]},
    }
    assert [(c.step, c.location) for c in runs.checkpoints(listed)] == [
        (100, "step-100"),
        (300, "step-300"),
    ]
    mapped = {**listed, "revisions": {"hub_id": "org/run", "revisions": {5: "abc", "10": "def"}}}
    checkpoint = runs.checkpoints(mapped)[1]
    entry = runs.model_entry(mapped, checkpoint, INIT)
    assert (entry["hub_id"], entry["revision"], checkpoint.step) == ("org/run", "def", 10)
    assert "path" not in entry and entry["checkpoint"]["built"] is None


def test_a_train_run_plans_the_folders_trl_will_save():
    run = {
        **RUN_DEFAULTS,
        "name": "grpo",
        "init": "base",
        "train": {"steps": 30, "checkpoint_every": 10},
    }
    found = runs.checkpoints(run)
    assert [c.location for c in found] == [
        f"resources/dynamics/grpo/checkpoint-{step}" for step in (10, 20, 30)
    ]
    entry = runs.model_entry(run, found[0], INIT)
    assert entry["checkpoint"]["built"] == "resources/dynamics/grpo"  # rule train_dynamics


@pytest.mark.parametrize(
    "source, message",
    [
        ({"trl": "{tmp}/nothing"}, "dynamics.runs.x.trl: no checkpoint-<step> folders in"),
        (
            {"dirs": {"glob": "{tmp}/none-*", "step": r"(\d+)"}},
            "dynamics.runs.x.dirs.glob: .*none-\\* matches no directory",
        ),
        (
            {"dirs": {"glob": "{tmp}/ckpt*", "step": r"step(\d+)"}},
            "dynamics.runs.x.dirs.step: .* finds no step in the name of .*ckpt07",
        ),
        ({"dirs": {"glob": "{tmp}/ckpt*", "step": r"\d+"}}, "has no group for the step"),
        (
            {"revisions": {"hub_id": "org/run", "revisions": ["main"]}},
            "'main' has no number to take its step from",
        ),
        (
            {"dirs": {"glob": "{tmp}/ckpt*", "step": r"ckpt(\d+)"}},
            "dynamics.runs.x: step 7 occurs twice",
        ),
    ],
)
def test_guard_rails_name_the_run(tmp_path, source, message):
    model_folder(tmp_path / "ckpt7")
    model_folder(tmp_path / "ckpt07")
    source = json.loads(json.dumps(source).replace("{tmp}", str(tmp_path)))
    with pytest.raises(RunError, match=message):
        runs.checkpoints({**RUN_DEFAULTS, "name": "x", "init": "base", **source})


def test_a_folder_without_model_or_adapter_is_named(tmp_path):
    (tmp_path / "out" / "checkpoint-3").mkdir(parents=True)
    with pytest.raises(RunError, match="checkpoint-3 holds neither a model"):
        runs.checkpoints(
            {**RUN_DEFAULTS, "name": "x", "init": "base", "trl": str(tmp_path / "out")}
        )


def test_exactly_one_source():
    with pytest.raises(RunError, match="found trl, dirs"):
        runs.source_of({**RUN_DEFAULTS, "name": "x", "trl": "a", "dirs": {}})


STATE = [
    {"step": 1, "loss": 0.1, "reward": 0.2, "reward_std": 0.4, "kl": 0.0, "entropy": 1.5},
    {
        "step": 2,
        "loss": 0.1,
        "reward": 0.5,
        "reward_std": 0.3,
        "kl": 0.01,
        "entropy": 1.4,
        "completions/mean_length": 31.5,
    },
    {"step": 2, "train_runtime": 12.0},  # the trainer's closing record
]


def test_the_log_of_a_trl_run_is_its_last_checkpoints_trainer_state(tmp_path):
    model_folder(tmp_path / "out" / "checkpoint-1", state=STATE[:1])
    model_folder(tmp_path / "out" / "checkpoint-2", state=STATE)
    run = {**RUN_DEFAULTS, "name": "mine", "init": "base", "trl": str(tmp_path / "out"), "every": 2}
    assert runs.log_source(run) == str(tmp_path / "out" / "checkpoint-2")
    log = dynamics.training_log(runs.log_source(run))
    assert list(log.columns) == [
        "step",
        "reward",
        "reward_std",
        "kl",
        "entropy",
        "completion_length",
    ]
    assert log["step"].tolist() == [1, 2]
    assert log["reward"].tolist() == [0.2, 0.5]
    assert dynamics.training_log(tmp_path / "out").equals(log)  # the output directory itself


def test_logs_of_dirs_and_revisions_come_from_log_or_are_absent(tmp_path):
    model_folder(tmp_path / "d10")
    run = {
        **RUN_DEFAULTS,
        "name": "x",
        "init": "b",
        "dirs": {"glob": str(tmp_path / "d*"), "step": r"(\d+)"},
    }
    assert runs.log_source(run) is None
    csv = tmp_path / "log.csv"
    pd.DataFrame({"step": [1, 2], "reward": [0.1, 0.3], "other": [1, 1]}).to_csv(csv, index=False)
    assert runs.log_source({**run, "log": str(csv)}) == str(csv)
    assert list(dynamics.training_log(csv).columns) == ["step", "reward"]
    revisions = {
        **RUN_DEFAULTS,
        "name": "x",
        "init": "b",
        "revisions": {"hub_id": "o/r", "revisions": ["s1"]},
    }
    assert runs.log_source(revisions) is None


def test_a_log_without_history_or_steps_is_named(tmp_path):
    state = tmp_path / "trainer_state.json"
    state.write_text(json.dumps({"global_step": 3}))
    with pytest.raises(ValueError, match="no log_history"):
        dynamics.training_log(state)
    csv = tmp_path / "log.csv"
    pd.DataFrame({"reward": [0.1]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match="no step column"):
        dynamics.training_log(csv)


def test_a_checkpoint_must_share_its_initial_models_tokenizer():
    initial = build_char_tokenizer()
    runs.check_same_tokenizer("dyn-x-step1", initial, build_char_tokenizer())
    other = build_char_tokenizer()
    other.add_tokens(["<think>"])
    with pytest.raises(RunError, match="checkpoint dyn-x-step1: its tokenizer vocabulary"):
        runs.check_same_tokenizer("dyn-x-step1", initial, other)
    templated = build_char_tokenizer()
    templated.chat_template = "{{ messages[0]['content'] }}"
    with pytest.raises(RunError, match="its chat template differs"):
        runs.check_same_tokenizer("dyn-x-step1", initial, templated)
