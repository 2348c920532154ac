"""Where a `models` entry's files come from: a local directory or a hub revision resolved
to its commit, the local directory holding its weights, and the messages for weights that
are missing or corrupt. Light (no transformers import at module level), so a job that
only reads weight files (rule weight_diff) starts fast."""

from __future__ import annotations

import json
import re
from pathlib import Path

import huggingface_hub
from safetensors import SafetensorError, safe_open

from circuitry.provenance import model_fingerprint

COMMIT_HASH = re.compile(r"[0-9a-f]{40}")


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


def model_config(spec: dict) -> dict:
    """A `models` entry's `config.json`, read from its local files (no weights load)."""
    return json.loads((weights_dir(spec) / "config.json").read_text())
