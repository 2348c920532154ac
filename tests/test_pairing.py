"""Pairing and filtering on hand-built rows whose every count is known."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from circuitry.generation.pairing import (
    FilterSettings,
    PairingError,
    check_shared_vocabulary,
    cut_length,
    pair_samples,
)
from circuitry.models.tokenizer import UNK, build_char_tokenizer
from conftest import filter_settings, schema_defaults

DEFAULTS = filter_settings()


def row(idx: int, answer_len: int, prompt_len: int = 5, correct: bool = True) -> dict:
    return {
        "idx": idx,
        "prompt_token_ids": list(range(prompt_len)),
        "completion_token_ids": [7] * answer_len,
        "correct": correct,
    }


def rows_from(lengths: dict[int, tuple[int, int]]) -> tuple[list[dict], list[dict]]:
    """Base and tuned rows, both correct, with the given (base, tuned) answer lengths."""
    base = [row(idx, b) for idx, (b, _) in lengths.items()]
    tuned = [row(idx, t) for idx, (_, t) in lengths.items()]
    return base, tuned


# Over the both-correct rows 2..11 the base answers average 10 tokens and the tuned
# ones 11, so T = 10 and the length range is [5, 15].
FUNNEL = {
    2: (10, 10),  # prompt lengths differ (set below)
    3: (5, 5),  # m = 5 = 0.5 * T exactly: kept
    4: (15, 15),  # m = 15 = 1.5 * T exactly: kept
    5: (4, 5),  # m = 4.5: out of range
    6: (16, 15),  # m = 15.5: out of range
    7: (6, 10),  # m = 8, difference 4 = 0.5 * m exactly: kept
    8: (6, 11),  # m = 8.5, difference 5 > 4.25: imbalanced
    9: (12, 13),
    10: (13, 13),
    11: (13, 13),
}
SURVIVORS = [3, 4, 7, 9, 10, 11]


@pytest.fixture
def funnel_rows():
    base, tuned = rows_from(FUNNEL)
    tuned[0] = row(2, 10, prompt_len=6)
    base += [row(0, 100, correct=False), row(1, 100), row(20, 10)]
    tuned += [row(0, 100), row(1, 100, correct=False), row(21, 10)]
    return base, tuned


def removed(summary: dict) -> list[tuple[str, int, int]]:
    return [(f["reason"], f["removed"], f["remaining"]) for f in summary["filters"]]


def test_every_filter_removes_the_rows_it_should(funnel_rows):
    pairs, summary = pair_samples(*funnel_rows, DEFAULTS, pair="p", dataset="d")
    assert [p["idx"] for p in pairs] == SURVIVORS
    assert (summary["n_base"], summary["n_tuned"], summary["n_joined"]) == (13, 13, 12)
    assert summary["n_correct"] == {"base": 11, "tuned": 11}
    assert removed(summary) == [
        ("not both correct", 2, 10),
        ("prompt length mismatch", 1, 9),
        ("out of length range", 2, 7),
        ("imbalanced", 1, 6),
        ("not sampled", 0, 6),
    ]
    assert summary["mean_answer_length"] == {"base": 10.0, "tuned": 11.0}
    assert summary["reference_length"] == 10.0
    assert summary["length_bounds"] == [5.0, 15.0]
    assert summary["min_selected_answer_length"] == {"base": 5, "tuned": 5}
    assert (summary["n_selected"], summary["too_few"], summary["seed"]) == (6, True, 42)
    json.dumps(summary)


def test_reference_length_is_the_smaller_mean_whichever_role_has_it(funnel_rows):
    base, tuned = funnel_rows
    pairs, summary = pair_samples(tuned, base, DEFAULTS, pair="p", dataset="d")
    assert summary["mean_answer_length"] == {"base": 11.0, "tuned": 10.0}
    assert summary["reference_length"] == 10.0
    assert [p["idx"] for p in pairs] == SURVIVORS


def test_paired_rows_carry_both_roles_token_ids_and_lengths(funnel_rows):
    pairs, _ = pair_samples(*funnel_rows, DEFAULTS, pair="p", dataset="d")
    seven = next(p for p in pairs if p["idx"] == 7)
    assert seven["base"] == {
        "prompt_token_ids": [0, 1, 2, 3, 4],
        "completion_token_ids": [7] * 6,
        "prompt_len": 5,
        "answer_len": 6,
    }
    assert (seven["tuned"]["answer_len"], seven["tuned"]["prompt_len"]) == (10, 5)


def test_a_sample_of_the_survivors_is_drawn_with_the_seed(funnel_rows):
    settings = filter_settings(num_samples=4)
    pairs, summary = pair_samples(*funnel_rows, settings, pair="p", dataset="d")
    chosen = [p["idx"] for p in pairs]
    assert chosen == sorted(chosen) and set(chosen) < set(SURVIVORS) and len(chosen) == 4
    assert removed(summary)[-1] == ("not sampled", 2, 4)
    assert (summary["n_selected"], summary["too_few"]) == (4, False)
    base, tuned = funnel_rows
    shuffled = random.Random(0).sample(base, len(base)), tuned[::-1]
    again, _ = pair_samples(*shuffled, settings, pair="p", dataset="d")
    assert [p["idx"] for p in again] == chosen


def test_other_seeds_draw_other_samples():
    base, tuned = rows_from({idx: (10, 10) for idx in range(40)})
    samples = {
        tuple(p["idx"] for p in pair_samples(base, tuned, s, pair="p", dataset="d")[0])
        for s in (filter_settings(num_samples=10, seed=seed) for seed in (1, 2, 3))
    }
    assert len(samples) == 3


def test_exactly_num_samples_survivors_are_all_kept_and_not_too_few():
    base, tuned = rows_from({idx: (10, 10) for idx in range(5)})
    pairs, summary = pair_samples(
        base, tuned, filter_settings(num_samples=5), pair="p", dataset="d"
    )
    assert [p["idx"] for p in pairs] == [0, 1, 2, 3, 4]
    assert summary["too_few"] is False


def test_lower_bound_is_exact_where_float_rounding_would_drop_the_row():
    # T = 10 and small_coeff 0.3: 0.3 * 10 is 3.0000000000000004 in floats.
    base, tuned = rows_from({0: (3, 3), 1: (10, 10), 2: (17, 17)})
    settings = filter_settings(small_coeff=0.3)
    pairs, summary = pair_samples(base, tuned, settings, pair="p", dataset="d")
    assert [p["idx"] for p in pairs] == [0, 1]
    assert removed(summary)[2] == ("out of length range", 1, 2)


def test_balance_bound_is_exact_where_float_rounding_would_drop_the_row():
    # m = 100 and balance_coeff 0.58: 0.58 * 100 is 57.99999999999999 in floats.
    base, tuned = rows_from({0: (129, 71), 1: (100, 100), 2: (130, 70)})
    settings = filter_settings(balance_coeff=0.58)
    pairs, summary = pair_samples(base, tuned, settings, pair="p", dataset="d")
    assert [p["idx"] for p in pairs] == [0, 1]
    assert removed(summary)[3] == ("imbalanced", 1, 2)


def test_reference_length_keeps_its_exact_value():
    base, tuned = rows_from({0: (1, 2), 1: (2, 2), 2: (2, 2)})
    _, summary = pair_samples(base, tuned, DEFAULTS, pair="p", dataset="d")
    assert summary["reference_length_fraction"] == "5/3"
    assert summary["length_bounds"] == [5 / 6, 2.5]


def test_nothing_correct_fails_naming_pair_dataset_and_counts():
    base = [row(0, 5, correct=False), row(1, 5)]
    tuned = [row(0, 5), row(1, 5, correct=False), row(2, 5)]
    with pytest.raises(PairingError) as error:
        pair_samples(base, tuned, DEFAULTS, pair="toy-grpo", dataset="toy-math")
    assert str(error.value) == (
        "pair toy-grpo, dataset toy-math: no sample left after filtering "
        "(2 joined, 2 not both correct, 0 left)"
    )


def test_nothing_in_range_fails_with_the_counts_of_every_step():
    base, tuned = rows_from({0: (1, 1), 1: (30, 30)})
    with pytest.raises(
        PairingError,
        match="pair p, dataset d: .*2 joined, 0 not both correct, "
        "0 prompt length mismatch, 2 out of length range, 0 left",
    ):
        pair_samples(base, tuned, DEFAULTS, pair="p", dataset="d")


def test_ungraded_rows_are_refused():
    ungraded = row(0, 5)
    del ungraded["correct"]
    with pytest.raises(PairingError, match="tuned row 0 lacks correct"):
        pair_samples([row(0, 5)], [ungraded], DEFAULTS, pair="p", dataset="d")


def test_repeated_idx_is_refused():
    with pytest.raises(PairingError, match="base rows: idx 3 occurs twice"):
        pair_samples([row(3, 5), row(3, 6)], [row(3, 5)], DEFAULTS, pair="p", dataset="d")


def test_the_schema_holds_the_paper_defaults():
    paper = FilterSettings(0.5, 1.5, 0.5, 100, 42, "exact", False)
    assert FilterSettings.from_config(schema_defaults("properties", "filter")) == paper
    assert filter_settings(seed=7, num_samples=3) == dataclasses.replace(
        paper, seed=7, num_samples=3
    )


def test_crossed_scoring_needs_one_vocabulary():
    """Crossed text feeds one model's ids to the other: both must read them as one token."""
    rows = [
        {
            "idx": 0,
            "base": {"completion_token_ids": [20, 25]},
            "tuned": {"completion_token_ids": [26]},
        }
    ]
    base = build_char_tokenizer()
    check_shared_vocabulary("p", {"base": base, "tuned": build_char_tokenizer()}, rows)
    vocab = base.get_vocab()
    vocab["5"], vocab["6"] = vocab["6"], vocab["5"]  # ids 25 and 26 swap their characters
    swapped = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, UNK)))
    with pytest.raises(
        PairingError,
        match="pair p: .*token id 25 is '5' for the base tokenizer and '6' for the tuned",
    ):
        check_shared_vocabulary("p", {"base": base, "tuned": swapped}, rows)


# ---- the paper's reading (filter.mode: paper) against a re-implementation of its code


def paper_run_tests_selection(
    base_rows: list[dict], tuned_rows: list[dict], coeffs: dict, alphas: list[float]
) -> tuple[set[int], dict[float, int]]:
    """The selection of the paper's `run_tests.py` (`MathDataset.__init__`), written from
    its text: `all_correct.jsonl` holds the both-correct rows in dataset order; `refer`
    is the smaller of numpy's mean answer lengths; bounds `int(coeff * refer)`; a row goes
    when its prompt lengths differ, when `total_len > max_total_len or total_len <
    min_total_len`, or when `diff / total_len > balance_coeff`; then `random.seed(seed);
    random.sample(filtered_data, num_samples)` if `0 < num_samples < len(filtered_data)`.
    Returns the selected idx and `cut_len = max(int(refer * cut_coeff), 1)` per alpha."""
    all_correct = [
        (b, t) for b, t in zip(base_rows, tuned_rows, strict=True) if b["correct"] and t["correct"]
    ]
    base_mean = np.mean([len(b["completion_token_ids"]) for b, _ in all_correct])
    rl_mean = np.mean([len(t["completion_token_ids"]) for _, t in all_correct])
    refer = min(base_mean, rl_mean)
    min_total_len = int(coeffs["small_coeff"] * refer)
    max_total_len = int(coeffs["big_coeff"] * refer)
    filtered_data = []
    for b, t in all_correct:
        if len(b["prompt_token_ids"]) != len(t["prompt_token_ids"]):
            continue
        total_len = (len(b["completion_token_ids"]) + len(t["completion_token_ids"])) / 2
        if total_len > max_total_len or total_len < min_total_len:
            continue
        diff = abs(len(b["completion_token_ids"]) - len(t["completion_token_ids"]))
        if diff / total_len > coeffs["balance_coeff"]:
            continue
        filtered_data.append(b)
    num_samples = coeffs["num_samples"]
    if 0 < num_samples < len(filtered_data):
        state = random.getstate()
        random.seed(coeffs["seed"])
        data = random.sample(filtered_data, num_samples)
        random.setstate(state)
    else:
        data = filtered_data
    return {b["idx"] for b in data}, {alpha: max(int(refer * alpha), 1) for alpha in alphas}


def synthetic_generations(rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Two models' graded answers to a few hundred problems, lengths around a random scale
    (so T falls anywhere, bounds land on and beside integer lengths), about a third wrong,
    a few prompts tokenised to different lengths."""
    n = rng.randint(30, 400)
    scale = rng.uniform(5, 600)
    base, tuned = [], []
    for idx in range(n):
        prompt = rng.randint(10, 60)
        lengths = [max(1, round(rng.gauss(scale, scale * 0.4))) for _ in range(2)]
        prompts = [prompt, prompt + (rng.random() < 0.03)]
        for rows, length, prompt_len in zip((base, tuned), lengths, prompts, strict=True):
            rows.append(
                {
                    "idx": idx,
                    "prompt_token_ids": [1] * prompt_len,
                    "completion_token_ids": [2] * length,
                    "correct": rng.random() < 0.7,
                }
            )
    return base, tuned


def random_coefficients(rng: random.Random) -> dict:
    return {
        "small_coeff": rng.choice([0.5, 0.3, 0.6, 0.75]),
        "big_coeff": rng.choice([1.5, 2.0, 1.3]),
        "balance_coeff": rng.choice([0.5, 0.1, 0.3, 0.25]),
        "num_samples": rng.choice([100, 50, 10, 1000]),
        "seed": rng.choice([42, 0, 7]),
    }


PAPER_CHECK_DATASETS = 250
ALPHAS = [0.03, 0.1, 0.3, 0.5]


def test_paper_mode_selects_what_the_papers_code_selects():
    """On 250 random synthetic datasets the paper mode keeps exactly the problems the
    paper's code keeps, with its windows; the exact mode keeps other problems on some."""
    rng = random.Random(2509)
    differs = 0
    for _ in range(PAPER_CHECK_DATASETS):
        base, tuned = synthetic_generations(rng)
        coeffs = random_coefficients(rng)
        expected, windows = paper_run_tests_selection(base, tuned, coeffs, ALPHAS)
        paper = filter_settings(**coeffs, mode="paper")
        rows, summary = pair_samples(base, tuned, paper, pair="p", dataset="d")
        assert {r["idx"] for r in rows} == expected, coeffs
        assert {a: cut_length(a, summary) for a in ALPHAS} == windows, coeffs
        exact_rows, _ = pair_samples(base, tuned, filter_settings(**coeffs), pair="p", dataset="d")
        differs += {r["idx"] for r in exact_rows} != expected
    assert differs > 0


def test_paper_bounds_are_truncated_integers_and_exact_bounds_are_not():
    # T = 10.5 (base lengths 10 and 11): exact bounds [5.25, 15.75], paper [5, 15]
    base = [row(0, 10), row(1, 11), row(2, 5), row(3, 16)]
    tuned = [row(0, 10), row(1, 11), row(2, 5), row(3, 16)]
    both = {"small_coeff": 0.5, "big_coeff": 1.5, "balance_coeff": 0.5}
    exact, summary = pair_samples(base, tuned, filter_settings(**both), pair="p", dataset="d")
    paper, paper_summary = pair_samples(
        base, tuned, filter_settings(**both, mode="paper"), pair="p", dataset="d"
    )
    assert summary["reference_length_fraction"] == "21/2"
    assert [r["idx"] for r in exact] == [0, 1]  # 5 < 5.25 and 16 > 15.75 go
    assert [r["idx"] for r in paper] == [0, 1, 2]  # 5 >= 5 stays, 16 > 15 goes
    assert paper_summary["length_bounds_fraction"] == ["5", "15"]


def test_unknown_filter_mode_is_refused():
    with pytest.raises(ValueError, match="filter.mode: 'fast' is not one of exact, paper"):
        filter_settings(mode="fast")


def test_count_eos_adds_the_eos_an_answer_ended_on():
    """vLLM's token ids keep the EOS: with count_eos an answer that ended on it is one token
    longer, so T and the pair rows' lengths count it; a cut-off answer is not."""
    base = [{**row(0, 10), "finish_reason": "eos"}, {**row(1, 12), "finish_reason": "length"}]
    tuned = [{**row(0, 10), "finish_reason": "eos"}, {**row(1, 12), "finish_reason": "eos"}]
    counted, summary = pair_samples(
        base, tuned, filter_settings(count_eos=True), pair="p", dataset="d"
    )
    assert summary["mean_answer_length"] == {"base": 11.5, "tuned": 12.0}
    assert [r["base"]["answer_len"] for r in counted] == [11, 12]
    assert [r["tuned"]["answer_len"] for r in counted] == [11, 13]
    _, plain = pair_samples(base, tuned, filter_settings(), pair="p", dataset="d")
    assert plain["mean_answer_length"] == {"base": 11.0, "tuned": 11.0}
