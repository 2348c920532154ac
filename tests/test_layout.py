"""The catalog-standard layout: workflow/Snakefile as the workflow, the usage files the
Snakemake workflow catalog reads, and circuitry used as a Snakemake module."""

from __future__ import annotations

import json
import subprocess
import tomllib
from collections import Counter

import yaml

from conftest import ROOT, SNAKEMAKE, planned_jobs

TOY = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())


def test_the_catalog_finds_the_workflow_and_its_usage_files():
    assert (ROOT / "workflow" / "Snakefile").is_file()
    assert "## Sections" in (ROOT / "config" / "README.md").read_text()
    catalog = yaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert catalog["report"] is True
    assert catalog["software-stack-deployment"]["conda"] is True
    assert catalog["mandatory-flags"]["desc"]
    license_name = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert (ROOT / "LICENSE").read_text().startswith(f"{license_name} License")


def test_the_root_and_the_workflow_snakefile_plan_the_same_jobs(tmp_path):
    from_root = planned_jobs(workdir=tmp_path)
    from_workflow = planned_jobs(workdir=tmp_path, snakefile=ROOT / "workflow" / "Snakefile")
    assert sum(from_root.values()) > 60
    assert from_workflow == from_root


def test_circuitry_runs_as_a_module_of_another_workflow_with_its_config(tmp_path):
    """A workflow elsewhere uses circuitry as a module, with its own config (one dataset,
    no dynamics); the package comes from the installed environment."""
    config = TOY | {"datasets": {"toy-math": TOY["datasets"]["toy-math"]}}
    del config["dynamics"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "Snakefile").write_text(
        'configfile: "config.yaml"\n\n\n'
        "module circuitry:\n"
        f'    snakefile:\n        "{ROOT / "workflow" / "Snakefile"}"\n'
        "    config:\n        config\n\n\n"
        "use rule * from circuitry as circuitry_*\n"
    )
    result = subprocess.run(
        [*SNAKEMAKE, "--dry-run", "--quiet", "rules", "--cores", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = Counter()
    for line in (result.stdout + result.stderr).splitlines():
        name, _, count = line.partition(" ")
        if name.startswith("circuitry_") and count.strip().isdigit():
            jobs[name] = int(count)
    pairs = len(TOY["pairs"])
    assert jobs["circuitry_pair_samples"] == pairs  # one dataset
    assert jobs["circuitry_download_dataset"] == 1 + len(TOY["training_data"])
    assert "circuitry_train_dynamics" not in jobs
    assert jobs["circuitry_report"] == 1


PLANNING_PROBE = """
import atexit, json, sys

def report():
    print("PLANNING " + json.dumps(sorted(sys.modules)), file=sys.stderr)

atexit.register(report)
from snakemake.cli import main
sys.argv = ["snakemake", *sys.argv[1:]]
main()
"""
# What planning may load of the package: config, paths and run discovery, and the GPU
# memory a job plans (attribution.memory from the pair files and config.json); no analysis.
PLANNING_MODULES = {
    "circuitry",
    "circuitry.config",
    "circuitry.config_checks",
    "circuitry.config_files",
    "circuitry.data",
    "circuitry.models",
    "circuitry.io",
    "circuitry.paths",
    "circuitry.data.prompts",
    "circuitry.provenance",
    "circuitry.reproducibility",
    "circuitry.models.runs",
    "circuitry.models.sources",
    "circuitry.generation",
    "circuitry.generation.pairing",
    "circuitry.attribution",
    "circuitry.attribution.memory",
    "circuitry.attribution.samples",
}


def planning_modules(tmp_path, *args: str) -> set[str]:
    """The modules loaded by a dry run of the workflow (Snakemake's own included)."""
    probe = tmp_path / "probe.py"
    probe.write_text(PLANNING_PROBE)
    result = subprocess.run(
        [SNAKEMAKE[0], str(probe), "--dry-run", "--cores", "1", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    line = next(x for x in result.stderr.splitlines() if x.startswith("PLANNING "))
    return set(json.loads(line.removeprefix("PLANNING ")))


def test_planning_imports_no_torch_transformers_scipy_or_analysis_code(tmp_path):
    for args in ((), ("--configfile", str(ROOT / "config" / "config.yaml"))):
        loaded = planning_modules(tmp_path, "--directory", str(tmp_path), *args)
        assert {m for m in loaded if m.startswith("circuitry")} <= PLANNING_MODULES
        assert not {"torch", "transformers", "scipy"} & loaded
