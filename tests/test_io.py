"""Atomic writes: nothing half-written, and outputs readable like any other file; JSON
lines that cannot be read fail naming the file and line."""

from __future__ import annotations

import os
import re
import stat

import pytest

from circuitry.io import atomic_dir, atomic_path, read_jsonl, write_jsonl


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_directory_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "model") as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_jsonl(tmp_path / "rows.jsonl", [{"idx": 1}])
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "config.json").write_text("{}")
            (tmp / "shards").mkdir()
            # writers such as safetensors make their files private
            fd = os.open(tmp / "shards" / "model.safetensors", os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
    finally:
        os.umask(old)
    assert mode(tmp_path / "rows.jsonl") == 0o644
    assert mode(tmp_path / "model") == mode(tmp_path / "model" / "shards") == 0o755
    assert mode(tmp_path / "model" / "config.json") == 0o644
    assert mode(tmp_path / "model" / "shards" / "model.safetensors") == 0o644
    assert read_jsonl(tmp_path / "rows.jsonl") == [{"idx": 1}]


def test_a_malformed_line_is_named(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"idx": 1}\n{"idx": \n')
    with pytest.raises(ValueError, match="rows.jsonl:2: not valid JSON"):
        read_jsonl(path)


@pytest.mark.parametrize(
    ("line", "kind"),
    [("[1, 2]", "an array"), ("null", "null"), ("3", "a number"), ('"x"', "a string")],
)
def test_a_row_that_is_not_an_object_is_named(tmp_path, line, kind):
    path = tmp_path / "rows.jsonl"
    path.write_text(f'{{"idx": 1}}\n\n{line}\n')
    with pytest.raises(
        ValueError, match=re.escape(f"rows.jsonl:3: a row must be a JSON object, got {kind}")
    ):
        read_jsonl(path)


def test_a_line_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes('{"q": "é"}\n{"q": "é'.encode() + b'\xff"}\n')
    with pytest.raises(
        ValueError, match=re.escape("rows.jsonl:2: not valid UTF-8 (byte 0xff at column 9)")
    ):
        read_jsonl(path)
