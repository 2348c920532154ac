"""Provenance of a run: what produced the report, and the command that produces it again.

The report shows the config hash, the versions of the packages that did the work, the
git commit of the project checkout (and whether it had uncommitted changes), the run
date and the exact `snakemake` command line. Planning uses `model_fingerprint` (a local
model's files) and `code_hash` (a rule's library code) so that Snakemake reruns a job
whose weights or code changed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from circuitry.config import config_hash

PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "datasets",
    "math-verify",
    "snakemake",
    "numpy",
    "scipy",
    "pandas",
    "seaborn",
    "circuitry",
)
GIT_TIMEOUT_S = 10
# An import statement at any indentation: `import m` or `from m import a, (b, c)`.
IMPORT_STATEMENT = re.compile(
    r"^[ \t]*(?:import[ \t]+(?P<plain>[\w.]+)|from[ \t]+(?P<module>[\w.]+)[ \t]+import[ \t]+"
    r"(?P<names>\([^)]*\)|[^\n#]+))",
    re.M,
)
# What model_fingerprint reads of each file: its head, and blocks spread over the rest.
FINGERPRINT_HEAD = 1 << 16
FINGERPRINT_BLOCK = 1 << 12
FINGERPRINT_BLOCKS = 8


def model_fingerprint(path: str | os.PathLike) -> str:
    """A hash of each file under a local model's directory: its name, size and
    modification time, and a sample of its bytes (`sampled_bytes`). Cheap enough to plan
    with, and new whenever a file is replaced, even by one of the same size and mtime
    (`cp -p`, `rsync -t` of another checkpoint of the same architecture)."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = file.stat()
        entry = [str(file.relative_to(root)), stat.st_size, stat.st_mtime_ns]
        digest.update(json.dumps(entry).encode())
        digest.update(sampled_bytes(file, stat.st_size))
    return digest.hexdigest()[:16]


def sampled_bytes(file: Path, size: int) -> bytes:
    """The file's first FINGERPRINT_HEAD bytes (a safetensors file's header: its tensors'
    names, dtypes, shapes and offsets) and FINGERPRINT_BLOCKS blocks spread evenly over
    the rest: about 100 KiB of any file, yet different for any two trainings' weights."""
    with open(file, "rb") as f:
        sample = [f.read(FINGERPRINT_HEAD)]
        rest = size - FINGERPRINT_HEAD - FINGERPRINT_BLOCK
        for k in range(FINGERPRINT_BLOCKS if rest > 0 else 0):
            f.seek(FINGERPRINT_HEAD + rest * k // (FINGERPRINT_BLOCKS - 1))
            sample.append(f.read(FINGERPRINT_BLOCK))
    return b"".join(sample)


def code_hash(script: str | os.PathLike, package: str | os.PathLike) -> str:
    """A hash of a rule script and of every module of `package` (the circuitry package
    directory) it imports, directly or through other modules: the rule's `code` param.
    Snakemake's own code trigger covers the script only, so without it a job whose
    library code changed would count as up to date."""
    digest = hashlib.sha256()
    for path in (Path(script), *sorted(imported_closure(Path(script), Path(package)))):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def imported_closure(source: Path, package: Path) -> set[Path]:
    """The files of every `package` module that `source` imports, transitively (imports
    inside functions included)."""
    found: set[Path] = set()
    todo = [source]
    while todo:
        for path in _imported_files(todo.pop(), package):
            if path not in found:
                found.add(path)
                todo.append(path)
    return found


@functools.cache
def _imported_files(source: Path, package: Path) -> tuple[Path, ...]:
    """The files of the `package` modules one file imports (`from p import m` counts m
    where m is a module). Read by pattern rather than parsed: planning stays fast."""
    names = []
    for statement in IMPORT_STATEMENT.finditer(source.read_text(encoding="utf-8")):
        plain, module, imported = statement.group("plain", "module", "names")
        if plain:
            names.append(plain)
            continue
        members = imported.strip("()").replace("\n", " ").split(",")
        names += [module, *(f"{module}.{m.split(' as ')[0].strip()}" for m in members)]
    files = (_module_file(name, package) for name in names)
    return tuple(sorted({f for f in files if f is not None}))


def _module_file(name: str, package: Path) -> Path | None:
    """The file of module `name` when it belongs to `package`, else None."""
    head, *rest = name.split(".")
    if head != package.name:
        return None
    stem = package.joinpath(*rest)
    for path in (stem.with_suffix(".py"), stem / "__init__.py"):
        if path.is_file():
            return path
    return None


@dataclass(frozen=True)
class GitState:
    """The checkout the workflow ran from: its commit, and whether tracked files differed."""

    commit: str | None
    dirty: bool | None


@dataclass(frozen=True)
class Provenance:
    """Everything the report's provenance section shows."""

    config_hash: str
    packages: dict[str, str | None]
    git: GitState
    run_date: str
    command: str
    python: str = field(default_factory=platform.python_version)
    platform: str = field(default_factory=platform.platform)

    def as_dict(self) -> dict:
        return asdict(self)


def package_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package; None for one that is not installed."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(project_dir: Path, *args: str) -> str | None:
    """Output of a git command in `project_dir`; None if git is missing or the command fails."""
    try:
        result = subprocess.run(
            ["git", "-C", str(project_dir), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_state(project_dir: str | os.PathLike) -> GitState:
    """Commit and dirtiness of the project checkout; `(None, None)` if it is not a git repo.

    Only a repository whose top level *is* `project_dir` counts: a project copied into
    some other repository must not report that repository's commit.
    """
    project = Path(project_dir).resolve()
    top = _git(project, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != project:
        return GitState(None, None)
    commit = _git(project, "rev-parse", "HEAD")
    if commit is None:  # a repository without any commit yet
        return GitState(None, None)
    status = _git(project, "status", "--porcelain", "--untracked-files=no")
    return GitState(commit, None if status is None else bool(status))


def _relative_to(path: str | os.PathLike, project_dir: Path) -> str:
    """`path` relative to the project when it lies inside it (portable), else as given."""
    resolved = Path(path).resolve()
    if resolved.is_relative_to(project_dir):
        return str(resolved.relative_to(project_dir))
    return str(path)


def reproduce_command(
    *,
    cores: int | str | None,
    configfiles: Sequence[str | os.PathLike] = (),
    config_args: Sequence[str] = (),
    project_dir: str | os.PathLike = ".",
) -> str:
    """The `snakemake` command line of a run, from the arguments the run was started with.

    `configfiles` are the `--configfile` arguments (none: the embedded toy default),
    `config_args` the `--config key=value` arguments; both are shell-quoted.
    """
    project = Path(project_dir).resolve()
    args = ["snakemake", "--cores", str(cores if cores is not None else "all")]
    if configfiles:
        args += ["--configfile", *(_relative_to(f, project) for f in configfiles)]
    if config_args:
        args += ["--config", *config_args]
    return shlex.join(args)


def collect_provenance(
    config: Mapping,
    *,
    command: str,
    project_dir: str | os.PathLike,
    now: datetime | None = None,
) -> Provenance:
    """The provenance of a run of `config` from the checkout at `project_dir`."""
    moment = now or datetime.now(UTC)
    return Provenance(
        config_hash=config_hash(dict(config)),
        packages=package_versions(),
        git=git_state(project_dir),
        run_date=moment.isoformat(timespec="seconds"),
        command=command,
    )
