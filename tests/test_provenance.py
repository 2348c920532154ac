"""What planning knows of a job's code: the closure of library modules a rule script
imports, so a change anywhere in it reruns the job and a change elsewhere does not."""

from __future__ import annotations

from circuitry.provenance import code_hash, imported_closure

MODULES = {
    "circuitry/__init__.py": "",
    "circuitry/io.py": "import json\n",
    "circuitry/stage/__init__.py": "",
    "circuitry/stage/core.py": "from circuitry.io import write\n",
    "circuitry/stage/lazy.py": "def f():\n    import circuitry.io\n",
    "circuitry/stage/user.py": (
        "from circuitry.stage import core\nfrom circuitry.stage.lazy import (\n    f,\n)\n"
    ),
    "circuitry/unused.py": "x = 1\n",
}


def write_package(root):
    for name, text in MODULES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    script = root / "script.py"
    script.write_text("from circuitry.stage.user import g  # noqa\n")
    return script, root / "circuitry"


def test_a_scripts_code_is_every_module_it_imports_directly_or_not(tmp_path):
    script, package = write_package(tmp_path)
    closure = {path.relative_to(tmp_path).as_posix() for path in imported_closure(script, package)}
    assert closure == {
        "circuitry/io.py",
        "circuitry/stage/core.py",
        "circuitry/stage/lazy.py",
        "circuitry/stage/user.py",
        "circuitry/stage/__init__.py",
    }


def test_the_code_hash_moves_with_the_closure_and_only_with_it(tmp_path):
    script, package = write_package(tmp_path)
    before = code_hash(script, package)
    (package / "unused.py").write_text("x = 2\n")
    assert code_hash(script, package) == before
    (package / "io.py").write_text("import json  # changed\n")
    assert code_hash(script, package) != before
