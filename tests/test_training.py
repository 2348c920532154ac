"""Reduced-budget runs of the three trainers (trl SFT, GRPO, DPO) on toy problems."""

from __future__ import annotations

import contextlib
import os
import stat

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from circuitry.analysis import dynamics
from circuitry.data import toy
from circuitry.io import sha256_file
from circuitry.models import files as model_files
from circuitry.models import sft, training
from conftest import prompt_template, schema_defaults

TEMPLATE = prompt_template("raw", user="{question}\n")
TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
TRAIN_DEFAULTS = schema_defaults("$defs", "train")  # as the validated config holds one
SFT = TRAIN_DEFAULTS | {
    "method": "sft",
    "seed": 0,
    "steps": 4,
    "batch_size": 8,
    "learning_rate": 3e-3,
    "architecture": TINY,
}
GRPO = TRAIN_DEFAULTS | {
    "method": "grpo",
    "seed": 0,
    "steps": 2,
    "prompts_per_step": 2,
    "num_generations": 4,
    "temperature": 1.0,
    "max_completion_length": 12,
    "learning_rate": 1e-3,
}
DPO = TRAIN_DEFAULTS | {
    "method": "dpo",
    "seed": 0,
    "steps": 2,
    "batch_size": 4,
    "learning_rate": 1e-3,
    "beta": 0.1,
    "samples_per_prompt": 4,
    "num_prompts": 8,
    "temperature": 1.0,
    "max_completion_length": 12,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def problems():
    return [
        p.as_row(i) for i, p in enumerate(toy.problems("add", "train", 32, seed=0, max_operand=20))
    ]


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory, problems):
    out = tmp_path_factory.mktemp("models") / "sft"
    training.train_model(SFT, problems, TEMPLATE, None, out)
    return out


def weights_hash(model_dir) -> str:
    return sha256_file(model_dir / "model.safetensors")


def test_sft_writes_a_loadable_model_with_its_log(sft_dir):
    model = AutoModelForCausalLM.from_pretrained(sft_dir)
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    assert tokenizer.eos_token_id == model.generation_config.eos_token_id
    log = pd.read_csv(sft_dir / model_files.LOG_FILE)
    steps = log.dropna(subset=["loss"])
    assert list(steps["step"]) == [1, 2, 3, 4]
    assert {"loss", "mean_token_accuracy"} <= set(log.columns)
    assert not list(sft_dir.parent.glob(".*.tmp"))


def test_sft_is_bit_identical_for_the_same_seed(sft_dir, problems, tmp_path):
    training.train_model(SFT, problems, TEMPLATE, None, tmp_path / "again")
    training.train_model({**SFT, "seed": 1}, problems, TEMPLATE, None, tmp_path / "other")
    assert weights_hash(tmp_path / "again") == weights_hash(sft_dir)
    assert weights_hash(tmp_path / "other") != weights_hash(sft_dir)


def weights(model_dir) -> dict:
    return AutoModelForCausalLM.from_pretrained(model_dir).state_dict()


def test_sft_continued_from_a_model_starts_from_its_weights(sft_dir, problems, tmp_path):
    still = {**SFT, "learning_rate": 0.0}
    training.train_model(still, problems, TEMPLATE, sft_dir, tmp_path / "still")
    init, after = weights(sft_dir), weights(tmp_path / "still")
    assert init.keys() == after.keys()
    assert all(torch.equal(init[name], after[name]) for name in init)
    assert AutoTokenizer.from_pretrained(tmp_path / "still").get_vocab() == (
        AutoTokenizer.from_pretrained(sft_dir).get_vocab()
    )


def test_sft_continued_from_a_model_trains_it_deterministically(sft_dir, problems, tmp_path):
    more = {**SFT, "steps": 2, "learning_rate": 1e-3}
    frame = training.train_model(more, problems, TEMPLATE, sft_dir, tmp_path / "more")
    training.train_model(more, problems, TEMPLATE, sft_dir, tmp_path / "again")
    assert weights_hash(tmp_path / "more") == weights_hash(tmp_path / "again")
    assert weights_hash(tmp_path / "more") != weights_hash(sft_dir)
    assert list(frame["step"]) == [1, 2]
    schedule = [1e-3 * sft.warmup_cosine(step, 2, 0) for step in (1, 2)]
    assert frame["learning_rate"].tolist() == pytest.approx(schedule)


@pytest.fixture
def parity_grader(monkeypatch):
    """A 4-step model is never right, which leaves GRPO no advantage and DPO no pair: grade
    by the parity of the completion's length instead, so every prompt gets right and wrong
    samples and the trainers themselves are exercised."""
    monkeypatch.setattr(training, "grade", lambda text, gold: (text, len(text) % 2 == 0))


def test_grpo_from_sft_logs_rewards_and_is_deterministic(
    sft_dir, problems, tmp_path, parity_grader
):
    first = training.train_model(GRPO, problems, TEMPLATE, sft_dir, tmp_path / "grpo")
    training.train_model(GRPO, problems, TEMPLATE, sft_dir, tmp_path / "again")
    assert weights_hash(tmp_path / "grpo") == weights_hash(tmp_path / "again")
    assert weights_hash(tmp_path / "grpo") != weights_hash(sft_dir)
    assert {"reward", "reward_std"} <= set(first.columns)
    assert first.dropna(subset=["reward"])["reward"].between(0, 1).all()


def test_narrow_logprob_tiles_train_grpo_exactly_as_trls_default(
    sft_dir, problems, tmp_path, parity_grader, monkeypatch
):
    """The toy's vocabulary fits one narrow tile: the same weights as trl's 32768-wide one,
    and trl's own width back afterwards."""
    from trl.trainer import utils

    default = utils._CHUNKED_LOGPROB_CHUNK_SIZE  # the installed trl still has the setting
    training.train_model(GRPO, problems, TEMPLATE, sft_dir, tmp_path / "narrow")
    assert utils._CHUNKED_LOGPROB_CHUNK_SIZE == default
    monkeypatch.setattr(training, "logprob_tiles_within", lambda _: contextlib.nullcontext())
    training.train_model(GRPO, problems, TEMPLATE, sft_dir, tmp_path / "default")
    assert weights_hash(tmp_path / "narrow") == weights_hash(tmp_path / "default")


def test_grpo_saves_trl_checkpoints_along_the_run(sft_dir, problems, tmp_path, parity_grader):
    run_dir = tmp_path / "run"
    settings = {**GRPO, "steps": 2, "checkpoint_every": 1}
    old = os.umask(0o022)
    try:
        frame = training.train_grpo(sft_dir, problems, TEMPLATE, settings, None, run_dir=run_dir)
    finally:
        os.umask(old)
    first, second = run_dir / "checkpoint-1", run_dir / "checkpoint-2"
    # trl writes its safetensors private (0600); every file follows the umask instead
    assert {stat.S_IMODE(p.stat().st_mode) for p in run_dir.rglob("*") if p.is_file()} == {0o644}
    assert weights_hash(first) != weights_hash(second)
    assert weights_hash(first) != weights_hash(sft_dir)
    assert AutoModelForCausalLM.from_pretrained(second).config.num_hidden_layers == 2
    assert list(frame.dropna(subset=["reward"])["step"]) == [1, 2]
    logged = dynamics.training_log(run_dir)  # the last checkpoint's trainer_state.json
    assert list(logged["step"]) == [1, 2]
    assert logged["reward"].tolist() == frame.dropna(subset=["reward"])["reward"].tolist()


def test_an_adapter_merges_onto_its_base_model(sft_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(sft_dir),
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    lora.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        expected = lora(ids).logits
    model_files.merge_adapter(sft_dir, tmp_path / "adapter", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, expected, rtol=1e-4, atol=1e-4)
    assert (tmp_path / "merged" / "tokenizer.json").is_file()


def test_dpo_trains_on_pairs_of_its_own_samples(sft_dir, problems, tmp_path, parity_grader):
    first = training.train_model(DPO, problems, TEMPLATE, sft_dir, tmp_path / "dpo")
    training.train_model(DPO, problems, TEMPLATE, sft_dir, tmp_path / "again")
    assert weights_hash(tmp_path / "dpo") == weights_hash(tmp_path / "again")
    assert weights_hash(tmp_path / "dpo") != weights_hash(sft_dir)
    assert first["n_pairs"].iloc[0] > 0
    assert "rewards/accuracies" in first.columns


def test_dpo_without_any_pair_fails_clearly(sft_dir, problems, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "grade", lambda text, gold: (text, False))
    with pytest.raises(ValueError, match="no preference pairs: none of 8 prompts"):
        training.train_model(DPO, problems, TEMPLATE, sft_dir, tmp_path / "dpo")
    assert not (tmp_path / "dpo").exists()


def test_rl_needs_the_model_it_starts_from(problems, tmp_path):
    with pytest.raises(ValueError, match="grpo needs the model it starts from"):
        training.train_model(GRPO, problems, TEMPLATE, None, tmp_path / "x")


def test_correctness_reward_grades_final_answers():
    rewards = training.correctness_reward(
        ["1+2=3\n\\boxed{3}", "\\boxed{4}", "no answer"], answer=["3", "3", "3"]
    )
    assert rewards == [1.0, 0.0, 0.0]
