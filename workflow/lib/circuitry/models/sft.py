"""Supervised fine-tuning: a plain PyTorch loop on worked solutions (loss on the answer
only), of the toy's tiny Llama trained from scratch or continued from an existing model
(the more-training control)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm
from transformers import LlamaConfig, LlamaForCausalLM

from circuitry.data.prompts import PromptTemplate, build_prompt
from circuitry.models.files import format_log, load_pretrained, save_model, seed_everything
from circuitry.models.tokenizer import build_char_tokenizer

log = logging.getLogger(__name__)

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
        lambda step: warmup_cosine(step, settings["steps"], settings["warmup_steps"]),
    )
    model.train()
    records = []
    order = batch_order(len(examples), settings["batch_size"], settings["steps"], settings["seed"])
    for step, indices in enumerate(tqdm(order, total=settings["steps"], desc="sft"), 1):
        batch = padded_batch([examples[i] for i in indices], tokenizer.pad_token_id)
        records.append({"step": step, **sft_step(model, optimizer, scheduler, batch)})
        if step % LOG_EVERY == 0 or step == settings["steps"]:
            log.info("step %d: %s", step, format_log(records[-1]))
    frame = pd.DataFrame(records)
    save_model(model.eval(), tokenizer, out_dir, frame, settings)
    return frame
