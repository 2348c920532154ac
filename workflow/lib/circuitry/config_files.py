"""What Snakemake reads into `config` before the schema sees it, read as the user meant it.

Two gaps of Snakemake's own reading:

- a key given twice in one YAML mapping silently keeps the second value (a second
  `filter:` block replaces the first); `refuse_duplicate_keys` names the key and both
  lines instead. A merge key (`<<: *anchor`) followed by a key it also holds is YAML's
  way to override and stays allowed;
- `--config 'filter={num_samples: 50}'` reads the nested values with YAML's BaseLoader,
  which leaves every one a string; `type_overrides` reads such a string as YAML wherever
  the schema wants another type, so the Snakemake idiom works.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import jsonschema
import yaml

MERGE_KEY = "tag:yaml.org,2002:merge"


class ConfigFileError(ValueError):
    """A config file says something twice; the message names the file, key and lines."""


def read_yaml(path: str | Path):
    """A YAML file (the config's schema) as data."""
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def refuse_duplicate_keys(path: str | Path) -> None:
    """Raise ConfigFileError naming `file:line`, the key and both lines of the first key
    given twice in one mapping of the YAML (or JSON) config file."""
    with open(path, encoding="utf-8") as f:
        root = yaml.compose(f, Loader=yaml.SafeLoader)
    for key, first, second in duplicate_keys(root, ()):
        raise ConfigFileError(
            f"{path}:{second}: {key} is given twice (lines {first} and {second}); YAML would "
            "silently keep the second, so remove or merge one"
        )


def duplicate_keys(node, path: tuple, seen: set | None = None) -> Iterator[tuple[str, int, int]]:
    """(dotted key, first line, second line) of every key repeated within one mapping."""
    seen = set() if seen is None else seen
    if node is None or id(node) in seen:  # an alias repeats a node already walked
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from duplicate_keys(item, (*path, i), seen)
    if not isinstance(node, yaml.MappingNode):
        return
    lines: dict[str, int] = {}
    for key_node, value in node.value:
        if key_node.tag == MERGE_KEY:
            continue
        key, line = str(key_node.value), key_node.start_mark.line + 1
        if key in lines:
            yield ".".join(map(str, (*path, key))), lines[key], line
        lines.setdefault(key, line)
        yield from duplicate_keys(value, (*path, key), seen)


def type_overrides(config: dict, overrides: Mapping, schema: dict) -> None:
    """Give the strings that came from `--config` (`overrides`, as Snakemake parsed them)
    the type the schema wants, reading each as YAML; a string the schema accepts, or that
    reads as no type it wants, stays as it is for the schema to name."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    # collected first: the loop sets values of the config the validator walks
    for error in list(type_errors(validator.iter_errors(config))):
        path = list(error.absolute_path)
        if not isinstance(error.instance, str) or not _given(overrides, path):
            continue
        value, wanted = _as_yaml(error.instance), error.validator_value
        if any(
            validator.is_type(value, t) for t in ([wanted] if isinstance(wanted, str) else wanted)
        ):
            _set(config, path, value)


def type_errors(errors) -> Iterator[jsonschema.ValidationError]:
    """Every `type` violation, including those inside allOf / anyOf / oneOf."""
    for error in errors:
        if error.validator == "type":
            yield error
        yield from type_errors(error.context or ())


def _as_yaml(text: str):
    """A scalar as YAML reads it; `1e-3`, which YAML 1.1 leaves a string, as a number."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _given(overrides, path: list) -> bool:
    """Whether `path` leads to a value of the overrides."""
    node = overrides
    for step in path:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return False
    return True


def _set(config, path: list, value) -> None:
    node = config
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
