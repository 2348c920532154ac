"""The weight-space diff of a pair, on known answers: a model against itself, one tensor
changed, a planted low-rank update, a known rotation, a resized vocabulary, mismatched
or missing files, and an independent numpy re-implementation on tiny Llamas."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from circuitry.analysis import weights
from circuitry.analysis.weight_table import kind_of, layer_of, summarise
from circuitry.analysis.weights import diff_models, weight_files
from circuitry.models.sft import toy_model
from circuitry.models.tokenizer import build_char_tokenizer
from conftest import numpy_diff

pytestmark = pytest.mark.usefixtures("one_torch_thread")

UP = "model.layers.2.mlp.up_proj.weight"
SPECTRAL = ("stable_rank", "rank90", "rank99", "principal_angle_deg", "top_sv_change")


def save(directory, tensors: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        {name: t.contiguous().clone() for name, t in tensors.items()},
        directory / "model.safetensors",
    )


def save_sharded(directory, tensors: dict, shards: int = 2) -> None:
    """`tensors` in `shards` files with a `model.safetensors.index.json`, as hub models are."""
    directory.mkdir(parents=True, exist_ok=True)
    names, weight_map = sorted(tensors), {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {name: tensors[name].contiguous().clone() for name in names[i::shards]}
        save_file(part, directory / file)
        weight_map |= dict.fromkeys(part, file)
    index = {"metadata": {}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))


def save_llama(directory, seed: int) -> None:
    """A tiny random Llama saved with `save_pretrained`, as a user's local model is."""
    torch.manual_seed(seed)
    toy_model(build_char_tokenizer()).save_pretrained(directory)


def diff_pair(tmp_path, base: dict, tuned: dict):
    save(tmp_path / "base", base)
    save(tmp_path / "tuned", tuned)
    return diff_models(tmp_path / "base", tmp_path / "tuned")


def only_row(table):
    assert len(table) == 1
    return table.iloc[0]


def test_a_model_against_itself_is_entirely_unchanged(tmp_path):
    save_llama(tmp_path / "llama", seed=0)
    shutil.copytree(tmp_path / "llama", tmp_path / "copy")
    table, notes = diff_models(tmp_path / "llama", tmp_path / "copy")
    assert notes == []
    assert set(table["name"]) == set(load_file(tmp_path / "llama" / "model.safetensors"))
    assert (table[["unchanged_exact", "unchanged_tol"]] == 1).all().all()
    assert (table[["rel_update_norm", "update_norm"]] == 0).all().all()
    matrices = table[table["shape"].map(len) == 2]
    assert len(matrices) > 0 and (matrices[list(SPECTRAL)] == 0).all().all()
    assert table.loc[table["shape"].map(len) == 1, list(SPECTRAL)].isna().all().all()
    summary = summarise(table)
    assert summary["model"] == {
        "numel": table["numel"].sum(),
        "unchanged_exact": 1.0,
        "unchanged_tol": 1.0,
        "rel_update_norm": 0.0,
    }
    assert sorted(summary["layers"]) == [0, 1, 2, 3]


@pytest.mark.parametrize("layout", [save, save_sharded])
def test_a_pair_differing_in_one_tensor_shows_exactly_that_tensor_changed(tmp_path, layout):
    """Also read from a sharded checkpoint (index + shards) on the tuned side."""
    save_llama(tmp_path / "base", seed=0)
    tensors = load_file(tmp_path / "base" / "model.safetensors")
    update = 0.01 * torch.randn(tensors[UP].shape, generator=torch.Generator().manual_seed(1))
    layout(tmp_path / "tuned", tensors | {UP: tensors[UP] + update})
    table, notes = diff_models(tmp_path / "base", tmp_path / "tuned")
    assert notes == []
    changed = table[table["unchanged_exact"] < 1]
    assert list(changed["name"]) == [UP]
    row = changed.iloc[0]
    assert row["unchanged_exact"] == 0 and row["unchanged_tol"] < 0.01  # |noise| <= 1e-5
    expected = (update.norm() / tensors[UP].norm()).item()
    assert row["rel_update_norm"] == pytest.approx(expected, rel=1e-4)
    assert (row["layer"], row["kind"]) == (2, "up")
    summary = summarise(table)
    total = table["numel"].sum()
    assert summary["model"]["unchanged_exact"] == pytest.approx(1 - row["numel"] / total)
    whole = row["update_norm"] / math.sqrt((table["base_norm"] ** 2).sum())
    assert summary["model"]["rel_update_norm"] == pytest.approx(whole)
    assert [layer for layer, s in summary["layers"].items() if s["rel_update_norm"]] == [2]
    assert [kind for kind, s in summary["kinds"].items() if s["rel_update_norm"]] == ["up"]


def test_exact_is_bitwise_in_the_stored_dtype_and_tol_is_within_1e_5_in_float32(tmp_path):
    """float32: +1e-6 and -0.0 vs +0.0 change bits but stay within the tolerance, +1e-4
    does not; bf16: one ulp at 1.0 (2^-7) exceeds it."""
    base32 = torch.tensor([1.0, 1.0, 0.0, 1.0])
    tuned32 = torch.tensor([1.0, 1.0 + 1e-6, -0.0, 1.0 + 1e-4])
    base16 = torch.ones(4, dtype=torch.bfloat16)
    tuned16 = torch.tensor([1.0, 1.0, 1.0, 1.0 + 2**-7], dtype=torch.bfloat16)
    table, _ = diff_pair(tmp_path, {"a": base32, "b": base16}, {"a": tuned32, "b": tuned16})
    table = table.set_index("name")
    assert table.loc["a", ["unchanged_exact", "unchanged_tol"]].tolist() == [0.25, 0.75]
    assert table.loc["b", ["unchanged_exact", "unchanged_tol"]].tolist() == [0.75, 0.75]
    assert table.loc["b", "dtype"] == "bfloat16"


@pytest.mark.parametrize(
    ("shape", "rank", "exact_max", "lowrank_q"),
    [((64, 48), 4, 2048, 128), ((96, 80), 5, 16, 16), ((80, 96), 5, 16, 16)],
    ids=["exact", "lowrank", "lowrank-wide"],
)
def test_a_planted_rank_r_update_reads_rank_r(
    tmp_path, monkeypatch, shape, rank, exact_max, lowrank_q
):
    """dW = A @ B with random A (m x r), B (r x n): rank99 == r and stable rank <= r. Above
    EXACT_SVD_MAX (lowered here) svd_lowrank with q >= r spans dW's range exactly."""
    monkeypatch.setattr(weights, "EXACT_SVD_MAX", exact_max)
    monkeypatch.setattr(weights, "LOWRANK_Q", lowrank_q)
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(shape, generator=generator)
    update = torch.randn(shape[0], rank, generator=generator) @ torch.randn(
        rank, shape[1], generator=generator
    )
    row = only_row(diff_pair(tmp_path, {"w": base}, {"w": base + update})[0])
    assert row["rank99"] == rank
    assert 1 <= row["rank90"] <= rank
    assert 1 <= row["stable_rank"] <= rank + 1e-6


def test_lowrank_reports_more_than_q_as_q_plus_1(tmp_path, monkeypatch):
    """A full-rank update of a matrix above EXACT_SVD_MAX: q = 4 components never hold 90%."""
    monkeypatch.setattr(weights, "EXACT_SVD_MAX", 8)
    monkeypatch.setattr(weights, "LOWRANK_Q", 4)
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(40, 30, generator=generator)
    update = torch.randn(40, 30, generator=generator)
    row = only_row(diff_pair(tmp_path, {"w": base}, {"w": base + update})[0])
    assert (row["rank90"], row["rank99"]) == (5, 5)


def rotated_pair(theta_deg: float, shape: tuple[int, int]):
    """W = U diag(s) V^T of rank r = min(m, n) - 1 with distinct s, and R W, R the rotation
    by theta in the plane of u1 and the unit w = u_(r+1), orthogonal to every column of U."""
    (m, n), generator = shape, torch.Generator().manual_seed(0)
    r = min(m, n) - 1
    q_left, _ = torch.linalg.qr(torch.randn(m, m, generator=generator, dtype=torch.float64))
    q_right, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    u, w = q_left[:, :r], q_left[:, r]
    weight = u @ torch.diag(torch.linspace(20, 1, r, dtype=torch.float64)) @ q_right[:, :r].T
    theta, u1 = math.radians(theta_deg), u[:, 0]
    rotation = (
        torch.eye(m, dtype=torch.float64)
        + (math.cos(theta) - 1) * (torch.outer(u1, u1) + torch.outer(w, w))
        + math.sin(theta) * (torch.outer(w, u1) - torch.outer(u1, w))
    )
    return weight.float(), (rotation @ weight).float()


@pytest.mark.parametrize("shape", [(40, 20), (20, 40)], ids=["tall", "wide"])
@pytest.mark.parametrize("theta", [1.0, 30.0, 90.0])
def test_a_rotation_of_the_top_direction_reads_its_angle(tmp_path, theta, shape):
    """R fixes u2..ur and maps u1 to u1' = cos(theta) u1 + sin(theta) w, so R W = U' S V^T
    is itself an SVD with the same distinct singular values: the top-k (k = TOP_K = 8 <=
    r = 19) left subspaces are span(u1..uk) and span(u1', u2..uk). As w is orthogonal to
    span(U), u1' makes the angle theta with span(u1..uk) and the other principal angles
    are 0: the largest is theta. sigma_max is unchanged, and dW = s1 (u1' - u1) v1^T has
    rank 1."""
    base, tuned = rotated_pair(theta, shape)
    row = only_row(diff_pair(tmp_path, {"w": base}, {"w": tuned})[0])
    assert row["principal_angle_deg"] == pytest.approx(theta, abs=1e-3)
    assert row["top_sv_change"] == pytest.approx(0, abs=1e-5)
    assert (row["rank90"], row["rank99"]) == (1, 1)
    assert row["stable_rank"] == pytest.approx(1, abs=1e-4)


@pytest.mark.parametrize("shape", [(40, 20), (20, 40)], ids=["tall", "wide"])
def test_the_largest_angle_is_read_above_exact_svd_max_too(tmp_path, monkeypatch, shape):
    """svd_lowrank with q = 20 >= rank: the top-k subspaces are found to rounding."""
    monkeypatch.setattr(weights, "EXACT_SVD_MAX", 8)
    base, tuned = rotated_pair(30.0, shape)
    row = only_row(diff_pair(tmp_path, {"w": base}, {"w": tuned})[0])
    assert row["principal_angle_deg"] == pytest.approx(30.0, abs=1e-2)
    assert row["rank99"] == 1


def test_mismatches_are_noted_not_fatal(tmp_path):
    """A resized vocabulary compares its common rows; a tensor on one side, another shape
    change and a dtype change are noted."""
    generator = torch.Generator().manual_seed(0)
    embed, head, norm = (torch.randn(10, 8, generator=generator) for _ in range(3))
    extra_rows = torch.randn(2, 8, generator=generator)
    base = {
        "model.embed_tokens.weight": embed,
        "lm_head.weight": head,
        "model.norm.weight": norm[0],
        "model.layers.0.mlp.up_proj.weight": norm,
        "model.layers.0.mlp.down_proj.weight": norm,
    }
    tuned = base | {
        "model.embed_tokens.weight": torch.cat([embed, extra_rows]),
        "lm_head.weight": torch.cat([head, extra_rows]),
        "model.norm.weight": norm[0].bfloat16(),
        "model.layers.0.mlp.down_proj.weight": norm.T,
        "model.layers.0.mlp.up_proj.bias": norm[0],
    }
    table, notes = diff_pair(tmp_path, base, tuned)
    rows = table.set_index("name")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert f"{name}: resized vocabulary (10 -> 12 rows); compared the 10 common rows" in notes
        assert rows.loc[name, "numel"] == 80 and rows.loc[name, "unchanged_exact"] == 1
    assert "model.layers.0.mlp.up_proj.bias: only in tuned" in notes
    assert (
        "model.layers.0.mlp.down_proj.weight: shapes (10, 8) and (8, 10) differ; skipped" in notes
    )
    assert "model.layers.0.mlp.down_proj.weight" not in rows.index
    assert "model.norm.weight: stored as float32->bfloat16; exact compares values" in notes
    assert rows.loc["model.norm.weight", "dtype"] == "float32->bfloat16"
    assert len(notes) == 5


def test_names_that_do_not_match_raise_one_message_with_five_names_a_side(tmp_path):
    base = {f"a{i}": torch.zeros(2) for i in range(7)} | {"shared": torch.zeros(2)}
    tuned = {f"b{i}": torch.zeros(2) for i in range(7)} | {"shared": torch.zeros(2)}
    with pytest.raises(ValueError) as raised:
        diff_pair(tmp_path, base, tuned)
    message = str(raised.value)
    assert "1 in common of 8 and 8" in message
    assert "only in base: a0, a1, a2, a3, a4, ... (7 in all)" in message
    assert "only in tuned: b0, b1, b2, b3, b4, ... (7 in all)" in message
    assert "a5" not in message and "b5" not in message


def test_missing_and_corrupt_weights_say_which_directory_and_file(tmp_path):
    save_llama(tmp_path / "model", seed=0)
    (tmp_path / "empty").mkdir()
    missing = f"{tmp_path / 'empty'} holds no model.safetensors or model.safetensors.index.json"
    with pytest.raises(ValueError, match=re.escape(missing)):
        diff_models(tmp_path / "model", tmp_path / "empty")
    weights_file = tmp_path / "model" / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:-100])
    with pytest.raises(ValueError) as raised:
        diff_models(tmp_path / "model", tmp_path / "model")
    assert str(raised.value).startswith(f"{weights_file}: corrupt or incomplete weight file (")
    assert str(raised.value).endswith("save or download it again")


def test_a_shard_missing_from_an_index_is_named(tmp_path):
    save_sharded(tmp_path / "model", {"a": torch.zeros(2), "b": torch.ones(2)})
    assert {name: path.name for name, path in weight_files(tmp_path / "model").items()} == {
        "a": "model-00001-of-00002.safetensors",
        "b": "model-00002-of-00002.safetensors",
    }
    (tmp_path / "model" / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ValueError, match="index.json lists missing shards: model-00002-of-00002"):
        diff_models(tmp_path / "model", tmp_path / "model")


@pytest.mark.parametrize(
    ("name", "layer", "kind"),
    [
        ("model.layers.3.self_attn.q_proj.weight", 3, "q"),
        ("model.layers.12.self_attn.k_proj.weight", 12, "k"),
        ("model.layers.0.self_attn.v_proj.bias", 0, "v"),
        ("model.layers.1.self_attn.o_proj.weight", 1, "o"),
        ("model.layers.1.mlp.gate_proj.weight", 1, "gate"),
        ("model.layers.1.mlp.down_proj.weight", 1, "down"),
        ("model.layers.1.post_attention_layernorm.weight", 1, "norm"),
        ("transformer.h.3.ln_1.weight", 3, "norm"),
        ("transformer.h.3.mlp.c_fc.weight", 3, "up"),
        ("transformer.h.3.attn.c_attn.weight", 3, "other"),
        ("model.embed_tokens.weight", None, "embed"),
        ("model.norm.weight", None, "norm"),
        ("lm_head.weight", None, "head"),
    ],
)
def test_layer_and_kind_come_from_the_name(name, layer, kind):
    assert (layer_of(name), kind_of(name)) == (layer, kind)


@pytest.mark.parametrize("tuned", ["other-seed", "one-tensor-perturbed"])
def test_an_independent_numpy_diff_agrees_on_tiny_llamas(tmp_path, tuned):
    """Perturbed: 30% of one tensor's elements moved by noise of scale 1e-5, so the exact
    and the tolerance fractions differ."""
    save_llama(tmp_path / "base", seed=0)
    if tuned == "other-seed":
        save_llama(tmp_path / "tuned", seed=1)
    else:
        tensors = load_file(tmp_path / "base" / "model.safetensors")
        generator = torch.Generator().manual_seed(2)
        moved = torch.rand(tensors[UP].shape, generator=generator) < 0.3
        noise = 1e-5 * torch.randn(tensors[UP].shape, generator=generator)
        save(tmp_path / "tuned", tensors | {UP: tensors[UP] + moved * noise})
    table, notes = diff_models(tmp_path / "base", tmp_path / "tuned")
    expected = numpy_diff(tmp_path / "base", tmp_path / "tuned")
    assert notes == [] and sorted(table["name"]) == sorted(expected)
    for row in table.itertuples():
        exact, tol, rel = expected[row.name]
        assert (row.unchanged_exact, row.unchanged_tol) == (exact, tol)
        assert row.rel_update_norm == pytest.approx(rel, rel=1e-5, abs=1e-12)
    if tuned == "one-tensor-perturbed":
        row = table.set_index("name").loc[UP]
        assert 0.6 < row["unchanged_exact"] < 0.8 < row["unchanged_tol"] < 1


def test_chunks_read_as_the_whole_tensor_and_leave_both_sides_as_they_were(monkeypatch):
    """float32 tensors: `.float()` is no copy there, so nothing may be changed in place."""
    generator = torch.Generator().manual_seed(3)
    base = torch.randn(37, 29, generator=generator)
    tuned = base + 1e-5 * torch.randn(37, 29, generator=generator)
    kept = base.clone(), tuned.clone()
    whole = weights.tensor_diff("w", base, tuned)
    monkeypatch.setattr(weights, "CHUNK", 100)
    chunked = weights.tensor_diff("w", base, tuned)
    assert torch.equal(base, kept[0]) and torch.equal(tuned, kept[1])
    assert chunked["unchanged_tol"] == whole["unchanged_tol"]
    for norm in ("base_norm", "update_norm", "rel_update_norm"):
        assert chunked[norm] == pytest.approx(whole[norm], rel=1e-6)
