"""The package's shape: stages as subpackages, no import cycle, small modules and glue,
each module listed by its package."""

from __future__ import annotations

import ast
import graphlib

import pytest

from conftest import ROOT

PACKAGE = ROOT / "workflow" / "lib" / "circuitry"
MAX_TOP_LEVEL_MODULES = 12
MAX_MODULE_LINES = 500


def module_name(path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path) -> set[str]:
    """Every circuitry module `path` imports, at any depth: module level, inside a
    function, or under TYPE_CHECKING."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [node.module, *(name for name in submodules if name in MODULES)]
        else:
            continue
        found.update(name for name in names if name in MODULES)
    return found


def import_graph() -> dict[str, set[str]]:
    """Each module -> the modules it imports (a package's __init__ is only a docstring)."""
    graph = {name: imported_modules(path) - {name} for name, path in MODULES.items()}
    return {
        name: {m for m in deps if MODULES[m].name != "__init__.py"} for name, deps in graph.items()
    }


def test_no_module_imports_another_that_imports_it_back():
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_paths_take_names_not_a_config():
    assert "circuitry.config" not in import_graph()["circuitry.paths"]


def test_the_stages_are_subpackages_and_little_stays_at_the_top():
    top = [path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__"]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, sorted(top)
    stages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert {"data", "models", "generation", "attribution", "analysis"} <= stages


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_is_short(name):
    assert len(MODULES[name].read_text().splitlines()) < MAX_MODULE_LINES


@pytest.mark.parametrize("package", sorted(path.parent for path in PACKAGE.rglob("__init__.py")))
def test_every_package_lists_its_modules(package):
    listed = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
    members = [p.stem for p in package.glob("*.py") if p.stem != "__init__"]
    members += [p.parent.name for p in package.glob("*/__init__.py")]
    assert [m for m in members if f"`{m}`" not in listed] == []


def test_common_smk_holds_only_what_stages_share():
    """Each rule file holds its own stage's helpers; common.smk only what stages share."""
    common = ROOT / "workflow" / "rules" / "common.smk"
    assert len(common.read_text().splitlines()) < 250
