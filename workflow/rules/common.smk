# Helpers shared by the rules: the circuitry package, config checks, target lists.

import os
import re
from pathlib import Path

# This checkout: workflow/ (rules, scripts, report template) and the project above it.
WORKFLOW_DIR = Path(str(workflow.current_basedir)).parent
PROJECT_DIR = WORKFLOW_DIR.parent

try:
    import circuitry
except ImportError:
    raise WorkflowError(
        "the circuitry package is not installed in this Python environment: run "
        "`pip install -e .` in the circuitry checkout (README, Quickstart)"
    ) from None

# Jobs run in conda environments (--sdm conda) import it from this checkout.
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        p for p in (str(WORKFLOW_DIR / "lib"), os.environ.get("PYTHONPATH")) if p
    )
)

from circuitry.reproducibility import pin_cpu_code_paths

# Every job runs on the same CPU code paths: the toy's models are the same bits on any
# x86-64 CPU with AVX2 (circuitry.reproducibility).
pin_cpu_code_paths(os.environ)

from snakemake.utils import validate

from circuitry import runs
from circuitry.provenance import model_fingerprint, reproduce_command
from circuitry.paths import (
    CALIBRATION_AGREEMENT,
    CALIBRATION_EAP_FILE,
    CALIBRATION_TABLE,
    DATASET_ROWS,
    DATASET_SUMMARY,
    DOWNLOADS,
    DYNAMICS_EAP_FILE,
    DYNAMICS_OUTPUTS,
    DYNAMICS_PROBLEMS,
    DYNAMICS_PROBLEMS_SUMMARY,
    EAP_FILE,
    FAITHFULNESS_EDGES,
    FAITHFULNESS_FIGURE,
    FAITHFULNESS_SUMMARY,
    FIDELITY_FILE,
    GENERATION_PROVENANCE,
    GENERATIONS,
    METRICS_FILE,
    PAIR_SUMMARY,
    PAIR_TESTS,
    PAIRS_FILE,
    PAPER_CONDITION,
    REBUILT_CHECK,
    REBUILT_MODEL_DIR,
    REPORT,
    RUN_DIR,
    TESTS,
    TRAINED_MODEL_DIR,
    TRAINING_LOG,
    VERDICTS,
    Layout,
)
from circuitry.config import (
    ConfigError,
    all_datasets,
    anchor_shipped,
    calibration_alpha,
    calibration_scope,
    check_config,
    describe_schema_error,
    enabled_pairs,
    faithfulness_scope,
    imported_file,
    model_spec,
    models_in_use,
    recipe_of,
    shipped_models,
    trained_models,
)
from circuitry.config_files import (
    ConfigFileError,
    read_yaml,
    refuse_duplicate_keys,
    type_overrides,
)

# The files as written (no key twice) and --config's nested values typed, then the schema
# (types, ranges, unknown keys; fills defaults), then cross-references.
try:
    for configfile_path in workflow.configfiles:
        refuse_duplicate_keys(configfile_path)
    type_overrides(
        config,
        workflow.config_settings.overwrite_config or {},
        read_yaml(WORKFLOW_DIR / "schemas" / "config.schema.yaml"),
    )
    validate(config, "../schemas/config.schema.yaml")
    anchor_shipped(config, PROJECT_DIR)
    check_config(config)
except (WorkflowError, ConfigError, ConfigFileError) as e:
    raise WorkflowError(f"invalid config: {describe_schema_error(e)}") from None


# Every model a job can run: the config's, and one per followed checkpoint of the
# training dynamics (derived; the validated config stays as written).
CHECKPOINTS = runs.all_followed(config)
MODEL_SPECS = runs.all_models(config, CHECKPOINTS)
LAYOUT = Layout()
# Relative to the working directory, as every input is: a checkout moved with its results
# (or a fresh clone given them) plans nothing to rerun.
REPORT_TEMPLATE = os.path.relpath(WORKFLOW_DIR / "report" / "report.html.j2")
DATASETS = list(config["datasets"])
ALL_DATASETS = all_datasets(config)
MODELS = models_in_use(config)
PAIRS = enabled_pairs(config)
TRAINED = trained_models(config)
SHIPPED = shipped_models(config)
TRAINING_FIGURES = LAYOUT.training_figures(config)
RUNS = {run["name"]: run for run in runs.followed_runs(config)}
TRAIN_RUNS = [name for name, run in RUNS.items() if "train" in run]
DYNAMICS_INITS = runs.inits(config)
DYNAMICS_ALPHA = str(config["dynamics"]["alpha"]) if CHECKPOINTS else None
DYNAMICS_EVAL = config["dynamics"]["eval_dataset"] if CHECKPOINTS else None


def one_of(names):
    """A wildcard pattern matching exactly these names."""
    return "|".join(map(re.escape, names)) or "(?!)"


ALPHAS = [str(alpha) for alpha in config["eap"]["alphas"]]
EAP_LOSSES = config["eap"]["losses"]
EAP_TEXTS = config["eap"]["texts"]
CALIBRATION = config["calibration"]
CALIBRATION_SCOPE = calibration_scope(config)
CALIBRATION_ALPHA = calibration_alpha(config)


wildcard_constraints:
    dataset=one_of(DATASETS),
    model=one_of(MODEL_SPECS),
    pair=one_of(PAIRS),
    run=one_of(RUNS),
    init=one_of(DYNAMICS_INITS),
    role="base|tuned",
    alpha=one_of(ALPHAS),
    loss=one_of(EAP_LOSSES),
    text=one_of(EAP_TEXTS),
    edit=one_of(CALIBRATION["edits"]),


# ---- data ----


def local_dataset_file(wildcards):
    """A local source file is an input, so editing it reruns the download."""
    spec = ALL_DATASETS[wildcards.dataset]
    return [spec["path"]] if spec["source"] == "jsonl" else []


def dataset_files():
    return expand(DATASET_ROWS, dataset=DATASETS)


# ---- models ----


def uses_gpu(model):
    return MODEL_SPECS[model]["gpu"]


def model_mem_mb(model):
    """Host memory of a job holding one model: its weights twice over, plus headroom."""
    return int(4000 + 4000 * MODEL_SPECS[model]["size_b"])


def model_runtime(model, per_billion):
    """Minutes for one job of this model, scaled from its size."""
    return int(30 + per_billion * MODEL_SPECS[model]["size_b"])


def model_threads(model):
    """Tiny models run fastest on one thread each, so their jobs can run side by side."""
    return 1 if MODEL_SPECS[model]["size_b"] < 0.1 else 8


def train_threads(model):
    """Training from scratch starts the lineage: no other job can run beside it, so a tiny
    model takes two threads there (1.4x faster than one for the toy's SFT)."""
    from_scratch = config["models"][model]["train"].get("init") is None
    return max(2, model_threads(model)) if from_scratch else model_threads(model)


def model_gpus(model):
    return 1 if uses_gpu(model) else 0


def model_dir(model):
    """What the jobs using a model wait for: the directory the workflow builds it in (a
    trained model, a `train` run's checkpoints, a merged adapter); nothing for a user's.
    """
    if model in TRAINED:
        return [TRAINED_MODEL_DIR.format(model=model)]
    followed = MODEL_SPECS[model].get("checkpoint")
    built = followed and followed["built"]
    return [built] if built else []


def local_model_fingerprint(model):
    """The fingerprint of a user's local `path:` model (None for others; the models the
    workflow builds are inputs of the jobs that use them): when its files change, the job's
    parameters change and Snakemake reruns it and everything downstream."""
    path = MODEL_SPECS[model].get("path")
    return model_fingerprint(path) if path and not model_dir(model) else None


def trained_model_dirs():
    """Every model the workflow trains for the pairs in this run (and what they start from)."""
    needed, todo = set(), [m for m in MODELS if m in TRAINED]
    while todo:
        model = todo.pop()
        needed.add(model)
        init = config["models"][model]["train"].get("init")
        if init and init not in needed:
            todo.append(init)
    return [TRAINED_MODEL_DIR.format(model=m) for m in TRAINED if m in needed]


def train_inputs(wildcards):
    train = config["models"][wildcards.model]["train"]
    inputs = {"data": expand(DATASET_ROWS, dataset=train["data"])}
    if train.get("init"):
        inputs["init"] = TRAINED_MODEL_DIR.format(model=train["init"])
    return inputs


def template_of(model):
    return config["templates"][MODEL_SPECS[model]["template"]]


# ---- generations and pairs ----


def imported_models():
    """Models whose answers are imported (`generations:`) instead of generated."""
    return [m for m in MODELS if "generations" in MODEL_SPECS[m]]


def imported_files(wildcards):
    """The files a model's answers are imported from, one per dataset: inputs, so a
    replaced file reruns the import and everything downstream."""
    spec = MODEL_SPECS[wildcards.model]
    return [imported_file(spec, dataset) for dataset in DATASETS]


def generation_batch_size(wildcards):
    """Rows a model generates, or reads back, together."""
    spec = MODEL_SPECS[wildcards.model]
    return spec.get("batch_size", config["generation"]["batch_size"])


def generation_files():
    return expand(GENERATIONS, model=MODELS, dataset=DATASETS)


def pair_generations(wildcards):
    """role -> the answers of the pair's model in that role, one file per dataset."""
    pair = config["pairs"][wildcards.pair]
    return {
        role: [GENERATIONS.format(model=pair[role], dataset=d) for d in DATASETS]
        for role in ("base", "tuned")
    }


def per_dataset(pattern):
    """`pattern`'s file of every dataset of one pair, with a {pair} wildcard (what a pair's
    job reads or writes, in `DATASETS` order)."""
    return [pattern.format(pair="{pair}", dataset=d) for d in DATASETS]


def pair_files():
    return expand(PAIRS_FILE, pair=PAIRS, dataset=DATASETS)


# ---- EAP, metrics, statistics ----


def pair_models(wildcards):
    """role -> model name of the pair."""
    pair = config["pairs"][wildcards.pair]
    return {role: pair[role] for role in ("base", "tuned")}


def role_model(wildcards):
    """The model of a job's pair and role."""
    return pair_models(wildcards)[wildcards.role]


def role_resources(resource, **kwargs):
    """A per-model resource of the job's pair and role."""
    return lambda wildcards: resource(role_model(wildcards), **kwargs)


def pair_model_dirs(wildcards):
    """The pair's models built by the workflow, as inputs of its EAP job."""
    return {role: model_dir(model) for role, model in pair_models(wildcards).items()}


def pair_model_specs(wildcards):
    return {
        role: model_spec(MODEL_SPECS, model)
        for role, model in pair_models(wildcards).items()
    }


def pair_resources(resource, **kwargs):
    """A per-model resource of the pair's EAP job: the larger of its two models'."""
    return lambda wildcards: max(
        resource(model, **kwargs) for model in pair_models(wildcards).values()
    )


def pair_runtime(wildcards):
    """The EAP job scores one model after the other, on every dataset: their runtimes add up."""
    return len(DATASETS) * sum(
        model_runtime(model, per_billion=60)
        for model in pair_models(wildcards).values()
    )


def score_conditions(alphas):
    """alpha x text x loss x role of every score file of one pair x dataset, in the order
    the EAP job writes them and the metrics job reads them."""
    return [
        {"alpha": alpha, "text": text, "loss": loss, "role": role}
        for alpha in alphas
        for text in EAP_TEXTS
        for loss in EAP_LOSSES
        for role in ("base", "tuned")
    ]


def pair_score_conditions():
    """dataset x alpha x text x loss x role of every score file of one pair, in the order
    the EAP job writes them."""
    return [
        {"dataset": dataset, **condition}
        for dataset in DATASETS
        for condition in score_conditions(ALPHAS)
    ]


def pair_score_files():
    """Every score file of one pair, with a {pair} wildcard."""
    return [EAP_FILE.format(pair="{pair}", **c) for c in pair_score_conditions()]


def paper_score_conditions():
    """dataset x alpha x role of one pair's score files of the paper's condition (its
    loss, own text)."""
    return [
        c
        for c in pair_score_conditions()
        if (c["loss"], c["text"]) == (PAPER_CONDITION["loss"], PAPER_CONDITION["text"])
    ]


def paper_score_files():
    return [EAP_FILE.format(pair="{pair}", **c) for c in paper_score_conditions()]


def fidelity_files():
    return expand(FIDELITY_FILE, pair=PAIRS, dataset=DATASETS)


def metrics_outputs():
    """One pair's metrics (CSV, JSON) of every dataset x alpha, and its tests per dataset."""
    per_alpha = {
        ext: [
            METRICS_FILE.format(pair="{pair}", dataset=dataset, alpha=alpha, ext=ext)
            for dataset in DATASETS
            for alpha in ALPHAS
        ]
        for ext in ("csv", "json")
    }
    return per_alpha | {"tests": per_dataset(PAIR_TESTS)}


def eap_files():
    return [
        EAP_FILE.format(pair=pair, dataset=dataset, **condition)
        for pair in PAIRS
        for dataset in DATASETS
        for condition in score_conditions(ALPHAS)
    ]


FAITHFULNESS_SCOPE = faithfulness_scope(config)


def faithfulness_files(patterns=(FAITHFULNESS_SUMMARY, FAITHFULNESS_EDGES)):
    """Every faithfulness summary and edge table (none when the check is off)."""
    return expand(
        list(patterns),
        pair=FAITHFULNESS_SCOPE["pairs"],
        dataset=FAITHFULNESS_SCOPE["datasets"],
        alpha=FAITHFULNESS_SCOPE["alphas"],
        role=("base", "tuned"),
    )


def faithfulness_report_inputs():
    """The faithfulness summaries and their figure, which the report shows (none when
    the check is off)."""
    summaries = faithfulness_files([FAITHFULNESS_SUMMARY])
    return {"summaries": summaries, "figure": FAITHFULNESS_FIGURE} if summaries else {}


def metric_files(kind="csv"):
    return expand(METRICS_FILE, pair=PAIRS, dataset=DATASETS, alpha=ALPHAS, ext=kind)


def pair_test_files():
    return expand(PAIR_TESTS, pair=PAIRS, dataset=DATASETS)


# ---- calibration ----


def calibration_pair_files(pattern):
    """A calibrated model's pair's files of `pattern` (answers, summaries), every dataset."""
    return lambda wildcards: [
        pattern.format(pair=CALIBRATION_SCOPE[wildcards.model], dataset=dataset)
        for dataset in DATASETS
    ]


def calibration_score_conditions():
    """dataset x edit x loss of every edited score file of one model, in writing order."""
    return [
        {"dataset": dataset, "edit": edit, "loss": loss}
        for dataset in DATASETS
        for edit in CALIBRATION["edits"]
        for loss in EAP_LOSSES
    ]


def calibration_score_files():
    """The edited score files of one calibrated model, with a {model} wildcard."""
    return [
        CALIBRATION_EAP_FILE.format(model="{model}", **c)
        for c in calibration_score_conditions()
    ]


def calibration_base_conditions():
    """dataset x loss of the base model's own score files a calibration reads."""
    return [{"dataset": d, "loss": loss} for d in DATASETS for loss in EAP_LOSSES]


def calibration_base_files(wildcards):
    """The base model's own scores at the calibration alpha, from its pair's EAP job."""
    where = {"alpha": CALIBRATION_ALPHA, "role": "base", "text": "own"}
    pair = CALIBRATION_SCOPE[wildcards.model]
    return [
        EAP_FILE.format(pair=pair, **where, **c) for c in calibration_base_conditions()
    ]


def calibration_tables():
    return expand(CALIBRATION_TABLE, model=CALIBRATION_SCOPE)


# ---- training dynamics ----


def dynamics_train_inputs(wildcards):
    train = RUNS[wildcards.run]["train"]
    return {
        "data": expand(DATASET_ROWS, dataset=train["data"]),
        "init": model_dir(RUNS[wildcards.run]["init"]),
    }


def adapter_models():
    """Checkpoints that are PEFT adapters, merged onto their run's initial model."""
    return [c.name for c in CHECKPOINTS if c.kind == "adapter"]


def merge_inputs(wildcards):
    spec = MODEL_SPECS[wildcards.model]
    return {
        "adapter": spec["adapter"],
        "init": model_dir(initial_model(wildcards.model)),
    }


def initial_model(model):
    """A checkpoint's run's initial model."""
    return runs.init_of(config, MODEL_SPECS, model)


def dynamics_initial_spec(model):
    """A checkpoint's initial model's entry, whose tokenizer it must share (None for an
    initial model)."""
    init = initial_model(model)
    return None if init == model else model_spec(MODEL_SPECS, init)


def dynamics_model_dirs(model):
    """What a dynamics model's generation waits for: its weights and, for a checkpoint,
    its initial model's (whose tokenizer it is checked against)."""
    return list(dict.fromkeys(model_dir(model) + model_dir(initial_model(model))))


def dynamics_models():
    """The initial models, then every checkpoint in run and step order."""
    return DYNAMICS_INITS + [c.name for c in CHECKPOINTS]


def dynamics_scored():
    """model x text x loss of every dynamics score file, in the order the summary reads them."""
    return [
        {"model": model, "text": text, "loss": loss}
        for model in dynamics_models()
        for text in runs.scored_texts(config, model)
        for loss in EAP_LOSSES
    ]


def dynamics_score_files(texts):
    """One dynamics model's score files of these texts, with a {model} wildcard."""
    return [
        DYNAMICS_EAP_FILE.format(model="{model}", text=text, loss=loss)
        for text in texts
        for loss in EAP_LOSSES
    ]


def dynamics_problem_files(model):
    """The problem set (and its summary) of a dynamics model's initial model."""
    init = initial_model(model)
    return {
        "problems": DYNAMICS_PROBLEMS.format(init=init),
        "summary": DYNAMICS_PROBLEMS_SUMMARY.format(init=init),
    }


def dynamics_score_inputs(wildcards):
    """What scoring a dynamics model reads: its weights, its initial model's problem set
    and, for a checkpoint, its own answers."""
    inputs = {
        "model": model_dir(wildcards.model),
        **dynamics_problem_files(wildcards.model),
    }
    if wildcards.model not in DYNAMICS_INITS:
        inputs["generations"] = GENERATIONS.format(
            model=wildcards.model, dataset=DYNAMICS_EVAL
        )
    return inputs


def dynamics_logs():
    """`{run: where its logged series are}` for the runs that have them."""
    return {
        name: source
        for name, run in RUNS.items()
        if (source := runs.log_source(run)) is not None
    }


def dynamics_inputs():
    """What the dynamics summary reads: logs, accuracies and every score file."""
    if not CHECKPOINTS:
        return {}
    return {
        "logs": list(dynamics_logs().values()),
        "accuracy": [
            GENERATION_PROVENANCE.format(model=m, dataset=DYNAMICS_EVAL)
            for m in dynamics_models()
        ],
        "scores": [DYNAMICS_EAP_FILE.format(**s) for s in dynamics_scored()],
    }


def dynamics_report_inputs():
    """The dynamics outputs the report shows (none when dynamics is off)."""
    return DYNAMICS_OUTPUTS if CHECKPOINTS else {}


def figure_files():
    files = [f for pair in PAIRS for f in LAYOUT.pair_figures(pair, DATASETS).values()]
    return files + list(TRAINING_FIGURES.values())


def named_inputs(files):
    """A rule's named inputs from `{kind: {key: path}}` (`Layout.report_files`,
    `figure_files`): kind -> paths."""
    return {kind: list(paths.values()) for kind, paths in files.items()}


def input_keys(files):
    """The keys of `named_inputs(files)` in the same order, handed to the script as a param
    (`circuitry.results.keyed_files` pairs them again)."""
    return {kind: list(paths) for kind, paths in files.items()}
