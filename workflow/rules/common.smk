# What every stage shares: the circuitry package, the config's checks, the constants and
# wildcards of the whole study, and the models' directories and resources. A helper only
# one stage uses lives at the top of that stage's rule file.

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

from circuitry.models import runs
from circuitry.provenance import code_hash, model_fingerprint, reproduce_command
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
    LAYER_INTENSITY,
    METRICS_FILE,
    PAIR_SUMMARY,
    PAIR_TESTS,
    PAIRS_FILE,
    PAPER_CONDITION,
    REBUILT_CHECK,
    REBUILT_MODEL_DIR,
    REPORT,
    RUN_DIR,
    SURVIVAL_CHANGES,
    SURVIVAL_TESTS,
    TESTS,
    TRAINED_MODEL_DIR,
    TRAINING_LOG,
    VERDICTS,
    WEIGHT_DIFF_SUMMARY,
    WEIGHT_DIFF_TABLE,
    WEIGHT_FIGURES,
    WEIGHT_JOIN,
    Layout,
)
from circuitry.config import (
    all_datasets,
    anchor_shipped,
    calibration_alpha,
    calibration_scope,
    enabled_pairs,
    check_scope,
    imported_file,
    model_spec,
    models_in_use,
    recipe_of,
    report_scope,
    shipped_models,
    trained_in_use,
    trained_models,
)
from circuitry.config_checks import (
    ConfigError,
    check_config,
    describe_schema_error,
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
DATASETS = list(config["datasets"])
MODELS = models_in_use(config)
PAIRS = enabled_pairs(config)
TRAINED = trained_models(config)
RUNS = {run["name"]: run for run in runs.followed_runs(config)}
DYNAMICS_INITS = runs.inits(config)


def code_of(script):
    """A rule's `code` param: a hash of its script and of every circuitry module the script
    imports (provenance.code_hash), so a job reruns when its library code changes."""
    return code_hash(
        WORKFLOW_DIR / "scripts" / script, WORKFLOW_DIR / "lib" / "circuitry"
    )


def one_of(names):
    """A wildcard pattern matching exactly these names."""
    return "|".join(map(re.escape, names)) or "(?!)"


ALPHAS = [str(alpha) for alpha in config["eap"]["alphas"]]
EAP_LOSSES = config["eap"]["losses"]
EAP_TEXTS = config["eap"]["texts"]
CALIBRATION = config["calibration"]


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


def template_of(model):
    return config["templates"][MODEL_SPECS[model]["template"]]
