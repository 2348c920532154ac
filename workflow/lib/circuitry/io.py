"""File helpers shared by every stage: atomic writes, JSON lines, checksums."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it into place only on success.

    A killed or failing writer therefore never leaves a half-written output behind.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes files private (0600)
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


def share_as_umask_allows(directory: Path) -> None:
    """Give `directory` and everything in it the permissions the umask allows: mkdtemp
    makes directories private (0700), and writers such as safetensors' private files
    (0600), which colleagues on a shared cluster could not read."""
    mask = _umask()
    os.chmod(directory, 0o777 & ~mask)
    for path in directory.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to `path`; it becomes `path` only on success."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
        share_as_umask_allows(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_csv(path: str | os.PathLike, table) -> None:
    """A pandas DataFrame as CSV without its index."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def dumps_row(row: dict) -> str:
    """One JSON line; the same row always serialises to the same bytes."""
    return json.dumps(row, ensure_ascii=False, sort_keys=True)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(dumps_row(row) + "\n")
            n += 1
    return n


def write_npz(path: str | os.PathLike, **arrays) -> None:
    """An uncompressed .npz of plain arrays (no pickles), written atomically."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


_JSON_KINDS = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}


def _decode_line(line: bytes, where: str) -> str:
    """A line as UTF-8 text; a bad byte fails naming where it is, which a decoder reading
    the whole file cannot."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        column = len(line[: e.start].decode("utf-8")) + 1
        raise ValueError(
            f"{where}: not valid UTF-8 (byte 0x{line[e.start]:02x} at column {column})"
        ) from None


def _parse_row(text: str, where: str) -> dict:
    """A line's JSON object: every caller reads rows by field, so anything else fails here,
    naming its line, rather than as an AttributeError wherever the row is first used."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a row must be a JSON object, got {_JSON_KINDS[type(row)]}")
    return row


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All rows of a JSON-lines file, each a JSON object; a line that is not valid UTF-8,
    not valid JSON or not an object fails naming the file and line."""
    rows = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            where = f"{path}:{lineno}"
            text = _decode_line(line, where)
            if text.strip():
                rows.append(_parse_row(text, where))
    return rows


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
