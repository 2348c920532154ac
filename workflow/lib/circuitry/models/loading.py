"""Loading a `models` entry: its weights and tokenizer, where they came from, and what
identifies them (a local directory's fingerprint, a hub commit). Every stage that runs a
model (generation, EAP, faithfulness, calibration) loads it here."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import transformers
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from circuitry.models.sources import (
    ModelUnavailableError,
    corrupt_weights_message,
    model_source,
    unavailable_message,
)
from circuitry.provenance import model_fingerprint

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready for generation, with what identifies the weights it runs."""

    model: torch.nn.Module
    tokenizer: transformers.PreTrainedTokenizerBase
    source: str
    revision: str | None
    identity: str
    device: torch.device
    dtype: torch.dtype
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    fingerprint: str | None = None  # of a local model's files (`model_fingerprint`)

    def provenance(self) -> dict:
        """JSON-able facts for the record: where the weights came from and how they ran."""
        return {
            "source": self.source,
            "revision": self.revision,
            "fingerprint": self.fingerprint,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": self.device.type,
            "eos_token_ids": list(self.eos_token_ids),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        }


def choose_device(spec: dict) -> torch.device:
    """CUDA when there is one and the model entry does not opt out with `gpu: false`."""
    use_cuda = spec["gpu"] and torch.cuda.is_available()
    return torch.device("cuda" if use_cuda else "cpu")


def choose_dtype(spec: dict, device: torch.device) -> torch.dtype:
    """The entry's `dtype` (bfloat16 by default) on GPU; float32 on CPU."""
    if device.type == "cpu":
        return torch.float32
    return getattr(torch, spec["dtype"])


def eos_token_ids(model, tokenizer) -> tuple[int, ...]:
    """The tokenizer's EOS and every EOS of the checkpoint's generation config."""
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, (list, tuple)) else [configured])
    ids.add(tokenizer.eos_token_id)
    return tuple(sorted(i for i in ids if i is not None))


def load_tokenizer(spec: dict) -> transformers.PreTrainedTokenizerBase:
    """The tokenizer of one `models` config entry, without its weights."""
    source, revision, _, _ = model_source(spec)
    try:
        return AutoTokenizer.from_pretrained(
            source, revision=revision, trust_remote_code=spec["trust_remote_code"]
        )
    except OSError as e:
        raise ModelUnavailableError(unavailable_message(spec, revision)) from e


def load_model(spec: dict, device: str | torch.device | None = None) -> LoadedModel:
    """Load the model and tokenizer of one `models` config entry.

    `path` (a local save_pretrained directory) or `hub_id` at `revision`;
    `trust_remote_code` only where the entry asks for it. The checkpoint's own
    generation defaults (sampling settings, repetition penalty) are dropped so that
    decoding is plain greedy.
    """
    device = torch.device(device) if device is not None else choose_device(spec)
    dtype = choose_dtype(spec, device)
    source, revision, commit, identity = model_source(spec)
    remote = spec["trust_remote_code"]
    log.info("loading %s (revision %s) as %s on %s", source, commit or revision, dtype, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, revision=revision, trust_remote_code=remote
        )
        model = AutoModelForCausalLM.from_pretrained(
            source, revision=revision, dtype=dtype, device_map=str(device), trust_remote_code=remote
        ).eval()
    except OSError as e:
        raise ModelUnavailableError(unavailable_message(spec, revision)) from e
    except SafetensorError as e:
        raise ModelUnavailableError(corrupt_weights_message(source, e)) from None
    eos = eos_token_ids(model, tokenizer)
    model.generation_config = GenerationConfig()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or (0,))[0]
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        source=source,
        revision=commit,
        identity=identity,
        device=device,
        dtype=dtype,
        eos_token_ids=eos,
        pad_token_id=pad,
        fingerprint=model_fingerprint(source) if spec.get("path") else None,
    )
