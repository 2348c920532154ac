"""Loading a `models` entry: its weights and tokenizer, where they came from, and what
identifies them (a local directory's fingerprint, a hub commit). Every stage that runs a
model (generation, EAP, faithfulness, calibration) loads it here."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
import torch
import transformers
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from circuitry.provenance import model_fingerprint

log = logging.getLogger(__name__)

COMMIT_HASH = re.compile(r"[0-9a-f]{40}")


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


def resolve_hub_revision(hub_id: str, revision: str) -> tuple[str, str | None]:
    """The revision to load (resolved once, so model and tokenizer match) and its commit.

    The commit is None when it cannot be known offline (a branch name never resolved
    with network access).
    """
    from transformers.utils.hub import resolve_revision

    resolved = resolve_revision(hub_id, revision)
    commit = getattr(resolved, "resolved", None)
    if commit is None and COMMIT_HASH.fullmatch(revision):
        commit = revision
    return resolved, commit


class ModelUnavailableError(OSError):
    """The weights of a model are neither on disk nor reachable."""


def unavailable_message(spec: dict, revision: str | None) -> str:
    """What is missing, and how to get it."""
    if spec.get("path"):
        return (
            f"model directory {spec['path']} has no loadable model "
            "(save_pretrained layout with config.json, weights and tokenizer expected)"
        )
    hub_id = spec["hub_id"]
    where = "is not in the local Hugging Face cache"
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        where += " and HF_HUB_OFFLINE=1 forbids downloading it"
    else:
        where += " and could not be downloaded (no network access, or a gated repository)"
    return (
        f"model {hub_id} (revision {revision}) {where}. Fetch it on a machine with access "
        f"to the hub, into the cache this job reads (HF_HOME): "
        f"`hf download {hub_id} --revision {revision}`"
    )


def corrupt_weights_message(source: str, error: SafetensorError) -> str:
    """Which weight file of `source` cannot be read (a local directory's first unreadable
    `*.safetensors`; for a hub model, its id and the error)."""
    for path in sorted(Path(source).glob("*.safetensors")):
        try:
            with safe_open(path, "pt"):
                pass
        except SafetensorError as e:
            return f"{path}: corrupt or incomplete weight file ({e}); save or download it again"
    return f"model {source}: a weight file is corrupt or incomplete ({error}); download it again"


def eos_token_ids(model, tokenizer) -> tuple[int, ...]:
    """The tokenizer's EOS and every EOS of the checkpoint's generation config."""
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, (list, tuple)) else [configured])
    ids.add(tokenizer.eos_token_id)
    return tuple(sorted(i for i in ids if i is not None))


def model_source(spec: dict) -> tuple[str, str | None, str | None, str]:
    """Where a `models` entry's files come from: `(source, revision, commit, identity)`.

    `source` is the local `path` or the `hub_id`; `identity` names the weights (a path with
    a fingerprint of its files, or a hub id at its commit).
    """
    if spec.get("path"):
        source = spec["path"]
        return source, None, None, f"path:{Path(source).resolve()}:{model_fingerprint(source)}"
    if spec.get("hub_id"):
        source = spec["hub_id"]
        revision, commit = resolve_hub_revision(source, spec["revision"])
        return source, revision, commit, f"hub:{source}@{commit or revision}"
    raise ValueError("model entry has neither `path` nor `hub_id`")


def weights_dir(spec: dict) -> Path:
    """The local directory holding a `models` entry's weight files: its `path`, or the
    snapshot of its hub revision in the local cache (the revision generation loads)."""
    if spec.get("path"):
        return Path(spec["path"])
    source, revision, _, _ = model_source(spec)
    try:
        return Path(
            huggingface_hub.snapshot_download(source, revision=revision, local_files_only=True)
        )
    except (OSError, ValueError) as e:
        raise ModelUnavailableError(unavailable_message(spec, revision)) from e


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
