"""Trained models on disk: loading and saving in save_pretrained layout with the training
log beside the weights, PEFT adapters merged into plain models, and seeding that makes a
run bit-identical on the same machine."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, set_seed

from circuitry.io import atomic_dir, write_json
from circuitry.paths import RECIPE_FILE

LOG_FILE = "training_log.csv"


def format_log(logs: dict) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items()
    )


def seed_everything(seed: int) -> None:
    set_seed(seed, deterministic=True)


def save_model(
    model, tokenizer, out_dir: str | Path, training_log: pd.DataFrame, recipe: dict
) -> None:
    """Model, tokenizer, training log and the `train` settings that built it (`recipe`) in
    save_pretrained layout, written atomically.

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
        write_json(Path(tmp) / RECIPE_FILE, recipe)


def load_pretrained(source: str | Path, revision: str | None = None):
    """Model (float32: the trainers keep master weights in full precision) and tokenizer
    from a local directory or a hub id."""
    tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
    model = AutoModelForCausalLM.from_pretrained(source, revision=revision, dtype=torch.float32)
    return model, tokenizer


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
