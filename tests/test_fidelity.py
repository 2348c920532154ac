"""Fidelity to the paper's code: the bf16 emulation against torch's bf16, and each measure
on inputs whose answer is known by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from circuitry.analysis.fidelity import (
    DEVIATIONS,
    bf16_read_back,
    bf16_scores,
    configured,
    context_measures,
    effects,
    headline_changes,
    measure_pair,
    numerics_measures,
    selection_measures,
    to_bfloat16,
    window_measures,
)
from circuitry.attribution.scorefile import EdgeScores
from circuitry.generation.pairing import pair_samples
from conftest import filter_settings


def test_bfloat16_rounding_is_torchs():
    rng = np.random.default_rng(0)
    values = rng.standard_t(2, size=20_000).astype(np.float32) * 10.0 ** rng.integers(-8, 8, 20_000)
    ties = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 2**-130], dtype=np.float32)
    for x in (values, ties):
        expected = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
        np.testing.assert_array_equal(to_bfloat16(x), expected)
    np.testing.assert_array_equal(to_bfloat16(ties[:3]), [1.0, 1 + 2**-6, -1.0])  # to even


def test_read_back_is_the_papers_bf16_running_sum():
    """`scores += sample` in bf16, then `all_scores[i] = scores - temp_score`, as in
    `get_scores_test1`, with torch's own bf16 arithmetic."""
    samples = np.random.default_rng(1).standard_t(3, size=(50, 300)).astype(np.float32)
    scores = torch.zeros(300, dtype=torch.bfloat16)
    expected = []
    for sample in samples:
        before = scores.clone()
        scores += torch.from_numpy(sample).to(torch.bfloat16)
        expected.append((scores - before).float().numpy())
    np.testing.assert_array_equal(np.stack(list(bf16_read_back(samples))), np.stack(expected))


def test_a_small_sample_on_a_large_sum_reads_back_as_zero():
    # bf16 keeps 8 significant bits: next to 256 the spacing is 2, so 0.5 vanishes
    read_back = list(bf16_read_back(np.array([[256.0, 1.0], [0.5, 0.5]], dtype=np.float32)))
    np.testing.assert_array_equal(read_back[1], [0.0, 0.5])


def test_samples_are_added_in_the_order_they_were_drawn():
    exact = np.array([[0.5], [256.0]], dtype=np.float32)  # rows by idx
    assert bf16_scores(exact, [0, 1])[0, 0] == 0.5  # drawn first: exact
    assert bf16_scores(exact, [1, 0])[0, 0] == 0.0  # drawn after 256: lost


def test_numerics_measures_by_hand():
    exact = np.array([[256.0, 1.0], [0.5, 0.5]], dtype=np.float32)
    read_back = bf16_scores(exact, [0, 1])
    found = {
        m["measure"]: m["value"] for m in numerics_measures(exact, read_back, [0, 1], 0.1, "base")
    }
    assert found["error_at_sample"] == found["error_last"] == 0.5  # |0.5 - 0| / (0.5 + 0.5)
    assert found["error_mean"] == 0.25 and found["zeroed"] == 0.25  # one of four entries


def test_headline_changes_in_percent_and_nats():
    by_role = {"base": np.array([[1.0, 1.0]]), "tuned": np.array([[3.0, -1.0]])}
    found = {m["measure"]: m["value"] for m in headline_changes(by_role, "exact", 0.1)}
    assert found["intensity_change_pct_exact"] == pytest.approx(100.0)
    assert found["entropy_change_exact"] == pytest.approx(
        -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)) - np.log(2)
    )


def generation(idx: int, length: int, finish: str = "eos") -> dict:
    return {
        "idx": idx,
        "prompt_token_ids": [1, 2, 3],
        "completion_token_ids": [7] * length,
        "correct": True,
        "finish_reason": finish,
    }


def test_selection_under_the_other_mode_and_the_other_eos_setting():
    """T = 29/4 = 7.25, so the lower bound is 3.625 exactly and int(3.625) = 3 in the
    paper's code: idx 3 (m = 3.5) is kept by the paper mode only. Counting the EOS adds one
    token to every answer: T = 8.25, the bound 4.125, and idx 3 (m = 4.5) is kept."""
    lengths = {0: (10, 10), 1: (10, 10), 2: (6, 6), 3: (3, 4)}
    generations = {
        role: [generation(i, pair[r]) for i, pair in lengths.items()]
        for r, role in enumerate(("base", "tuned"))
    }
    _, summary = pair_samples(*generations.values(), filter_settings(), pair="p", dataset="d")
    assert sorted(summary["draw_order"]) == [0, 1, 2]
    found = {
        (m["deviation"], m["measure"]): m["value"]
        for m in selection_measures(generations, summary, pair="p", dataset="d")
    }
    assert found == {
        ("selection", "n_selected"): 3,
        ("selection", "other_n_selected"): 4,
        ("selection", "shared"): 3,
        ("eos", "other_n_selected"): 4,
        ("eos", "shared"): 3,
    }


def test_window_lengths_differ_where_the_float_product_falls_short():
    # 0.29 * 100 is 28.999999999999996 in floats: the paper's code cuts 28 tokens
    summary = {"reference_length_fraction": "100", "settings": {"mode": "exact"}}
    found = window_measures(summary, [0.29, 0.5])
    assert [(m["alpha"], m["measure"], m["value"]) for m in found] == [
        (0.29, "cut_len", 29),
        (0.29, "other_cut_len", 28),
        (0.5, "cut_len", 50),
        (0.5, "other_cut_len", 50),
    ]


def edge_scores(window_len: list[int]) -> EdgeScores:
    n = len(window_len)
    return EdgeScores(
        scores=np.ones((n, 1, 1)),
        idx=np.arange(n),
        edge_mask=np.ones((1, 1), dtype=bool),
        forward_nodes=("input",),
        backward_nodes=("logits",),
        diagnostics={"window_len": np.array(window_len, dtype=float)},
    )


def test_windows_beyond_the_papers_context_count_for_capped_families_only():
    rows = [{"idx": i, "base": {"prompt_len": 2000}} for i in range(2)]
    scores = edge_scores([48, 49])  # read 2048 and 2049 tokens

    def found(model_type):
        return {
            m["measure"]: m["value"]
            for m in context_measures(rows, scores, model_type, 0.1, "base")
        }

    assert found("qwen2") == {"windows": 2, "longest": 2049, "cap": 2048, "beyond_cap": 1}
    llama = found("llama")
    assert np.isnan(llama.pop("cap")) and llama == {"windows": 2, "longest": 2049, "beyond_cap": 0}


def test_configured_values_of_dotted_keys():
    config = {
        "filter": {"mode": "paper", "count_eos": True},
        "models": {"a": {"template": "qwen-boxed"}, "b": {"template": "deepseek-math"}},
    }
    assert configured(config, "filter.mode") == "paper"
    assert configured(config, "filter.count_eos") == "true"
    assert configured(config, "models.*.template") == "deepseek-math, qwen-boxed"


def test_effects_sum_up_the_measures_in_words():
    rows = []
    for pair, shared in (("p", 97), ("q", 100)):
        where = {"pair": pair, "dataset": "d", "alpha": np.nan, "role": ""}
        rows += [
            {**where, "deviation": "selection", "measure": "n_selected", "value": 100},
            {**where, "deviation": "selection", "measure": "shared", "value": shared},
            {**where, "deviation": "eos", "measure": "shared", "value": 100},
        ]
        where = {**where, "alpha": 0.1}
        rows += [
            {**where, "deviation": "window", "measure": "cut_len", "value": 3},
            {**where, "deviation": "window", "measure": "other_cut_len", "value": 3},
        ]
        for role in ("base", "tuned"):
            where = {**where, "role": role, "deviation": "context"}
            rows += [
                {**where, "measure": "windows", "value": 100},
                {**where, "measure": "cap", "value": 2048 if pair == "q" else np.nan},
                {**where, "measure": "beyond_cap", "value": 5 if pair == "q" else 0},
            ]
            where = {**where, "deviation": "numerics"}
            rows += [
                {**where, "measure": "error_at_sample", "value": 0.01},
                {**where, "measure": "error_last", "value": 0.1},
                {**where, "measure": "zeroed", "value": 0.04},
            ]
        where = {**where, "role": "", "deviation": "numerics"}
        for measure, value in (("intensity_change_pct", 10.0), ("entropy_change", 0.1)):
            rows += [
                {**where, "measure": f"{measure}_exact", "value": value},
                {**where, "measure": f"{measure}_bf16", "value": value - 0.5},
            ]
    found = effects(pd.DataFrame(rows), {"filter": {"mode": "exact", "count_eos": False}})
    assert set(found) == {d.key for d in DEVIATIONS}
    assert found["selection"].startswith(
        "the paper mode would select 98% of the same problems from the same generations "
        "(median of 2 pair x dataset; 97% at fewest)"
    )
    assert found["eos"].startswith("counting the EOS in answer lengths would select 100%")
    assert found["window"].startswith("the paper mode cuts 0 of 2 windows")
    assert found["context"] == (
        "10 of 200 scored windows of capped families read more than the paper's context holds"
    )
    assert (
        "1.0% at the 10th drawn sample and 10.0% at the last, 4.0% of non-zero entries"
        in found["numerics"]
    )
    assert (
        "moves by 0.50 points (median) and changes sign in 0 of 2 conditions, the entropy "
        "change in 2" in found["numerics"]
    )


def test_a_pairing_summary_without_its_draw_order_is_named():
    summary = {"settings": {"mode": "exact"}, "reference_length_fraction": "10"}
    with pytest.raises(
        ValueError, match="pair p, dataset d: the pairing summary has no draw_order"
    ):
        measure_pair({"base": [], "tuned": []}, [], summary, {}, pair="p", dataset="d")
