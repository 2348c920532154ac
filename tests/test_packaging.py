"""Install metadata: the conda environment mirrors pyproject's dependencies."""

from __future__ import annotations

import tomllib

import yaml

from conftest import ROOT


def test_conda_env_pins_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for env_file in sorted((ROOT / "envs").glob("*.yaml")):
        env = yaml.safe_load(env_file.read_text())
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        assert sorted(pip) == sorted(project["dependencies"]), env_file.name


def test_package_imports_from_the_workflow_lib():
    import circuitry

    assert (ROOT / "workflow" / "lib" / "circuitry" / "__init__.py").samefile(circuitry.__file__)
