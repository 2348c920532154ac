"""The dataset stage: load a benchmark from its source and normalise it to one schema.

Every source (hub, url, local jsonl, toy) yields raw rows; a per-benchmark normaliser
turns each raw row into `question`, `answer`, `solution`, `meta`; rows without a
question or an answer are dropped and counted. `idx` is the row's position in the
source, so it stays stable when filters or limits change.
"""

from __future__ import annotations

import logging
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

from circuitry.data import toy
from circuitry.data.answers import gsm8k_final_answer, last_boxed, strip_math_delimiters
from circuitry.io import atomic_path, read_jsonl, sha256_file

log = logging.getLogger(__name__)


class DatasetError(RuntimeError):
    """A dataset could not be loaded or came out empty."""


def _text(value) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def normalise_gsm8k(raw: dict) -> dict:
    solution = _text(raw.get("answer"))
    return {
        "question": _text(raw.get("question")),
        "answer": gsm8k_final_answer(solution) if solution else None,
        "solution": solution,
        "meta": {},
    }


def normalise_math(raw: dict) -> dict:
    """Hendrycks MATH (and MATH-500): the answer is the solution's last box."""
    solution = _text(raw.get("solution"))
    answer = last_boxed(solution) if solution else None
    meta_keys = ("level", "type", "subject", "unique_id")
    return {
        "question": _text(raw.get("problem")),
        "answer": _text(answer),
        "solution": solution,
        "meta": {k: raw[k] for k in meta_keys if k in raw},
    }


def normalise_college_math(raw: dict) -> dict:
    """College Math: the answer is given as LaTeX, often one `$...$` span."""
    answer = _text(raw.get("answer"))
    meta_keys = ("data_source", "question_number", "data_topic")
    return {
        "question": _text(raw.get("question")),
        "answer": strip_math_delimiters(answer) if answer else None,
        "solution": None,
        "meta": {k: raw[k] for k in meta_keys if k in raw},
    }


def normalise_normalised(raw: dict) -> dict:
    """Rows already in the common schema (local files, toy data)."""
    return {
        "question": _text(raw.get("question")),
        "answer": _text(raw.get("answer")),
        "solution": _text(raw.get("solution")),
        "meta": _meta(raw.get("meta")),
    }


def _meta(value) -> dict:
    """A row's `meta`: an object, or nothing."""
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"meta is {value!r}, not an object")
    return dict(value or {})


NORMALISERS: dict[str, Callable[[dict], dict]] = {
    "gsm8k": normalise_gsm8k,
    "math": normalise_math,
    "college_math": normalise_college_math,
    "normalised": normalise_normalised,
}


def normalise_rows(raw_rows: Iterable[dict], fmt: str) -> tuple[list[dict], dict]:
    """Normalised rows and the counts of raw rows dropped per reason."""
    normalise = NORMALISERS[fmt]
    rows: list[dict] = []
    dropped: Counter[str] = Counter()
    n_raw = 0
    for position, raw in enumerate(raw_rows):
        n_raw += 1
        try:
            row = normalise(raw)
        except ValueError as e:
            raise DatasetError(f"idx {position} (row {position + 1} read): {e}") from None
        if row["question"] is None:
            dropped["no question"] += 1
        elif row["answer"] is None:
            dropped["no answer"] += 1
        else:
            rows.append({"idx": position, **row})
    return rows, {"n_raw": n_raw, "dropped": dict(sorted(dropped.items())), "n_kept": len(rows)}


def _hub_configs(spec: dict) -> list[str | None]:
    configs = spec.get("hub_config")
    if configs is None or isinstance(configs, str):
        return [configs]
    return list(configs)


def load_hub_split(hub_id: str, config: str | None, split: str, revision: str):
    """One split of a hub dataset (the only call that needs the network)."""
    import datasets

    return datasets.load_dataset(hub_id, config, split=split, revision=revision)


def iter_hub_rows(spec: dict) -> Iterator[dict]:
    for config in _hub_configs(spec):
        log.info("loading %s (config %s, split %s)", spec["hub_id"], config, spec["split"])
        yield from load_hub_split(spec["hub_id"], config, spec["split"], spec["revision"])


def download_verified(url: str, sha256: str, dest: str | Path, timeout: float = 120) -> Path:
    """Download `url` to `dest` unless a copy with the right checksum is already there.

    A download whose sha256 differs from the pinned one is deleted and fails the job.
    """
    dest = Path(dest)
    if dest.exists() and sha256_file(dest) == sha256:
        log.info("using cached %s", dest)
        return dest
    log.info("downloading %s", url)
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
                while block := response.read(1 << 20):
                    f.write(block)
        except OSError as e:
            raise DatasetError(f"could not download {url}: {e}") from e
        actual = sha256_file(tmp)
        if actual != sha256:
            raise DatasetError(
                f"sha256 mismatch for {url}: expected {sha256}, got {actual}; "
                "the download was deleted"
            )
    return dest


def iter_raw_rows(spec: dict, download_dir: str | Path) -> Iterator[dict]:
    """Raw rows of a dataset from its configured source."""
    source = spec["source"]
    if source == "hub":
        yield from iter_hub_rows(spec)
    elif source == "url":
        name = Path(urllib.parse.urlparse(spec["url"]).path).name
        yield from read_jsonl(
            download_verified(spec["url"], spec["sha256"], Path(download_dir) / name)
        )
    elif source == "jsonl":
        if not Path(spec["path"]).is_file():
            raise DatasetError(f"dataset file {spec['path']} does not exist")
        yield from read_jsonl(spec["path"])
    elif source == "toy":
        yield from toy.dataset_rows(spec["toy"])
    else:
        raise DatasetError(f"unknown dataset source {source!r}")


_PROVENANCE_KEYS = {
    "hub": ("hub_id", "hub_config", "split", "revision"),
    "url": ("url", "sha256"),
    "jsonl": ("path",),
    "toy": ("toy",),
}


def source_provenance(spec: dict) -> dict:
    """The fields of a dataset spec that say where its rows came from."""
    keys = ("source", "format", *_PROVENANCE_KEYS[spec["source"]], "limit")
    return {k: spec[k] for k in keys if spec.get(k) is not None}


def build_dataset(name: str, spec: dict, download_dir: str | Path) -> tuple[list[dict], dict]:
    """Normalised rows of dataset `name` and a summary of what was read and dropped."""
    raw = iter_raw_rows(spec, download_dir)
    if spec.get("limit"):
        raw = islice(raw, spec["limit"])
    try:
        rows, counts = normalise_rows(raw, spec["format"])
    except DatasetError as e:
        raise DatasetError(f"dataset {name}: {e}") from None
    if not rows:
        raise DatasetError(
            f"dataset {name}: no usable rows ({counts['n_raw']} read, dropped {counts['dropped']})"
        )
    summary = {"dataset": name, "provenance": source_provenance(spec), **counts}
    return rows, summary
