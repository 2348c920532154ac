"""Config checks beyond the JSON schema: `check_config` raises ConfigError naming the key
of the first inconsistency.

The schema (workflow/schemas/config.schema.yaml) fixes types, ranges and unknown keys;
these checks add what a schema cannot express: cross-references between sections, files
the config names, and settings that only matter for the pairs that are enabled.
"""

from __future__ import annotations

import json
from pathlib import Path

from circuitry.config import (
    CHECK_SECTIONS,
    calibration_alpha,
    calibration_scope,
    check_candidates,
    enabled_pairs,
    imported_file,
    models_in_use,
    recipe_of,
)
from circuitry.models.runs import RunError, all_checkpoints, checkpoints, key_of
from circuitry.paths import RECIPE_FILE, WEIGHTS_FILE


class ConfigError(ValueError):
    """The configuration is inconsistent; the message names the offending key."""


MODEL_SOURCES = ("hub_id", "path", "train")
SAVED_MODEL = "a model saved with save_pretrained"
# What a local model directory holds: each kind of file, as the names it may have.
MODEL_DIR_FILES = {
    "model config": ("config.json",),
    "weights": ("*.safetensors", "pytorch_model*.bin"),
    "tokenizer": ("tokenizer.json", "tokenizer.model", "vocab.json"),
}


def describe_schema_error(error: Exception) -> str:
    """One line naming the config key a schema violation is about.

    `error` is a jsonschema ValidationError, or an exception raised while handling one
    (as snakemake.utils.validate's WorkflowError is).
    """
    chain = (error, error.__cause__, error.__context__)
    found = next((e for e in chain if hasattr(e, "absolute_path")), None)
    if found is None:
        return str(error)
    path = ".".join(str(p) for p in found.absolute_path) or "(top level)"
    return f"{path}: {found.message}"


def _check_calibration(config: dict) -> None:
    """Calibrated models are bases of enabled pairs; the alpha is scored; the calibrated
    loss is scored; a planted node exists where the model's layer count is known."""
    section = config["calibration"]
    if not section["enabled"]:
        return
    bases = {config["pairs"][p]["base"] for p in enabled_pairs(config)}
    for model in section["models"] or ():
        if model not in bases:
            raise ConfigError(
                f"calibration.models: {model!r} is not the base model of an enabled pair "
                f"(known-answer pairs are scored on a base model's own paired answers); "
                f"bases: {', '.join(sorted(bases))}"
            )
    alphas = [str(a) for a in config["eap"]["alphas"]]
    if calibration_alpha(config) not in alphas:
        raise ConfigError(
            f"calibration.alpha: {section['alpha']} is not one of eap.alphas ({', '.join(alphas)})"
        )
    if "target_unit" not in config["eap"]["losses"]:
        raise ConfigError(
            "eap.losses: must include target_unit, the calibrated reading, while "
            "calibration.enabled is true"
        )
    for model in calibration_scope(config):
        layers = known_layer_count(config["models"], model)
        for name, edit in section["edits"].items():
            node = edit.get("node")
            if layers is None or node is None or node == "input":
                continue
            if int(node[1:]) >= layers:
                raise ConfigError(
                    f"calibration.edits.{name}.node: {node!r} does not exist in {model}, "
                    f"which has {layers} layers (a0 .. a{layers - 1}, m0 .. m{layers - 1})"
                )


def known_layer_count(models: dict, name: str) -> int | None:
    """A model's number of decoder layers where planning can know it without loading any
    weights: a trained model's stated architecture (or its init's), a local model's
    config.json, a hub model's config.json in the local hub cache; None otherwise (the
    scoring job checks it then)."""
    spec = models[name]
    train = spec.get("train")
    if train:
        if train.get("init"):
            return known_layer_count(models, train["init"])
        return train.get("architecture", {}).get("num_hidden_layers")
    config_file = _model_config_file(spec)
    if config_file is None:
        return None
    settings = json.loads(Path(config_file).read_text())
    return settings.get("num_hidden_layers", settings.get("n_layer"))


def _model_config_file(spec: dict) -> str | None:
    """A model's config.json where it already is on this machine, or None."""
    if spec.get("path"):
        config_file = Path(spec["path"]) / "config.json"
        return str(config_file) if config_file.is_file() else None
    if not spec.get("hub_id"):
        return None
    # imported here: only a calibrated hub model needs it, and planning stays cheap
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(spec["hub_id"], "config.json", revision=spec["revision"])
    return cached if isinstance(cached, str) else None


def _check_sample_checks(config: dict) -> None:
    """The faithfulness and survival sections name what the study has, enabled."""
    for name in CHECK_SECTIONS:
        section = config[name]
        if not section["enabled"]:
            continue
        for key, known in check_candidates(config).items():
            unknown = [str(x) for x in section[key] or () if str(x) not in known]
            if unknown:
                listed = f"{', '.join(unknown)} not among {', '.join(known)}"
                raise ConfigError(f"{name}.{key}: {listed}")
        disabled = [p for p in section["pairs"] or () if not config["pairs"][p]["enabled"]]
        if disabled:
            raise ConfigError(
                f"{name}.pairs: {', '.join(disabled)} disabled (pairs.<name>.enabled), so "
                f"no {name} check would run on it; enable the pair or leave it out"
            )
    unscored = [x for x in config["survival"]["losses"] if x not in config["eap"]["losses"]]
    if config["survival"]["enabled"] and unscored:
        raise ConfigError(
            f"survival.losses: {', '.join(unscored)} not among eap.losses "
            f"{', '.join(config['eap']['losses'])}; the check compares with their EAP scores"
        )


def _check_train(name: str, train: dict, config: dict) -> None:
    key = f"models.{name}.train"
    init = train.get("init")
    if init is not None and "architecture" in train:
        raise ConfigError(f"{key}.architecture: the model comes from init; remove architecture")
    if init is not None and init not in config["models"]:
        raise ConfigError(f"{key}.init: unknown model {init!r}")
    if init == name:
        raise ConfigError(f"{key}.init: a model cannot start from itself")
    for data in train["data"]:
        if data not in config["training_data"]:
            raise ConfigError(
                f"{key}.data: {data!r} is not an entry of training_data "
                f"(known: {', '.join(config.get('training_data', {})) or 'none'})"
            )
    if train.get("shipped"):
        _check_shipped(key, train)


def _check_shipped(key: str, train: dict) -> None:
    """Shipped weights stand for their recipe only if they were built from it: the recipe
    they record (`recipe.json`, written by every training) is the one configured."""
    shipped = Path(train["shipped"])
    for name in (WEIGHTS_FILE, RECIPE_FILE):
        if not (shipped / name).is_file():
            raise ConfigError(f"{key}.shipped: {shipped / name} does not exist")
    recorded, configured = json.loads((shipped / RECIPE_FILE).read_text()), recipe_of(train)
    if recorded != configured:
        changed = sorted(
            k for k in recorded.keys() | configured.keys() if recorded.get(k) != configured.get(k)
        )
        raise ConfigError(
            f"{key}: differs from the recipe the shipped weights in {shipped} were built "
            f"with ({', '.join(changed)}); remove `shipped` to train the model from this "
            "recipe, or rebuild it (`snakemake rebuild_shipped`) and ship the rebuild"
        )


def _check_dynamics(dynamics: dict, config: dict) -> None:
    if dynamics["eval_dataset"] not in config["datasets"]:
        raise ConfigError(f"dynamics.eval_dataset: {dynamics['eval_dataset']!r} is not in datasets")
    if dynamics["alpha"] not in config["eap"]["alphas"]:
        raise ConfigError(f"dynamics.alpha: {dynamics['alpha']} is not one of eap.alphas")
    names = [run["name"] for run in dynamics["runs"]]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"dynamics.runs: two runs are named {name!r}")
    for run in dynamics["runs"]:
        _check_run(run, config)
        try:
            followed = checkpoints(run)
        except RunError as e:
            raise ConfigError(str(e)) from None
        _check_followed(run, followed, config["models"])
        if "log" in run and not Path(run["log"]).is_file():
            raise ConfigError(f"{key_of(run)}.log: {run['log']} does not exist")


def _check_followed(run: dict, followed: list, models: dict) -> None:
    """`every` keeps a checkpoint of the run, and no `models` entry has the name of one
    (it would be replaced by the checkpoint's weights)."""
    key = key_of(run)
    if not followed:
        found = len(all_checkpoints(run))
        raise ConfigError(
            f"{key}.every: {run['every']} keeps none of the run's {found} checkpoint(s), so "
            f"the run would be dropped; set every to at most {found}"
        )
    for checkpoint in followed:
        if checkpoint.name in models:
            raise ConfigError(
                f"models.{checkpoint.name}: the name of {key}'s checkpoint at step "
                f"{checkpoint.step}, which would replace this model's weights; rename the model"
            )


def _check_run(run: dict, config: dict) -> None:
    """The run's initial model exists and gives weights to start from; a `train` run's
    data are training_data entries and its steps a multiple of its checkpoints."""
    key, init = f"dynamics.runs.{run['name']}", run["init"]
    if init not in config["models"]:
        raise ConfigError(f"{key}.init: unknown model {init!r}")
    if "generations" in config["models"][init] and init not in models_in_use(config):
        raise ConfigError(
            f"{key}.init: {init!r} imports its answers (generations), which only models of "
            "enabled pairs do; use it in a pair or remove its generations"
        )
    train = run.get("train")
    if train is None:
        return
    for data in train["data"]:
        if data not in config["training_data"]:
            raise ConfigError(f"{key}.train.data: {data!r} is not an entry of training_data")
    if train["steps"] % train["checkpoint_every"]:
        raise ConfigError(f"{key}.train.steps: not a multiple of checkpoint_every")


def _check_pair(name: str, pair: dict, pairs: dict, models: dict) -> None:
    key = f"pairs.{name}"
    for role in ("base", "tuned"):
        if pair[role] not in models:
            raise ConfigError(
                f"{key}.{role}: unknown model {pair[role]!r} (known: {', '.join(models)})"
            )
    identity = pair.get("control") == "identity"
    if pair["base"] == pair["tuned"] and not identity:
        raise ConfigError(
            f"{key}: base and tuned are the same model {pair['base']!r}; set "
            f"{key}.control: identity if this is meant as the null comparison"
        )
    if identity and pair["base"] != pair["tuned"]:
        raise ConfigError(
            f"{key}.control: identity compares a model with itself, but base "
            f"{pair['base']!r} and tuned {pair['tuned']!r} differ"
        )
    if "replicate_of" in pair:
        _check_replicate(name, pair, pairs)


def _check_replicate(name: str, pair: dict, pairs: dict) -> None:
    """A replicate repeats an original pair's training with another seed: same base and
    method, another tuned model; originals are never replicates themselves."""
    key = f"pairs.{name}.replicate_of"
    original = pair["replicate_of"]
    if original not in pairs:
        raise ConfigError(f"{key}: unknown pair {original!r} (known: {', '.join(pairs)})")
    if "replicate_of" in pairs[original]:
        raise ConfigError(f"{key}: {original!r} is itself a replicate; name the pair it replicates")
    for field in ("base", "method"):
        if pair[field] != pairs[original][field]:
            raise ConfigError(
                f"{key}: {field} {pair[field]!r} differs from {original!r}'s "
                f"{pairs[original][field]!r}"
            )
    if pair["tuned"] == pairs[original]["tuned"]:
        raise ConfigError(
            f"{key}: tuned {pair['tuned']!r} is the tuned model of {original!r} itself; "
            "a replicate compares a model trained with another seed"
        )


def _check_model(name: str, model: dict, templates: dict, in_use: bool) -> None:
    key = f"models.{name}"
    given = [s for s in MODEL_SOURCES if model.get(s) is not None]
    if "hub_id" in model and model["hub_id"] is None and in_use:
        raise ConfigError(
            f"{key}.hub_id is not set, but an enabled pair uses this model; "
            "set the hub id (see README, 'Full reproduction') or disable the pair"
        )
    if len(given) > 1:
        raise ConfigError(f"{key}: give only one of {', '.join(MODEL_SOURCES)} (got {given})")
    if not given and in_use:
        raise ConfigError(f"{key}: give one of {', '.join(MODEL_SOURCES)}")
    if in_use and model.get("path") is not None:
        _check_model_dir(f"{key}.path", Path(model["path"]))
    if model["template"] not in templates:
        raise ConfigError(
            f"{key}.template: unknown template {model['template']!r} "
            f"(known: {', '.join(templates) or 'none'})"
        )


def _check_model_dir(key: str, path: Path) -> None:
    """A local model is a directory that save_pretrained filled: its config, weights and
    tokenizer."""
    if not path.is_dir():
        raise ConfigError(f"{key}: {path} is not a directory ({SAVED_MODEL} expected)")
    for what, patterns in MODEL_DIR_FILES.items():
        if not any(next(path.glob(pattern), None) for pattern in patterns):
            raise ConfigError(
                f"{key}: {path} holds no {what} ({' or '.join(patterns)}; {SAVED_MODEL} expected)"
            )


def _check_generations(name: str, model: dict, datasets: list[str], in_use: bool) -> None:
    """Imported answers belong to weights the workflow reads (a path or hub_id model), and
    every dataset of the study has its file."""
    key = f"models.{name}.generations"
    if model.get("train"):
        raise ConfigError(
            f"{key}: the workflow trains this model, so no answers of it exist to import; "
            "give its weights as path or hub_id"
        )
    if not in_use:
        return
    for dataset in datasets:
        file = imported_file(model, dataset)
        if not Path(file).is_file():
            raise ConfigError(
                f"{key}.path: {file} (the answers to dataset {dataset}) does not exist"
            )


def _check_template(name: str, template: dict) -> None:
    from circuitry.data.prompts import PromptTemplate

    try:
        PromptTemplate.from_config(template)
    except ValueError as e:
        raise ConfigError(f"templates.{name}: {e}") from None


def _check_eap(eap: dict) -> None:
    """The paper's condition (ce loss, own text) is what the metrics are computed on."""
    for key, required in (("losses", "ce"), ("texts", "own")):
        if required not in eap[key]:
            raise ConfigError(
                f"eap.{key}: must include {required} (the paper's choice, on which the "
                f"circuit metrics are computed); got {eap[key]}"
            )


def _check_filter(section: dict) -> None:
    """The answer-length window [small_coeff * T, big_coeff * T] can hold an answer."""
    small, big = section["small_coeff"], section["big_coeff"]
    if small > big:
        raise ConfigError(
            f"filter.small_coeff: {small} is above filter.big_coeff {big}, so the length "
            "window [small_coeff * T, big_coeff * T] holds no answer and pairing would keep "
            "no problem"
        )


def check_config(config: dict) -> None:
    """Raise ConfigError naming the key of the first inconsistency found."""
    templates = config["templates"]
    for name, template in templates.items():
        _check_template(name, template)
    for name, pair in config["pairs"].items():
        _check_pair(name, pair, config["pairs"], config["models"])
    for name in config["only_pairs"] or ():
        if name not in config["pairs"]:
            raise ConfigError(
                f"only_pairs: unknown pair {name!r} (known: {', '.join(config['pairs'])})"
            )
        if not config["pairs"][name]["enabled"]:
            raise ConfigError(f"only_pairs: pair {name!r} is disabled; enable it first")
    if not enabled_pairs(config):
        raise ConfigError("pairs: every pair is disabled; enable at least one")
    in_use = set(models_in_use(config))
    dynamics = config.get("dynamics")
    if dynamics and dynamics["enabled"]:
        _check_dynamics(dynamics, config)
        in_use.update(run["init"] for run in dynamics["runs"])
    for name, model in config["models"].items():
        _check_model(name, model, templates, name in in_use)
        if model.get("train"):
            _check_train(name, model["train"], config)
        if "generations" in model:
            _check_generations(name, model, list(config["datasets"]), name in in_use)
    _check_eap(config["eap"])
    _check_filter(config["filter"])
    _check_calibration(config)
    _check_sample_checks(config)
    shared = config["datasets"].keys() & config["training_data"].keys()
    if shared:
        raise ConfigError(f"training_data: {sorted(shared)} also named in datasets; rename one")
