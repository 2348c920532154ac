"""Training: the toy lineage (SFT from scratch, then GRPO and DPO from it, and SFT
continued from it as a control) and GRPO runs.

GRPO and DPO are trl's `GRPOTrainer` and `DPOTrainer`, the training code researchers use
on real models; supervised fine-tuning is a plain PyTorch loop (see `train_sft`), from a
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
import math
import random
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import torch
from datasets import Dataset
from tqdm import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    TrainerCallback,
    set_seed,
)

from circuitry.grading import grade
from circuitry.io import atomic_dir
from circuitry.prompts import PromptTemplate, build_prompt, chat_messages, render_prompt
from circuitry.tokenizer import build_char_tokenizer

log = logging.getLogger(__name__)

LOG_FILE = "training_log.csv"
LOG_EVERY = 50
IGNORE_INDEX = -100
TOY_ARCHITECTURE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}


class CsvLog(TrainerCallback):
    """Collects every trainer log record (one per logging step) for a CSV and the job log."""

    def __init__(self):
        self.records: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        record = {"step": state.global_step, **(logs or {})}
        self.records.append(record)
        log.info("step %d: %s", state.global_step, _format_log(logs or {}))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.records)


def _format_log(logs: dict) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items()
    )


def seed_everything(seed: int) -> None:
    set_seed(seed, deterministic=True)


def toy_model(tokenizer, architecture: dict | None = None) -> LlamaForCausalLM:
    """A tiny randomly initialised Llama with grouped-query attention for the toy study."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **{**TOY_ARCHITECTURE, **(architecture or {})},
    )
    return LlamaForCausalLM(config)


def trl_prompt(template: PromptTemplate, question: str, tokenizer):
    """The prompt as trl should see it: messages for chat templates, else the rendered text.

    trl tokenises plain text with the tokenizer's special tokens and applies chat
    templates itself, which gives the same token ids as `circuitry.prompts`.
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


def save_model(model, tokenizer, out_dir: str | Path, training_log: pd.DataFrame) -> None:
    """Model, tokenizer and training log in save_pretrained layout, written atomically.

    The generation config saved is plain (the tokenizer's special tokens only), so no
    trainer's sampling settings travel with the weights; the live model is not touched.
    """
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        training_log.to_csv(Path(tmp) / LOG_FILE, index=False)


def load_pretrained(source: str | Path, revision: str | None = None):
    """Model (float32: the trainers keep master weights in full precision) and tokenizer
    from a local directory or a hub id."""
    tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
    model = AutoModelForCausalLM.from_pretrained(source, revision=revision, dtype=torch.float32)
    return model, tokenizer


def tokenized_examples(problems: Sequence[dict], template: PromptTemplate, tokenizer):
    """(input ids, labels) per problem: the prompt exactly as generation builds it, then
    the worked solution and EOS; labels mask the prompt, so the loss is on the answer."""
    examples = []
    for problem in problems:
        prompt = build_prompt(template, problem["question"], tokenizer).token_ids
        answer = tokenizer(problem["solution"], add_special_tokens=False)["input_ids"]
        answer = [*answer, tokenizer.eos_token_id]
        examples.append(([*prompt, *answer], [IGNORE_INDEX] * len(prompt) + answer))
    return examples


def padded_batch(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict:
    """Right-padded input ids, attention mask and labels of a batch."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, targets) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(ids)] = torch.tensor(targets)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def batch_order(n_examples: int, batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """Example indices of each step: seeded reshuffles of the data, epoch after epoch."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(n_examples, generator=generator).tolist()
        yield order[:batch_size]
        order = order[batch_size:]


def warmup_cosine(step: int, steps: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to a tenth."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))


def sft_step(model, optimizer, scheduler, batch: dict) -> dict:
    """One optimiser step; the loss and token accuracy on the answer tokens."""
    output = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
    )
    output.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    targets = batch["labels"][:, 1:]
    predicted = output.logits[:, :-1].argmax(-1)
    answer = targets != IGNORE_INDEX
    accuracy = (predicted[answer] == targets[answer]).float().mean()
    return {
        "loss": output.loss.item(),
        "mean_token_accuracy": accuracy.item(),
        "learning_rate": scheduler.get_last_lr()[0],
    }


def sft_start(init_dir: str | Path | None, settings: dict):
    """Model and tokenizer SFT starts from: `init_dir`'s, or a fresh toy model without one."""
    if init_dir is not None:
        return load_pretrained(init_dir)
    tokenizer = build_char_tokenizer()
    return toy_model(tokenizer, settings.get("architecture")), tokenizer


def train_sft(
    init_dir: str | Path | None,
    problems: Sequence[dict],
    template: PromptTemplate,
    settings: dict,
    out_dir: str | Path,
) -> pd.DataFrame:
    """Supervised fine-tuning on worked solutions (loss on the answer only): of a toy model
    trained from scratch, or continued from `init_dir` (the more-training control).

    A plain PyTorch loop rather than trl's SFTTrainer: on CPU the Trainer's own work per
    step (about 0.17 s here) is several times the toy model's forward and backward pass
    (about 0.05 s), and the loop is the same supervised objective.
    """
    seed_everything(settings["seed"])
    model, tokenizer = sft_start(init_dir, settings)
    examples = tokenized_examples(problems, template, tokenizer)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings["learning_rate"], weight_decay=0.0
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine(step, settings["steps"], settings.get("warmup_steps", 0)),
    )
    model.train()
    records = []
    order = batch_order(len(examples), settings["batch_size"], settings["steps"], settings["seed"])
    for step, indices in enumerate(tqdm(order, total=settings["steps"], desc="sft"), 1):
        batch = padded_batch([examples[i] for i in indices], tokenizer.pad_token_id)
        records.append({"step": step, **sft_step(model, optimizer, scheduler, batch)})
        if step % LOG_EVERY == 0 or step == settings["steps"]:
            log.info("step %d: %s", step, _format_log(records[-1]))
    frame = pd.DataFrame(records)
    save_model(model.eval(), tokenizer, out_dir, frame)
    return frame


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
    if out_dir is not None:
        save_model(trainer.model, tokenizer, out_dir, callback.frame())
    return callback.frame()


def merge_adapter(
    base: str | Path, adapter: str | Path, out_dir: str | Path, revision: str | None = None
) -> None:
    """A PEFT adapter checkpoint merged onto its base model (a directory, or a hub id at
    `revision`), saved as a plain model with the adapter's tokenizer (the base's where the
    adapter folder has none), written atomically."""
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(base, revision=revision, dtype="auto")
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    has_tokenizer = any(Path(adapter).glob("tokenizer*"))
    tokenizer = AutoTokenizer.from_pretrained(
        adapter if has_tokenizer else base, revision=None if has_tokenizer else revision
    )
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


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
    save_model(trainer.model, tokenizer, out_dir, frame)
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
