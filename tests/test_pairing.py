"""Pairing and filtering on hand-built rows whose every count is known."""

from __future__ import annotations

import json
import random

import pytest
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from circuitry.pairing import (
    FilterSettings,
    PairingError,
    check_shared_vocabulary,
    pair_samples,
)
from circuitry.tokenizer import UNK, build_char_tokenizer

DEFAULTS = FilterSettings()


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
    settings = FilterSettings(num_samples=4)
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
        for s in (FilterSettings(num_samples=10, seed=seed) for seed in (1, 2, 3))
    }
    assert len(samples) == 3


def test_exactly_num_samples_survivors_are_all_kept_and_not_too_few():
    base, tuned = rows_from({idx: (10, 10) for idx in range(5)})
    pairs, summary = pair_samples(base, tuned, FilterSettings(num_samples=5), pair="p", dataset="d")
    assert [p["idx"] for p in pairs] == [0, 1, 2, 3, 4]
    assert summary["too_few"] is False


def test_lower_bound_is_exact_where_float_rounding_would_drop_the_row():
    # T = 10 and small_coeff 0.3: 0.3 * 10 is 3.0000000000000004 in floats.
    base, tuned = rows_from({0: (3, 3), 1: (10, 10), 2: (17, 17)})
    settings = FilterSettings(small_coeff=0.3)
    pairs, summary = pair_samples(base, tuned, settings, pair="p", dataset="d")
    assert [p["idx"] for p in pairs] == [0, 1]
    assert removed(summary)[2] == ("out of length range", 1, 2)


def test_balance_bound_is_exact_where_float_rounding_would_drop_the_row():
    # m = 100 and balance_coeff 0.58: 0.58 * 100 is 57.99999999999999 in floats.
    base, tuned = rows_from({0: (129, 71), 1: (100, 100), 2: (130, 70)})
    settings = FilterSettings(balance_coeff=0.58)
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


def test_settings_from_config_fill_the_paper_defaults():
    assert FilterSettings.from_config({}) == FilterSettings(0.5, 1.5, 0.5, 100, 42)
    assert FilterSettings.from_config({"seed": 7, "num_samples": 3}).seed == 7


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
