"""EAP's memory model (`circuitry.attribution.memory`) against measured peaks, and what the
scoring does with it: batches within a budget, a window that only fits with its layers
checkpointed scored that way (with the same scores), and a sample that never fits
refused before any is scored."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from circuitry.attribution.eap import (
    _length_sorted_batches,
    check_fits,
    role_memory_budget,
    score_windows,
)
from circuitry.attribution.memory import (
    GIB,
    ModelShape,
    batch_peak_bytes,
    eap_peak_bytes,
    memory_budget,
    model_shape,
    planned_job_device_mb,
    sample_peak_bytes,
)
from circuitry.attribution.samples import Sample

pytestmark = pytest.mark.usefixtures("one_torch_thread")
BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "eap_memory.py"
LOSSES = ("ce", "ce_unit", "target_unit")


def load_benchmark():
    spec = importlib.util.spec_from_file_location("eap_memory", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_llama(dtype=torch.float64) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=50, max_position_embeddings=64, pad_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(config).to(dtype).eval()


def samples_of(lengths, window=4) -> list[Sample]:
    rng = np.random.default_rng(0)
    return [
        Sample(
            rng.integers(1, 50, n - window).tolist(),
            rng.integers(1, 50, window).tolist(),
            window,
            sample_id=f"p{i}",
        )
        for i, n in enumerate(lengths)
    ]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
@pytest.mark.parametrize("case, dtype, losses", load_benchmark().CASES)
def test_predicted_peak_is_within_15_percent_of_the_measured_one(
    case, dtype, losses, checkpointing
):
    """Held-out shapes (none calibrated the model), each in a fresh process."""
    row = load_benchmark().measure(case, dtype, losses, "cpu", checkpointing)
    assert row["predicted"] == pytest.approx(row["measured"], rel=0.15), row


def test_parameters_count_the_llama_weights():
    model = tiny_llama()
    assert model_shape(model).parameters == sum(p.numel() for p in model.parameters())
    assert model_shape(model).weights_bytes == 8 * model_shape(model).parameters


def test_gpt2_config_names_are_read():
    config = {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_inner": None}
    shape = ModelShape.from_config(config, "float32")
    assert (shape.layers, shape.hidden, shape.intermediate, shape.kv_heads) == (12, 768, 3072, 12)


def test_batches_grow_only_within_the_budget():
    model = tiny_llama()
    shape = model_shape(model)
    samples = samples_of([20] * 6)
    one = sample_peak_bytes(shape, samples[0], len(LOSSES))
    budget = int(2.5 * one)
    batches = list(_length_sorted_batches(samples, 8, shape, budget, LOSSES))
    assert [len(b) for b in batches] == [2, 2, 2]
    assert all(batch_peak_bytes(shape, [samples[i] for i in b], 3) <= budget for b in batches)
    assert [len(b) for b in _length_sorted_batches(samples, 8, shape, None, LOSSES)] == [6]


def test_a_window_that_fits_only_checkpointed_is_scored_so_with_the_same_scores():
    model = tiny_llama()
    shape = model_shape(model)
    samples = samples_of([12, 40, 16])
    longest = samples[1]
    plain = sample_peak_bytes(shape, longest, len(LOSSES))
    checkpointed = sample_peak_bytes(shape, longest, len(LOSSES), checkpointing=True)
    assert checkpointed < plain
    budget = (plain + checkpointed) // 2
    reference = score_windows(model, samples, LOSSES, batch_size=4, dtype=np.float64)
    budgeted = score_windows(
        model, samples, LOSSES, batch_size=4, memory_budget=budget, dtype=np.float64
    )
    for loss in LOSSES:
        np.testing.assert_allclose(budgeted[loss].scores, reference[loss].scores, rtol=1e-10)
        assert np.abs(reference[loss].scores).max() > 0


def test_a_sample_that_never_fits_fails_before_scoring_and_names_itself():
    model = tiny_llama()
    shape = model_shape(model)
    samples = samples_of([12, 40, 16])
    need = sample_peak_bytes(shape, samples[1], len(LOSSES), checkpointing=True)
    with pytest.raises(MemoryError) as failure:
        check_fits(shape, samples, len(LOSSES), need - 1)
    message = str(failure.value)
    assert "sample 'p1' (#1) (40 tokens, a window of 4)" in message
    assert f"needs {need / GIB:.1f} GiB" in message and "1 of 3 samples do not fit" in message
    check_fits(shape, samples, len(LOSSES), need)


def test_the_budget_comes_from_the_setting_or_the_gpu():
    shape = model_shape(tiny_llama(torch.float32))
    assert memory_budget(shape, None, None) is None
    assert memory_budget(shape, None, 2.0) == memory_budget(shape, 2 * GIB, None)
    assert memory_budget(shape, 80 * GIB, None) < 80 * GIB - shape.weights_bytes


def pair_files(n_rows: int, prompt: int, answer: int):
    rows = [
        {
            "idx": i,
            **{
                role: {"prompt_token_ids": [1] * prompt, "completion_token_ids": [2] * answer}
                for role in ("base", "tuned")
            },
        }
        for i in range(n_rows)
    ]
    summary = {"reference_length_fraction": str(answer), "settings": {"mode": "exact"}}
    return {"d": rows}, {"d": summary}


def test_the_planned_gpu_memory_is_the_longest_window_beside_the_weights(tmp_path):
    """What the eap_score and faithfulness jobs ask for (resource gpu_mem_mb): from the
    model's config.json and the pair files, before any weights exist."""
    config = {
        "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 11008,
        "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    spec = {"path": str(tmp_path), "dtype": "bfloat16"}
    rows, summaries = pair_files(3, prompt=200, answer=8000)
    conditions = [("d", "0.1", "own"), ("d", "0.5", "own"), ("d", "0.5", "crossed")]
    planned = planned_job_device_mb({"base": spec}, rows, summaries, conditions, 3)
    shape = ModelShape.from_config(config, "bfloat16")
    longest = eap_peak_bytes(shape, 200 + 4000, 4000, losses=3)
    assert planned == math.ceil((longest + GIB + shape.weights_bytes) / 0.92 / 1e6)
    assert shape.weights_bytes / 1e6 < planned < 80_000  # 7B at 4k tokens: under 80 GB
    assert planned_job_device_mb({}, rows, summaries, conditions, 3) == 0


def test_an_eap_job_refuses_a_sample_from_the_config_before_any_weights_load(tmp_path):
    """`role_memory_budget`, which rule eap_score calls for both roles first: only a
    config.json in the model folder, no weights; no budget on CPU without eap.memory_gib."""
    config = {
        "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 11008,
        "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    spec = {"path": str(tmp_path), "gpu": False, "dtype": "bfloat16"}
    rows, summaries = pair_files(3, prompt=200, answer=8000)
    files = {("base", "d", "0.5", "own", "ce"): "unused.npz"}
    assert role_memory_budget(spec, "base", rows, summaries, files, LOSSES) is None
    with pytest.raises(MemoryError, match=r"sample 0 \(#0\) \(4200 tokens, a window of 4000\)"):
        role_memory_budget(spec, "base", rows, summaries, files, LOSSES, memory_gib=24)
    assert role_memory_budget(spec, "base", rows, summaries, files, LOSSES, memory_gib=200) > 0
