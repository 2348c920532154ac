"""Training: the toy lineage (SFT from scratch, then GRPO and DPO from it, and SFT
continued from it as a control) and GRPO runs.

GRPO and DPO are trl's `GRPOTrainer` and `DPOTrainer`, the training code researchers use
on real models; supervised fine-tuning is a plain PyTorch loop (`circuitry.models.sft`), from a
fresh tiny model or from an existing one. Every run writes its per-step log (loss,
reward, accuracy) to a CSV next to the model. Prompts come from the model's template
exactly as at generation time, and the correctness reward is the grader the evaluation
uses.

Determinism: every run seeds Python, NumPy and torch and asks torch for deterministic
algorithms, so the same settings on the same machine give bit-identical weights.
"""

from __future__ import annotations

import contextlib
import logging
import random
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import torch
from datasets import Dataset
from transformers import TrainerCallback

from circuitry.data.grading import grade
from circuitry.data.prompts import PromptTemplate, chat_messages, render_prompt
from circuitry.io import share_as_umask_allows
from circuitry.models.files import format_log, load_pretrained, save_model, seed_everything
from circuitry.models.sft import train_sft

log = logging.getLogger(__name__)


class CsvLog(TrainerCallback):
    """Collects every trainer log record (one per logging step) for a CSV and the job log."""

    def __init__(self):
        self.records: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        record = {"step": state.global_step, **(logs or {})}
        self.records.append(record)
        log.info("step %d: %s", state.global_step, format_log(logs or {}))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.records)


def trl_prompt(template: PromptTemplate, question: str, tokenizer):
    """The prompt as trl should see it: messages for chat templates, else the rendered text.

    trl tokenises plain text with the tokenizer's special tokens and applies chat
    templates itself, which gives the same token ids as `circuitry.data.prompts`.
    """
    if template.format == "chat_template":
        return chat_messages(template, question)
    return render_prompt(template, question, tokenizer)


def prompt_records(problems: Sequence[dict], template: PromptTemplate, tokenizer) -> list[dict]:
    """`prompt` (as trl should see it) and `answer` (gold, for the reward) per problem."""
    return [
        {"prompt": trl_prompt(template, p["question"], tokenizer), "answer": p["answer"]}
        for p in problems
    ]


def correctness_reward(completions: list, answer: list[str], **_) -> list[float]:
    """1.0 for a completion whose final answer matches the gold answer, else 0.0."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [float(grade(text, gold)[1]) for text, gold in zip(texts, answer, strict=True)]


def device_settings() -> dict:
    """Trainer arguments shared by all runs: CPU unless a GPU exists, no hub, no reports.

    trl checkpoints activations by default, recomputing the forward pass in the backward
    to save GPU memory; on CPU (the toy models) it only costs time, so it is off there.
    """
    cuda = torch.cuda.is_available()
    return {
        "use_cpu": not cuda,
        "bf16": cuda and torch.cuda.is_bf16_supported(),
        "activation_checkpointing": cuda,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1,
        "disable_tqdm": False,
        "dataloader_num_workers": 0,
    }


@contextlib.contextmanager
def scratch_dir() -> Iterator[str]:
    """Where a trainer may write its own files; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="circuitry-trainer-") as tmp:
        yield tmp


@contextlib.contextmanager
def logprob_tiles_within(vocab_size: int) -> Iterator[None]:
    """trl's GRPO and DPO score log-probabilities on tiles of up to 4096 tokens by 32768
    vocabulary entries (`trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE`), a buffer sized for
    real vocabularies and allocated anew on every forward and backward pass. A vocabulary
    smaller than a tile (the toy's 100 characters) fits one narrower tile: the same single
    tile, computed the same way, without a 512 MB allocation per pass, which took 43% of a
    toy GRPO step on CPU. The width is restored afterwards; a trl without the setting is
    left alone."""
    from trl.trainer import utils

    default = getattr(utils, "_CHUNKED_LOGPROB_CHUNK_SIZE", None)
    if default is None or vocab_size >= default:
        yield
        return
    utils._CHUNKED_LOGPROB_CHUNK_SIZE = vocab_size
    try:
        yield
    finally:
        utils._CHUNKED_LOGPROB_CHUNK_SIZE = default


def train_grpo(
    init: str | Path,
    problems: Sequence[dict],
    template: PromptTemplate,
    settings: dict,
    out_dir: str | Path | None,
    run_dir: str | Path | None = None,
    revision: str | None = None,
) -> pd.DataFrame:
    """GRPO from `init` (a directory, or a hub id at `revision`) with the answer-correctness
    reward (group-normalised advantages).

    The final model goes to `out_dir` (if given). With `run_dir` (the training dynamics),
    trl saves a `checkpoint-<step>` folder there every `settings["checkpoint_every"]`
    steps, in its own layout: model, tokenizer and `trainer_state.json`, whose
    `log_history` holds every logged step up to it.
    """
    from trl import GRPOConfig, GRPOTrainer

    seed_everything(settings["seed"])
    model, tokenizer = load_pretrained(init, revision)
    records = prompt_records(problems, template, tokenizer)
    dataset = Dataset.from_list(records)
    callback = CsvLog()
    saving = {}
    if run_dir is not None:
        saving = {
            "save_strategy": "steps",
            "save_steps": settings["checkpoint_every"],
            "save_only_model": True,
        }
    with scratch_dir() as tmp:
        args = GRPOConfig(
            output_dir=str(run_dir or tmp),
            max_steps=settings["steps"],
            per_device_train_batch_size=settings["prompts_per_step"] * settings["num_generations"],
            num_generations=settings["num_generations"],
            temperature=settings["temperature"],
            max_completion_length=settings["max_completion_length"],
            learning_rate=settings["learning_rate"],
            beta=settings.get("beta", 0.0),
            lr_scheduler_type="constant",
            seed=settings["seed"],
            **(device_settings() | saving),
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=correctness_reward,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[callback],
        )
        with logprob_tiles_within(model.config.vocab_size):
            trainer.train()
    if run_dir is not None:
        share_as_umask_allows(Path(run_dir))  # trl's safetensors files are private (0600)
    if out_dir is not None:
        save_model(trainer.model, tokenizer, out_dir, callback.frame(), settings)
    return callback.frame()


def sample_completions(
    model,
    tokenizer,
    prompts: Sequence[str],
    n: int,
    temperature: float,
    max_new_tokens: int,
    batch_size: int = 64,
) -> list[list[str]]:
    """`n` sampled completions per prompt (left-padded batches, seeded by the caller)."""
    tokenizer.padding_side = "left"
    samples = []
    for start in range(0, len(prompts), batch_size):
        batch = list(prompts[start : start + batch_size])
        encoded = tokenizer(batch, return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            output = model.generate(
                **encoded,
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                num_return_sequences=n,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        texts = tokenizer.batch_decode(
            output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True
        )
        samples += [texts[i * n : (i + 1) * n] for i in range(len(batch))]
    return samples


def preference_pairs(model, tokenizer, records: Sequence[dict], settings: dict) -> list[dict]:
    """Chosen/rejected pairs from the model's own samples: a correct and an incorrect answer.

    Prompts whose samples are all right or all wrong give no pair.
    """
    samples = sample_completions(
        model,
        tokenizer,
        [r["prompt"] for r in records],
        settings["samples_per_prompt"],
        settings["temperature"],
        settings["max_completion_length"],
    )
    pairs = []
    for record, completions in zip(records, samples, strict=True):
        graded = [(c, grade(c, record["answer"])[1]) for c in completions]
        right = [c for c, ok in graded if ok]
        wrong = [c for c, ok in graded if not ok]
        if right and wrong:
            pairs.append({"prompt": record["prompt"], "chosen": right[0], "rejected": wrong[0]})
    return pairs


def train_dpo(
    init_dir: str | Path,
    problems: Sequence[dict],
    template: PromptTemplate,
    settings: dict,
    out_dir: str | Path,
) -> pd.DataFrame:
    """DPO from `init_dir` on preference pairs built from its own samples."""
    from trl import DPOConfig, DPOTrainer

    seed_everything(settings["seed"])
    model, tokenizer = load_pretrained(init_dir)
    drawn = random.Random(settings["seed"]).sample(
        list(problems), min(settings["num_prompts"], len(problems))
    )
    records = prompt_records(drawn, template, tokenizer)
    pairs = preference_pairs(model, tokenizer, records, settings)
    if not pairs:
        raise ValueError(
            f"no preference pairs: none of {len(records)} prompts had both a correct and an "
            "incorrect sample; raise samples_per_prompt or the temperature"
        )
    log.info("%d preference pairs from %d prompts", len(pairs), len(records))
    tokenizer.padding_side = "right"
    callback = CsvLog()
    with scratch_dir() as tmp:
        args = DPOConfig(
            output_dir=tmp,
            max_steps=settings["steps"],
            per_device_train_batch_size=settings["batch_size"],
            learning_rate=settings["learning_rate"],
            beta=settings["beta"],
            lr_scheduler_type="constant",
            max_length=tokenizer.model_max_length,
            seed=settings["seed"],
            **device_settings(),
        )
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(pairs),
            processing_class=tokenizer,
            callbacks=[callback],
        )
        with logprob_tiles_within(model.config.vocab_size):
            trainer.train()
    frame = callback.frame().assign(n_pairs=len(pairs))
    save_model(trainer.model, tokenizer, out_dir, frame, settings)
    return frame


def train_model(
    settings: dict,
    problems: Sequence[dict],
    template: PromptTemplate,
    init_dir: str | Path | None,
    out_dir: str | Path,
) -> pd.DataFrame:
    """Train one model as its config `train` block says; returns the per-step log.

    `init_dir` is the model training starts from; only sft may go without (from scratch).
    """
    if not problems:
        raise ValueError("no training problems")
    method = settings["method"]
    if init_dir is None and method != "sft":
        raise ValueError(f"{method} needs the model it starts from (train.init)")
    trainer = {"sft": train_sft, "grpo": train_grpo, "dpo": train_dpo}[method]
    return trainer(init_dir, problems, template, settings, out_dir)
