"""Shared test helpers: project paths, the real-data fixtures, Snakemake runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file as load_numpy

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def validated(config: dict) -> dict:
    """`config` as the workflow sees it: checked against the schema, its defaults filled."""
    from snakemake.utils import validate

    validate(config, str(SCHEMA))
    return config


def load_config(name: str) -> dict:
    """One of the project's configs (`toy`, `config`), validated."""
    return validated(yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text()))


def schema_defaults(*keys: str) -> dict:
    """The defaults of the schema object at `keys` (e.g. "properties", "filter"): what a
    validated config holds where the user gave nothing."""
    node = yaml.safe_load(SCHEMA.read_text())
    for key in keys:
        node = node[key]
    return {
        name: field["default"] for name, field in node["properties"].items() if "default" in field
    }


def filter_settings(**changes):
    """The config's `filter` settings: the schema's defaults, with `changes`."""
    from circuitry.generation.pairing import FilterSettings

    return FilterSettings(**(schema_defaults("properties", "filter") | changes))


def model_entry(**fields) -> dict:
    """A `models` entry as the validated config holds it: the schema's defaults, with
    `fields`."""
    return schema_defaults("$defs", "model") | fields


def prompt_template(format: str, **fields):
    """A `templates` entry as the validated config holds it: the schema's defaults, with
    `fields`."""
    from circuitry.data.prompts import PromptTemplate

    return PromptTemplate.from_config(
        schema_defaults("$defs", "template") | {"format": format} | fields
    )


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run several times faster on one thread on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fixture_path(name: str) -> Path:
    """A file of ../shared/fixtures; the test is skipped where the folder is absent."""
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(
            f"real benchmark fixture {name} not found: ../shared/fixtures exists in CI, "
            "not in a user's clone"
        )
    return path


def run_snakemake(
    *args: str,
    workdir: Path | None = None,
    timeout: float = 600,
    env: dict | None = None,
    snakefile: Path = ROOT / "Snakefile",
) -> subprocess.CompletedProcess:
    """Run Snakemake on this project's Snakefile (in `workdir` if given)."""
    cmd = [*SNAKEMAKE, "--snakefile", str(snakefile)]
    if workdir is not None:
        cmd += ["--directory", str(workdir)]
    return subprocess.run(
        [*cmd, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _fields(line: str) -> dict[str, str]:
    """`a=1, b=x` -> {"a": "1", "b": "x"}."""
    return dict(part.split("=", 1) for part in line.split(", ") if "=" in part)


def dry_run_jobs(*args: str, workdir: Path | None = None, env: dict | None = None) -> list[dict]:
    """Every job of a forced dry run: its rule, wildcards, resources, inputs and outputs."""
    result = run_snakemake(
        "--dry-run", "--forceall", "--cores", "1", *args, workdir=workdir, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", result.stdout):
        head = re.match(r"(?:local)?rule (\w+):\n", block)
        if not head:
            continue
        job = {"rule": head.group(1), "wildcards": {}, "resources": {}, "input": [], "output": []}
        for key in ("wildcards", "resources", "input", "output"):
            line = re.search(rf"^\s+{key}: (.*)$", block, flags=re.M)
            if line:
                text = line.group(1)
                job[key] = _fields(text) if key in ("wildcards", "resources") else text.split(", ")
        jobs.append(job)
    return jobs


def planned_jobs(
    *args: str, workdir: Path | None = None, snakefile: Path = ROOT / "Snakefile"
) -> Counter:
    """Jobs per rule of a forced dry run (every job of the DAG, done or not)."""
    result = run_snakemake(
        "--dry-run",
        "--forceall",
        "--quiet",
        "rules",
        "--cores",
        "1",
        *args,
        workdir=workdir,
        snakefile=snakefile,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout + result.stderr
    jobs = Counter()
    for match in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M):
        if match.group(1) != "total":
            jobs[match.group(1)] = int(match.group(2))
    return jobs


def numpy_diff(base_dir, tuned_dir) -> dict[str, tuple[float, float, float]]:
    """(unchanged_exact, unchanged_tol, rel_update_norm) per tensor, in plain numpy."""
    base = load_numpy(base_dir / "model.safetensors")
    tuned = load_numpy(tuned_dir / "model.safetensors")
    found = {}
    for name, before in base.items():
        after = tuned[name]
        bits = f"u{before.dtype.itemsize}"
        exact = np.mean(before.view(bits) == after.view(bits))
        update = after.astype(np.float32) - before.astype(np.float32)
        tol = np.mean(np.abs(update) <= 1e-5)
        norm = np.linalg.norm(before.astype(np.float64))
        found[name] = (exact, tol, np.linalg.norm(update.astype(np.float64)) / norm)
    return found
