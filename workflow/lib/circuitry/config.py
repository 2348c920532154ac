"""The views of a validated config that rules and scripts use: the enabled pairs and
their models, what is trained, shipped, calibrated and checked for faithfulness, and what
the report covers. `circuitry.config_checks` decides whether a config is valid.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from circuitry.paths import (
    TRAINED_MODEL_DIR,
    ReportScope,
    alpha_labels,
)


def enabled_pairs(config: dict) -> list[str]:
    """The study's pairs: enabled ones, narrowed to `only_pairs` when that is given."""
    only = config["only_pairs"]
    return [
        name
        for name, pair in config["pairs"].items()
        if pair["enabled"] and (only is None or name in only)
    ]


def replicate_groups(config: dict) -> dict[str, list[str]]:
    """Each enabled pair with enabled seed replicates (`replicate_of`): [itself, *replicates],
    in config order, so a change can be set beside its spread over training seeds."""
    pairs = enabled_pairs(config)
    groups = {
        name: [name, *(p for p in pairs if config["pairs"][p].get("replicate_of") == name)]
        for name in pairs
    }
    return {name: group for name, group in groups.items() if len(group) > 1}


def control_pairs(config: dict) -> dict[str, str]:
    """Enabled control pairs and their kind (`identity`, `more-training`)."""
    return {
        name: config["pairs"][name]["control"]
        for name in enabled_pairs(config)
        if config["pairs"][name].get("control")
    }


def models_in_use(config: dict) -> list[str]:
    """Models of the enabled pairs, in config order."""
    used = {
        m
        for p in enabled_pairs(config)
        for m in (config["pairs"][p]["base"], config["pairs"][p]["tuned"])
    }
    return [m for m in config["models"] if m in used]


def all_datasets(config: dict) -> dict:
    """Evaluation benchmarks and training data: every dataset the data stage can build."""
    return {**config["datasets"], **config["training_data"]}


def trained_models(config: dict) -> list[str]:
    """Models the workflow trains itself."""
    return [name for name, model in config["models"].items() if model.get("train")]


def trained_in_use(config: dict) -> list[str]:
    """Models of the enabled pairs the workflow trains: those with training figures."""
    in_use = set(models_in_use(config))
    return [model for model in trained_models(config) if model in in_use]


def report_scope(config: dict) -> ReportScope:
    """What the report covers: datasets, enabled pairs and their models, calibrated and
    trained models, and the first alpha (whose metrics summaries it reads)."""
    return ReportScope(
        datasets=list(config["datasets"]),
        pairs=enabled_pairs(config),
        models=models_in_use(config),
        calibrated=list(calibration_scope(config)),
        trained=trained_in_use(config),
        alpha=alpha_labels(config)[0],
    )


def shipped_models(config: dict) -> dict[str, str]:
    """Trained models whose weights the study ships (`train.shipped`) -> their directory:
    the workflow installs these instead of training them."""
    return {
        name: model["train"]["shipped"]
        for name, model in config["models"].items()
        if model.get("train", {}).get("shipped")
    }


def anchor_shipped(config: dict, checkout: Path) -> None:
    """Read relative `train.shipped` paths from the circuitry checkout, where the study's
    shipped models live, whatever the working directory (`--directory`, a module). They
    stay relative (to the working directory), so a checkout moved with its results keeps
    its jobs' inputs and parameters, and Snakemake reruns nothing."""
    for model in config["models"].values():
        train = model.get("train") or {}
        if train.get("shipped") and not Path(train["shipped"]).is_absolute():
            train["shipped"] = os.path.relpath(Path(checkout) / train["shipped"])


def recipe_of(train: dict) -> dict:
    """What a `train` block tells the trainer: everything but where its weights ship."""
    return {key: value for key, value in train.items() if key != "shipped"}


def model_spec(models: dict, name: str) -> dict:
    """A model's entry in `models` (the config's, or `runs.all_models`), with `path` set to
    the build directory of a trained model."""
    spec = dict(models[name])
    if spec.get("train"):
        spec["path"] = TRAINED_MODEL_DIR.format(model=name)
    return spec


def calibration_scope(config: dict) -> dict[str, str]:
    """Each calibrated base model -> the enabled pair whose paired answers it is scored on
    (its first pair as base, study pairs first); empty when calibration is off. `models`
    left null means the base model of every study pair (no control, no replicate)."""
    section = config["calibration"]
    if not section["enabled"]:
        return {}
    pairs = enabled_pairs(config)
    study = [p for p in pairs if not _is_control_or_replicate(config["pairs"][p])]
    ordered = study + [p for p in pairs if p not in study]
    first_pair: dict[str, str] = {}
    for pair in ordered:
        first_pair.setdefault(config["pairs"][pair]["base"], pair)
    models = section["models"]
    if models is None:
        models = list(dict.fromkeys(config["pairs"][p]["base"] for p in study))
    return {model: first_pair[model] for model in models if model in first_pair}


def calibration_alpha(config: dict) -> str:
    """The alpha of the known-answer pairs as it appears in paths: the configured one, or
    the largest of eap.alphas."""
    alpha = config["calibration"]["alpha"]
    return str(max(config["eap"]["alphas"]) if alpha is None else alpha)


def _is_control_or_replicate(pair: dict) -> bool:
    return bool(pair.get("control") or pair.get("replicate_of"))


# sections that check a sample of the study: which pairs, datasets and alphas they run on
CHECK_SECTIONS = ("faithfulness", "survival")


def check_candidates(config: dict) -> dict[str, list[str]]:
    """What each list of a `CHECK_SECTIONS` section may name."""
    return {
        "pairs": list(config["pairs"]),
        "datasets": list(config["datasets"]),
        "alphas": [str(alpha) for alpha in config["eap"]["alphas"]],
    }


def check_scope(config: dict, name: str) -> dict[str, list[str]]:
    """The pairs, datasets and alphas (as wildcard strings) the check of section `name`
    (one of `CHECK_SECTIONS`) runs on, none when it is off. A list left null means all of
    them; pairs that are disabled or that `only_pairs` leaves out are left out here too."""
    section = config[name]
    candidates = check_candidates(config)
    if not section["enabled"]:
        return {key: [] for key in candidates}
    scope = {
        key: known if section[key] is None else [str(x) for x in section[key]]
        for key, known in candidates.items()
    }
    in_study = enabled_pairs(config)
    return scope | {"pairs": [p for p in scope["pairs"] if p in in_study]}


def imported_file(model: dict, dataset: str) -> str:
    """The file a model's answers to `dataset` are imported from (`generations.path`)."""
    return model["generations"]["path"].replace("{dataset}", dataset)


def config_hash(config: dict) -> str:
    """A short stable fingerprint of the whole config, for provenance."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
