"""RL runs as checkpoints: where each run's checkpoints and logged series come from.

A run (`dynamics.runs`) starts from a `models` entry and takes its checkpoints from one
source:

- `train`: the workflow runs GRPO with trl from `init`, saving `checkpoint-<step>`
  folders every `checkpoint_every` steps into `resources/dynamics/<run>/` (trl's own
  layout), and reads that directory as a `trl` source; its steps are known before it
  trains, so the whole run plans at once;
- `trl`: a trl `output_dir`: its `checkpoint-<step>` folders and their
  `trainer_state.json`;
- `dirs`: a glob of Hugging Face model directories, a regular expression taking each
  one's step from its name (OpenRLHF's `--save_hf_ckpt`, verl after its model merger);
- `revisions`: a hub repository with one revision per step, a list (the step is the first
  number of each name) or a mapping of step to revision; offline from a filled cache.

A checkpoint folder holding a PEFT adapter (`adapter_model.safetensors`) becomes a model
once rule `merge_adapter` has merged it onto the initial model. `every: k` keeps the k-th,
2k-th, ... checkpoint in step order. A source without checkpoints, or with a step twice,
is a config error naming the run.

Logged series: the last checkpoint's `trainer_state.json` (its `log_history` holds every
logging step up to it) for `train` and `trl`, and for `dirs` where the last directory has
one; `log:` (a trainer_state.json or a CSV with a step column) for any run
(`circuitry.analysis.dynamics.training_log` reads them).

The module also holds the dynamics' plan the rules are built from (the runs followed,
their initial models, every checkpoint as a `models` entry), with the standard library
only, so planning the workflow stays cheap.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from circuitry.paths import RUN_DIR, TRAINED_MODEL_DIR

SOURCES = ("train", "trl", "dirs", "revisions")
TEXTS = {
    "initial": "the initial model's answers",
    "own": "the checkpoint's own correct answers",
}
GRPO_SETTINGS = (
    "seed",
    "steps",
    "checkpoint_every",
    "prompts_per_step",
    "num_generations",
    "max_completion_length",
    "learning_rate",
    "beta",
    "temperature",
)
CHECKPOINT = "dyn-{run}-step{step}"
TRL_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
FIRST_NUMBER = re.compile(r"(\d+)")
TRAINER_STATE = "trainer_state.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_FILES = ("config.json", "adapter_config.json")
# Model settings a checkpoint takes from its run's initial model.
INHERITED = (
    "template",
    "max_new_tokens",
    "dtype",
    "gpu",
    "size_b",
    "trust_remote_code",
    "batch_size",
)


class RunError(ValueError):
    """A run's checkpoints cannot be found, or do not make one run."""


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a run: a local directory (`location`; `adapter` when it holds a
    PEFT adapter) or a hub revision."""

    run: str
    step: int
    location: str
    kind: str  # "dir", "adapter" or "revision"

    @property
    def name(self) -> str:
        return CHECKPOINT.format(run=self.run, step=self.step)


def key_of(run: Mapping) -> str:
    return f"dynamics.runs.{run['name']}"


def source_of(run: Mapping) -> str:
    """The run's one source of checkpoints."""
    present = [source for source in SOURCES if source in run]
    if len(present) != 1:
        raise RunError(
            f"{key_of(run)}: give exactly one source of checkpoints ({', '.join(SOURCES)}); "
            f"found {', '.join(present) or 'none'}"
        )
    return present[0]


def run_dir(run: Mapping) -> str:
    """The directory a `train` run's checkpoints are saved in."""
    return RUN_DIR.format(run=run["name"])


def local_checkpoint(run: Mapping, step: int, path: str | os.PathLike) -> Checkpoint:
    """A checkpoint directory: a full model, or a PEFT adapter to merge."""
    path = Path(path)
    if not any((path / name).is_file() for name in MODEL_FILES):
        raise RunError(
            f"{key_of(run)}: {path} holds neither a model (config.json) nor a PEFT adapter "
            "(adapter_config.json)"
        )
    kind = "adapter" if (path / ADAPTER_WEIGHTS).is_file() else "dir"
    return Checkpoint(run["name"], step, str(path), kind)


def train_checkpoints(run: Mapping) -> list[Checkpoint]:
    """The folders trl will save, known from the settings before training."""
    every, steps = run["train"]["checkpoint_every"], run["train"]["steps"]
    return [
        Checkpoint(run["name"], step, f"{run_dir(run)}/checkpoint-{step}", "dir")
        for step in range(every, steps + 1, every)
    ]


def trl_checkpoints(run: Mapping) -> list[Checkpoint]:
    """The `checkpoint-<step>` folders of a trl output directory."""
    found = []
    for path in sorted(Path(run["trl"]).glob("checkpoint-*")):
        match = TRL_CHECKPOINT.fullmatch(path.name)
        if match and path.is_dir():
            found.append(local_checkpoint(run, int(match.group(1)), path))
    if not found:
        raise RunError(f"{key_of(run)}.trl: no checkpoint-<step> folders in {run['trl']}")
    return found


def dir_checkpoints(run: Mapping) -> list[Checkpoint]:
    """The directories matching the glob, each with the step its name gives."""
    try:
        pattern = re.compile(run["dirs"]["step"])
    except re.error as e:
        raise RunError(
            f"{key_of(run)}.dirs.step: {run['dirs']['step']!r} is not a regular expression ({e})"
        ) from None
    if pattern.groups < 1:
        raise RunError(f"{key_of(run)}.dirs.step: {pattern.pattern!r} has no group for the step")
    found = []
    for path in sorted(glob.glob(run["dirs"]["glob"])):
        if not Path(path).is_dir():
            continue
        match = pattern.search(Path(path).name)
        if match is None or not match.group(1).isdigit():
            raise RunError(
                f"{key_of(run)}.dirs.step: {pattern.pattern!r} finds no step in the name of {path}"
            )
        found.append(local_checkpoint(run, int(match.group(1)), path))
    if not found:
        raise RunError(f"{key_of(run)}.dirs.glob: {run['dirs']['glob']} matches no directory")
    return found


def revision_checkpoints(run: Mapping) -> list[Checkpoint]:
    """One checkpoint per revision: a mapping's steps, or each name's first number."""
    revisions = run["revisions"]["revisions"]
    if isinstance(revisions, Mapping):
        steps = [(step_number(run, step), str(revision)) for step, revision in revisions.items()]
    else:
        steps = []
        for revision in map(str, revisions):
            match = FIRST_NUMBER.search(revision)
            if match is None:
                raise RunError(
                    f"{key_of(run)}.revisions: {revision!r} has no number to take its step "
                    "from; give a mapping of step to revision"
                )
            steps.append((int(match.group(1)), revision))
    return [Checkpoint(run["name"], step, revision, "revision") for step, revision in steps]


def step_number(run: Mapping, step) -> int:
    """A step as a `revisions` mapping gives it: a whole number."""
    if isinstance(step, bool) or not str(step).isdigit():
        raise RunError(
            f"{key_of(run)}.revisions: {step!r} is not a step (a whole number); give a "
            "mapping of step to revision, or a list of revision names"
        )
    return int(step)


FINDERS = {
    "train": train_checkpoints,
    "trl": trl_checkpoints,
    "dirs": dir_checkpoints,
    "revisions": revision_checkpoints,
}


def all_checkpoints(run: Mapping) -> list[Checkpoint]:
    """Every checkpoint of the run's source in step order; a step found twice is an error."""
    found = sorted(FINDERS[source_of(run)](run), key=lambda c: c.step)
    for before, after in zip(found, found[1:], strict=False):
        if before.step == after.step:
            raise RunError(
                f"{key_of(run)}: step {after.step} occurs twice ({before.location}, "
                f"{after.location})"
            )
    return found


def checkpoints(run: Mapping) -> list[Checkpoint]:
    """The checkpoints the run is followed at: every `every`-th in step order."""
    every = run["every"]
    return all_checkpoints(run)[every - 1 :: every]


def model_entry(run: Mapping, checkpoint: Checkpoint, init: Mapping) -> dict:
    """The `models` entry of a checkpoint: its weights, the initial model's template,
    generation length and resources, and `checkpoint` (its run and step, and `built`: the
    directory a workflow rule makes it in, None for a user's files)."""
    entry = {key: init[key] for key in INHERITED if key in init}
    source = source_of(run)
    built = None
    if checkpoint.kind == "revision":
        entry |= {"hub_id": run["revisions"]["hub_id"], "revision": checkpoint.location}
    elif checkpoint.kind == "adapter":
        built = TRAINED_MODEL_DIR.format(model=checkpoint.name)
        entry |= {"path": built, "adapter": checkpoint.location}
    else:
        entry["path"] = checkpoint.location
        built = run_dir(run) if source == "train" else None
    return entry | {"checkpoint": {"run": run["name"], "step": checkpoint.step, "built": built}}


def log_source(run: Mapping) -> str | None:
    """Where the run's logged series are: `log`, else the last checkpoint's
    trainer_state.json (the directory of a `train` run, which rule `train_dynamics` makes);
    None when there are none."""
    if run.get("log"):
        return run["log"]
    source = source_of(run)
    if source == "train":
        return run_dir(run)
    if source in ("trl", "dirs"):
        last = all_checkpoints(run)[-1].location
        if source == "trl" or (Path(last) / TRAINER_STATE).is_file():
            return last
    return None


def check_same_tokenizer(checkpoint: str, initial, tokenizer) -> None:
    """A checkpoint reads text as its initial model does: the same vocabulary and chat
    template, or its answers and circuits cannot be compared with the initial model's."""
    if tokenizer.get_vocab() != initial.get_vocab():
        reason = "its tokenizer vocabulary differs from the initial model's"
    elif getattr(tokenizer, "chat_template", None) != getattr(initial, "chat_template", None):
        reason = "its chat template differs from the initial model's"
    else:
        return
    raise RunError(
        f"checkpoint {checkpoint}: {reason}; a run's checkpoints must share their initial "
        "model's tokenizer"
    )


def enabled(config: Mapping) -> bool:
    """Whether the run includes the dynamics: configured, enabled, and no `only_pairs`
    narrowing the run to some of the study's pairs."""
    block = config.get("dynamics")
    return bool(block) and block["enabled"] and not config["only_pairs"]


def followed_runs(config: Mapping) -> list[dict]:
    """The runs followed, in config order (none when the dynamics are off)."""
    return list(config["dynamics"]["runs"]) if enabled(config) else []


def run_named(config: Mapping, name: str) -> dict:
    return next(run for run in config["dynamics"]["runs"] if run["name"] == name)


def inits(config: Mapping) -> list[str]:
    """The runs' initial models, each once, in config order."""
    return list(dict.fromkeys(run["init"] for run in followed_runs(config)))


def all_followed(config: Mapping) -> list[Checkpoint]:
    """Every followed checkpoint of every run, in run then step order."""
    return [checkpoint for run in followed_runs(config) for checkpoint in checkpoints(run)]


def all_models(config: Mapping, followed: Sequence[Checkpoint]) -> dict[str, dict]:
    """Every model a job can run: the config's, and one entry per followed checkpoint that
    inherits its initial model's template, generation length and resources, so the
    generation rule answers the eval dataset with it. Derived, so the validated config stays
    as the user wrote it."""
    by_name = {run["name"]: run for run in followed_runs(config)}
    return {
        **config["models"],
        **{
            c.name: model_entry(by_name[c.run], c, config["models"][by_name[c.run]["init"]])
            for c in followed
        },
    }


def init_of(config: Mapping, models: Mapping, model: str) -> str:
    """The initial model of a checkpoint model's run (an initial model's own name);
    `models` is `all_models`."""
    checkpoint = models[model].get("checkpoint")
    return run_named(config, checkpoint["run"])["init"] if checkpoint else model


def run_steps(config: Mapping, followed: Sequence[Checkpoint]) -> list[dict]:
    """Each followed run's name, initial model and `[step, model]` in step order, step 0
    its initial model: the rows of the dynamics summary, in config order."""
    return [
        {
            "name": run["name"],
            "init": run["init"],
            "steps": [[0, run["init"]]]
            + [[c.step, c.name] for c in followed if c.run == run["name"]],
        }
        for run in followed_runs(config)
    ]


def scored_texts(config: Mapping, model: str) -> list[str]:
    """The texts a model of the dynamics is scored on: an initial model reads its own
    answers (`initial`), a checkpoint those and its own."""
    return ["initial"] if model in inits(config) else list(TEXTS)


def grpo_settings(train: Mapping) -> dict:
    """The `train_grpo` settings of a `train` run (the schema fills their defaults)."""
    return {key: train[key] for key in GRPO_SETTINGS if key in train}
