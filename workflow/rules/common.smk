# Helpers shared by the rules: the circuitry package, config checks, target lists.

import os
import re
import sys
from pathlib import Path

# The rules' scripts import `circuitry` from this checkout, also inside conda
# environments (--sdm conda) where the package is not pip-installed.
CIRCUITRY_LIB = str(Path(workflow.basedir) / "workflow" / "lib")
sys.path.insert(0, CIRCUITRY_LIB)
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        p for p in (CIRCUITRY_LIB, os.environ.get("PYTHONPATH")) if p
    )
)

from snakemake.utils import validate

from circuitry.config import ConfigError, check_config, describe_schema_error

# Schema first (types, ranges, unknown keys; fills defaults), then cross-references.
try:
    validate(config, "../schemas/config.schema.yaml")
    check_config(config)
except (WorkflowError, ConfigError) as e:
    raise WorkflowError(f"invalid config: {describe_schema_error(e)}") from None


DATASETS = list(config["datasets"])


wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS)),


def local_dataset_file(wildcards):
    """A local source file is an input, so editing it reruns the download."""
    spec = config["datasets"][wildcards.dataset]
    return [spec["path"]] if spec["source"] == "jsonl" else []


def dataset_files():
    return expand("resources/datasets/{dataset}.jsonl", dataset=DATASETS)


def all_targets():
    """Every final output of the stages that exist."""
    return dataset_files()
