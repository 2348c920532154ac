"""The toy character-level tokenizer round-trips and loads like a hub tokenizer."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from circuitry.models.tokenizer import CHARACTERS, SPECIAL_TOKENS, build_char_tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    build_char_tokenizer().save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


TEXTS = [
    "Ann has 12 apples. Ann gets 7 more. How many apples does Ann have?\n",
    "7*8=56\n56-13=43\n\\boxed{43}",
    "  leading and trailing spaces  ",
    "".join(CHARACTERS),
]


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(saved, text):
    ids = saved(text)["input_ids"]
    assert ids[0] == saved.bos_token_id
    assert len(ids) == len(text) + 1
    assert saved.decode(ids, skip_special_tokens=True) == text


def test_special_tokens_are_set(saved):
    assert (saved.pad_token_id, saved.bos_token_id, saved.eos_token_id) == (0, 1, 2)
    assert saved.convert_ids_to_tokens([0, 1, 2, 3]) == list(SPECIAL_TOKENS)
    assert len(saved) == len(SPECIAL_TOKENS) + len(CHARACTERS)


def test_one_token_per_character(saved):
    ids = saved("ab\nc", add_special_tokens=False)["input_ids"]
    assert saved.convert_ids_to_tokens(ids) == ["a", "b", "\n", "c"]


def test_unknown_characters_map_to_unk(saved):
    ids = saved("é", add_special_tokens=False)["input_ids"]
    assert ids == [saved.unk_token_id]


def test_saved_tokenizer_encodes_like_the_built_one(saved):
    built = build_char_tokenizer()
    for text in TEXTS:
        assert built(text)["input_ids"] == saved(text)["input_ids"]
